"""K stacked models at once (interp.layers): each slice is its model, against the layers and the model run alone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F

from interp.errors import InterpError
from interp.layers import LayerNorm, Linear, layer_norm, linear
from interp.model import ModelConfig, RoutingModel

K = 3


@pytest.mark.parametrize("shape", [(4, 6), (4, 5, 6), (1, 6)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_stacked_linear_is_each_models_f_linear(shape: tuple[int, ...], with_bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(K, 8, 6, generator=g), torch.randn(K, 8, generator=g) if with_bias else None
    x = torch.randn(K, *shape, generator=g)
    got = linear(x, weight, bias)
    assert got.shape == (K, *shape[:-1], 8)
    for k in range(K):
        torch.testing.assert_close(got[k], F.linear(x[k], weight[k], bias[k] if with_bias else None))
    assert torch.equal(linear(x[0], weight[0], bias[0] if with_bias else None),
                       F.linear(x[0], weight[0], bias[0] if with_bias else None))  # one model: F.linear itself


def test_stacked_layer_norm_is_each_models_layer_norm() -> None:
    g = torch.Generator().manual_seed(1)
    weight, bias, x = torch.randn(K, 6, generator=g), torch.randn(K, 6, generator=g), torch.randn(K, 4, 5, 6, generator=g)
    got = layer_norm(x, weight, bias, 1e-5)
    for k in range(K):
        torch.testing.assert_close(got[k], F.layer_norm(x[k], (6,), weight[k], bias[k], 1e-5))


def test_the_modules_keep_the_parameters_and_draws_of_nn() -> None:
    for ours, theirs in ((Linear, nn.Linear), (LayerNorm, nn.LayerNorm)):
        args = (6, 4) if ours is Linear else (6,)
        torch.manual_seed(2)
        a = ours(*args)
        torch.manual_seed(2)
        b = theirs(*args)
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[key], b.state_dict()[key]) for key in a.state_dict())
        x = torch.randn(3, 6)
        assert torch.equal(a(x), b(x))


def _config() -> ModelConfig:
    return ModelConfig(task="sentiment", variant="routing", input_dims=(5, 3, 7), n_concepts=7, d_model=12, n_heads=3,
                       n_layers=2, d_feature=9, d_concept=11)


def _stack() -> tuple[list[RoutingModel], dict, dict, RoutingModel]:
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(RoutingModel(_config()))
    params, buffers = stack_module_state(models)
    return models, params, buffers, copy.deepcopy(models[0]).to("meta")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_stacked_routing_model_is_each_model_alone(mode: str) -> None:
    """Logits, p, r and contributions of slice k are model k's; in training (concept dropout given per model) the
    gradient of slice k of every stacked parameter is model k's own gradient."""
    models, params, buffers, base = _stack()
    g = torch.Generator().manual_seed(3)
    x = [torch.randn(K, 4, t, d, generator=g) for t, d in zip((5, 3, 1), (5, 3, 7))]
    noise = (torch.rand(K, 4, 7, 11, generator=g) > 0.5).float() * 2 if mode == "train" else None
    for module in (*models, base):
        module.train(mode == "train")
    out = functional_call(base, (params, buffers), tuple(x), {"concept_noise": noise})
    out.logits.square().sum().backward()
    for k, model in enumerate(models):
        alone = model(*(t[k] for t in x), concept_noise=None if noise is None else noise[k])
        for name in ("logits", "p", "r", "contributions"):
            torch.testing.assert_close(getattr(out, name)[k], getattr(alone, name), atol=1e-6, rtol=1e-5, msg=name)
        alone.logits.square().sum().backward()
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(params[name].grad[k], parameter.grad, atol=1e-6, rtol=1e-5, msg=name)
    if mode == "eval":  # the contribution identity holds slice by slice
        torch.testing.assert_close(out.contributions.sum(-2), out.logits, atol=1e-5, rtol=1e-5)


def test_stacked_inputs_are_checked() -> None:
    _, params, buffers, base = _stack()
    base.eval()
    good = [torch.randn(K, 2, t, d) for t, d in zip((5, 3, 1), (5, 3, 7))]
    with pytest.raises(InterpError, match="3 models, batch, time, dim"):
        functional_call(base, (params, buffers), (good[0][0], good[1][0], good[2][0]))  # one model's inputs
    with pytest.raises(InterpError, match="3 models"):
        functional_call(base, (params, buffers), (good[0][:2], good[1][:2], good[2][:2]))  # 2 of the 3 slices
    with pytest.raises(InterpError, match=r"lengths of 3 stacked models must be \(3, batch, 3\)"):
        functional_call(base, (params, buffers), tuple(good), {"lengths": torch.ones(2, 3, dtype=torch.long)})


@pytest.mark.parametrize("side", ["start", "end"])
def test_stacked_models_mask_each_ones_padding(side: str) -> None:
    """Lengths ``(K, B, 3)``: slice k is model k run on its own padded batch with its own lengths."""
    models, params, buffers, base = _stack()
    g = torch.Generator().manual_seed(4)
    steps = (5, 3, 4)
    x = [torch.randn(K, 6, t, d, generator=g) for t, d in zip(steps, (5, 3, 7))]
    lengths = torch.stack([torch.randint(1, t + 1, (K, 6), generator=g) for t in steps], dim=-1)
    lengths[0, 0] = torch.tensor(steps)  # one sample without padding
    for module in (*models, base):
        module.eval()
    out = functional_call(base, (params, buffers), (*x, lengths, side))
    for k, model in enumerate(models):
        alone = model(*(t[k] for t in x), lengths[k], side)
        for name in ("logits", "r", "contributions"):
            torch.testing.assert_close(getattr(out, name)[k], getattr(alone, name), atol=1e-6, rtol=1e-5, msg=name)
    unmasked = functional_call(base, (params, buffers), tuple(x))
    assert (unmasked.logits - out.logits).abs().max() > 1e-3  # the masks change the outputs here
