"""The fitted workflow as lookup tables: what Triton serves with, and the fast transform.

`serving_tables` derives the exact per-column lookups by running the fitted workflow itself over
every vocabulary value (plus a missing and an unseen one) and reads the Normalize statistics; the
tables go into the workflow folder (`serving/`) and every model version, where criteo_serving
applies them with numpy. `CompiledWorkflow` replays the same lookups to transform whole decoded
files fast; `SpotCheck` re-runs NVTabular's own Workflow.transform on a sample of every file (one call
per run) and fails on any difference.
"""
from __future__ import annotations

import numpy as np

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

from .decoding import DecodedFile
from .workflow import find_op

# Rows per run re-checked through NVTabular's own Workflow.transform (spread over every file,
# at least 16 of each).
CHECK_ROWS = 4096


def serving_tables(workflow, extra=None) -> tuple[dict, dict, object]:
    """Derive the exact lookup tables Triton needs, by running the fitted workflow itself.

    Category ids come from transforming each column's vocabulary (plus a missing and an unseen
    value) through the workflow, so the serving tables cannot drift from NVTabular's encoding.
    `extra` (a typed frame, e.g. SpotCheck's samples) rides along in the same Workflow.transform
    call, whose fixed cost is most of this function's; its transformed rows are returned third.
    """
    import pandas as pd
    from nvtabular import ops

    cat_op = find_op(workflow, ops.Categorify)
    vocab = {}
    for c in CAT_COLUMNS:
        uniq = pd.read_parquet(cat_op.categories[c], columns=[c])[c].dropna().astype(np.int64).to_numpy()
        vocab[c] = np.unique(np.concatenate([uniq, np.array([-1, 2**40], dtype=np.int64)]))
    longest = max(len(v) for v in vocab.values())
    frame = {c: np.resize(vocab[c], longest) for c in CAT_COLUMNS}
    for c in INT_COLUMNS:
        frame[c] = np.zeros(longest)
    frame[LABEL] = np.zeros(longest, dtype=np.int8)
    frame = pd.DataFrame(frame)
    if extra is not None and len(extra):
        frame = pd.concat([frame, extra[list(frame.columns)]], ignore_index=True)
    # Workflow.transform on a pandas frame runs the same operators (LocalExecutor) without dask.
    out = workflow.transform(frame)
    tables, oov = {}, {}
    for c in CAT_COLUMNS:
        keys = vocab[c]
        ids = out[c].to_numpy()[: len(keys)].astype(np.int64)
        oov[c] = int(ids[keys == 2**40][0])
        keep = keys != 2**40
        tables[f"{c}_keys"], tables[f"{c}_ids"] = keys[keep], ids[keep]
    norm_op = find_op(workflow, ops.Normalize)
    cont = {
        "fill_value": 0.0, "clip_min": 0.0, "log": "log1p",
        "mean": {c: float(norm_op.means[c]) for c in INT_COLUMNS},
        "std": {c: float(norm_op.stds[c]) for c in INT_COLUMNS},
        "oov_ids": oov,
    }
    extra_out = out.iloc[longest:].reset_index(drop=True) if extra is not None and len(extra) else None
    return tables, cont, extra_out


class CompiledWorkflow:
    """The fitted workflow as per-column lookups, for transforming decoded files fast.

    Built only from `serving_tables` (which runs the workflow itself over every vocabulary value,
    missing and unseen included) and from the Normalize statistics, replaying NVTabular's own
    arithmetic and dtypes (FillMissing -> Clip -> LogOp in float32 -> Normalize -> float64).
    Every file's transform is also spot-checked against `workflow.transform` (SpotCheck).
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

    def encode(self, dec: DecodedFile) -> dict[str, dict | None]:
        """Every dictionary of the file encoded once: per column, {id(dictionary): encoded values}
        (None: the column passes through)."""
        luts: dict[str, dict | None] = {}
        for c in CAT_COLUMNS:
            luts[c] = {id(d): self.encode_cat(c, d) for d, _ in dec.cols[c]}
        for c in INT_COLUMNS:
            luts[c] = {id(d): self.encode_cont(c, d) for d, _ in dec.cols[c]}
        luts[LABEL] = None
        return luts

    @staticmethod
    def rows(dec: DecodedFile, luts: dict, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Output rows [start, stop) as numpy columns: each row's encoded dictionary value."""
        return {c: dec.values(c, lut, start, stop) for c, lut in luts.items()}


