"""The DCN model, shaped as HugeCTR's samples/dcn: embeddings for the 26 categoricals, concatenated
with the 13 dense features, then in parallel 6 cross layers and an MLP (2 x 1024), joined by a
final logistic layer.

The 26 tables share one sparse embedding matrix addressed by per-column offsets: one gather, one
sparse gradient, and SparseAdam only touches the rows a batch used (dense Adam over every table
row dominated the step time on CPU; see shared/DESIGN.md).

Two forward paths compute the same function with the same parameters (state_dict keys unchanged):

- the reference path (`DCN.forward_reference`): the plain modules, nn.ReLU and nn.Dropout. Eval mode
  (evaluate, export, ONNX) always takes it, so inference output is what it always was.
- the fast training path (train mode, `fast_train=True`, the default), which does less work per step:
  * the cross stack in closed form. With x_{l+1} = x0 * (x_l . w_l) + b_l + x_l, every x_l is
    c_l * x0 + B_l for a per-row scalar c_l (c_0 = 1) and the vector B_l = b_0 + ... + b_{l-1}, so
    s_l = x_l . w_l = c_l * (x0 . w_l) + B_l . w_l and c_{l+1} = c_l + s_l. One thin matrix product
    x0 @ [w_0 .. w_{L-1}, head_w[:d]] gives every dot product (the head's, too), and the [B, d]
    intermediates are never built, forward or backward.
  * Linear + ReLU + inverted dropout fused in one autograd Function (`LinearReluDropout`): the 1/(1-p)
    scale rides in the matrix product (alpha/beta), ReLU and the mask are applied in place, and the
    backward needs no stored mask (an output is > 0 exactly where ReLU passed and dropout kept).
  * x0 padded with zero columns to a multiple of 8 (429 -> 432) for the first layer's products, with
    the weight padded to match (zeros: the same function; the products run faster at that width).
  * dropout from uniforms drawn by numpy's SFC64 straight into a reused float buffer, in parallel
    parts, seeded per mask from torch's default generator (so torch.manual_seed / --seed keep runs
    reproducible), applied in one in-place pass; torch.bernoulli_ (single-threaded) took a third of
    the step. Independent per element; an element is dropped iff its uniform (k * 2^-24) < p, so
    P(drop) = p exactly when p * 2^24 is an integer (0.5, 0.25), else p rounded up to 2^-24.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .torch_compat import autocast_dtype


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


MASK_CHUNKS = 4  # a mask is drawn in this many parts (in parallel), whatever the thread count
_pool = None


def dropout_uniforms(out: torch.Tensor) -> torch.Tensor:
    """Fill the float32 CPU tensor `out` with independent uniforms on the grid k * 2^-24 in [0, 1):
    numpy's SFC64, seeded by one draw of torch's default generator (so torch.manual_seed fixes
    them), in MASK_CHUNKS parts filled by up to torch.get_num_threads() threads (numpy releases
    the GIL while filling)."""
    global _pool
    from concurrent.futures import ThreadPoolExecutor

    seed = int(torch.randint(0, 2**62, (1,)).item())
    gens = [np.random.Generator(np.random.SFC64(s)) for s in np.random.SeedSequence(seed).spawn(MASK_CHUNKS)]
    flat = out.numpy().reshape(-1)
    parts = np.array_split(flat, MASK_CHUNKS)
    workers = min(torch.get_num_threads(), MASK_CHUNKS)
    if workers <= 1:
        for g, part in zip(gens, parts, strict=False):
            g.random(dtype=np.float32, out=part)
    else:
        if _pool is None:
            _pool = ThreadPoolExecutor(MASK_CHUNKS, thread_name_prefix="dropout-mask")
        list(_pool.map(lambda gp: gp[0].random(dtype=np.float32, out=gp[1]), zip(gens, parts, strict=False)))
    return out


def dropout_mask(shape: tuple[int, ...], p: float) -> torch.Tensor:
    """A bool CPU tensor, True where an element is dropped: independent per element, P(drop) = p to
    2^-24 (exactly p when p * 2^24 is an integer, e.g. 0.5, 0.25; else the next multiple of 2^-24).
    What LinearReluDropout applies: element dropped iff its uniform < p."""
    return dropout_uniforms(torch.empty(shape)) < p


def _bf16_emulated(t: torch.Tensor) -> bool:
    """A bf16 CPU tensor on a CPU without bf16 products (no AVX512-BF16/AMX for oneDNN): torch's own
    bf16 matrix products there run at ~1 GFLOP/s."""
    return t.dtype == torch.bfloat16 and t.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _addmm(bias: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """addmm (bias None: a plain scaled product). bf16 operands on a CPU without bf16 products are
    multiplied in float32: the products of bf16 values are exact in float32 and accumulate in float32,
    as oneDNN's bf16 products do, so the numbers are bf16's at about float32's speed."""
    if _bf16_emulated(a):
        bias32 = bias.float() if bias is not None else a.new_zeros((), dtype=torch.float32)
        return torch.addmm(bias32, a.float(), b.float(), beta=beta if bias is not None else 0, alpha=alpha).to(a.dtype)
    if bias is None:
        return torch.addmm(a.new_zeros(()), a, b, beta=0, alpha=alpha)
    return torch.addmm(bias, a, b, beta=beta, alpha=alpha)


