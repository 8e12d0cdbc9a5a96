"""The MulT-style encoders of the Multimodal Routing model (Tsai et al., 2019; DESIGN.md "The model").

A :class:`ModalityEmbedding` projects each modality ``(B, T_m, d_m)`` to ``(B, T_m, D)`` with sinusoidal
positions; a :class:`SelfAttentionEncoder` per modality and a :class:`CrossModalEncoder` per (query, source)
pair of modalities attend over the sequences (pre-norm, scaled-dot-product attention); padded steps are masked
(:func:`padding_masks`) and only the last real step of each sequence is computed in the last layer.
:class:`interp.model.RoutingModel` assembles them into the seven features.

Every layer also runs K stacked models at once (parameters with a leading K dim, inputs ``(K, B, T, d)`` and masks
``(K, B, T)``; see :mod:`interp.layers`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from interp.errors import InterpError
from interp.layers import LayerNorm, Linear, linear

__all__ = [
    "Attention", "CrossModalEncoder", "CrossModalLayer", "ModalityEmbedding", "SelfAttentionEncoder",
    "SelfAttentionLayer", "CUDA_HEAD_MULTIPLE", "last_valid", "padding_masks", "sinusoidal_positions",
]

#: The head width that CUDA's fused SDPA kernels take: memory-efficient attention a multiple of 4 in float32 and of
#: 8 in bf16, flash attention a multiple of 8 (:class:`Attention` pads to it on CUDA).
CUDA_HEAD_MULTIPLE = 8


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Sinusoidal position encodings ``(length, dim)`` for any length (sin on even, cos on odd channels)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe.to(dtype)


def padding_masks(
    lengths: Tensor | None, seq_lens: tuple[int, int, int], side: str = "end", device: torch.device | None = None
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Key-padding masks ``(B, T_m)`` bool on ``device`` (default: that of ``lengths``), True at padded steps
    (PyTorch's convention), one per modality.

    ``lengths``: ``(B, 3)`` real steps of text, audio, vision (each in [1, T_m]) or None (no masks: full length);
    ``(K, B, 3)`` for K stacked models gives ``(K, B, T_m)`` masks;
    ``side``: ``end`` (real steps first, MMSA) or ``start`` (real steps last, MulT); ``none`` means no masks.
    A modality whose samples are all full length gets None. That is decided where ``lengths`` are: lengths on the
    CPU for masks on a GPU cost no wait for the device (lengths on the GPU cost one per modality).
    """
    if lengths is None or side == "none":
        return (None, None, None)
    if side not in ("end", "start"):
        raise InterpError(f"unknown padding side {side!r}; choose end, start or none")
    device = lengths.device if device is None else device
    masks: list[Tensor | None] = []
    for m, steps in enumerate(seq_lens):
        length = lengths[..., m].to(torch.long).clamp(1, steps).unsqueeze(-1)
        if bool((length == steps).all()):
            masks.append(None)
            continue
        # from pageable CPU memory a non-blocking copy is staged at once: nothing waits for the device
        length = length.to(device, non_blocking=True)
        index = torch.arange(steps, device=device)
        masks.append(index >= length if side == "end" else index < steps - length)
    return masks[0], masks[1], masks[2]


def last_valid(mask: Tensor | None) -> Tensor | None:
    """Index ``(..., B)`` of each sample's last real step (``mask (..., B, T)`` True at padding); None (the last
    step) when there is no mask."""
    if mask is None:
        return None
    valid = (~mask).to(torch.int8)
    return mask.shape[-1] - 1 - valid.flip(-1).argmax(dim=-1)


