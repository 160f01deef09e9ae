"""export: a trained checkpoint + its workflow -> a model package: a Triton model version and the
training artifacts it came from.

Package layout. Deploy copies only the serving set (criteo_kernel.artifacts.SERVED: model.onnx,
model.py, criteo_serving.py, criteo_kernel/, preprocessing/serving/, config.pbtxt, export.json) into
MODEL_REPOSITORY/criteo_dcn/<version>/; the rest stays here, in the artifact store, and the version's
lineage names it (checkpoint.pt or hugectr/, preprocessing/, reference_profile.json):

    model.onnx             the DCN, inputs cat_ids INT64 [B,26] + dense FP32 [B,13], output ctr [B,1]
    model.onnx.data        its weights as ONNX external data, when the model passes protobuf's 2 GiB
                           (criteo_kernel.onnx_size; $CRITEO_ONNX_EXTERNAL_DATA_BYTES lowers the threshold)
    model.py               Triton python-backend entry point
    criteo_serving.py      numpy + onnxruntime preprocessing and inference (no NVTabular needed)
    criteo_kernel/         the shared kernel criteo_serving reads the schema and signature from
    preprocessing/         the NVTabular workflow folder: nvt/ (Workflow.save), serving/ lookup tables
    checkpoint.pt          PyTorch weights, the warm start of the next incremental run
    config.pbtxt           the model's Triton config (criteo_kernel.triton_config; deploy places it at
                           the model level)
    reference_profile.json the data profile of the training window (full retrain: learned from its
                           days; incremental: inherited from the parent), which later days are
                           validated and checked for drift against (images/validator)
    export.json            signature and the ONNX-vs-PyTorch parity check

The export fails if ONNX and PyTorch disagree on a probe batch by more than --tolerance.

    python -m criteo_merlin export --checkpoint .../train/checkpoint.pt --workflow .../workflows/wf \
        --output .../candidates/KEY/package
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

import criteo_kernel
from criteo_kernel import signature, storage, triton_config
from criteo_kernel.artifacts import (
    CHECKPOINT,
    COMMIT,
    EXPORT_META,
    HUGECTR_FILES,
    MODEL_ONNX,
    PREPROCESSING,
    REFERENCE_PROFILE,
    TRITON_CONFIG,
    WORKFLOW_META,
)
from criteo_kernel.schema import CAT_COLUMNS
from criteo_kernel.trainers import PYTORCH, TRAINERS

from . import onnx_files

TRITON_DIR = os.path.join(os.path.dirname(__file__), "triton")


def export(checkpoint: str, workflow: str, output: str, tolerance: float = 1e-4, probe_rows: int = 512,
           reference_profile: str | None = None, trainer: str = PYTORCH) -> dict:
    """`trainer` pytorch: `checkpoint` is checkpoint.pt, exported to ONNX here and checked against
    PyTorch on a probe batch. hugectr: `checkpoint` is train_hugectr's output, whose model.onnx
    (hugectr2onnx's, adapted to the served signature) is checked for that signature and for finite
    probabilities on the probe batch, and whose hugectr/ files the version keeps for the next run."""
    if trainer not in TRAINERS:
        raise SystemExit(f"export: unknown --trainer {trainer!r} ({', '.join(TRAINERS)})")
    if not storage.is_published(workflow):
        raise SystemExit(f"export: workflow {workflow} is not published (no {COMMIT})")
    meta = storage.read_json(storage.join(storage.resolve(workflow), WORKFLOW_META))
    vocab = [int(meta["embedding_sizes"][c]) for c in CAT_COLUMNS]
    rng = np.random.default_rng(0)
    probe_cats = np.stack([rng.integers(0, v, size=probe_rows) for v in vocab], 1).astype(np.int64)
    probe_dense = rng.normal(size=(probe_rows, signature.NUM_DENSE)).astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, "pkg")
        os.makedirs(pkg)
        onnx_path = os.path.join(pkg, MODEL_ONNX)
        if trainer == PYTORCH:
            model_config, max_diff = _export_pytorch(checkpoint, onnx_path, pkg, vocab, probe_cats, probe_dense,
                                                    tolerance)
        else:
            model_config, max_diff = _package_hugectr(checkpoint, onnx_path, pkg, probe_cats, probe_dense)
        for name in ("model.py", "criteo_serving.py"):
            shutil.copy(os.path.join(TRITON_DIR, name), os.path.join(pkg, name))
        # The version carries the kernel its serving code imports: Triton runs it from the version folder.
        shutil.copytree(os.path.dirname(criteo_kernel.__file__), os.path.join(pkg, "criteo_kernel"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(os.path.join(pkg, TRITON_CONFIG), "w") as fh:
            fh.write(triton_config.render())
        reference = None
        if reference_profile:
            if storage.exists(reference_profile):
                reference = reference_profile
                fs, path = storage.fs_path(reference_profile)
                fs.get(path, os.path.join(pkg, REFERENCE_PROFILE))
            else:  # a parent exported before profiles existed: validation falls back to default bounds
                print(f"WARNING: reference profile {reference_profile} not found; the package has none", flush=True)
        wf_local = storage.download_dir(storage.resolve(workflow), os.path.join(tmp, "wf"))
        shutil.copytree(wf_local, os.path.join(pkg, PREPROCESSING))
        info = {
            "inputs": {signature.ONNX_CATEGORICAL_INPUT: ["INT64", [-1, len(vocab)]],
                       signature.ONNX_DENSE_INPUT: ["FP32", [-1, signature.NUM_DENSE]]},
            "outputs": {signature.OUTPUT: ["FP32", [-1, 1]]},
            "trainer": trainer, "parity_max_abs_diff": max_diff, "parity_rows": probe_rows, "tolerance": tolerance,
            "checkpoint": checkpoint, "workflow": workflow, "model_config": model_config,
            "onnx_bytes": onnx_files.total_bytes(pkg), "onnx_files": onnx_files.files(pkg),
            "reference_profile": reference,
        }
        with storage.staged_partition(output) as staging:
            storage.upload_dir(pkg, staging)
            storage.write_json(storage.join(staging, EXPORT_META), info)
    parity = f"ONNX parity max |diff| = {max_diff:.2e}" if max_diff is not None else "HugeCTR model packaged"
    print(f"exported {output} ({trainer}): {parity}", flush=True)
    return {"package": output, "trainer": trainer, "parity_max_abs_diff": max_diff, "onnx_bytes": info["onnx_bytes"],
            "reference_profile": reference}


def _export_pytorch(checkpoint, onnx_path, pkg, vocab, probe_cats, probe_dense, tolerance) -> tuple[dict, float]:
    """checkpoint.pt -> model.onnx, checked against PyTorch on the probe batch; the checkpoint is kept."""
    import onnxruntime as ort
    import torch

    from ..train import torch_compat
    from ..train.dcn import ServingDCN, load_checkpoint

    local_checkpoint = storage.local_copy(checkpoint)
    model = load_checkpoint(local_checkpoint)[0]  # the checkpoint's own copy of the weights freed at once
    model.eval()
    if list(model.cfg.vocab_sizes) != vocab:
        raise SystemExit(f"export: checkpoint {checkpoint} has the vocabulary sizes of another workflow "
                         "than --workflow")
    wrapped = ServingDCN(model).eval()
    config = model.cfg.to_dict()
    cat_in, dense_in, out = signature.ONNX_CATEGORICAL_INPUT, signature.ONNX_DENSE_INPUT, signature.OUTPUT
    with torch.no_grad():
        ref = wrapped(torch.from_numpy(probe_cats), torch.from_numpy(probe_dense)).numpy()
    # torch writes its own external files past 2 GiB, one per tensor (onnx_files.rewrite): into a
    # scratch folder, then into the package as model.onnx (+ model.onnx.data)
    scratch = tempfile.mkdtemp(prefix="torch-onnx-", dir=os.path.dirname(pkg))
    try:
        torch_path = os.path.join(scratch, MODEL_ONNX)
        torch.onnx.export(
            wrapped, (torch.from_numpy(probe_cats[:2]), torch.from_numpy(probe_dense[:2])), torch_path,
            input_names=[cat_in, dense_in], output_names=[out],
            dynamic_axes={cat_in: {0: "batch"}, dense_in: {0: "batch"}, out: {0: "batch"}},
            opset_version=17, **torch_compat.onnx_export_kwargs(),
        )
        del model, wrapped  # the ONNX copy of the weights comes next: one copy in memory at a time
        onnx_files.rewrite(torch_path, onnx_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])  # by path: finds model.onnx.data
    (got,) = sess.run([out], {cat_in: probe_cats, dense_in: probe_dense})
    del sess
    max_diff = float(np.max(np.abs(ref - got)))
    if not max_diff <= tolerance:
        raise SystemExit(f"export: ONNX and PyTorch disagree by {max_diff:.2e} > {tolerance:.0e} "
                         "on the probe batch")
    shutil.copy(local_checkpoint, os.path.join(pkg, CHECKPOINT))
    return config, max_diff


def _package_hugectr(trained, onnx_path, pkg, probe_cats, probe_dense) -> tuple[dict, None]:
    """train_hugectr's output -> model.onnx (served signature, finite probabilities) + hugectr/."""
    import onnx
    import onnxruntime as ort

    from .onnx_adapter import SignatureError, check_served_signature

    if not storage.is_published(trained):
        raise SystemExit(f"export: {trained} is not a published train_hugectr output (no {COMMIT})")
    local = storage.download_dir(storage.resolve(trained), os.path.join(os.path.dirname(pkg), "trained"))
    try:  # the graph alone: the weights may be gigabytes in model.onnx.data
        check_served_signature(onnx.load(os.path.join(local, MODEL_ONNX), load_external_data=False))
    except SignatureError as exc:
        raise SystemExit(f"export: {trained}/{MODEL_ONNX}: {exc}") from None
    onnx_files.copy(local, pkg)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (got,) = sess.run([signature.OUTPUT], {signature.ONNX_CATEGORICAL_INPUT: probe_cats,
                                           signature.ONNX_DENSE_INPUT: probe_dense})
    if got.shape != (len(probe_cats), 1) or not np.all(np.isfinite(got)) or got.min() < 0 or got.max() > 1:
        raise SystemExit(f"export: {trained}/{MODEL_ONNX} gives no probabilities on the probe batch "
                         f"(shape {got.shape}, range {np.nanmin(got)}..{np.nanmax(got)})")
    shutil.copytree(os.path.join(local, HUGECTR_FILES), os.path.join(pkg, HUGECTR_FILES))
    from ..hugectr.hugectr_files import WarmStartError, find

    try:  # the version must hold what the next run warm-starts from
        saved = find(os.path.join(pkg, HUGECTR_FILES))
    except WarmStartError as exc:
        raise SystemExit(f"export: {trained}: {exc}") from None
    with open(saved.config) as fh:
        return json.load(fh), None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_merlin export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="the train step's checkpoint: checkpoint.pt (pytorch) or train_hugectr's output (hugectr)")
    p.add_argument("--trainer", choices=TRAINERS, default=PYTORCH, help="which trainer made --checkpoint")
    p.add_argument("--workflow", required=True, help="the published workflow the model was trained with")
    p.add_argument("--output", required=True, help="where to publish the version package")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--reference-profile", default=None,
                   help="data reference profile to ship with the version (see images/validator)")
    a = p.parse_args(argv)
    return export(a.checkpoint, a.workflow, a.output, a.tolerance, reference_profile=a.reference_profile,
                  trainer=a.trainer)
