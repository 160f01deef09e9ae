"""Synthetic Criteo Terabyte days: exact file format, heavy-tailed values, a learnable click signal.

Shape of the data, per column, mirrors what is published about the real logs: integer counts with
long tails and 0-75% missing, categoricals whose vocabularies range from a handful to ~10^5 values
drawn Zipf-like, and a positive rate of a few to ~25 percent.

The click function is a logistic model over (a) per-value effects of a few categoricals, (b) log
counts, (c) one categorical x categorical and one categorical x count interaction, so a DCN has
something to learn beyond a bias. A drift switch changes, from a chosen day on, both the feature
distributions (count scale, category popularity) and the click function.

    python -m criteo_merlin synth --out DIR --days 0-4 --rows 200000 [--gz] [--drift-from-day 3]
"""
from __future__ import annotations

import argparse
import glob
import gzip
import os
import shutil
from dataclasses import dataclass

import numpy as np

from criteo_kernel import landing, tsv
from criteo_kernel.codecs import encode_hex
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, day_file_name

# Per-column missing rates and vocabulary sizes, in the spirit of the published Criteo statistics.
INT_MISSING = [0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.76, 0.22]
INT_SCALE = [3.0, 100.0, 20.0, 7.0, 15000.0, 100.0, 15.0, 12.0, 100.0, 0.6, 3.0, 1.0, 8.0]
CAT_VOCAB = [1400, 550, 80000, 40000, 300, 24, 12000, 630, 3, 50000, 5500, 70000, 3200, 27,
             14000, 90000, 10, 5600, 2100, 4, 80000, 17, 15, 60000, 100, 45000]
CAT_MISSING = [0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.03, 0.0, 0.03, 0.0, 0.0,
               0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44]
CAT_ZIPF = 1.15
# Columns whose values carry click signal (index into CAT_COLUMNS) and its strength.
SIGNAL_CATS = {0: 0.9, 4: 1.0, 6: 0.7, 13: 0.8, 16: 0.9, 21: 0.6, 23: 0.5}
SIGNAL_INTS = {0: 0.35, 2: -0.25, 5: 0.2, 7: 0.3, 10: -0.3}
CROSS_CATS = (4, 13)  # a categorical x categorical interaction


@dataclass(frozen=True)
class World:
    """Everything that is constant across days unless drift switches it."""

    seed: int
    drifted: bool

    def rng(self, *salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *salt])


def _zipf_indices(rng: np.random.Generator, vocab: int, n: int) -> np.ndarray:
    # Inverse-CDF sampling of a truncated Zipf law: cheap for vocabularies of any size.
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -CAT_ZIPF)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n)), vocab - 1)


def _hash_table(world: World, col: int, vocab: int) -> np.ndarray:
    # Fixed across days and drift: the same category keeps the same 32-bit hash.
    rng = np.random.default_rng([world.seed, 1000 + col])
    return rng.choice(np.uint64(2**32), size=vocab, replace=False).astype(np.uint32) if vocab < 2**20 else \
        rng.integers(0, 2**32, size=vocab, dtype=np.uint64).astype(np.uint32)


def generate_day(day: int, rows: int, seed: int = 7, drift_from_day: int | None = None):
    """Return (label, ints[rows, 13] float with NaN, cat_hashes[rows, 26] int64 with -1) for one day."""
    drifted = drift_from_day is not None and day >= drift_from_day
    world = World(seed, drifted)
    rng = world.rng(day)
    phase = 1 if drifted else 0

    ints = np.empty((rows, len(INT_COLUMNS)), dtype=np.float64)
    for j, (miss, scale) in enumerate(zip(INT_MISSING, INT_SCALE, strict=True)):
        s = scale * (3.0 if drifted and j % 2 == 0 else 1.0)
        vals = np.floor(rng.lognormal(mean=np.log(s), sigma=1.2, size=rows) * rng.random(rows) ** 2)
        if j == 1:  # I2 carries the small negative values seen in the real logs
            neg = rng.random(rows) < 0.05
            vals[neg] = -rng.integers(1, 3, size=int(neg.sum()))
        vals[rng.random(rows) < miss] = np.nan
        ints[:, j] = vals

    cat_idx = np.empty((rows, len(CAT_COLUMNS)), dtype=np.int64)
    cats = np.empty((rows, len(CAT_COLUMNS)), dtype=np.int64)
    for j, (vocab, miss) in enumerate(zip(CAT_VOCAB, CAT_MISSING, strict=True)):
        idx = _zipf_indices(rng, vocab, rows)
        if drifted:
            # Popularity shifts: a different set of values becomes frequent.
            idx = (idx * 7919 + 13) % vocab
        cat_idx[:, j] = idx
        hashes = _hash_table(world, j, vocab)[idx].astype(np.int64)
        hashes[rng.random(rows) < miss] = -1
        cats[:, j] = hashes

    logit = np.full(rows, -2.2)
    for j, strength in SIGNAL_CATS.items():
        # Effects are a fixed function of the value; drift re-draws them for half of the columns.
        eff_rng = np.random.default_rng([seed, 2000 + j, phase if j % 2 == 0 else 0])
        effects = eff_rng.normal(0.0, strength, size=CAT_VOCAB[j])
        contrib = effects[cat_idx[:, j]]
        contrib[cats[:, j] < 0] = 0.0
        logit += contrib
    for j, w in SIGNAL_INTS.items():
        x = np.log1p(np.clip(np.nan_to_num(ints[:, j], nan=0.0), 0, None))
        logit += (w * (-1 if drifted and j == 0 else 1)) * (x - 1.5)
    a, b = CROSS_CATS
    cross_rng = np.random.default_rng([seed, 3000, phase])
    cross = cross_rng.normal(0.0, 0.8, size=(CAT_VOCAB[a], CAT_VOCAB[b]))
    logit += cross[cat_idx[:, a], cat_idx[:, b]]
    logit += 0.4 * (cat_idx[:, 8] == 1) * np.log1p(np.clip(np.nan_to_num(ints[:, 4]), 0, None)) / 5
    label = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    return label, ints, cats