class ModalityEmbedding(nn.Module):
    """1x1 Conv1d projection ``d_m -> D``, scaled by sqrt(D), plus sinusoidal positions and dropout.

    ``(B, T, d_m) -> (B, T, D)``. The 1x1 convolution runs as one matmul on the ``(B, T, d_m)`` layout (the
    same weights, no transposed copy). With a padding ``mask (B, T)`` the real steps are numbered 0, 1, ... from
    the first real step (so start padding does not shift positions); without one, steps are numbered 0..T-1.
    """

    def __init__(self, d_in: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Conv1d(d_in, d_model, kernel_size=1, bias=False)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)
        self._positions: tuple[tuple, Tensor] | None = None  # (key, table): not a buffer, not in the state dict

    def positions(self, length: int, dim: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """:func:`sinusoidal_positions` ``(length, dim)``, kept from the last call with the same shape, device and
        dtype: the table costs about ten operations to build, each a kernel launch on a GPU, at every forward."""
        key = (length, dim, device, dtype)
        if self._positions is None or self._positions[0] != key:
            self._positions = (key, sinusoidal_positions(length, dim, device, dtype))
        return self._positions[1]

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x (B, T, d_m) -> (B, T, D)``; ``mask (B, T)`` True at padded steps, or None."""
        h = linear(x, self.proj.weight.squeeze(-1)) * self.scale
        table = self.positions(h.shape[-2], h.shape[-1], h.device, h.dtype)
        if mask is None:
            h = h + table
        else:
            position = ((~mask).to(torch.long).cumsum(dim=-1) - 1).clamp(min=0)
            h = h + table[position]
        return self.dropout(h)


class Attention(nn.Module):
    """Multi-head attention on :func:`torch.nn.functional.scaled_dot_product_attention`, ``(B, T, D)`` layouts.

    The parameters and their names are those of ``nn.MultiheadAttention`` (``in_proj_weight (3D, D)``,
    ``in_proj_bias (3D,)``, ``out_proj``), drawn in the same order from the RNG, so checkpoints written with
    the ``nn.MultiheadAttention`` encoders load unchanged and give the same outputs. Self-attention projects
    q, k, v in one matmul; cross-attention projects q from the queries and k, v together from the source.
    Heads are split as views ``(B, T, H, d_h) -> (B, H, T, d_h)`` (no copy) and merged with one reshape.
    Attention dropout is SDPA's ``dropout_p`` in training only; with 0 SDPA stays on its fused kernel.

    ``head_multiple``: each head's q, k and v are zero-padded to a multiple of it before SDPA (same scores, since
    the zeros add nothing to q·k; the padded output columns are dropped), or None: :data:`CUDA_HEAD_MULTIPLE` on
    CUDA, no padding elsewhere. CUDA's fused kernels refuse other widths and SDPA then falls back to its
    unfused math path: at the paper size (d_h = 200 / 20 = 10) that path cost 4,469 instead of 4,019 kernels a train
    step, and the H100 took 175.5 -> 155.2 ms at B = 32 and 166.1 -> 139.9 ms at B = 256 (fp32) with the padding.
    The CPU's fused kernel takes any width, and padding there only adds work.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, head_multiple: int | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.head_multiple = head_multiple
        # Creation order as in nn.MultiheadAttention: out_proj first, then the in-projection is re-drawn.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, source: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x (B, T_q, D)`` attends to ``source (B, T_k, D)`` (``x`` itself when None) -> ``(B, T_q, D)``.

        ``key_padding_mask (B, T_k)`` bool, optional: True marks a *padded* key that no query may attend to
        (the convention of ``nn.MultiheadAttention``); it reaches SDPA as ``attn_mask`` (True = attend).
        Every query needs at least one unpadded key, or its output is NaN.
        """
        t_q, d_model = x.shape[-2], x.shape[-1]
        heads = self.n_heads
        d_head = d_model // heads
        # K stacked models (x (K, B, T, D)) attend as K * B sequences of one model: (N, T, ...) layouts
        multiple = self.head_multiple if self.head_multiple is not None else (
            CUDA_HEAD_MULTIPLE if x.device.type == "cuda" else 1)
        pad = -d_head % multiple
        if source is None:
            qkv = linear(x, self.in_proj_weight, self.in_proj_bias).flatten(0, -3).unflatten(-1, (3, heads, d_head))
            if pad:
                qkv = F.pad(qkv, (0, pad))
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            # split, not two slices: its backward is one cat, where slices cost a zero-fill, a copy and an add
            w_q, w_kv = self.in_proj_weight.split((d_model, 2 * d_model), dim=-2)
            b_q, b_kv = self.in_proj_bias.split((d_model, 2 * d_model), dim=-1)
            q = linear(x, w_q, b_q).flatten(0, -3).unflatten(-1, (heads, d_head))
            kv = linear(source, w_kv, b_kv).flatten(0, -3).unflatten(-1, (2, heads, d_head))
            if pad:
                q, kv = F.pad(q, (0, pad)), F.pad(kv, (0, pad))
            q = q.transpose(1, 2)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if key_padding_mask is None else ~key_padding_mask.flatten(0, -2)[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            scale=d_head**-0.5 if pad else None,  # the unpadded width's scale
        )
        if pad:
            out = out[..., :d_head]
        return self.out_proj(out.transpose(1, 2).reshape(*x.shape[:-2], t_q, d_model))


def _last(x: Tensor, index: Tensor | None) -> Tensor:
    """``x (..., B, T, D)`` -> ``(..., B, 1, D)`` at time ``index (..., B)`` (the last step when None)."""
    if index is None:
        return x[..., -1:, :]
    return x.gather(-2, index[..., None, None].expand(*index.shape, 1, x.shape[-1]))


class SelfAttentionLayer(nn.Module):
    """Pre-LN transformer encoder layer (the parameters of ``nn.TransformerEncoderLayer(norm_first=True)``).

    ``x = x + res(attn(norm1(x)))``; ``x = x + res(linear2(relu_drop(relu(linear1(norm2(x))))))``.
    """

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(d_model, n_heads, attn_dropout)
        self.linear1 = Linear(d_model, 4 * d_model)
        self.dropout = nn.Dropout(relu_dropout)
        self.linear2 = Linear(4 * d_model, d_model)
        self.norm1 = LayerNorm(d_model)
        self.norm2 = LayerNorm(d_model)
        self.dropout1 = nn.Dropout(res_dropout)
        self.dropout2 = nn.Dropout(res_dropout)

    def _ff(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(self.norm2(x))))))

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x (B, T, D) -> (B, T, D)``."""
        x = x + self.dropout1(self.self_attn(self.norm1(x), key_padding_mask=key_padding_mask))
        return x + self._ff(x)

    def last_step(self, x: Tensor, key_padding_mask: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """Only the output at one time step: ``x (B, T, D) -> (B, 1, D)`` (keys and values still see all of x)."""
        h = self.norm1(x)
        x = _last(x, index) + self.dropout1(self.self_attn(_last(h, index), h, key_padding_mask))
        return x + self._ff(x)


class SelfAttentionEncoder(nn.Module):
    """``n_layers`` pre-LN transformer encoder layers and a final LayerNorm: ``(B, T, D) -> (B, T, D)``."""

    def __init__(
        self, d_model: int, n_heads: int, n_layers: int, attn_dropout: float, relu_dropout: float, res_dropout: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SelfAttentionLayer(d_model, n_heads, attn_dropout, relu_dropout, res_dropout) for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x (B, T, D) -> (B, T, D)``; ``key_padding_mask (B, T)`` bool, True = padded (optional)."""
        for layer in self.layers:
            x = layer(x, key_padding_mask)
        return self.norm(x)

    def last_step(self, x: Tensor, key_padding_mask: Tensor | None = None, index: Tensor | None = None) -> Tensor:
        """``forward(x)[b, index[b]]`` as ``(B, D)`` (the last step when ``index`` is None), computed without the
        query-side work of the last layer at the other steps."""
        for layer in self.layers[:-1]:
            x = layer(x, key_padding_mask)
        return self.norm(self.layers[-1].last_step(x, key_padding_mask, index)).squeeze(-2)


class CrossModalLayer(nn.Module):
    """Pre-LN cross-modal block: the query sequence attends to a source sequence, then a feed-forward.

    ``x (B, T_q, D)``, ``y (B, T_k, D) -> (B, T_q, D)``.
    """

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float) -> None:
        super().__init__()
        self.norm_q = LayerNorm(d_model)
        self.norm_kv = LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, attn_dropout)
        self.drop1 = nn.Dropout(res_dropout)
        self.norm_ff = LayerNorm(d_model)
        self.ff = nn.Sequential(
            Linear(d_model, 4 * d_model),
            nn.ReLU(),
            nn.Dropout(relu_dropout),
            Linear(4 * d_model, d_model),
        )
        self.drop2 = nn.Dropout(res_dropout)

    def forward(self, x: Tensor, y: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x (B, T_q, D)`` queries ``y (B, T_k, D)``; returns ``(B, T_q, D)``. ``key_padding_mask (B, T_k)``."""
        x = x + self.drop1(self.attn(self.norm_q(x), self.norm_kv(y), key_padding_mask))
        return x + self.drop2(self.ff(self.norm_ff(x)))


class CrossModalEncoder(nn.Module):
    """``n_layers`` cross-modal blocks (the source is the same at every layer) and a final LayerNorm."""

    def __init__(
        self, d_model: int, n_heads: int, n_layers: int, attn_dropout: float, relu_dropout: float, res_dropout: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossModalLayer(d_model, n_heads, attn_dropout, relu_dropout, res_dropout) for _ in range(n_layers)
        )
        self.norm = LayerNorm(d_model)

    def forward(self, x: Tensor, y: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """``x (B, T_q, D)`` queries ``y (B, T_k, D)``; returns ``(B, T_q, D)``. ``key_padding_mask (B, T_k)``
        bool, True = padded source step (optional)."""
        for layer in self.layers:
            x = layer(x, y, key_padding_mask)
        return self.norm(x)

    def last_step(
        self, x: Tensor, y: Tensor, key_padding_mask: Tensor | None = None, index: Tensor | None = None
    ) -> Tensor:
        """``forward(x, y)[b, index[b]]`` as ``(B, D)``. A query step never sees the other query steps (only the
        source), so only the selected step is run through the layers: the same numbers at 1/T_q of the work."""
        return self.forward(_last(x, index), y, key_padding_mask).squeeze(-2)
