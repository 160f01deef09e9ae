"""train: the DCN in PyTorch, from scratch or warm-started from the production checkpoint.

Reads preprocessed day partitions in bounded chunks (a chunk is shuffled in memory, never a whole
day), trains with SparseAdam on the embedding rows and Adam on the dense layers, and publishes
OUTPUT/checkpoint.pt + OUTPUT/_train.json.

The same CLI runs in the GPU image (torch uses CUDA when present) and on the embedded default's
CPU. The model has the architecture of HugeCTR's DCN sample; the other trainer, HugeCTR itself, is
criteo_merlin.hugectr.train_hugectr (the same graph: criteo_merlin.hugectr.hugectr_dcn).

    python -m criteo_merlin train --train .../processed/wf/day=0 --output .../candidates/KEY/train \
        [--warm-start .../model_repository/criteo_dcn/3/checkpoint.pt] --epochs 1 --batch-size 4096 \
        [--precision fp32|bf16]

Train mode runs the model's fast path (criteo_merlin.train.dcn: the same function and parameters as the
plain modules, with fused ReLU+dropout, a closed-form cross stack and cheap dropout masks).
--precision bf16 (opt-in) runs forward and backward under bf16 autocast; the master weights, the
optimizers' state and the checkpoint stay float32. It pays only where the hardware multiplies bf16
(AMX / AVX512-BF16 CPUs, GPUs); on a CPU without bf16 products the model multiplies the bf16 operands
in float32 (bf16's numbers at about float32's speed: no gain there).
"""
from __future__ import annotations

import os
import time

import numpy as np

from criteo_kernel import storage
from criteo_kernel.artifacts import CHECKPOINT, COMMIT, PREPROCESS_META, TRAIN_META
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

from .trainer_cli import mlp_dims, training_parser

PRECISIONS = ("fp32", "bf16")


