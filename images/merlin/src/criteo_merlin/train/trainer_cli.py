"""The command line both trainers share (train: PyTorch; train_hugectr: HugeCTR): the flags a run's
plan gives either of them (operators/pipeline/planning.py, `train_args`), checked the same way."""
from __future__ import annotations

import argparse


def training_parser(prog: str, doc: str, *, train_help: str, output_help: str,
                    warm_start_help: str) -> argparse.ArgumentParser:
    """A trainer's parser with the flags both trainers take; each adds its own."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", nargs="+", required=True, help=train_help)
    p.add_argument("--output", required=True, help=output_help)
    p.add_argument("--warm-start", default=None, help=warm_start_help)
    # The pipeline's defaults live in the DAG Params (operators/tasks/training.py); the CLI has none.
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    arch = p.add_argument_group("architecture (from scratch only: a warm start keeps its checkpoint's)")
    arch.add_argument("--embedding-dim", type=int)
    arch.add_argument("--cross-layers", type=int)
    arch.add_argument("--mlp-dims", help="comma-separated hidden sizes, e.g. 1024,1024")
    arch.add_argument("--dropout", type=float, default=None, help="default: the model's (0.5, HugeCTR's sample)")
    return p


def mlp_dims(p: argparse.ArgumentParser, a: argparse.Namespace) -> list[int] | None:
    """The MLP sizes, after checking that the architecture is given exactly when training from scratch."""
    sizes = {"--embedding-dim": a.embedding_dim, "--cross-layers": a.cross_layers, "--mlp-dims": a.mlp_dims}
    if a.warm_start and any(v is not None for v in [*sizes.values(), a.dropout]):
        p.error("--embedding-dim, --cross-layers, --mlp-dims and --dropout cannot be given with --warm-start: "
                "the checkpoint's architecture is continued")
    if not a.warm_start and any(v is None for v in sizes.values()):
        p.error(f"training from scratch needs {', '.join(k for k, v in sizes.items() if v is None)}")
    return [int(x) for x in a.mlp_dims.split(",") if x] if a.mlp_dims else None
