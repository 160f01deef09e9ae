"""The fitted workflow as lookup tables: what Triton serves with, and the fast transform.

`serving_tables` derives the exact per-column lookups by running the fitted workflow itself over
every vocabulary value (plus a missing and an unseen one) and reads the Normalize statistics; the
tables go into the workflow folder (`serving/`) and every model version, where criteo_serving
applies them with numpy. `CompiledWorkflow` replays the same lookups to transform whole decoded
files fast; `check_rows` re-runs NVTabular's own Workflow.transform on a sample of every file and
fails on any difference.
"""
from __future__ import annotations

import numpy as np

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

from .decoding import DecodedFile
from .workflow import find_op

# Rows per file that are re-checked through NVTabular's own Workflow.transform.
CHECK_ROWS = 1024


def serving_tables(workflow) -> tuple[dict, dict]:
    """Derive the exact lookup tables Triton needs, by running the fitted workflow itself.

    Category ids come from transforming each column's vocabulary (plus a missing and an unseen
    value) through the workflow, so the serving tables cannot drift from NVTabular's encoding.
    """
    import pandas as pd
    from nvtabular import ops

    cat_op = find_op(workflow, ops.Categorify)
    norm_op = find_op(workflow, ops.Normalize)
    vocab = {}
    for c in CAT_COLUMNS:
        uniq = pd.read_parquet(cat_op.categories[c], columns=[c])[c].dropna().astype(np.int64).to_numpy()
        vocab[c] = np.unique(np.concatenate([uniq, np.array([-1, 2**40], dtype=np.int64)]))
    longest = max(len(v) for v in vocab.values())
    frame = {c: np.resize(vocab[c], longest) for c in CAT_COLUMNS}
    for c in INT_COLUMNS:
        frame[c] = np.zeros(longest)
    frame[LABEL] = np.zeros(longest, dtype=np.int8)
    # Workflow.transform on a pandas frame runs the same operators (LocalExecutor) without dask.
    out = workflow.transform(pd.DataFrame(frame))
    tables, oov = {}, {}
    for c in CAT_COLUMNS:
        keys = vocab[c]
        ids = out[c].to_numpy()[: len(keys)].astype(np.int64)
        oov[c] = int(ids[keys == 2**40][0])
        keep = keys != 2**40
        tables[f"{c}_keys"], tables[f"{c}_ids"] = keys[keep], ids[keep]
    cont = {
        "fill_value": 0.0, "clip_min": 0.0, "log": "log1p",
        "mean": {c: float(norm_op.means[c]) for c in INT_COLUMNS},
        "std": {c: float(norm_op.stds[c]) for c in INT_COLUMNS},
        "oov_ids": oov,
    }
    return tables, cont


class CompiledWorkflow:
    """The fitted workflow as per-column lookups, for transforming decoded files fast.

    Built only from `serving_tables` (which runs the workflow itself over every vocabulary value,
    missing and unseen included) and from the Normalize statistics, replaying NVTabular's own
    arithmetic and dtypes (FillMissing -> Clip -> LogOp in float32 -> Normalize -> float64).
    Every file's transform is also spot-checked against `workflow.transform` (see _check_rows).
    """

    def __init__(self, workflow, tables: dict, cont: dict):
        import pandas as pd
        from nvtabular import ops

        self.workflow = workflow
        norm_op = find_op(workflow, ops.Normalize)
        log_op = find_op(workflow, ops.LogOp)
        self.log_dtype = np.dtype(log_op.output_dtype)
        self.out_dtype = np.dtype(norm_op.output_dtype)
        self.means, self.stds = dict(norm_op.means), dict(norm_op.stds)
        self.fill = float(cont["fill_value"])
        self.clip_min = float(cont["clip_min"])
        self.index = {c: pd.Index(tables[f"{c}_keys"]) for c in CAT_COLUMNS}
        self.ids = {c: np.asarray(tables[f"{c}_ids"], dtype=np.int64) for c in CAT_COLUMNS}
        self.oov = {c: np.int64(cont["oov_ids"][c]) for c in CAT_COLUMNS}
        out = workflow.output_schema
        self.cat_dtype = {c: np.dtype(out[c].dtype.to_numpy) for c in CAT_COLUMNS}

    def encode_cat(self, column: str, values: np.ndarray) -> np.ndarray:
        pos = self.index[column].get_indexer(values)
        ids = np.where(pos >= 0, self.ids[column][pos], self.oov[column])
        return ids.astype(self.cat_dtype[column], copy=False)

    def encode_cont(self, column: str, values: np.ndarray) -> np.ndarray:
        # Same operations, in the same dtypes, as the NVTabular ops on a pandas frame.
        v = np.where(np.isnan(values), self.fill, values)
        v[v < self.clip_min] = self.clip_min
        v = np.log(v.astype(self.log_dtype) + 1)
        mean, std = self.means[column], self.stds[column]
        v = (v - mean) / std if std > 0 else v - mean
        return v.astype(self.out_dtype)

    def transform_file(self, dec: DecodedFile) -> dict[str, np.ndarray]:
        """Encode every column's dictionary, then gather rows: output columns as numpy arrays."""
        out = {}
        for c in CAT_COLUMNS:
            lut = {id(d): self.encode_cat(c, d) for d, _ in dec.cols[c]}
            out[c] = dec.values(c, lut)
        for c in INT_COLUMNS:
            lut = {id(d): self.encode_cont(c, d) for d, _ in dec.cols[c]}
            out[c] = dec.values(c, lut)
        out[LABEL] = dec.values(LABEL)
        return out


def check_rows(workflow, dec: DecodedFile, out: dict, source: str) -> int:
    """Re-run NVTabular's Workflow.transform on a sample of rows; the fast path must match exactly."""
    n = dec.rows
    if n == 0:
        return 0
    rows = np.unique(np.concatenate([np.arange(min(n, CHECK_ROWS // 2)),
                                     np.linspace(0, n - 1, min(n, CHECK_ROWS // 2)).astype(np.int64)]))
    ref = workflow.transform(dec.take(rows))
    for c in [*CAT_COLUMNS, *INT_COLUMNS, LABEL]:
        got, want = out[c][rows], ref[c].to_numpy()
        if got.dtype != want.dtype or not np.array_equal(got, want, equal_nan=got.dtype.kind == "f"):
            raise RuntimeError(f"{source}: column {c}: fast transform differs from Workflow.transform")
    return len(rows)
