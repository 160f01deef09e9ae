"""The NVTabular workflow of the Criteo features: built, fitted over decoded files, inspected.

Categorify on C1..C26 (the decoded int64 hashes, missing = -1, its own category) and
FillMissing -> Clip(0) -> LogOp -> Normalize on I1..I13. Categorify over integers is ~3x faster
than over Python strings (shared/DESIGN.md), hence the decoding first.
"""
from __future__ import annotations

import os

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

from .decoding import Decoder, typed_meta

# Rows of the first file put into a partition of their own when fitting: merlin samples the
# first partition's head (through the whole graph) to learn output dtypes, so a small first
# partition makes that sample cheap instead of a second full pass over a whole file.
HEAD_ROWS = 1024


class _FramePiece:
    """dask `from_map` callable: (path, start, stop) -> typed pandas frame of those rows."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder

    def __call__(self, piece):
        path, start, stop = piece
        return self.decoder.load(path).frame(start, stop)


def fit_dataset(files: list[str], decoder: Decoder):
    """A lazy nvt.Dataset over the decoded training files: one partition per file."""
    import dask.dataframe as dd
    import nvtabular as nvt
    import pyarrow.parquet as pq
    from dask.base import tokenize

    pieces = []
    for k, f in enumerate(files):
        n = pq.ParquetFile(f).metadata.num_rows
        if k == 0 and n > 2 * HEAD_ROWS:
            pieces += [(f, 0, HEAD_ROWS), (f, HEAD_ROWS, n)]
        else:
            pieces.append((f, 0, n))
    ddf = dd.from_map(_FramePiece(decoder), pieces, meta=typed_meta(), enforce_metadata=False,
                      label="decode-extracted", token=tokenize(pieces, [os.stat(f).st_mtime for f in files]))
    return nvt.Dataset(ddf, cpu=True)


def build_workflow(max_vocab: int = 0, freq_threshold: int = 0, out_path: str | None = None):
    import nvtabular as nvt
    from nvtabular import ops

    # out_path: Categorify writes its vocabularies to ./categories by default, i.e. wherever the
    # process happens to run; keep them in the step's scratch folder instead.
    cats = CAT_COLUMNS >> ops.Categorify(freq_threshold=freq_threshold, max_size=max_vocab, out_path=out_path)
    conts = INT_COLUMNS >> ops.FillMissing(fill_val=0) >> ops.Clip(min_value=0) >> ops.LogOp() >> ops.Normalize()
    return nvt.Workflow(cats + conts + [LABEL])


def find_node(workflow, op_type):
    """The first node of the fitted workflow's graph whose operator is an `op_type`."""
    seen, stack = [], [workflow.output_node]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.append(node)
        if isinstance(node.op, op_type):
            return node
        stack.extend(node.parents_with_dependencies)
    raise LookupError(f"the workflow has no {op_type.__name__} operator")


def find_op(workflow, op_type):
    """The first operator of `op_type` in the fitted workflow's graph."""
    return find_node(workflow, op_type).op


def ops_above(node) -> list:
    """The operators above `node` in its graph (column selections aside), nearest first."""
    found, seen, stack = [], set(), list(node.parents_with_dependencies)
    while stack:
        parent = stack.pop()
        if id(parent) in seen:
            continue
        seen.add(id(parent))
        if parent.op is not None and type(parent.op).__name__ != "SelectionOp":
            found.append(parent.op)
        stack.extend(parent.parents_with_dependencies)
    return found


def embedding_sizes(workflow) -> dict[str, int]:
    from nvtabular import ops

    sizes = ops.get_embedding_sizes(workflow)
    return {c: int(sizes[c][0]) for c in CAT_COLUMNS}
