"""Tests of interp.model: routing (Procedure 1), the contribution identity, config round trip, gradients."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from interp.errors import CheckpointError, InterpError
from interp.model import ModelConfig, RoutingModel, RoutingOutput, route
from interp.schema import FEATURES

# Odd dims and different lengths per modality.
DIMS = (5, 3, 7)
LENS = (5, 3, 1)


def _config(variant: str = "routing", **kw: object) -> ModelConfig:
    base: dict[str, object] = dict(
        task="sentiment",
        variant=variant,
        input_dims=DIMS,
        n_concepts=7,
        d_model=12,
        n_heads=3,
        n_layers=1,
        d_feature=9,
        d_concept=11,
    )
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


def _inputs(batch: int = 4, seed: int = 0, lens: tuple[int, int, int] = LENS) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, t, d, generator=g) for t, d in zip(lens, DIMS))


def _numpy_route(f: np.ndarray, p: np.ndarray, W: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference Procedure 1 with explicit loops, float64. Returns (concepts (B,J,d_c), r (B,7,J))."""
    B, n_feat, _ = f.shape
    J, d_c = W.shape[2], W.shape[3]
    concepts = np.zeros((B, J, d_c))
    r = np.zeros((B, n_feat, J))
    for b in range(B):
        u = np.zeros((n_feat, J, d_c))
        for i in range(n_feat):
            for j in range(J):
                u[i, j] = f[b, i] @ W[i, :, j, :]
        c = np.zeros((J, d_c))
        for j in range(J):
            for i in range(n_feat):
                c[j] += u[i, j] / J
        rb = np.full((n_feat, J), 1.0 / J)
        for _ in range(iterations):
            s = np.zeros((n_feat, J))
            for i in range(n_feat):
                for j in range(J):
                    s[i, j] = np.dot(u[i, j], c[j]) / math.sqrt(d_c)
            for i in range(n_feat):
                e = np.exp(s[i] - s[i].max())
                rb[i] = e / e.sum()
            c = np.zeros((J, d_c))
            for j in range(J):
                for i in range(n_feat):
                    c[j] += p[b, i] * rb[i, j] * u[i, j]
        concepts[b] = c
        r[b] = rb
    return concepts, r


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_route_matches_numpy_reference(iterations: int) -> None:
    g = torch.Generator().manual_seed(iterations)
    B, d_f, J, d_c = 3, 6, 5, 4
    f = torch.randn(B, 7, d_f, generator=g, dtype=torch.float64)
    p = torch.rand(B, 7, generator=g, dtype=torch.float64)
    W = torch.randn(7, d_f, J, d_c, generator=g, dtype=torch.float64)
    concepts, r, votes = route(f.float(), p.float(), W.float(), iterations)
    ref_c, ref_r = _numpy_route(f.numpy(), p.numpy(), W.numpy(), iterations)
    assert concepts.shape == (B, J, d_c) and r.shape == (B, 7, J) and votes.shape == (B, 7, J, d_c)
    np.testing.assert_allclose(r.numpy(), ref_r, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(concepts.numpy(), ref_c, atol=1e-5, rtol=1e-5)
    # Routing actually moved r away from uniform (so the comparison is not trivial).
    assert (r - 1.0 / J).abs().max() > 1e-2


def test_route_gam_is_uniform() -> None:
    g = torch.Generator().manual_seed(0)
    f, p, W = torch.randn(2, 7, 3, generator=g), torch.rand(2, 7, generator=g), torch.randn(7, 3, 4, 5, generator=g)
    concepts, r, votes = route(f, p, W, 0)
    assert torch.equal(r, torch.full((2, 7, 4), 1.0 / 4))
    expected = (p[:, :, None, None] * votes / 4).sum(1)
    torch.testing.assert_close(concepts, expected)


@pytest.mark.parametrize("variant", ["routing", "routing1", "gam"])
def test_contribution_identity_eval(variant: str) -> None:
    torch.manual_seed(0)
    model = RoutingModel(_config(variant)).eval()
    with torch.no_grad():
        out = model(*_inputs())
    assert isinstance(out, RoutingOutput)
    B, J = 4, 7
    assert out.logits.shape == (B, J)
    assert out.p.shape == (B, len(FEATURES))
    assert out.r.shape == (B, len(FEATURES), J)
    assert out.contributions.shape == (B, len(FEATURES), J)
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.r.sum(-1), torch.ones(B, 7), atol=1e-6, rtol=0)
    assert bool(((out.p >= 0) & (out.p <= 1)).all())
    torch.testing.assert_close(out.logits, out.contributions.sum(1), atol=1e-5, rtol=1e-5)
    # The identity is not vacuous.
    assert out.logits.abs().max() > 1e-3
    if variant == "gam":
        assert torch.equal(out.r, torch.full((B, 7, J), 1.0 / J))
    else:
        assert (out.r - 1.0 / J).abs().max() > 1e-4


def test_various_lengths_and_single_step() -> None:
    torch.manual_seed(1)
    model = RoutingModel(_config()).eval()
    for lens in [(1, 1, 1), (8, 8, 8), (2, 9, 4)]:
        with torch.no_grad():
            out = model(*_inputs(batch=2, lens=lens))
        torch.testing.assert_close(out.logits, out.contributions.sum(1), atol=1e-5, rtol=1e-5)


