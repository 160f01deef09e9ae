"""train_hugectr: the DCN trained by HugeCTR (the merlin image's `hugectr` target, GPUs only).

The same contract as `train` (criteo_merlin.train.train): processed day partitions in, a published
training partition out, whose result names the `checkpoint` export packages; the next incremental
run warm-starts from what it keeps.

    OUTPUT/model.onnx       the saved files converted to the served signature, embeddings
                            included (criteo_merlin.hugectr.hugectr_onnx: numpy reads them, no hugectr2onnx)
                            (their bytes in OUTPUT/model.onnx.data past protobuf's 2 GiB: criteo_kernel.onnx_size)
    OUTPUT/hugectr/         graph.json + the saved dense/sparse weights and optimizer states
                            (criteo_merlin.hugectr.hugectr_files): the next run's warm start
    OUTPUT/_train.json      metrics, trainer "hugectr", config, hyperparameters, the warm start

Steps: stage the partitions for the Parquet reader (criteo_merlin.hugectr.hugectr_data: one file list and
metadata over the window, slot_size_array from the workflow), build the graph
(criteo_merlin.hugectr.hugectr_dcn) on all visible GPUs (`vvgpu`), load the parent's files after
`compile()` for an incremental run, `fit` for epochs x rows / batch iterations, save, convert
(criteo_merlin.hugectr.hugectr_onnx: graph.json, the dense file and the sparse folder -> model.onnx).
HugeCTR reads no gs://: the partitions must be local or mounted (criteo_pod_data=gcsfuse or pvc).

    python -m criteo_merlin train_hugectr --train /mnt/gcs/b/processed/wf/day=0 \\
        --output /mnt/gcs/b/candidates/K/train \\
        [--warm-start /mnt/gcs/b/model_repository/criteo_dcn/3/hugectr] --epochs 1 --batch-size 16384 --lr 0.001
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time

from criteo_kernel import storage
from criteo_kernel.artifacts import COMMIT, HUGECTR_FILES, MODEL_ONNX, PREPROCESS_META, TRAIN_META
from criteo_kernel.trainers import HUGECTR

from ..preprocess.scale_out import visible_gpus
from ..train.trainer_cli import mlp_dims, training_parser
from . import hugectr_data, hugectr_files
from .hugectr_dcn import DCNGraph, workspace_mb


def iterations(rows: int, batch_size: int, epochs: int) -> int:
    """HugeCTR's Parquet reader is non-epoch (repeat_dataset=True): epochs become iterations."""
    return max(1, math.ceil(epochs * rows / batch_size))


def _local(url: str, what: str) -> str:
    if not storage.is_local(url):
        raise SystemExit(f"train_hugectr: {what} {url} is not a local or mounted path: HugeCTR reads no gs:// "
                         "(set criteo_pod_data=gcsfuse or pvc)")
    return storage.local_path(url)


def graph_for(partition: str, warm: dict | None, embedding_dim, cross_layers, mlp_dims, dropout) -> DCNGraph:
    """The graph from the workflow's slot sizes and the flags, or the parent's config (warm start)."""
    meta = storage.read_json(storage.join(storage.resolve(partition), PREPROCESS_META))
    if "slot_size_array" not in meta:
        raise SystemExit(f"train_hugectr: {partition} was not preprocessed for HugeCTR (no slot_size_array in its "
                         f"{PREPROCESS_META}): run preprocess with --hugectr")
    slots = [int(s) for s in meta["slot_size_array"]]
    if warm is not None:  # the parent's hugectr/config.json
        cfg = warm
        if list(cfg["slot_sizes"]) != slots:
            raise SystemExit("train_hugectr: the warm start's slot sizes are another workflow's; an incremental run "
                             "must use the production version's workflow (run a full retrain instead)")
        return DCNGraph(slots, cfg["embedding_dim"], cfg["cross_layers"], list(cfg["mlp_dims"]), cfg["dropout"])
    if embedding_dim is None or cross_layers is None or mlp_dims is None:
        raise SystemExit("train_hugectr: a model trained from scratch needs embedding_dim, cross_layers and mlp_dims")
    return DCNGraph(slots, embedding_dim, cross_layers, mlp_dims, 0.5 if dropout is None else dropout)


