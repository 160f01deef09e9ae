"""The files a HugeCTR training run saves, found again: the next run's warm start.

`model.save_params_to_files(prefix, iter)` (HugeCTR v25.03, pybind/model.cpp) writes

    {prefix}_dense_{iter}.model            dense weights
    {prefix}_opt_dense_{iter}.model        the dense optimizer's states
    {prefix}{i}_sparse_{iter}.model/       embedding i: a folder holding `key` and `emb_vector`
    {prefix}{i}_opt_sparse_{iter}.model    embedding i's optimizer states

and `model.graph_to_json(graph_config_file=...)` the graph that hugectr2onnx converts. A version
trained by HugeCTR keeps them under `hugectr/` in its Triton version folder.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

GRAPH = "graph.json"
CONFIG = "config.json"      # the architecture (criteo_merlin.hugectr.hugectr_dcn.DCNGraph's fields), ours
PREFIX = "dcn"
_DENSE = re.compile(r"^(?P<prefix>.+?)_dense_(?P<iter>\d+)\.model$")


class WarmStartError(ValueError):
    """The parent's HugeCTR files are missing or incomplete; the message names what is missing."""


@dataclass(frozen=True)
class ModelFiles:
    folder: str
    prefix: str
    iteration: int
    graph: str
    config: str
    dense: str
    dense_optimizer: str | None
    sparse: tuple[str, ...]
    sparse_optimizer: tuple[str, ...]   # empty when any embedding's states are missing

    def describe(self) -> str:
        opt = "with optimizer states" if self.dense_optimizer and self.sparse_optimizer else "without optimizer states"
        return (f"{self.folder}: iteration {self.iteration}, dense {os.path.basename(self.dense)}, "
                f"{len(self.sparse)} embedding(s), {opt}")


def names(prefix: str, iteration: int, embeddings: int = 1) -> dict:
    """The file names save_params_to_files gives (relative to its folder)."""
    return {"dense": f"{prefix}_dense_{iteration}.model",
            "dense_optimizer": f"{prefix}_opt_dense_{iteration}.model",
            "sparse": [f"{prefix}{i}_sparse_{iteration}.model" for i in range(embeddings)],
            "sparse_optimizer": [f"{prefix}{i}_opt_sparse_{iteration}.model" for i in range(embeddings)]}


def _sparse_ok(path: str) -> bool:
    return os.path.isdir(path) and all(os.path.isfile(os.path.join(path, f)) for f in ("key", "emb_vector"))


def find(folder: str, embeddings: int = 1) -> ModelFiles:
    """The latest complete set of saved files in `folder` (the highest iteration whose dense file,
    `embeddings` sparse folders and graph are all there)."""
    if not os.path.isdir(folder):
        raise WarmStartError(f"{folder}: no such folder: the parent version has no HugeCTR files "
                             "(was it trained by PyTorch? switching trainers needs a full retrain)")
    graph = os.path.join(folder, GRAPH)
    candidates = []
    for name in os.listdir(folder):
        m = _DENSE.match(name)
        if m and not m.group("prefix").endswith("_opt"):
            candidates.append((int(m.group("iter")), m.group("prefix")))
    problems = []
    for iteration, prefix in sorted(candidates, reverse=True):
        n = names(prefix, iteration, embeddings)
        sparse = [os.path.join(folder, s) for s in n["sparse"]]
        bad = [os.path.basename(s) for s in sparse if not _sparse_ok(s)]
        if bad:
            problems.append(f"iteration {iteration}: {', '.join(bad)} missing or without key/emb_vector")
            continue
        if not os.path.isfile(graph):
            raise WarmStartError(f"{folder}: no {GRAPH} (model.graph_to_json) beside the weights")
        config = os.path.join(folder, CONFIG)
        if not os.path.isfile(config):
            raise WarmStartError(f"{folder}: no {CONFIG} (the architecture train_hugectr saves beside the weights)")
        dense_opt = os.path.join(folder, n["dense_optimizer"])
        sparse_opt = [os.path.join(folder, s) for s in n["sparse_optimizer"]]
        return ModelFiles(folder, prefix, iteration, graph, config, os.path.join(folder, n["dense"]),
                          dense_opt if os.path.isfile(dense_opt) else None, tuple(sparse),
                          tuple(sparse_opt) if all(os.path.exists(s) for s in sparse_opt) else ())
    found = f": {'; '.join(problems)}" if problems else ""
    raise WarmStartError(f"{folder}: no complete HugeCTR model (want {PREFIX}_dense_N.model with "
                         f"{PREFIX}0_sparse_N.model/key and emb_vector){found}")
