"""DCN training and inference throughput on this machine's CPU (PyTorch, SparseAdam + Adam).

Random ids and features with the synthetic data's vocabulary sizes; measures the training step
(forward, backward, both optimizers) and inference, after warm-up.

    PYTHONPATH=images/kernel/src:images/merlin/src .venv-steps/bin/python bench/bench_train.py [--steps 30]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from criteo_steps.dcn import DCN, DCNConfig
from criteo_steps.synth import CAT_VOCAB


def bench(mlp: list[int], batch: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    vocab = [v + 3 for v in CAT_VOCAB]
    model = DCN(DCNConfig(vocab, mlp_dims=mlp))
    opt_s = torch.optim.SparseAdam([model.embedding.weight], lr=1e-3)
    opt_d = torch.optim.Adam([p for n, p in model.named_parameters() if n != "embedding.weight"], lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(0)
    batches = [(torch.from_numpy(np.stack([rng.zipf(1.2, batch) % v for v in vocab], 1).astype(np.int64)),
                torch.randn(batch, 13), torch.from_numpy((rng.random(batch) < 0.25).astype(np.float32)))
               for _ in range(4)]
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        c, d, y = batches[i % 4]
        loss = loss_fn(model(c, d).squeeze(1), y)
        opt_s.zero_grad()
        opt_d.zero_grad()
        loss.backward()
        opt_s.step()
        opt_d.step()
    train_rate = steps * batch / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        for i in range(steps + 3):
            if i == 3:
                t0 = time.perf_counter()
            c, d, _ = batches[i % 4]
            model(c, d)
    return train_rate, steps * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=4096)
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}")
    print(f"{'MLP':<12} {'train samples/s':>16} {'inference samples/s':>20}")
    for mlp in ([1024, 1024], [256, 256], [128, 128]):
        tr, inf = bench(mlp, a.batch, a.steps)
        print(f"{','.join(map(str, mlp)):<12} {tr:>16,.0f} {inf:>20,.0f}")


if __name__ == "__main__":
    main()
