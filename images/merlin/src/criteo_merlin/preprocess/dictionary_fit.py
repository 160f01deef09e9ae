"""Fitting the NVTabular workflow from the decoded files' dictionaries, without its row passes.

A decoded file keeps every column as (distinct values, row indices) per Arrow chunk
(criteo_merlin.preprocess.decoding), so a column's value counts are one `np.bincount` over its indices. From
those counts alone come both statistics the workflow needs:

- Categorify: the (value, count) frame NVTabular's own groupby would produce, handed to NVTabular's
  own `_write_uniques`, which sorts it, applies max_size / freq_threshold and writes the vocabulary
  files. Same vocabularies, same frequencies, same ids as `Workflow.fit`.
- Normalize: count, sum and sum of squares weighted by the counts, finished by NVTabular's own
  `_finalize_moments` (mean and std agree with `Workflow.fit` to float32 rounding of its sums).

Each statistic's inputs go through the operators above it in the graph (FillMissing, Clip, LogOp:
ops whose output row depends on that row's value alone), applied by NVTabular to the distinct
values. The rest is `Workflow.fit`'s own bookkeeping: each operator's `fit` is called on a small
head of the data (for what it derives from its input, never computed), then `fit_finalize`, and
the output dtypes are sampled on that head. The result is an ordinary fitted workflow:
Workflow.save / Workflow.load / Workflow.transform treat it as if Workflow.fit had run, which
tests/images/merlin/test_dictionary_fit.py checks against Workflow.fit itself.

Why: on 1M rows Workflow.fit took ~4 s on two cores (rebuilding pandas frames, running the graph,
dtype sampling), against ~0.2 s for the counts (bench/bench_preprocess.py).
"""
from __future__ import annotations

import numpy as np

from .decoding import DecodedFile
from .workflow import ops_above


class UnsupportedGraph(ValueError):
    """The workflow has a statistic this fit cannot compute from value counts (use engine nvt)."""


class ValueCounts:
    """Per column: every distinct value seen, and how many rows hold it."""

    def __init__(self, columns: list[str]):
        self.parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in columns}
        self._done: dict[str, tuple] = {}

    def add(self, dec: DecodedFile) -> None:
        self._done.clear()
        for c, parts in self.parts.items():
            for values, idx in dec.cols[c]:
                counts = np.bincount(idx, minlength=len(values))
                used = counts > 0
                parts.append((values[used], counts[used]))

    def column(self, c: str) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct values, int64 counts); NaN, if present, is one value, last."""
        if c in self._done:
            return self._done[c]
        parts = self.parts[c]
        if not parts:
            return np.empty(0), np.empty(0, dtype=np.int64)
        self._done[c] = _aggregate(np.concatenate([v for v, _ in parts]), np.concatenate([n for _, n in parts]))
        return self._done[c]


def _aggregate(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    # Hashing, then sorting only the distinct values: ~3x faster than np.unique's sort of every
    # chunk's values (8 chunks of a 900k-row file). NaNs are one value, sorted last.
    codes, uniq = pd.factorize(values, sort=False, use_na_sentinel=False)
    # Counts stay exact as float64 weights up to 2**53 rows.
    total = np.bincount(codes, weights=counts, minlength=len(uniq)).astype(np.int64)
    order = np.argsort(uniq, kind="stable")
    return np.asarray(uniq)[order], total[order]


def _elementwise_ops():
    from nvtabular import ops

    return (ops.FillMissing, ops.Clip, ops.LogOp)


def _ops_above(node) -> bool:
    """Whether operators sit above the statistic (else it reads the raw columns); each must make
    its output row from that row's value alone (see module doc)."""
    allowed = _elementwise_ops()
    above = ops_above(node)
    for op in above:
        if not isinstance(op, allowed):
            raise UnsupportedGraph(
                f"{type(node.op).__name__} on {node.input_columns.names} sits below {type(op).__name__}, "
                "whose output rows may depend on more than one value: fit this workflow with --engine nvt")
    return bool(above)


def _through_parents(transform, node, counts: ValueCounts, head) -> dict[str, tuple]:
    """Each input column's distinct values pushed through the operators above `node` by NVTabular,
    re-aggregated (an operator may map several values to one): {column: (values, counts)}."""
    import pandas as pd

    names = node.input_columns.names
    raw = {c: counts.column(c) for c in names}
    longest = max(1, max(len(v) for v, _ in raw.values()))
    # Pad every column to one length by repeating its own values (np.resize); only the first
    # len(values) rows of each column are read back.
    frame = pd.DataFrame({c: np.resize(v, longest).astype(head[c].dtype) if len(v) else
                          np.zeros(longest, dtype=head[c].dtype) for c, (v, _) in raw.items()})
    out = transform(frame, node.parents_with_dependencies)
    return {c: _aggregate(out[c].to_numpy()[: len(v)], n) if len(v) else (v, n) for c, (v, n) in raw.items()}


