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
from .workflow import find_node, find_op, ops_above

# Rows per run re-checked through NVTabular's own Workflow.transform (spread over every file,
# at least 16 of each).
CHECK_ROWS = 4096


def serving_tables(workflow) -> tuple[dict, dict]:
    """Derive the exact lookup tables Triton needs, by running the fitted workflow's own operators.

    Category ids come from NVTabular's Categorify operator encoding each column's vocabulary (plus
    a missing and an unseen value), so the serving tables cannot drift from NVTabular's encoding.
    Each column is encoded at its own length: vocabularies differ in size by orders of magnitude
    (4 to 50k values in the demo's data, 3 to 10M in Criteo's), and one rectangular frame through
    Workflow.transform paid for the longest in every column (3.5x the rows here).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    import pyarrow.parquet as pq
    from merlin.dag.selector import ColumnSelector
    from nvtabular import ops

    cat_op = _raw_categorify(workflow)

    def encoded(c: str) -> tuple[np.ndarray, np.ndarray]:
        uniq = pq.read_table(cat_op.categories[c], columns=[c]).column(c).drop_null().to_numpy().astype(np.int64)
        keys = np.unique(np.concatenate([uniq, np.array([-1, 2**40], dtype=np.int64)]))
        return keys, cat_op.transform(ColumnSelector([c]), pd.DataFrame({c: keys}))[c].to_numpy().astype(np.int64)

    tables, oov = {}, {}
    # Two at a time: the vocabulary reads and parts of pandas' merge let go of the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for c, (keys, ids) in zip(CAT_COLUMNS, pool.map(encoded, CAT_COLUMNS), strict=True):
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
    return tables, cont


def _raw_categorify(workflow):
    """The workflow's Categorify operator, checked to encode the raw C1..C26 columns: the serving
    tables map a raw value to its id, so nothing may transform the values before Categorify."""
    from nvtabular import ops

    node = find_node(workflow, ops.Categorify)
    above = [type(op).__name__ for op in ops_above(node)]
    if above or sorted(node.input_columns.names) != sorted(CAT_COLUMNS):
        raise ValueError(f"serving tables need Categorify on the raw {CAT_COLUMNS[0]}..{CAT_COLUMNS[-1]}; "
                         f"this workflow's reads {node.input_columns.names} through {above or 'nothing'}")
    return node.op


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

    When a file is transformed, `sample` keeps its first rows and rows spread over it, decoded and
    as the fast path encoded them (its encoded dictionaries gathered at those rows, as
    CompiledWorkflow.rows does). `verify` runs one Workflow.transform over the rows of every file,
    while the last output files are still being written, and fails on the first difference,
    naming the file, column and row. The step publishes nothing before it passes.
    """

    def __init__(self, workflow, files: int, rows: int = CHECK_ROWS):
        self.workflow = workflow
        self.per_file = max(16, rows // max(files, 1))  # the first rows and rows spread over the file
        self.samples: list[tuple[str, np.ndarray, object, dict]] = []  # source, rows, decoded, fast
        self.checked = 0

    def _rows(self, n: int) -> np.ndarray:
        half = self.per_file // 2
        spread = np.linspace(0, n - 1, min(n, half)).astype(np.int64)
        return np.unique(np.concatenate([np.arange(min(n, half)), spread]))

    def sample(self, dec: DecodedFile, luts: dict, source: str) -> None:
        """Keep rows of `dec`, decoded and through the fast path (`luts`: CompiledWorkflow.encode)."""
        if dec.rows:
            rows = self._rows(dec.rows)
            fast = {c: dec.gather(c, rows, lut) for c, lut in luts.items()}
            self.samples.append((source, rows, dec.take(rows), fast))

    def verify(self) -> int:
        """Compare every sample with Workflow.transform (one call); the number of rows checked."""
        import pandas as pd

        if self.samples:
            ref = self.workflow.transform(pd.concat([frame for _, _, frame, _ in self.samples], ignore_index=True))
            at = 0
            for source, rows, _, got in self.samples:
                self._same(source, rows, got, ref.iloc[at:at + len(rows)])
                at += len(rows)
            self.samples = []
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
