"""interp.stacked.StackedModels: K models as one flat leaf equal the K models alone (outputs, gradients, clipping)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from interp.model import ModelConfig, RoutingModel
from interp.stacked import StackedModels

K = 3
DIMS = (5, 3, 7)


def _models(**kw) -> list[RoutingModel]:
    config = ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7, d_model=12, n_heads=3,
                         n_layers=2, d_feature=9, d_concept=11, **kw)
    models = []
    for seed in range(K):
        torch.manual_seed(seed)
        models.append(RoutingModel(config))
    return models


def _inputs(k: int = K, batch: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(k, batch, t, d, generator=g) for t, d in zip((5, 3, 2), DIMS)]


def test_views_are_each_models_parameters_and_the_models_are_left_alone() -> None:
    models = _models()
    before = [copy.deepcopy(m.state_dict()) for m in models]
    stack = StackedModels(models)
    assert stack.k == K and stack.flat.is_leaf and stack.flat.shape == (K, models[0].n_parameters())
    views = stack.views()
    assert list(views) == [name for name, _ in models[0].named_parameters()]
    for k, model in enumerate(models):
        for name, value in model.state_dict().items():
            assert torch.equal(views[name][k], value), name
            assert torch.equal(value, before[k][name])
    with torch.no_grad():
        stack.flat.zero_()
    assert all(torch.equal(m.state_dict()[n], before[0][n]) for m in models[:1] for n in before[0])  # a copy


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_stack_runs_and_differentiates_as_each_model_alone(mode: str) -> None:
    """Slice k of the logits is model k's; row k of the flat gradient is model k's gradient, parameter by
    parameter, also in training with per-model concept-dropout masks."""
    models = _models()
    stack = StackedModels(models)
    x = _inputs()
    g = torch.Generator().manual_seed(5)
    noise = (torch.rand(K, 4, 7, 11, generator=g) > 0.5).float() * 2 if mode == "train" else None
    module = stack.bind().train(mode == "train")
    out = module(*x, concept_noise=noise)
    out.logits.square().sum().backward()
    grads = stack.views(stack.flat.grad)
    for k, model in enumerate(models):
        alone = model.train(mode == "train")(*(t[k] for t in x), concept_noise=None if noise is None else noise[k])
        torch.testing.assert_close(out.logits[k], alone.logits, atol=1e-6, rtol=1e-5)
        alone.logits.square().sum().backward()
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(grads[name][k], parameter.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_clip_grad_is_clip_grad_norm_of_each_model() -> None:
    """Golden values from torch's ``clip_grad_norm_`` on each model alone: one model above the limit, one below."""
    models = _models()
    stack = StackedModels(models)
    x = _inputs()
    scale = torch.tensor([1.0, 1e-4, 30.0]).view(K, 1)  # seed 1's gradient stays under the limit
    (stack.bind().eval()(*x).logits.sum(dim=(1, 2)) * scale.squeeze(1)).sum().backward()  # eval: no dropout
    limit = 0.5
    norms = stack.clip_grad_(limit)
    clipped = stack.views(stack.flat.grad)
    for k, model in enumerate(models):
        (model.eval()(*(t[k] for t in x)).logits.sum() * scale[k, 0]).backward()
        expected_norm = nn.utils.clip_grad_norm_(model.parameters(), limit)
        torch.testing.assert_close(norms[k], expected_norm, atol=1e-6, rtol=1e-5)
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(clipped[name][k], parameter.grad, atol=1e-7, rtol=1e-5, msg=name)
    assert norms[1] < limit < min(norms[0], norms[2])  # both branches of the clip were taken


def test_select_keeps_the_chosen_models_in_order_and_they_still_train() -> None:
    models = _models()
    stack = StackedModels(models)
    stack.select([2, 0])
    assert stack.k == 2 and stack.flat.is_leaf and stack.flat.requires_grad
    for position, k in enumerate([2, 0]):
        for name, value in models[k].state_dict().items():
            assert torch.equal(stack.views()[name][position], value), name
    stack.bind()(*_inputs(k=2)).logits.sum().backward()
    assert stack.flat.grad is not None and stack.flat.grad.shape == stack.flat.shape
    with torch.no_grad():  # under no_grad the views track nothing
        assert not stack.bind()(*_inputs(k=2)).logits.requires_grad


def test_models_of_different_shapes_are_refused() -> None:
    other = RoutingModel(ModelConfig(task="sentiment", variant="routing", input_dims=DIMS, n_concepts=7, d_model=12,
                                     n_heads=3, n_layers=1, d_feature=9, d_concept=11))
    with pytest.raises(ValueError, match="one architecture"):
        StackedModels([_models()[0], other])
    with pytest.raises(ValueError, match="at least one"):
        StackedModels([])
