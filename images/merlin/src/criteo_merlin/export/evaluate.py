"""evaluate: AUC and logloss of the candidate, and of the production baseline, on the same held-out rows.

Both models are scored through their exported packages (criteo_serving: lookup tables +
onnxruntime), i.e. exactly as Triton will serve them, on the raw held-out slice of the extracted
days. Scoring the baseline on the candidate's evaluation rows is what makes the blessing's
"no worse than production" comparison fair (TFX Evaluator's change threshold).

    python -m criteo_merlin evaluate --eval .../extracted/day=5 --candidate .../package \
        [--baseline .../model_repository/criteo_dcn/3] --output .../candidates/KEY/evaluation
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile

import numpy as np

from criteo_kernel import storage
from criteo_kernel.artifacts import EVALUATION, SMOKE_ROWS
from criteo_kernel.codecs import decode_hex_column, decode_label, parse_int_column
from criteo_kernel.metrics import log_loss, roc_auc
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
from criteo_kernel.signature import CATEGORICAL_INPUT, DENSE_INPUT


def raw_eval_rows(partitions: list[str], max_rows: int | None):
    """Decode the held-out slice of extracted (all-text) partitions into serving inputs."""
    import pyarrow.parquet as pq

    dense, cats, labels, n = [], [], [], 0
    for part in partitions:
        fs, path = storage.fs_path(storage.join(storage.resolve(part), "eval"))
        for f in sorted(fs.glob(path.rstrip("/") + "/*.parquet")):
            with fs.open(f, "rb") as fh:
                for rb in pq.ParquetFile(fh).iter_batches(batch_size=100_000):
                    src = f"{part}/eval/{os.path.basename(f)}"
                    labels.append(decode_label(rb.column(LABEL), src))
                    dense.append(np.stack([parse_int_column(rb.column(c), c, src) for c in INT_COLUMNS], 1))
                    cats.append(np.stack([decode_hex_column(rb.column(c), c, src) for c in CAT_COLUMNS], 1))
                    n += rb.num_rows
                    if max_rows and n >= max_rows:
                        break
    if not labels:
        raise SystemExit(f"evaluate: no held-out rows in {partitions}")
    d, c, y = np.concatenate(dense), np.concatenate(cats), np.concatenate(labels)
    if max_rows:
        d, c, y = d[:max_rows], c[:max_rows], y[:max_rows]
    return d.astype(np.float32), c, y


def load_package(url: str):
    """Import a package's own criteo_serving.py, so each version is scored by the code it ships."""
    local = storage.download_dir(url, os.path.join(tempfile.mkdtemp(), "pkg"))
    spec = importlib.util.spec_from_file_location(f"criteo_serving_{abs(hash(local))}",
                                                  os.path.join(local, "criteo_serving.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.CTRModel(local)


def predict(model, dense, cats, batch: int = 65536) -> np.ndarray:
    return np.concatenate([model.predict(dense[i:i + batch], cats[i:i + batch]) for i in range(0, len(dense), batch)])


def metrics(label, prob) -> dict:
    return {"auc": roc_auc(label, prob), "logloss": log_loss(label, prob),
            "mean_prediction": float(prob.mean()), "observed_ctr": float(label.mean()), "rows": int(len(label))}


def score(model, dense, cats, label) -> dict:
    return metrics(label, predict(model, dense, cats))


def evaluate(eval_parts: list[str], candidate: str, baseline: str | None, output: str,
             max_rows: int | None = None, smoke_rows: int = 256) -> dict:
    dense, cats, label = raw_eval_rows(eval_parts, max_rows)
    prob = predict(load_package(storage.resolve(candidate)), dense, cats)  # the baseline: a version folder
    result = {"eval_partitions": eval_parts, "candidate": candidate, "baseline": baseline,
              "candidate_metrics": metrics(label, prob)}
    if baseline:
        result["baseline_metrics"] = score(load_package(baseline), dense, cats, label)
    with storage.staged_partition(output) as staging:
        storage.write_json(storage.join(staging, EVALUATION), result)
        # Deploy sends these held-out rows to Triton and expects these offline predictions back.
        fs, path = storage.fs_path(storage.join(staging, SMOKE_ROWS))
        with fs.open(path, "wb") as fh:
            np.savez(fh, **{DENSE_INPUT: dense[:smoke_rows], CATEGORICAL_INPUT: cats[:smoke_rows]},
                     prediction=prob[:smoke_rows].astype(np.float32), label=label[:smoke_rows])
    # A file has no commit of its own: it is named inside the attempt just committed.
    result["smoke_rows"] = storage.join(storage.resolve(output), SMOKE_ROWS)
    cm = result["candidate_metrics"]
    line = f"candidate AUC {cm['auc']:.4f} logloss {cm['logloss']:.4f} on {cm['rows']} held-out rows"
    if baseline:
        bm = result["baseline_metrics"]
        line += f"; production AUC {bm['auc']:.4f} logloss {bm['logloss']:.4f}"
    print(line, flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_merlin evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", nargs="+", required=True, help="extracted partitions whose eval/ slice is scored")
    p.add_argument("--candidate", required=True, help="candidate package (export output)")
    p.add_argument("--baseline", default=None, help="production version folder, if one exists")
    p.add_argument("--output", required=True,
                   help="where to publish evaluation.json and smoke.npz (held-out rows for deploy's smoke inference)")
    p.add_argument("--max-rows", type=int, default=None)
    a = p.parse_args(argv)
    return evaluate(a.eval, a.candidate, a.baseline or None, a.output, a.max_rows)