class LinearReluDropout(torch.autograd.Function):
    """dropout(relu(x @ W^T + b)) with inverted dropout: relu(s * (x @ W^T + b)) with the dropped
    elements zeroed, s = 1/(1-p) (s > 0, so it commutes with ReLU; 2 for p=0.5 is exact in floats).
    `u`: None (no dropout), or uniforms [B, H] (dropout_uniforms; CPU), an element dropped iff u < p;
    or a bool [B, H] drop mask. Saves x, W and the output (which the next layer keeps anyway): the
    gradient flows where the output is > 0, i.e. where ReLU passed and dropout kept."""

    @staticmethod
    def forward(ctx, x, weight, bias, u, p: float, scale: float):
        out = _addmm(bias, x, weight.t(), beta=scale, alpha=scale)
        out.relu_()
        if u is not None and u.dtype == torch.bool:
            out.masked_fill_(u, 0.0)
        elif u is not None and u.dtype == out.dtype:
            # keep iff u >= p iff u > (the float below p); in place, one pass (bool masks are slow here)
            thr = float(np.nextafter(np.float32(p), np.float32(0)))
            torch.ops.aten.threshold_backward.grad_input(out, u, thr, grad_input=out)
        elif u is not None:  # another dtype (bf16 autocast): the exact comparison, in float32
            out.masked_fill_(u < p, 0.0)
        ctx.save_for_backward(x, weight, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, out = ctx.saved_tensors
        s = ctx.scale
        g = torch.ops.aten.threshold_backward(grad_out, out, 0)
        grad_x = _addmm(None, g, weight, beta=0, alpha=s) if ctx.needs_input_grad[0] else None
        grad_w = _addmm(None, g.t(), x, beta=0, alpha=s) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0).mul_(s) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None


class DCN(nn.Module):
    def __init__(self, cfg: DCNConfig):
        super().__init__()
        self.cfg = cfg
        # Train mode's path: the fast one (same function, same parameters), or the reference modules.
        self.fast_train = True
        self.ALIGN = 8  # the fast path's x0 width is padded to a multiple of this (0: none)
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
        if self.training and self.fast_train:
            return self.forward_fast(cat_ids, dense)
        return self.forward_reference(cat_ids, dense)

    def _uniforms(self, shape: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Fresh dropout uniforms in a buffer reused from step to step (the forward consumes them)."""
        if device.type != "cpu":  # accelerators draw their own (fast there)
            return torch.rand(shape, device=device)
        buf = self.__dict__.get("_uniform_buf")
        if buf is None or buf.shape != shape:
            buf = self.__dict__["_uniform_buf"] = torch.empty(shape)
        return dropout_uniforms(buf)

    def _x0(self, cat_ids: torch.Tensor, dense: torch.Tensor, pad: int = 0) -> torch.Tensor:
        """[dense, embeddings] (+ `pad` zero columns)."""
        emb = self.embedding(cat_ids + self.offsets).flatten(1)
        parts = [dense.to(emb.dtype), emb]
        if pad:
            parts.append(emb.new_zeros(emb.shape[0], pad))
        return torch.cat(parts, dim=1)

    def forward_reference(self, cat_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """The plain modules (what eval mode, evaluate and the ONNX export run)."""
        emb = self.embedding(cat_ids + self.offsets).flatten(1)
        x0 = torch.cat([dense, emb], dim=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.mlp(x0)], dim=1))

    def forward_fast(self, cat_ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """The same function as forward_reference in train mode (see the module docstring)."""
        dim = self.cfg.num_dense + len(self.cfg.vocab_sizes) * self.cfg.embedding_dim
        # x0 padded with zero columns to a multiple of ALIGN (and the first layer's weight with zero
        # columns to match): the first layer's products then run ~15% faster (429 -> 432 here)
        pad = -dim % self.ALIGN if self.ALIGN else 0
        x0p = self._x0(cat_ids, dense, pad)
        x0 = x0p[:, :dim] if pad else x0p
        hw = self.head.weight[0]
        with torch.autocast(x0.device.type, enabled=False):  # thin and cheap: fp32 under bf16 autocast too
            # cross stack: every dot product in one [B, d] x [d, L+1] product
            q = x0 @ torch.stack([layer.w for layer in self.cross] + [hw[:dim]], 1)
            c = None
            bsum = None  # B_l, the sum of the biases before layer l
            for i, layer in enumerate(self.cross):
                s = q[:, i] if c is None else c * q[:, i]
                if bsum is not None:
                    s = s + bsum @ layer.w
                c = (1.0 + s) if c is None else c + s
                bsum = layer.b if bsum is None else bsum + layer.b
            if c is None:  # no cross layers: x_L = x0
                cross_logit = q[:, -1]
            else:
                cross_logit = c * q[:, -1] + bsum @ hw[:dim]
        # MLP: [Linear, ReLU, Dropout] per hidden layer
        h = x0p
        p = self.cfg.dropout
        scale = 1.0 / (1.0 - p) if p < 1 else 0.0
        for j in range(0, len(self.mlp), 3):
            lin = self.mlp[j]
            w, b = lin.weight, lin.bias
            if j == 0 and pad:
                w = torch.nn.functional.pad(w, (0, pad))
            dt = autocast_dtype(h.device.type)
            if dt is not None:
                h, w, b = h.to(dt), w.to(dt), b.to(dt)
            u = self._uniforms((h.shape[0], w.shape[0]), h.device) if p > 0 else None
            with torch.autocast(h.device.type, enabled=False):
                h = LinearReluDropout.apply(h, w, b, u, p, scale)
        if _bf16_emulated(h):  # a bf16 matrix-vector product, in float32 (see _addmm)
            mlp_logit = torch.addmv(self.head.bias, h.float(), hw[dim:].to(h.dtype).float()).to(h.dtype)
        else:
            mlp_logit = torch.addmv(self.head.bias.to(h.dtype), h, hw[dim:].to(h.dtype))
        return (cross_logit + mlp_logit.to(cross_logit.dtype)).unsqueeze(1)


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
