"""DCN training throughput against this machine's fp32 matrix-multiply bound, in one process.

(a) The bound: the best GFLOP/s of large square fp32 torch.mm (N x N by N x N, 2 N^3 FLOPs) with
    the threads the training runs with, divided by the model's FLOPs per training sample, counted
    analytically from the architecture (d = 13 + 26 * embedding_dim, hidden sizes h_1..h_k, L cross
    layers):

        matmul   6 * (d*h_1 + h_1*h_2 + ... + h_{k-1}*h_k + (d + h_k) * 1)
                 (2 FLOPs per multiply-add; forward, gradient of the input, gradient of the weight)
        cross    3 * L * 5d   (per layer and sample: x.w 2d, x0*s + b + x 3d; backward twice that)

    MLP 1024x1024 (d = 429): 8,935,950 + 38,610 = 8.97 MFLOP per sample. Embedding gathers, the
    element-wise ReLU/dropout, the loss and the optimizers count 0: a step can only reach the bound
    if everything but the products is free.
(b) Training samples/s (forward, backward, SparseAdam + Adam; random ids with the synthetic data's
    vocabularies, batch 4096) of
      A  the reference: the plain modules (nn.ReLU, nn.Dropout with torch.bernoulli_), for-loop Adam:
         the training step as it was before the fast path (criteo_merlin.train.dcn.DCN.forward_reference);
      B  the fp32 step train runs (DCN's fast path: closed-form cross stack, fused Linear+ReLU+dropout,
         numpy-drawn masks, x0 padded to 432 columns; fused Adam);
      C  B under bf16 autocast (train --precision bf16).
    Alternated A B C, A B C, ... over rounds after warm-up, all from the same weights; a GEMM
    measure opens each round, and a variant's fraction of the bound is the median over rounds of its
    rate over the bound measured just before (the machine is shared: load moves both alike).
(c) With --auc: synthesises the demo's days (scripts/demo.py: 3 days of --auc-rows rows; synth,
    extract, preprocess in-process as bench/bench_preprocess.py does), trains fp32 and bf16 from
    scratch on them (1 epoch, batch 4096, lr 0.001, the demo's architecture) and prints the held-out
    AUC (the days' eval split) of both and their difference.

The last line: `bench_train: ratio <B's samples/s over the bound> (...)`.

    PYTHONPATH=images/kernel/src:images/merlin/src .venv-steps/bin/python bench/bench_train.py \
        [--rounds 5] [--steps 3] [--threads 2] [--bf16 full|short|off] [--auc [--auc-rows 100000]]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from criteo_merlin.ingest.synth import CAT_VOCAB
from criteo_merlin.train.dcn import DCN, DCNConfig


def flops_per_sample(cfg: DCNConfig) -> float:
    """Training FLOPs per sample (forward + backward), the formula of the module docstring."""
    d = cfg.num_dense + len(cfg.vocab_sizes) * cfg.embedding_dim
    widths = [d, *cfg.mlp_dims]
    macs = sum(a * b for a, b in zip(widths, widths[1:], strict=False)) + (d + widths[-1])
    return 6.0 * macs + 3.0 * cfg.num_cross_layers * 5 * d


def gemm_gflops(n: int = 2048, reps: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n by n x n torch.mm."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


class Variant:
    def __init__(self, name: str, cfg: DCNConfig, reference: bool, precision: str):
        torch.manual_seed(0)
        self.name, self.precision = name, precision
        self.model = DCN(cfg).train()
        self.model.fast_train = not reference
        params = [p for n, p in self.model.named_parameters() if n != "embedding.weight"]
        self.opt_s = torch.optim.SparseAdam([self.model.embedding.weight], lr=1e-3)
        # the reference: Adam as train built it before (for-loop); the others: train's fused Adam
        self.opt_d = torch.optim.Adam(params, lr=1e-3) if reference else torch.optim.Adam(params, lr=1e-3, fused=True)
        self.loss_fn = torch.nn.BCEWithLogitsLoss()
        self.times: list[float] = []

    def step(self, cats, dense, label) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(cats, dense).squeeze(1)
        loss = self.loss_fn(logits.float(), label)
        self.opt_s.zero_grad()
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_s.step()
        self.opt_d.step()
        return loss.item()


def throughput(cfg: DCNConfig, batch: int, rounds: int, steps: int, warmup: int,
               bf16: str) -> tuple[dict[str, list[float]], list[float]]:
    """Per variant its samples/s in each round, and the GEMM GFLOP/s measured at the start of each
    round (best of 3). bf16: "full" (C like A and B), "short" (C: 1 warm-up and 1 step per round) or "off"."""
    rng = np.random.default_rng(0)
    vocab = cfg.vocab_sizes
    batches = [(torch.from_numpy(np.stack([rng.zipf(1.2, batch) % v for v in vocab], 1).astype(np.int64)),
                torch.randn(batch, 13), torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32)))
               for _ in range(4)]
    variants = [Variant("A reference fp32", cfg, True, "fp32"), Variant("B fast fp32", cfg, False, "fp32")]
    if bf16 != "off":
        variants.append(Variant("C fast bf16", cfg, False, "bf16"))
    n_steps = {v.name: (1 if bf16 == "short" and v.precision == "bf16" else steps) for v in variants}
    for v in variants:
        for i in range(1 if n_steps[v.name] == 1 else warmup):
            v.step(*batches[i % 4])
    gemm = []
    for r in range(rounds):
        gemm.append(gemm_gflops(reps=3))
        for v in variants:
            steps = n_steps[v.name]
            t0 = time.perf_counter()
            for i in range(steps):
                v.step(*batches[(r * steps + i) % 4])
            v.times.append((time.perf_counter() - t0) / steps)
    return {v.name: [batch / t for t in v.times] for v in variants}, gemm


def auc_check(rows: int, threads: int) -> dict[str, float]:
    """fp32 and bf16 trained on the demo's days; held-out AUC of each."""
    import os
    import tempfile

    import pandas as pd
    import pyarrow.parquet as pq

    from criteo_kernel.metrics import roc_auc
    from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL
    from criteo_merlin.ingest import extract, synth
    from criteo_merlin.preprocess import preprocess
    from criteo_merlin.train import train
    from criteo_merlin.train.dcn import load_checkpoint

    out = {}
    with tempfile.TemporaryDirectory() as root:
        synth.main(["--out", f"{root}/raw", "--days", "0-2", "--rows", str(rows)])
        for d in range(3):
            extract.extract(f"{root}/raw/day_{d}", f"{root}/extracted/day={d}")
        preprocess.preprocess([f"{root}/extracted/day={d}" for d in range(3)], f"{root}/processed",
                              f"{root}/workflow", None)
        parts = [f"{root}/processed/day={d}" for d in range(3)]
        t = pd.concat([pq.read_table(os.path.join(p, "eval")).to_pandas() for p in parts])
        cats = torch.from_numpy(t[CAT_COLUMNS].to_numpy(np.int64))
        dense = torch.from_numpy(t[INT_COLUMNS].to_numpy(np.float32))
        label = t[LABEL].to_numpy()
        for precision in ("fp32", "bf16"):
            res = train.train(parts, f"{root}/train-{precision}", None, epochs=1, batch_size=4096, lr=0.001,
                              embedding_dim=16, cross_layers=6, mlp_dims=[1024, 1024], threads=threads, seed=0,
                              log_every=10**9, precision=precision)
            model, _ = load_checkpoint(res["checkpoint"])
            with torch.no_grad():
                prob = torch.sigmoid(model.eval()(cats, dense)).squeeze(1).numpy()
            out[precision] = roc_auc(label, prob)
            out[f"{precision} samples/s"] = res["metrics"]["samples_per_s"]
        out["eval rows"] = len(label)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--mlp-dims", default="1024,1024")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--bf16", choices=["full", "short", "off"], default="full",
                   help="C's measure: like A and B, short (1 warm-up, 1 step per round) or none")
    p.add_argument("--auc", action="store_true", help="also train fp32 and bf16 on the demo's days: held-out AUC")
    p.add_argument("--auc-rows", type=int, default=100_000, help="rows per synthetic day (the demo's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    cfg = DCNConfig([v + 3 for v in CAT_VOCAB], mlp_dims=[int(x) for x in a.mlp_dims.split(",")])
    bf16_hw = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"torch {torch.__version__}, {threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bf16 products in hardware (oneDNN): "
          f"{'yes' if bf16_hw else 'no: C multiplies its bf16 operands in float32 (same numbers, no gain)'}")
    fps = flops_per_sample(cfg)
    bf16 = a.bf16
    per_round, gemm = throughput(cfg, a.batch, a.rounds, a.steps, a.warmup, bf16)
    gemm.append(gemm_gflops())
    best = max(gemm)
    print(f"fp32 GEMM (2048^3 torch.mm, GFLOP/s) at the start of each round and at the end: "
          f"{', '.join(f'{g:.0f}' for g in gemm)}; best {best:.0f}")
    print(f"{fps / 1e6:.2f} MFLOP per training sample (MLP {a.mlp_dims}): bound {best * 1e9 / fps:,.0f} samples/s "
          f"at the best GEMM")
    # a round's rates over the bound measured just before it (same load), then the median over rounds
    frac = {n: statistics.median(r / (g * 1e9 / fps) for r, g in zip(rs, gemm, strict=False))
            for n, rs in per_round.items()}
    rates = {n: statistics.median(rs) for n, rs in per_round.items()}
    ref = per_round["A reference fp32"]
    vs_a = {n: statistics.median(r / q for r, q in zip(rs, ref, strict=False)) for n, rs in per_round.items()}
    print(f"\n{'variant':<20} {'samples/s':>10} {'of bound':>9} {'of best':>8} {'vs A':>6}   (batch {a.batch}; "
          f"medians over {a.rounds} rounds x {a.steps} steps, alternated"
          f"{'; C: 1 step per round' if bf16 == 'short' else ''})")
    for name, r in rates.items():
        print(f"{name:<20} {r:>10,.0f} {frac[name]:>8.0%} {r / (best * 1e9 / fps):>7.0%} {vs_a[name]:>5.2f}x")
    print("(of bound: a round's samples/s over the bound from the GEMM measured just before it, median over rounds; "
          "of best: median samples/s over the bound at the best GEMM seen; vs A: median of the per-round ratios)")
    if a.auc:
        res = auc_check(a.auc_rows, threads)
        print(f"\nheld-out AUC on the demo's days ({a.auc_rows} rows/day, {res['eval rows']} eval rows): "
              f"fp32 {res['fp32']:.4f} ({res['fp32 samples/s']:,.0f} samples/s), bf16 {res['bf16']:.4f} "
              f"({res['bf16 samples/s']:,.0f} samples/s), bf16 - fp32 {res['bf16'] - res['fp32']:+.5f}")
    print(f"bench_train: ratio {frac['B fast fp32']:.2f} (fp32 training samples/s over the fp32 GEMM bound)")


if __name__ == "__main__":
    main()
