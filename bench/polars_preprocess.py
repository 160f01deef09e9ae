"""The baseline bench_preprocess.py compares against: the project's encoding, hand-written in polars.

Reads a day's extracted (all-text) parquet, decodes it (label int8; I1..I13 integers, empty =
missing; C1..C26 8-hex-digit hashes, empty = missing = -1), and then either fits and transforms
(`--fit VOCAB`) or transforms with a saved vocabulary (`--vocab VOCAB`):

- C*: ids by descending frequency over the train split, from 3 on (NVTabular keeps 0-2 for
  padding, null and out-of-vocabulary; unseen values get 2), written as int64;
- I*: log(max(fill_null(x, 0), 0) + 1) in float32, then (x - mean) / std (sample std) as float64;
- each split written as one snappy parquet file.

Only ties in frequency may order differently from NVTabular's. Runs in its own environment
(.venv-bench, polars' own threads: all cores); prints one JSON line with the seconds and the
peak RSS.

    .venv-bench/bin/python bench/polars_preprocess.py --extracted DIR --output DIR (--fit V | --vocab V)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import polars as pl

CATS = [f"C{i}" for i in range(1, 27)]
INTS = [f"I{i}" for i in range(1, 14)]
SPLITS = ("train", "eval")
FIRST_ID, OOV_ID = 3, 2


def _present(c: str) -> pl.Expr:
    return pl.when(pl.col(c) != "").then(pl.col(c))


def decoded(path: str) -> pl.LazyFrame:
    return pl.scan_parquet(f"{path}/*.parquet").select(
        pl.col("label").cast(pl.Int8, strict=True),
        *[_present(c).str.to_integer(base=10, strict=True).cast(pl.Float64).alias(c) for c in INTS],
        *[_present(c).str.to_integer(base=16, strict=True).fill_null(-1).alias(c) for c in CATS],
    )


def logged(c: str) -> pl.Expr:
    return (pl.col(c).fill_nan(None).fill_null(0.0).clip(lower_bound=0.0).cast(pl.Float32) + 1.0).log()


def fit(train: pl.DataFrame) -> dict:
    queries = [train.lazy().group_by(c).len().sort(["len", c], descending=[True, False]) for c in CATS]
    vocab = {c: q[c] for c, q in zip(CATS, pl.collect_all(queries), strict=True)}
    moments = train.select(*[logged(c).mean().alias(f"{c}_mean") for c in INTS],
                           *[logged(c).std().alias(f"{c}_std") for c in INTS]).row(0, named=True)
    return {"vocab": vocab, "mean": {c: moments[f"{c}_mean"] for c in INTS},
            "std": {c: moments[f"{c}_std"] for c in INTS}}


def transform(frame: pl.DataFrame, model: dict) -> pl.DataFrame:
    cats = []
    for c in CATS:
        keys = model["vocab"][c]
        ids = pl.int_range(FIRST_ID, FIRST_ID + len(keys), eager=True, dtype=pl.Int64)
        cats.append(pl.col(c).replace_strict(keys, ids, default=OOV_ID, return_dtype=pl.Int64))
    conts = [((logged(c).cast(pl.Float64) - model["mean"][c]) / (model["std"][c] or 1.0)).alias(c) for c in INTS]
    return frame.select(*cats, *conts, pl.col("label"))


def save(model: dict, path: str) -> None:
    os.makedirs(path, exist_ok=True)
    for c, keys in model["vocab"].items():
        keys.to_frame().write_parquet(f"{path}/{c}.parquet")
    with open(f"{path}/moments.json", "w") as fh:
        json.dump({"mean": model["mean"], "std": model["std"]}, fh)


def load(path: str) -> dict:
    with open(f"{path}/moments.json") as fh:
        moments = json.load(fh)
    return {"vocab": {c: pl.read_parquet(f"{path}/{c}.parquet")[c] for c in CATS}, **moments}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extracted", required=True)
    p.add_argument("--output", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fit", help="fit on the train split and save the vocabulary here")
    g.add_argument("--vocab", help="transform with this saved vocabulary")
    a = p.parse_args()
    t0 = time.perf_counter()
    frames = dict(zip(SPLITS, pl.collect_all([decoded(f"{a.extracted}/{s}") for s in SPLITS]), strict=True))
    t1 = time.perf_counter()
    if a.fit:
        model = fit(frames["train"])
        save(model, a.fit)
    else:
        model = load(a.vocab)
    t2 = time.perf_counter()
    rows = 0
    for split, frame in frames.items():
        os.makedirs(f"{a.output}/{split}", exist_ok=True)
        transform(frame, model).write_parquet(f"{a.output}/{split}/part_0.parquet", compression="snappy")
        rows += frame.height
    t3 = time.perf_counter()
    print(json.dumps({"rows": rows, "decode_s": t1 - t0, "fit_s": t2 - t1, "transform_s": t3 - t2,
                      "total_s": t3 - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