def _categorify_settings(op) -> None:
    """What Categorify.fit sets from a pandas-backed input before computing anything (nvtabular
    23.08, ops/categorify.py): Workflow.fit's operator state, compared in the tests."""
    from merlin.core.utils import device_mem_size
    from nvtabular.ops.categorify import parse_bytes

    op.on_host = False
    op.cat_cache = "host" if op.cat_cache == "device" else op.cat_cache
    op.search_sorted = False
    op.cardinality_memory_limit = parse_bytes(
        op.cardinality_memory_limit or int(device_mem_size(kind="total", cpu=True) * 0.125))


def _categorify_stats(op, columns: dict[str, tuple]) -> dict[str, str]:
    """Vocabulary files written by NVTabular's own `_write_uniques`, from (value, count) frames
    shaped as its groupby's output: {column: path}."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import pandas as pd
    from merlin.dag.selector import ColumnSelector
    from nvtabular.ops.categorify import _make_name, _write_uniques

    options = op._create_fit_options_from_columns(list(columns))
    base = os.path.join(options.out_path, options.stat_name)
    os.makedirs(base, exist_ok=True)

    def write(c: str) -> str:
        values, n = columns[c]
        frame = pd.DataFrame({c: values, _make_name(c, "size", sep=options.name_sep): n})
        return _write_uniques([frame], base, ColumnSelector([c]), options, cpu=True)

    # Two at a time: the parquet writes let go of the GIL; each column has files of its own.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(columns, pool.map(write, columns), strict=True))


def _normalize_stats(columns: dict[str, tuple]):
    """The frame Normalize.fit_finalize takes, from NVTabular's own `_finalize_moments`."""
    import pandas as pd
    from nvtabular.ops.moments import _finalize_moments

    count, total, squares = {}, {}, {}
    for c, (values, n) in columns.items():
        ok = ~np.isnan(values)
        v, w = values[ok].astype(np.float64), n[ok].astype(np.float64)
        count[c], total[c], squares[c] = int(w.sum()), float(w @ v), float(w @ (v * v))
    return _finalize_moments({"count": pd.DataFrame([count]), "sum": pd.DataFrame([total]),
                              "squaredsum": pd.DataFrame([squares])})


def fit(workflow, counts: ValueCounts, head) -> None:
    """Fit `workflow` (not yet fitted) from `counts`; `head` is a small typed pandas frame of the
    training rows (its first rows), used where Workflow.fit samples its input."""
    from merlin.dag import Graph
    from merlin.dag.executors import LocalExecutor
    from merlin.io import Dataset
    from nvtabular import ops
    from nvtabular.ops.stat_operator import StatOperator

    graph = workflow.graph
    dataset = Dataset(head, cpu=True)
    graph.clear_stats()
    graph.construct_schema(dataset.schema)
    local = LocalExecutor()

    def transform(frame, nodes):
        return local.transform(frame, nodes, capture_dtypes=True)

    for node in Graph.get_nodes_by_op_type([graph.output_node], StatOperator):
        if not isinstance(node.op, (ops.Categorify, ops.Normalize)):
            raise UnsupportedGraph(f"{type(node.op).__name__}: fit this workflow with --engine nvt")
        if _ops_above(node):
            columns = _through_parents(transform, node, counts, head)
        else:  # Categorify on the raw columns: their counts are the statistic's input
            columns = {c: counts.column(c) for c in node.input_columns.names}
        if isinstance(node.op, ops.Categorify):
            if any(len(group) > 1 for group in node.input_columns.grouped_names if isinstance(group, tuple)):
                raise UnsupportedGraph("Categorify over column groups: fit this workflow with --engine nvt")
            _categorify_settings(node.op)
            node.op.fit_finalize(_categorify_stats(node.op, columns))
        else:
            node.op.fit_finalize(_normalize_stats(columns))
        node.op.fitted = True
    # Workflow.fit ends by sampling the output dtypes (running the graph on a head of the data,
    # ~0.3 s here) for operators whose dtype is only known by running them (LambdaOp). The
    # operators this fit accepts declare theirs, so the schema is built from them; the spot check
    # compares every column's dtype with Workflow.transform's, and the tests with Workflow.fit's.
    graph.construct_schema(dataset.schema)
