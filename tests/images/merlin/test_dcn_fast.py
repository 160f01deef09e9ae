"""The DCN's fast training path (criteo_merlin.train.dcn) against the plain implementation it replaces in
train mode: same function, same gradients, same parameters; dropout's statistics and
reproducibility; eval output unchanged; bf16 training; warm start from a reference checkpoint."""
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the merlin image's code runs in the step environment: make test-steps")
import torch  # noqa: E402
from torch import nn  # noqa: E402

from criteo_merlin.train import dcn  # noqa: E402
from criteo_merlin.train.dcn import DCN, DCNConfig, LinearReluDropout, dropout_mask, load_checkpoint, save_checkpoint  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps


class RefCross(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.w = nn.Parameter(torch.empty(dim).normal_(0.0, 0.01))
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x0, x):
        return x0 * (x @ self.w).unsqueeze(1) + self.b + x


class RefDCN(nn.Module):
    """A verbatim copy of the DCN as it was before the fast path (the plain modules)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        offsets = torch.tensor([0, *torch.tensor(cfg.vocab_sizes).cumsum(0)[:-1].tolist()], dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.embedding = nn.Embedding(int(sum(cfg.vocab_sizes)), cfg.embedding_dim, sparse=True)
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        dim = cfg.num_dense + len(cfg.vocab_sizes) * cfg.embedding_dim
        self.cross = nn.ModuleList(RefCross(dim) for _ in range(cfg.num_cross_layers))
        layers, width = [], dim
        for h in cfg.mlp_dims:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(dim + width, 1)

    def forward(self, cat_ids, dense, masks=None):
        """masks: per hidden layer, the kept elements (bool) to use instead of nn.Dropout's draws."""
        emb = self.embedding(cat_ids + self.offsets).flatten(1)
        x0 = torch.cat([dense, emb], dim=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        if masks is None:
            m = self.mlp(x0)
        else:
            m = x0
            for j, keep in zip(range(0, len(self.mlp), 3), masks, strict=False):
                m = torch.relu(self.mlp[j](m)) * keep / (1 - self.cfg.dropout)
        return self.head(torch.cat([x, m], dim=1))


CFG = dict(vocab_sizes=[7, 11, 5] + [3] * 23, embedding_dim=4, num_cross_layers=3, mlp_dims=[32, 16])


def _pair(dropout, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ref = RefDCN(DCNConfig(**CFG, dropout=dropout)).to(dtype)
    for p in ref.parameters():  # away from the initial zeros/small values: every term matters
        p.data.normal_(0.0, 0.3)
    fast = DCN(DCNConfig(**CFG, dropout=dropout)).to(dtype)
    fast.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(seed + 1)
    cats = torch.stack([torch.randint(0, v, (48,), generator=g) for v in CFG["vocab_sizes"]], 1)
    dense = torch.randn(48, 13, generator=g, dtype=dtype)
    return ref, fast, cats, dense


def _grads(model, out):
    grads = torch.autograd.grad(out.pow(2).sum(), list(model.parameters()))
    return [g.to_dense() if g.is_sparse else g for g in grads]


def test_fast_path_is_the_reference_function_with_its_gradients():
    ref, fast, cats, dense = _pair(dropout=0.0)
    fast.train()
    out_ref, out_fast = ref(cats, dense), fast(cats, dense)
    assert torch.allclose(out_fast, out_ref, rtol=1e-10, atol=1e-10)
    for (name, _), gr, gf in zip(ref.named_parameters(), _grads(ref, out_ref), _grads(fast, out_fast), strict=False):
        assert gr.abs().max() > 0, name  # every parameter takes part
        assert torch.allclose(gf, gr, rtol=1e-9, atol=1e-10), name


def test_fast_path_with_dropout_is_inverted_dropout_of_the_drawn_masks(monkeypatch):
    ref, fast, cats, dense = _pair(dropout=0.5)
    ref.train(), fast.train()
    drawn = []

    def uniforms(shape, device):
        u = dcn.dropout_uniforms(torch.empty(shape)).double()
        drawn.append(u >= 0.5)  # kept
        return u

    monkeypatch.setattr(fast, "_uniforms", uniforms)
    out_fast = fast(cats, dense)
    assert len(drawn) == 2 and 0.4 < drawn[0].double().mean() < 0.6
    out_ref = ref(cats, dense, masks=drawn)
    assert torch.allclose(out_fast, out_ref, rtol=1e-10, atol=1e-10)
    for (name, _), gr, gf in zip(ref.named_parameters(), _grads(ref, out_ref), _grads(fast, out_fast), strict=False):
        assert torch.allclose(gf, gr, rtol=1e-9, atol=1e-10), name


def test_fused_linear_relu_dropout_passes_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    u = torch.rand(6, 4, dtype=torch.float64)
    for drop, p in [(u, 0.3), (u < 0.5, 0.5), (None, 0.0)]:
        scale = 1 / (1 - p)
        def fn(x, w, b, drop=drop, p=p, scale=scale):
            return LinearReluDropout.apply(x, w, b, drop, p, scale)

        assert torch.autograd.gradcheck(fn, (x, w, b))
    out = LinearReluDropout.apply(x, w, b, u, 0.3, 1 / 0.7)
    expect = torch.relu(x @ w.T + b) * (u >= 0.3) / 0.7
    assert torch.allclose(out, expect) and (out == 0).any() and (out > 0).any()


def test_fast_path_in_float32_tracks_the_reference():
    ref, fast, cats, dense = _pair(dropout=0.0, dtype=torch.float32)
    fast.train()
    out_ref, out_fast = ref(cats, dense), fast(cats, dense)
    assert torch.allclose(out_fast, out_ref, rtol=1e-4, atol=1e-4)
    for (name, _), gr, gf in zip(ref.named_parameters(), _grads(ref, out_ref), _grads(fast, out_fast), strict=False):
        assert torch.allclose(gf, gr, rtol=1e-3, atol=1e-3 * gr.abs().max().item()), name


def test_fast_path_under_bf16_autocast_tracks_the_reference_under_it():
    ref, fast, cats, dense = _pair(dropout=0.0, dtype=torch.float32)
    fast.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ref, out_fast = ref(cats, dense).float(), fast(cats, dense).float()
    exact = ref(cats, dense)
    err_ref, err_fast = (out_ref - exact).abs().max(), (out_fast - exact).abs().max()
    assert err_fast > 0  # bf16 products, not float32's
    assert err_fast < 4 * err_ref + 1e-3
    assert torch.allclose(out_fast, out_ref, rtol=0.05, atol=0.05 * exact.abs().max().item())
    for (name, _), gr, gf in zip(ref.named_parameters(), _grads(ref, out_ref), _grads(fast, out_fast), strict=False):
        assert gf.dtype == torch.float32 and torch.allclose(gf, gr, rtol=0.1, atol=0.05 * gr.abs().max().item()), name


def test_dropout_masks_have_rate_p_and_the_seed_fixes_them():
    torch.manual_seed(1)
    half = dropout_mask((512, 1024), 0.5)
    assert half.dtype == torch.bool and abs(half.double().mean().item() - 0.5) < 0.005  # 7 sigma
    tenth = dropout_mask((512, 1024), 0.1)
    assert abs(tenth.double().mean().item() - 0.1) < 0.003
    # independent elements: neighbours (along rows and columns) and the parallel parts agree by chance only
    h = half.double() - 0.5
    assert abs((h[:, 1:] * h[:, :-1]).mean().item()) < 0.005 and abs((h[1:] * h[:-1]).mean().item()) < 0.005
    q = h.reshape(dcn.MASK_CHUNKS, -1)
    assert abs((q[0] * q[1]).mean().item()) < 0.01
    # torch's seed fixes the masks, whatever the thread count; the next draw differs
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(1)
        torch.set_num_threads(1)
        assert torch.equal(dropout_mask((512, 1024), 0.5), half)
    finally:
        torch.set_num_threads(threads)
    assert not torch.equal(dropout_mask((512, 1024), 0.5), half)


def test_training_step_scales_kept_units_and_is_reproducible():
    ref, fast, cats, dense = _pair(dropout=0.5, dtype=torch.float32)
    fast.train()
    lin = fast.mlp[0]
    x0 = fast._x0(cats, dense)
    torch.manual_seed(3)
    h = LinearReluDropout.apply(x0, lin.weight, lin.bias, fast._uniforms((48, 32), x0.device), 0.5, 2.0)
    plain = torch.relu(torch.nn.functional.linear(x0, lin.weight, lin.bias))
    kept = h != 0
    assert torch.equal(h[kept], 2 * plain[kept])  # 1/(1-p), exactly
    assert 0.2 < kept.float().mean() < 0.8
    torch.manual_seed(3)
    again = LinearReluDropout.apply(x0, lin.weight, lin.bias, fast._uniforms((48, 32), x0.device), 0.5, 2.0)
    assert torch.equal(again, h)
    torch.manual_seed(5)
    assert torch.equal(fast(cats, dense), (torch.manual_seed(5), fast(cats, dense))[1])


def test_eval_output_is_the_reference_output_with_the_same_state_dict():
    torch.manual_seed(0)
    ref = RefDCN(DCNConfig(**CFG, dropout=0.5)).eval()
    fast = DCN(DCNConfig(**CFG, dropout=0.5))
    assert list(fast.state_dict()) == list(ref.state_dict())
    fast.load_state_dict(ref.state_dict())
    fast.eval()
    _, _, cats, dense = _pair(0.5, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(fast(cats, dense), ref(cats, dense))
    ref.load_state_dict(fast.state_dict())  # and back


def test_bf16_training_writes_a_finite_float32_checkpoint(fitted, tmp_path):
    from criteo_merlin.train import train

    root, _, _ = fitted
    res = train.train([str(root / "processed" / "day=0")], str(tmp_path / "bf16"), None, epochs=1, batch_size=1024,
                      lr=0.003, embedding_dim=8, cross_layers=3, mlp_dims=[64, 64], threads=2, seed=0,
                      precision="bf16")
    assert res["metrics"]["precision"] == "bf16" and np.isfinite(res["metrics"]["final_loss"])
    meta = json.loads((committed(tmp_path / "bf16") / "_train.json").read_text())
    assert meta["metrics"]["precision"] == "bf16" and meta["hyperparameters"]["precision"] == "bf16"
    model, ckpt = load_checkpoint(res["checkpoint"])
    init = DCN(DCNConfig(**{**model.cfg.to_dict()}))
    for name, t in ckpt["state_dict"].items():
        assert t.dtype == torch.float32 and torch.isfinite(t).all(), name
    assert not torch.equal(model.mlp[0].weight, init.mlp[0].weight)
    with pytest.raises(SystemExit, match="precision='fp16'"):
        train.train([str(root / "processed" / "day=0")], str(tmp_path / "x"), None, epochs=1, batch_size=1024,
                    lr=0.003, embedding_dim=8, cross_layers=3, mlp_dims=[64, 64], precision="fp16")


def test_warm_start_from_a_checkpoint_the_reference_saved(fitted, tmp_path):
    from criteo_merlin.train import train
    from criteo_merlin.train.train import embedding_sizes

    root, _, _ = fitted
    day0 = str(root / "processed" / "day=0")
    torch.manual_seed(0)
    ref = RefDCN(DCNConfig(embedding_sizes(day0), embedding_dim=8, num_cross_layers=3, mlp_dims=[64, 64]))
    torch.save({"config": ref.cfg.to_dict(), "state_dict": ref.state_dict()}, tmp_path / "ref.pt")
    loaded, _ = load_checkpoint(str(tmp_path / "ref.pt"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ref.state_dict().values(), strict=False))
    res = train.train([day0], str(tmp_path / "warm"), str(tmp_path / "ref.pt"), epochs=1, batch_size=1024,
                      lr=0.003, threads=2, seed=0)
    warm, _ = load_checkpoint(res["checkpoint"])
    assert res["warm_start"] == str(tmp_path / "ref.pt")
    assert not torch.equal(warm.mlp[3].weight, ref.mlp[3].weight)
    save_checkpoint(warm, str(tmp_path / "again.pt"))
    ref.load_state_dict(torch.load(tmp_path / "again.pt", weights_only=False)["state_dict"])
