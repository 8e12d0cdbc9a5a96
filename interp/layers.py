"""Linear and LayerNorm that also run K stacked models at once, without ``vmap``.

One model has a weight ``(out, in)`` and inputs ``(..., in)``: these are ``F.linear`` / ``F.layer_norm``, the same
operations (and bits) as ``nn.Linear`` / ``nn.LayerNorm``. K models trained together
(:mod:`interp.ensemble_train`) call the same modules through ``torch.func.functional_call`` with parameters
stacked along a new first dim (``torch.func.stack_module_state``): a weight ``(K, out, in)`` and inputs
``(K, ..., in)``, one slice per model. Then a linear layer is one ``baddbmm`` and a layer norm one normalisation
plus a broadcast scale and shift, so a step of K models dispatches about as many operations as a step of one
model: what bounds small models on a GPU, where each operation costs a kernel launch.

The modules keep their ``nn`` parents' parameters, names and initialisation, so checkpoints and seeds are
unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

import torch

__all__ = ["LayerNorm", "Linear", "layer_norm", "linear", "n_stacked"]


def n_stacked(weight: Tensor, single_dims: int) -> int | None:
    """K when ``weight`` carries a leading stack dim (it has ``single_dims + 1`` dims), else None (one model)."""
    return weight.shape[0] if weight.dim() == single_dims + 1 else None


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear`` for one model (``weight (out, in)``, ``x (..., in)``); for K stacked models ``weight
    (K, out, in)``, ``bias (K, out)`` and ``x (K, ..., in)`` -> ``(K, ..., out)``, model k on slice k."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    k, out_features = weight.shape[0], weight.shape[1]
    flat = x.reshape(k, -1, x.shape[-1])  # (K, N, in)
    if bias is None:
        y = torch.bmm(flat, weight.transpose(1, 2))
    else:
        y = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return y.view(*x.shape[:-1], out_features)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``F.layer_norm`` over the last dim for one model (``weight (D,)``); for K stacked models ``weight (K, D)``
    and ``x (K, ..., D)``: normalised, then scaled and shifted by slice k."""
    d = x.shape[-1]
    if weight.dim() == 1:
        return F.layer_norm(x, (d,), weight, bias, eps)
    shape = (weight.shape[0],) + (1,) * (x.dim() - 2) + (d,)
    return torch.addcmul(bias.view(shape), F.layer_norm(x, (d,), None, None, eps), weight.view(shape))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and initialisation) whose forward also takes K stacked weights
    (:func:`linear`)."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dim (same parameters) whose forward also takes K stacked weights
    (:func:`layer_norm`)."""

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)
