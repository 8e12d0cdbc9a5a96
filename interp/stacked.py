"""K models of one architecture as one flat parameter: what :mod:`interp.ensemble_train` trains.

:class:`StackedModels` holds the K models' parameters in one leaf tensor ``flat (K, P)`` (row k: model k's P
parameters, in ``named_parameters`` order) and a copy of the module on torch's meta device whose parameters are
views of it: parameter ``name`` of shape S is the ``(K, *S)`` view ``flat.split(sizes, 1)[i].view(K, *S)``. Called
with stacked inputs ``(K, B, ...)`` the module runs the K models at once (its layers take a leading K dim,
:mod:`interp.layers`).

One leaf instead of one per parameter is what keeps the host's work per step near one model's, which bounds a
small model's step on a GPU (each operation costs a dispatch and a launch, whatever its size):

* backward accumulates one gradient (the views' gradients are joined by one ``cat``), not one per parameter;
* per-model gradient clipping is one norm over each row and one multiplication (:meth:`StackedModels.clip_grad_`),
  where a list of parameters needs a slice of every gradient per model;
* Adam updates one tensor. Adam is element-wise, so this is K Adams, one per model.

Measured on the 2-core CPU at a host-bound size (default model, B = 1, T = 2, K = 5, ``bench/count_ops.py``):
one stacked step took 2.07x one model's time with a leaf per parameter and ``functional_call``, 1.66x to 1.68x
(two runs) with one flat leaf.

Every parameter must take part in every forward (true of :class:`interp.model.RoutingModel` in each variant): an
unused parameter would get a zero gradient here, where a model alone gets none and Adam leaves it as it is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["StackedModels"]


class StackedModels:
    """K models of one architecture, their parameters in one leaf ``flat (K, P)``; see the module docstring.

    ``models``: K modules of the same class and shapes, without buffers. Their parameters are copied (the models
    are left as they are) onto ``device`` (default: where they are).
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device | str | None = None) -> None:
        if not models:
            raise ValueError("StackedModels needs at least one model")
        first = models[0]
        if any(True for _ in first.buffers()):
            raise ValueError("StackedModels stacks parameters only; these models have buffers")
        self.names = [name for name, _ in first.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in first.named_parameters()]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        for model in models[1:]:
            if [(n, tuple(p.shape)) for n, p in model.named_parameters()] != list(zip(self.names, self.shapes)):
                raise ValueError("StackedModels needs models of one architecture (the same parameter names and shapes)")
        with torch.no_grad():
            rows = [torch.cat([p.reshape(-1) for p in model.parameters()]) for model in models]
            flat = torch.stack(rows).to(device if device is not None else rows[0].device)
        self.flat = flat.requires_grad_(True)
        self.module = copy.deepcopy(first).to("meta")
        self._slots: list[tuple[dict, str]] = []  # (the __dict__ of the module holding it, its name there)
        for name in self.names:
            owner_name, _, attr = name.rpartition(".")
            owner = self.module.get_submodule(owner_name)
            del owner._parameters[attr]  # a plain attribute from now on: bind() sets it
            self._slots.append((owner.__dict__, attr))
        self.bind()

    @property
    def k(self) -> int:
        """The number of stacked models."""
        return self.flat.shape[0]

    def views(self, flat: Tensor | None = None) -> dict[str, Tensor]:
        """Name -> ``(K, *shape)`` view of ``flat`` (default: the parameters; also Adam's moments, or a CPU copy of
        either, any tensor laid out as the parameters)."""
        flat = self.flat if flat is None else flat
        pieces = flat.split(self.sizes, dim=1)
        return {name: piece.view(flat.shape[0], *shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}

    def bind(self) -> nn.Module:
        """Point the module's parameters at views of ``flat`` and return the module. Call it before each forward
        that backward will go through (the views join autograd's graph); under ``torch.no_grad`` the views do not
        track gradients."""
        pieces = self.flat.split(self.sizes, dim=1)
        k = self.k
        for (slot, attr), piece, shape in zip(self._slots, pieces, self.shapes):
            slot[attr] = piece.view(k, *shape)
        return self.module

    @torch.no_grad()
    def clip_grad_(self, max_norm: float) -> Tensor:
        """``clip_grad_norm_(model_k.parameters(), max_norm)`` for every model k at once: the gradient row k is scaled
        by ``min(1, max_norm / (norm_k + 1e-6))``. Returns the norms ``(K,)`` before clipping."""
        grad = self.flat.grad
        if grad is None:
            return torch.zeros(self.k, device=self.flat.device)
        norms = torch.linalg.vector_norm(grad, dim=1)
        grad.mul_((max_norm / (norms + 1e-6)).clamp(max=1.0).unsqueeze(1))
        return norms

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the models at positions ``keep`` (in that order): a new leaf ``flat`` of their rows."""
        index = torch.tensor(list(keep), device=self.flat.device)
        self.flat = self.flat.detach()[index].clone().requires_grad_(True)
        self.bind()