def day_table(label, ints, cats):
    """Build the all-text Arrow table of a raw day (empty string = missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols, names = [pa.array(label.astype(np.int64)).cast(pa.string())], ["label"]
    for j, name in enumerate(INT_COLUMNS):
        v = ints[:, j]
        arr = pa.array(np.nan_to_num(v, nan=0).astype(np.int64), mask=np.isnan(v)).cast(pa.string())
        cols.append(pc.fill_null(arr, ""))
        names.append(name)
    n = len(label)
    offsets = pa.py_buffer(np.arange(0, 8 * n + 1, 8, dtype=np.int32).tobytes())
    for j, name in enumerate(CAT_COLUMNS):
        h = cats[:, j]
        data = pa.py_buffer(encode_hex(np.where(h < 0, 0, h)).tobytes())
        arr = pa.Array.from_buffers(pa.string(), n, [None, offsets, data])
        cols.append(pc.if_else(pa.array(h < 0), pa.scalar("", pa.string()), arr))
        names.append(name)
    return pa.Table.from_arrays(cols, names=names)


def write_day(path: str, table, gz: bool) -> None:
    """Write TSV, no header, no quoting; atomically (temp file, then rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    if gz:
        with gzip.open(tmp, "wb", compresslevel=1) as fh:
            tsv.write_table(table, fh)
    else:
        tsv.write_table(table, tmp)
    os.replace(tmp, path)


def parse_days(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_merlin synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write day_N files into")
    p.add_argument("--days", default="0-2", help="days to write, e.g. 0-4 or 0,3,5")
    p.add_argument("--rows", type=int, default=100_000, help="rows per day")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--gz", action="store_true", help="write day_N.gz instead of day_N")
    p.add_argument("--drift-from-day", type=int, default=None,
                   help="from this day on, feature distributions and the click function shift")
    p.add_argument("--chunk-rows", type=int, default=500_000)
    args = p.parse_args(argv)

    os.makedirs(args.out, exist_ok=True)
    written = []
    for day in parse_days(args.days):
        path = os.path.join(args.out, day_file_name(day, args.gz))
        # A killed earlier attempt (an evicted pod) leaves its scratch behind: the retry clears it.
        for stale in glob.glob(glob.escape(path) + ".parts-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir = f"{path}.parts-{os.getpid()}"
        os.makedirs(tmp_dir, exist_ok=True)
        # Chunked so that a large synthetic day never needs all rows in memory at once.
        parts, positives = [], 0
        for k, start in enumerate(range(0, args.rows, args.chunk_rows)):
            n = min(args.chunk_rows, args.rows - start)
            drifted = args.drift_from_day is not None and day >= args.drift_from_day
            # The rng salt is per (day, chunk); drift is decided by the real day number.
            label, ints, cats = generate_day(day * 1000 + k, n, args.seed, 0 if drifted else None)
            positives += int(label.sum())
            part = os.path.join(tmp_dir, f"{k:05d}")
            write_day(part, day_table(label, ints, cats), args.gz)
            parts.append(part)
        with open(f"{path}.tmp", "wb") as out:
            for part in parts:  # gzip members concatenate into one valid gzip stream
                with open(part, "rb") as fh:
                    shutil.copyfileobj(fh, out)
        os.replace(f"{path}.tmp", path)
        shutil.rmtree(tmp_dir)
        # the landing contract's last step: the day is complete (criteo_kernel.landing)
        landing.write_manifest(path, landing.Manifest(rows=args.rows, bytes=os.path.getsize(path),
                                                      sha256=landing.file_sha256(path)))
        written.append({"day": day, "path": path, "rows": args.rows, "ctr": positives / max(args.rows, 1)})
        print(f"wrote {path}: {args.rows} rows, CTR {positives / max(args.rows, 1):.3f}", flush=True)
    return {"days": written}