def test_features_method() -> None:
    torch.manual_seed(0)
    cfg = _config()
    model = RoutingModel(cfg).eval()
    f, p = model.features(*_inputs())
    assert f.shape == (4, 7, cfg.d_feature) and p.shape == (4, 7)
    out = model(*_inputs())
    torch.testing.assert_close(p, out.p)


def test_iterations_change_r() -> None:
    torch.manual_seed(0)
    m1 = RoutingModel(_config("routing", routing_iterations=1)).eval()
    m2 = RoutingModel(_config("routing", routing_iterations=2)).eval()
    m2.load_state_dict(m1.state_dict())
    x = _inputs()
    with torch.no_grad():
        o1, o2 = m1(*x), m2(*x)
    torch.testing.assert_close(o1.p, o2.p)  # same weights, same features
    assert (o1.r - o2.r).abs().max() > 1e-4
    assert m1.config.iterations == 1 and m2.config.iterations == 2
    assert _config("routing").iterations == 2
    assert _config("routing1").iterations == 1
    assert _config("gam").iterations == 0


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = RoutingModel(_config(concept_dropout=0.5, attn_dropout=0.3, embed_dropout=0.3))
    x = _inputs()
    model.eval()
    with torch.no_grad():
        a, b = model(*x), model(*x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.r, b.r)
    model.train()
    with torch.no_grad():
        c, d = model(*x), model(*x)
    assert not torch.equal(c.logits, d.logits)


def test_config_round_trip_and_errors() -> None:
    cfg = _config("routing1", routing_iterations=3, d_model=20, n_heads=5)
    d = cfg.to_dict()
    json.dumps(d)  # JSON-safe
    assert d["input_dims"] == list(DIMS)
    back = ModelConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg
    assert isinstance(back.input_dims, tuple)
    # Missing optional keys take defaults.
    minimal = ModelConfig.from_dict({"task": "emotion", "variant": "gam", "input_dims": [1, 2, 3], "n_concepts": 6})
    assert minimal.d_model == 32 and minimal.iterations == 0
    with pytest.raises(CheckpointError, match="bogus"):
        ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(CheckpointError, match="n_concepts"):
        ModelConfig.from_dict({k: v for k, v in d.items() if k != "n_concepts"})
    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({**d, "d_model": 21})
    with pytest.raises(InterpError, match="divisible"):
        _config(d_model=10, n_heads=3)
    with pytest.raises(InterpError, match="variant"):
        _config("capsule")
    with pytest.raises(InterpError, match="n_concepts"):
        _config(n_concepts=1)
    with pytest.raises(InterpError, match="input_dims"):
        _config(input_dims=(5, 0, 7))
    with pytest.raises(InterpError):
        _config("gam", routing_iterations=2)


def test_config_survives_weights_only_load(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "cfg.pt"
    cfg = _config()
    torch.save({"config": cfg.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    assert ModelConfig.from_dict(loaded["config"]) == cfg


def test_bad_inputs_raise() -> None:
    model = RoutingModel(_config()).eval()
    t, a, v = _inputs()
    with pytest.raises(InterpError, match="audio"):
        model(t, a[..., :2], v)
    with pytest.raises(InterpError, match="batch"):
        model(t, a[:2], v)


@pytest.mark.parametrize("variant", ["routing", "gam"])
def test_gradients_reach_all_parameters(variant: str) -> None:
    torch.manual_seed(0)
    model = RoutingModel(_config(variant)).train()
    out = model(*_inputs())
    out.logits.sum().backward()
    missing = [n for n, prm in model.named_parameters() if prm.grad is None]
    assert missing == []
    for n, prm in model.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), n
    # Every parameter tensor receives some non-zero gradient (with T > 1 for text and audio).
    zero = [n for n, prm in model.named_parameters() if prm.grad is not None and prm.grad.abs().max() == 0]
    # Attention in cross-modal encoders whose source has T=1 (vision) has a constant softmax: its query/key
    # projections legitimately get zero gradient. Anything else must be non-zero.
    bad = [
        n
        for n in zero
        if not (n.startswith(("cross_encoders.tv.", "cross_encoders.av.")) and (".norm_q." in n or ".attn.in_proj" in n))
    ]
    assert bad == []


def test_autocast_keeps_routing_in_float32() -> None:
    torch.manual_seed(0)
    model = RoutingModel(_config()).eval()
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(*_inputs())
    for t in (out.logits, out.p, out.r, out.contributions):
        assert t.dtype == torch.float32
    torch.testing.assert_close(out.logits, out.contributions.sum(1), atol=1e-5, rtol=1e-5)


def test_parameter_counts_paper_vs_default() -> None:
    mosi = (100, 73, 100)
    default = RoutingModel(ModelConfig(task="sentiment", variant="routing", input_dims=mosi, n_concepts=7))
    paper = RoutingModel(
        ModelConfig(
            task="sentiment", variant="routing", input_dims=mosi, n_concepts=7, n_layers=7, d_model=200, n_heads=20
        )
    )
    n_default, n_paper = default.n_parameters(), paper.n_parameters()
    print(f"parameters on MOSI dims, J=7: default {n_default:,}, paper-size {n_paper:,}")
    assert n_paper > n_default > 0
    assert n_default == sum(p.numel() for p in default.parameters())
