"""The encoders of interp/model.py before issue 15 (commit 32d0f4d), kept as the reference "old path".

Built on ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention(batch_first=True)``, one dropout for attention,
feed-forward and residuals. Their state-dict layout is the one :mod:`interp.model` keeps, so
``old_model(model)`` gives a model with the *same weights* that runs the old code: used by ``bench/train.py``
(old vs new, interleaved) and by ``tests/test_speed.py`` (outputs identical to 1e-5).
"""

from __future__ import annotations

import copy
import math
import types

import torch
from torch import Tensor, nn

from interp.encoders import sinusoidal_positions
from interp.model import _CROSS_PAIRS, RoutingModel


class OldModalityEmbedding(nn.Module):
    def __init__(self, d_in: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Conv1d(d_in, d_model, kernel_size=1, bias=False)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x.transpose(1, 2)).transpose(1, 2) * self.scale
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        return self.dropout(h)


class OldSelfAttentionEncoder(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=4 * d_model, dropout=dropout,
                                       activation="relu", batch_first=True, norm_first=True)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class OldCrossModalLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.ReLU(), nn.Dropout(dropout),
                                nn.Linear(4 * d_model, d_model))
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        q = self.norm_q(x)
        kv = self.norm_kv(y)
        attended, _ = self.attn(q, kv, kv, need_weights=False)
        x = x + self.drop1(attended)
        x = x + self.drop2(self.ff(self.norm_ff(x)))
        return x


class OldCrossModalEncoder(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(OldCrossModalLayer(d_model, n_heads, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, y)
        return self.norm(x)


def _old_encode(
    self: RoutingModel, text: Tensor, audio: Tensor, vision: Tensor, lengths: Tensor | None = None, padding: str = "end"
) -> Tensor:
    """The old ``RoutingModel.encode``: full sequences through every layer, then the last step (no padding masks)."""
    if lengths is not None:
        raise ValueError("the old encoder path has no padding masks; pass lengths=None")
    self._check_inputs(text, audio, vision)
    x = [emb(m) for emb, m in zip(self.embed, (text, audio, vision))]
    unimodal = [enc(xm)[:, -1] for enc, xm in zip(self.self_encoders, x)]
    last = {name: self.cross_encoders[name](x[q], x[k])[:, -1] for name, (q, k) in _CROSS_PAIRS.items()}
    tav = self.fusion(torch.cat([last["at"], last["va"], last["tv"]], dim=-1))
    return torch.stack([*unimodal, last["ta"], last["av"], last["vt"], tav], dim=1)


def old_model(model: RoutingModel, dropout: float | None = None) -> RoutingModel:
    """A copy of ``model`` (same weights, same device) whose encoders run the old code.

    ``dropout`` is the single encoder dropout of the old code (default: the model's ``attn_dropout``); the
    embedding keeps ``embed_dropout``.
    """
    c = model.config
    p = c.attn_dropout if dropout is None else dropout
    old = copy.deepcopy(model)
    old.embed = nn.ModuleList(OldModalityEmbedding(d, c.d_model, c.embed_dropout) for d in c.input_dims)
    old.self_encoders = nn.ModuleList(OldSelfAttentionEncoder(c.d_model, c.n_heads, c.n_layers, p) for _ in range(3))
    old.cross_encoders = nn.ModuleDict(
        {name: OldCrossModalEncoder(c.d_model, c.n_heads, c.n_layers, p) for name in _CROSS_PAIRS}
    )
    old.load_state_dict(model.state_dict())  # strict: the layouts are the same
    old.to(next(model.parameters()).device)
    old.encode = types.MethodType(_old_encode, old)
    return old.train(model.training)