class SpotCheck:
    """Rows of every file, compared with NVTabular's own Workflow.transform, in one call per run.

    Files decoded before the transform are `sample`d first; their rows ride along in the serving
    tables' Workflow.transform call (`frame`, then `expect`). Each file's sampled rows go through
    the fast path when the file is transformed (`compare`, its encoded dictionaries gathered at
    those rows) and are compared at once. Files sampled only then (decoded past the cache budget)
    are checked by one more call in `verify`. All before anything is published; a difference fails
    the step, naming the file, column and row.
    """

    def __init__(self, workflow, files: int, rows: int = CHECK_ROWS):
        self.workflow = workflow
        self.per_file = max(16, rows // max(files, 1))  # the first rows and rows spread over the file
        self.pending: list[tuple[str, np.ndarray, object]] = []   # sampled, awaiting NVTabular's rows
        self.expected: dict[str, tuple[np.ndarray, object]] = {}  # source -> (rows, NVTabular's frame)
        self.late: list[tuple[str, np.ndarray, object, dict]] = []
        self.checked = 0

    def _rows(self, n: int) -> np.ndarray:
        half = self.per_file // 2
        spread = np.linspace(0, n - 1, min(n, half)).astype(np.int64)
        return np.unique(np.concatenate([np.arange(min(n, half)), spread]))

    def sample(self, dec: DecodedFile, source: str) -> None:
        if dec.rows:
            rows = self._rows(dec.rows)
            self.pending.append((source, rows, dec.take(rows)))

    def frame(self):
        """The sampled rows of every file so far (typed, as decoded), for one Workflow.transform."""
        import pandas as pd

        return pd.concat([f for _, _, f in self.pending], ignore_index=True) if self.pending else None

    def expect(self, transformed) -> None:
        """NVTabular's output for `frame()`'s rows, in the same order."""
        at = 0
        for source, rows, _ in self.pending:
            self.expected[source] = (rows, transformed.iloc[at:at + len(rows)])
            at += len(rows)
        self.pending = []

    def compare(self, dec: DecodedFile, luts: dict, source: str) -> None:
        """The file's sampled rows through the fast path (its encoded dictionaries, `luts`,
        gathered as CompiledWorkflow.rows does) against NVTabular's."""
        if source in self.expected:
            rows, ref = self.expected.pop(source)
        elif dec.rows:
            rows, ref = self._rows(dec.rows), None
        else:
            return
        got = {c: dec.gather(c, rows, lut) for c, lut in luts.items()}
        if ref is not None:
            self._same(source, rows, got, ref)
        else:
            self.late.append((source, rows, dec.take(rows), got))

    def verify(self) -> int:
        """Check the files sampled late (one Workflow.transform); the number of rows checked in all."""
        import pandas as pd

        if self.late:
            ref = self.workflow.transform(pd.concat([frame for _, _, frame, _ in self.late], ignore_index=True))
            at = 0
            for source, rows, _, got in self.late:
                self._same(source, rows, got, ref.iloc[at:at + len(rows)])
                at += len(rows)
            self.late = []
        return self.checked

    def _same(self, source: str, rows: np.ndarray, got: dict, ref) -> None:
        for c in [*CAT_COLUMNS, *INT_COLUMNS, LABEL]:
            want, mine = ref[c].to_numpy(), got[c]
            floats = mine.dtype.kind == "f"
            if mine.dtype == want.dtype and np.array_equal(mine, want, equal_nan=floats):
                continue
            bad = 0
            if mine.dtype == want.dtype:
                equal = (mine == want) | (np.isnan(mine) & np.isnan(want)) if floats else mine == want
                bad = int(np.flatnonzero(~equal)[0])
            raise RuntimeError(
                f"{source}: column {c}: the fast transform differs from Workflow.transform at row "
                f"{int(rows[bad])} (fast {mine[bad]!r} {mine.dtype}, NVTabular {want[bad]!r} {want.dtype})")
        self.checked += len(rows)