def iter_batches(partitions: list[str], split: str, batch_size: int, chunk_rows: int = 262_144,
                 shuffle: bool = True, seed: int = 0):
    """Yield (cat_ids int64 [B,26], dense float32 [B,13], label float32 [B]) from parquet partitions."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    for part in partitions:
        fs, path = storage.fs_path(storage.join(storage.resolve(part), split))
        for f in sorted(fs.glob(path.rstrip("/") + "/*.parquet")):
            with fs.open(f, "rb") as fh:
                pf = pq.ParquetFile(fh)
                for rb in pf.iter_batches(batch_size=chunk_rows, columns=[*CAT_COLUMNS, *INT_COLUMNS, LABEL]):
                    cats = np.stack([rb.column(c).to_numpy(zero_copy_only=False) for c in CAT_COLUMNS], 1)
                    dense = np.stack([rb.column(c).to_numpy(zero_copy_only=False) for c in INT_COLUMNS], 1)
                    label = rb.column(LABEL).to_numpy(zero_copy_only=False)
                    order = rng.permutation(len(label)) if shuffle else np.arange(len(label))
                    for s in range(0, len(order), batch_size):
                        idx = order[s:s + batch_size]
                        yield (cats[idx].astype(np.int64), dense[idx].astype(np.float32),
                               label[idx].astype(np.float32))


def embedding_sizes(partition: str) -> list[int]:
    meta = storage.read_json(storage.join(storage.resolve(partition), PREPROCESS_META))
    return [int(meta["embedding_sizes"][c]) for c in CAT_COLUMNS]


def train(train_parts: list[str], output: str, warm_start: str | None, epochs: int, batch_size: int,
          lr: float, embedding_dim: int | None = None, cross_layers: int | None = None,
          mlp_dims: list[int] | None = None, dropout: float | None = None, threads: int = 0, seed: int = 0,
          log_every: int = 50, precision: str = "fp32") -> dict:
    """Train from scratch (the architecture from embedding_dim, cross_layers, mlp_dims and dropout,
    the latter defaulting to DCNConfig's) or continue the warm-start checkpoint (its architecture).
    precision: fp32, or bf16 (autocast; fp32 master weights and checkpoint)."""
    import torch

    if precision not in PRECISIONS:
        raise SystemExit(f"train: precision={precision!r}: expected {' or '.join(PRECISIONS)}")

    from . import torch_compat
    from .dcn import save_checkpoint

    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    for p in train_parts:
        if not storage.is_published(p):
            raise SystemExit(f"train: {p} is not a published partition (no {COMMIT})")
    vocab = embedding_sizes(train_parts[0])
    model, parent = _model(vocab, warm_start, embedding_dim, cross_layers, mlp_dims, dropout)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    sparse = [model.embedding.weight]
    dense_params = [p for n, p in model.named_parameters() if n != "embedding.weight"]
    opt_sparse = torch.optim.SparseAdam(sparse, lr=lr)
    opt_dense = torch_compat.adam(dense_params, lr, device)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    seen, steps, t_start, losses = 0, 0, time.time(), []
    for epoch in range(epochs):
        for cats, dense, label in iter_batches(train_parts, "train", batch_size, seed=seed + epoch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(torch.from_numpy(cats).to(device), torch.from_numpy(dense).to(device)).squeeze(1)
            loss = loss_fn(logits.float(), torch.from_numpy(label).to(device))
            opt_sparse.zero_grad()
            opt_dense.zero_grad()
            loss.backward()
            opt_sparse.step()
            opt_dense.step()
            seen += len(label)
            steps += 1
            losses.append(loss.item())
            if steps % log_every == 0:
                rate = seen / (time.time() - t_start)
                print(f"epoch {epoch} step {steps}: loss {np.mean(losses[-log_every:]):.4f}, "
                      f"{rate:,.0f} samples/s", flush=True)
    seconds = time.time() - t_start
    if seen == 0:
        raise SystemExit(f"train: no training rows in {train_parts}")
    metrics = {"device": str(device), "precision": precision, "samples": seen, "steps": steps, "epochs": epochs,
               "seconds": round(seconds, 3), "samples_per_s": round(seen / seconds, 1),
               "final_loss": float(np.mean(losses[-50:]))}
    model.to("cpu")
    with storage.staged_partition(output) as staging:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(model, os.path.join(tmp, CHECKPOINT),
                            {"parent": parent, "trained_on": train_parts, "metrics": metrics})
            storage.upload_dir(tmp, staging)
        storage.write_json(storage.join(staging, TRAIN_META),
                           {"metrics": metrics, "warm_start": parent, "trained_on": train_parts,
                            "config": model.cfg.to_dict(),
                            "hyperparameters": {"lr": lr, "batch_size": batch_size, "epochs": epochs,
                                                "precision": precision}})
    print(f"trained on {seen} samples in {seconds:.1f}s ({seen / seconds:,.0f} samples/s), "
          f"loss {metrics['final_loss']:.4f}", flush=True)
    # A file has no commit of its own: it is named inside the attempt just committed.
    return {"output": output, "checkpoint": storage.join(storage.resolve(output), CHECKPOINT),
            "warm_start": parent, "metrics": metrics}


def _model(vocab: list[int], warm_start: str | None, embedding_dim, cross_layers, mlp_dims, dropout):
    """(the model to train, its parent): the warm-start checkpoint continued, or a new DCN."""
    from .dcn import DCN, DCNConfig, load_checkpoint

    if warm_start:
        model, _ = load_checkpoint(storage.local_copy(warm_start))
        if list(model.cfg.vocab_sizes) != vocab:
            raise SystemExit(
                f"train: warm start {warm_start} has vocabulary sizes of another workflow; "
                "an incremental run must use the production version's workflow (run a full retrain instead)")
        return model, warm_start
    if embedding_dim is None or cross_layers is None or mlp_dims is None:
        raise SystemExit("train: a model trained from scratch needs embedding_dim, cross_layers and mlp_dims")
    arch = {"dropout": dropout} if dropout is not None else {}
    return DCN(DCNConfig(vocab, embedding_dim=embedding_dim, num_cross_layers=cross_layers,
                         mlp_dims=mlp_dims, **arch)), None


def main(argv: list[str] | None = None) -> dict:
    p = training_parser("criteo_merlin train", __doc__, train_help="processed day partitions to train on",
                        output_help="where to publish checkpoint.pt and _train.json",
                        warm_start_help="checkpoint to continue from (incremental); its architecture is kept")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default), or bf16: autocast to bfloat16 for forward and backward, float32 master "
                        "weights and checkpoint; faster only where the hardware multiplies bf16 "
                        "(AMX, AVX512-BF16, GPUs)")
    a = p.parse_args(argv)
    mlp = mlp_dims(p, a)
    return train(a.train, a.output, a.warm_start, a.epochs, a.batch_size, a.lr, a.embedding_dim,
                 a.cross_layers, mlp, a.dropout, a.threads, a.seed, precision=a.precision)
