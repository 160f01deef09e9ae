"""Vectorised codecs for the raw Criteo fields, over Arrow arrays.

Every raw value travels as text until validation has passed; these turn a column into numbers
(and back), failing with a `DecodeError` that names the source, the column and the rule broken.
A Python loop of int(x, 16) costs ~9 s per 1M values; these work on the Arrow buffers directly.
"""
from __future__ import annotations

import numpy as np

from .schema import LABEL

_HEX_LUT = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class DecodeError(ValueError):
    """A raw value does not follow the Criteo format."""


def encode_hex(values: np.ndarray) -> np.ndarray:
    """uint32 values -> (n, 8) uint8 ASCII of 8 lowercase hex digits."""
    v = values.astype(np.uint64)
    out = np.empty((len(v), 8), dtype=np.uint8)
    for k in range(8):
        out[:, k] = _HEX_CHARS[((v >> np.uint64(28 - 4 * k)) & np.uint64(0xF)).astype(np.intp)]
    return out


def decode_hex_column(arr, column: str = "?", source: str = "?") -> np.ndarray:
    """A pyarrow string array of 8-hex-digit values (or nulls / empties) -> int64, missing as -1."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        parts = [decode_hex_column(c, column, source) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    valid = np.ones(n, dtype=bool) if arr.null_count == 0 else ~np.asarray(arr.is_null())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=arr.offset + n + 1)[arr.offset:]
    lengths = np.diff(offsets)
    # An empty string is also a missing value (CSV readers differ in how they report it).
    valid &= lengths != 0
    bad = valid & (lengths != 8)
    out = np.full(n, -1, dtype=np.int64)
    if valid.any():
        data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
        starts = offsets[:-1][valid & ~bad]
        idx = starts[:, None] + np.arange(8, dtype=np.int64)[None, :]
        nibbles = _HEX_LUT[data[idx]].astype(np.int64)
        bad_digits = (nibbles < 0).any(axis=1)
        weights = np.int64(16) ** np.arange(7, -1, -1, dtype=np.int64)
        decoded = nibbles @ weights
        pos = np.flatnonzero(valid & ~bad)
        if bad_digits.any():
            bad[pos[bad_digits]] = True
        out[pos] = decoded
        out[bad] = -1
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DecodeError(
            f"{source}: column {column}: {int(bad.sum())} value(s) are not 8 lowercase hex digits "
            f"(first at row {first}: {arr[first].as_py()!r})"
        )
    return out


def parse_int_column(arr, column: str = "?", source: str = "?") -> np.ndarray:
    """A pyarrow string array of integers (or empties) -> float64 with NaN for missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    arr = pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    try:
        ints = pc.cast(arr, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DecodeError(f"{source}: column {column}: not an integer ({exc})") from exc
    return ints.to_numpy(zero_copy_only=False).astype(np.float64)


def decode_label(arr, source: str = "?") -> np.ndarray:
    """A pyarrow string array of click labels -> int8; anything but "0" or "1" is a DecodeError."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    ok = np.asarray(pc.fill_null(pc.is_in(arr, value_set=pa.array(["0", "1"])), False), dtype=bool)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise DecodeError(f"{source}: column {LABEL}: {len(bad)} value(s) are not 0 or 1 "
                          f"(first at row {int(bad[0])}: {arr[int(bad[0])].as_py()!r})")
    return np.asarray(pc.fill_null(pc.equal(arr, "1"), False), dtype=bool).astype(np.int8)