def train(train_parts: list[str], output: str, warm_start: str | None, epochs: int, batch_size: int, lr: float,
          embedding_dim: int | None = None, cross_layers: int | None = None, mlp_dims: list[int] | None = None,
          dropout: float | None = None, gpus: list[int] | None = None, workers: int = 0) -> dict:
    try:
        import hugectr
    except ImportError as exc:
        raise SystemExit(f"train_hugectr: {exc}: HugeCTR runs only in the merlin image's hugectr target (NVIDIA's "
                         "Merlin HugeCTR container, on GPUs); use trainer=pytorch elsewhere") from None
    from ..export import onnx_files
    from .hugectr_onnx import convert
    from .hugectr_saved import HugeCTRFileError

    for p in train_parts:
        if not storage.is_published(p):
            raise SystemExit(f"train_hugectr: {p} is not a published partition (no {COMMIT})")
    parts = [_local(storage.resolve(p), "partition") for p in train_parts]
    gpus = gpus if gpus else list(range(visible_gpus()))
    if not gpus:
        raise SystemExit("train_hugectr: no GPU is visible (HugeCTR trains on GPUs only)")
    parent, warm = _parent(warm_start)
    graph = graph_for(train_parts[0], warm, embedding_dim, cross_layers, mlp_dims, dropout)
    with tempfile.TemporaryDirectory(prefix="train_hugectr-") as tmp:
        train_list = hugectr_data.stage([os.path.join(p, "train") for p in parts], os.path.join(tmp, "train"))
        eval_list = hugectr_data.stage([os.path.join(p, "eval") for p in parts], os.path.join(tmp, "eval"))
        # HugeCTR clamps its reader workers to the files too (pybind/add_input.cpp); say so here
        workers = min(workers or len(gpus), train_list["files"])
        max_iter = iterations(train_list["rows"], batch_size, epochs)
        print(f"train_hugectr: {train_list['rows']} rows in {train_list['files']} files, {max_iter} iterations of "
              f"{batch_size} on GPUs {gpus}", flush=True)
        model = _model(hugectr, graph, train_list, eval_list, batch_size, lr, gpus, workers)
        out = os.path.join(tmp, "out")
        files = os.path.join(out, HUGECTR_FILES)
        os.makedirs(files)
        # the graph written once declared, before compile() (as HugeCTR's own hugectr2onnx tests do):
        # the layer order the dense file follows, which the conversion reads
        model.graph_to_json(graph_config_file=os.path.join(files, hugectr_files.GRAPH))
        model.compile()
        if parent is not None:  # loading before compile() throws
            _load_parent(model, parent)
        model.summary()
        t0 = time.time()
        model.fit(max_iter=max_iter, display=max(1, max_iter // 10), eval_interval=max_iter, snapshot=10**9)
        seconds = time.time() - t0

        iteration = (parent.iteration if parent else 0) + max_iter
        model.save_params_to_files(os.path.join(files, hugectr_files.PREFIX), iteration)
        config = {"slot_sizes": graph.slot_sizes, "embedding_dim": graph.embedding_dim,
                  "cross_layers": graph.cross_layers, "mlp_dims": graph.mlp_dims, "dropout": graph.dropout}
        with open(os.path.join(files, hugectr_files.CONFIG), "w") as fh:
            json.dump(config, fh, indent=2)
        saved = hugectr_files.find(files)
        eval_metrics = _eval_metrics(model)
        try:
            served = convert(graph, saved.dense, list(saved.sparse), graph_json=saved.graph)
        except HugeCTRFileError as exc:
            raise SystemExit(f"train_hugectr: converting {saved.describe()} to ONNX: {exc}") from None
        onnx_files.save(served, os.path.join(out, MODEL_ONNX))  # + model.onnx.data past protobuf's 2 GiB
        del served
        samples = max_iter * batch_size
        metrics = {"device": f"cuda x{len(gpus)}", "samples": samples, "steps": max_iter, "epochs": epochs,
                   "seconds": round(seconds, 3), "samples_per_s": round(samples / seconds, 1) if seconds else None,
                   "eval": eval_metrics}
        with storage.staged_partition(output) as staging:
            storage.upload_dir(out, staging)
            storage.write_json(storage.join(staging, TRAIN_META),
                               {"trainer": HUGECTR, "metrics": metrics, "warm_start": warm_start,
                                "trained_on": train_parts, "config": config, "iteration": iteration,
                                "hyperparameters": {"lr": lr, "batch_size": batch_size, "epochs": epochs}})
        shutil.rmtree(out, ignore_errors=True)
    print(f"trained {samples} samples in {seconds:.1f}s on {len(gpus)} GPU(s); eval {eval_metrics}", flush=True)
    return {"output": output, "checkpoint": output, "trainer": HUGECTR, "warm_start": warm_start, "metrics": metrics}


def _parent(warm_start: str | None) -> tuple[hugectr_files.ModelFiles | None, dict | None]:
    """The parent's saved files and its config.json (the architecture), or (None, None) from scratch."""
    if not warm_start:
        return None, None
    parent = hugectr_files.find(_local(warm_start, "warm start"))
    with open(parent.config) as fh:
        warm = json.load(fh)
    print(f"warm start from {parent.describe()}", flush=True)
    return parent, warm


def _model(hugectr, graph: DCNGraph, train_list: dict, eval_list: dict, batch_size: int, lr: float,
           gpus: list[int], workers: int):
    """HugeCTR's model of the graph: Adam, the Parquet reader over the staged file lists, all `gpus`."""
    solver = hugectr.CreateSolver(batchsize=batch_size, batchsize_eval=batch_size,
                                  max_eval_batches=max(1, eval_list["rows"] // batch_size), lr=lr,
                                  vvgpu=[gpus], repeat_dataset=True, i64_input_key=True)
    reader = hugectr.DataReaderParams(data_reader_type=hugectr.DataReaderType_t.Parquet,
                                      source=[train_list["file_list"]], eval_source=eval_list["file_list"],
                                      check_type=hugectr.Check_t.Non, slot_size_array=graph.slot_sizes,
                                      num_workers=workers)
    optimizer = hugectr.CreateOptimizer(optimizer_type=hugectr.Optimizer_t.Adam,
                                        update_type=hugectr.Update_t.Global, beta1=0.9, beta2=0.999,
                                        epsilon=1e-8)
    model = hugectr.Model(solver, reader, optimizer)
    graph.add_to(model, hugectr, optimizer, workspace_mb(graph, len(gpus)))
    return model


def _load_parent(model, parent: hugectr_files.ModelFiles) -> None:
    """The parent's weights, and its optimizer states when it saved them."""
    model.load_dense_weights(parent.dense)
    model.load_sparse_weights(list(parent.sparse))
    if parent.dense_optimizer and parent.sparse_optimizer:
        model.load_dense_optimizer_states(parent.dense_optimizer)
        model.load_sparse_optimizer_states(list(parent.sparse_optimizer))
    else:
        print("WARNING: the parent saved no optimizer states: Adam restarts its moments", flush=True)


def _eval_metrics(model) -> dict:
    """[(name, value)] after the final evaluation; a surprise here must not lose the saved model."""
    try:
        return {str(k): float(v) for k, v in model.get_eval_metrics()}
    except Exception as exc:  # noqa: BLE001
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> dict:
    p = training_parser("criteo_merlin train_hugectr", __doc__,
                        train_help="processed day partitions (preprocess --hugectr)",
                        output_help="where to publish model.onnx, hugectr/ and _train.json",
                        warm_start_help="the parent version's hugectr/ folder (incremental)")
    p.add_argument("--gpus", default="auto", help="auto (every visible GPU) or comma-separated GPU ids")
    p.add_argument("--workers", type=int, default=0, help="Parquet reader workers (0: one per GPU)")
    a = p.parse_args(argv)
    mlp = mlp_dims(p, a)
    gpus = None if a.gpus == "auto" else [int(g) for g in a.gpus.split(",") if g.strip()]
    return train(a.train, a.output, a.warm_start, a.epochs, a.batch_size, a.lr, a.embedding_dim, a.cross_layers,
                 mlp, a.dropout, gpus, a.workers)
