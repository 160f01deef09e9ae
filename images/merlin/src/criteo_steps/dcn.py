"""The DCN model, shaped as HugeCTR's samples/dcn: embeddings for the 26 categoricals, concatenated
with the 13 dense features, then in parallel 6 cross layers and an MLP (2 x 1024), joined by a
final logistic layer.

The 26 tables share one sparse embedding matrix addressed by per-column offsets: one gather, one
sparse gradient, and SparseAdam only touches the rows a batch used (dense Adam over every table
row dominated the step time on CPU; see shared/DESIGN.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class DCNConfig:
    vocab_sizes: list[int]
    num_dense: int = 13
    embedding_dim: int = 16
    num_cross_layers: int = 6
    mlp_dims: list[int] = field(default_factory=lambda: [1024, 1024])
    dropout: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


class CrossLayer(nn.Module):
    """x_{l+1} = x_0 * (x_l . w) + b + x_l  (the original DCN cross)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.empty(dim).normal_(0.0, 0.01))
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * (x @ self.w).unsqueeze(1) + self.b + x


class DCN(nn.Module):
    def __init__(self, cfg: DCNConfig):
        super().__init__()
        self.cfg = cfg
        offsets = torch.tensor([0, *torch.tensor(cfg.vocab_sizes).cumsum(0)[:-1].tolist()], dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embedding = nn.Embedding(int(sum(cfg.vocab_sizes)), cfg.embedding_dim, sparse=True)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        dim = cfg.num_dense + len(cfg.vocab_sizes) * cfg.embedding_dim
        self.cross = nn.ModuleList(CrossLayer(dim) for _ in range(cfg.num_cross_layers))
        layers, width = [], dim
        for h in cfg.mlp_dims:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(dim + width, 1)

    def forward(self, cat_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """cat_ids [B, 26] int64 (per-column ids), dense [B, 13] float32 -> logits [B, 1]."""
        emb = self.embedding(cat_ids + self.offsets).flatten(1)
        x0 = torch.cat([dense, emb], dim=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.mlp(x0)], dim=1))


def save_checkpoint(model: DCN, path: str, extra: dict | None = None) -> None:
    torch.save({"config": model.cfg.to_dict(), "state_dict": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: str) -> tuple[DCN, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = DCN(DCNConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt


class ServingDCN(nn.Module):
    """The exported graph: probabilities, not logits."""

    def __init__(self, model: DCN):
        super().__init__()
        self.model = model

    def forward(self, cat_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(cat_ids, dense))
