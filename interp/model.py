"""The Multimodal Routing model (Tsai et al., EMNLP 2020, §3; DESIGN.md "The model").

Shapes use ``B`` for the batch, ``T_m`` for the length of modality ``m``, ``d_m`` for its feature dim,
``D = d_model``, ``F = 7`` routed features (:data:`interp.schema.FEATURES`), ``d_f`` the feature size,
``J`` the number of concepts and ``d_c`` the concept size.

Pipeline: three MulT-style encoders (:mod:`interp.encoders`: self-attention per modality, six cross-modal encoders) give seven
feature vectors ``h_i (B, D)`` in the order t, a, v, ta, av, vt, tav; a batched linear head maps each to
``f_i (B, d_f)`` and ``p_i = sigmoid(.) (B,)``; :func:`route` (Procedure 1) turns them into concepts
``c_j``; ``logit_j = <o_j, c_j>`` without bias, so that in eval mode each logit is exactly the sum over
features of the contributions ``p_i r_ij <o_j, f_i W_ij>``.

Nothing here does work at import time; no global state; feature dims come from :class:`ModelConfig`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from interp.encoders import CrossModalEncoder, ModalityEmbedding, SelfAttentionEncoder, last_valid, padding_masks
from interp.errors import CheckpointError, InterpError
from interp.layers import Linear, n_stacked
from interp.schema import FEATURE_MODALITIES, FEATURES, VARIANTS

__all__ = ["ModelConfig", "RoutingOutput", "RoutingModel", "concept_dropout_noise", "route"]

N_FEATURES = len(FEATURES)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class ModelConfig:
    """Hyper-parameters of a :class:`RoutingModel`; stored in checkpoints via :meth:`to_dict`.

    ``input_dims`` are the (text, audio, vision) feature dims of the data; ``n_concepts`` is ``J``.
    ``routing_iterations`` overrides the variant's default (routing 2, routing1 1, gam 0) when not None.
    Dropouts: ``concept_dropout`` on the concepts before the logits (paper: 0.5); in the encoders
    ``embed_dropout`` (after the input embedding), ``attn_dropout`` (attention weights), ``relu_dropout`` (inside the
    feed-forward) and ``res_dropout`` (on each residual branch). The defaults are the authors' released run
    (``run.sh`` of martinmamql/multimodal_routing: 0.0 for every encoder dropout, ``--dp 0.5`` on concepts);
    MulT's own defaults are attn 0.1, relu 0.1, embed 0.25, res 0.1.
    Invalid values raise :class:`~interp.errors.InterpError` with a one-line message.
    """

    task: str
    variant: str
    input_dims: tuple[int, int, int]
    n_concepts: int
    d_model: int = 32
    n_heads: int = 4
    n_layers: int = 2
    d_feature: int = 64
    d_concept: int = 64
    concept_dropout: float = 0.5
    attn_dropout: float = 0.0
    embed_dropout: float = 0.0
    relu_dropout: float = 0.0
    res_dropout: float = 0.0
    routing_iterations: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise InterpError(f"model config: task must be a non-empty string, got {self.task!r}")
        if self.variant not in VARIANTS:
            raise InterpError(
                f"model config: unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}"
            )
        dims = tuple(self.input_dims) if isinstance(self.input_dims, (list, tuple)) else None
        if dims is None or len(dims) != 3 or not all(_is_int(d) and d >= 1 for d in dims):
            raise InterpError(
                f"model config: input_dims must be three integers >= 1 (text, audio, vision), got {self.input_dims!r}"
            )
        self.input_dims = (int(dims[0]), int(dims[1]), int(dims[2]))
        if not _is_int(self.n_concepts) or self.n_concepts < 2:
            raise InterpError(f"model config: n_concepts must be an integer >= 2, got {self.n_concepts!r}")
        for name in ("d_model", "n_heads", "n_layers", "d_feature", "d_concept"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InterpError(f"model config: {name} must be an integer >= 1, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise InterpError(
                f"model config: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        for name in ("concept_dropout", "attn_dropout", "embed_dropout", "relu_dropout", "res_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise InterpError(f"model config: {name} must be a number in [0, 1), got {value!r}")
            setattr(self, name, float(value))
        it = self.routing_iterations
        if it is not None:
            if not _is_int(it) or it < 0:
                raise InterpError(f"model config: routing_iterations must be an integer >= 0, got {it!r}")
            if self.variant == "gam" and it != 0:
                raise InterpError("model config: variant 'gam' has no routing; routing_iterations must be 0")
            if self.variant != "gam" and it == 0:
                raise InterpError(
                    f"model config: variant {self.variant!r} needs routing_iterations >= 1 (use variant 'gam' for 0)"
                )

    @property
    def iterations(self) -> int:
        """Routing iterations actually used (0 = no routing, r fixed at 1/J)."""
        return VARIANTS[self.variant] if self.routing_iterations is None else self.routing_iterations

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (str/int/float/list/None only): JSON- and ``torch.load(weights_only=True)``-safe."""
        d = asdict(self)
        d["input_dims"] = [int(x) for x in self.input_dims]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; missing optional keys take defaults, except ``relu_dropout`` and
        ``res_dropout`` of a config that has ``attn_dropout`` (written before they existed, when attn_dropout
        applied to all three): they take its value, so an old checkpoint resumes as it was trained.

        Raises :class:`~interp.errors.CheckpointError` on an unknown key, a missing required key, or an
        invalid value.
        """
        if not isinstance(d, dict):
            raise CheckpointError(f"model config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise CheckpointError(f"model config has unknown key(s): {', '.join(unknown)}")
        missing = [name for name in ("task", "variant", "input_dims", "n_concepts") if name not in d]
        if missing:
            raise CheckpointError(f"model config is missing key(s): {', '.join(missing)}")
        kwargs = dict(d)
        # Configs written before relu/res dropout existed used attn_dropout for all three encoder dropouts.
        if "attn_dropout" in kwargs:
            for name in ("relu_dropout", "res_dropout"):
                kwargs.setdefault(name, kwargs["attn_dropout"])
        if isinstance(kwargs["input_dims"], list):
            kwargs["input_dims"] = tuple(kwargs["input_dims"])
        try:
            return cls(**kwargs)
        except CheckpointError:
            raise
        except InterpError as exc:
            raise CheckpointError(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# Routing (Procedure 1)
# --------------------------------------------------------------------------------------------------


def route(
    f: Tensor, p: Tensor, W: Tensor, iterations: int, keep: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Multimodal routing (paper Procedure 1), batched over samples, features and concepts.

    Args:
        f: features ``(B, 7, d_f)``.
        p: feature activations in [0, 1], ``(B, 7)``.
        W: routing weights ``(7, d_f, J, d_c)``.
        iterations: number of routing iterations; 0 means no routing (the ``gam`` baseline).
        keep: optional 0/1 mask of the features to keep, ``(B, 7)``, or ``(B, S, 7)`` for ``S`` coalitions per
            sample in one call. A removed feature (0) is dropped from every sum of the routing, the uniform
            starting concepts included (its ``p_i`` acts as 0 everywhere). Removing all 7 gives concepts = 0,
            hence logits = 0 (and r = 1/J). ``None`` keeps every feature.

    Returns:
        ``(concepts (B, J, d_c), r (B, 7, J), votes (B, 7, J, d_c))`` with ``votes[b, i, j] = f_i W_ij``; with a
        ``(B, S, 7)`` mask, concepts are ``(B, S, J, d_c)`` and r ``(B, S, 7, J)`` (votes do not depend on it).

    With ``iterations >= 1``: concepts start from uniform weights ``c_j = sum_i (1/J) u_ij`` (not weighted
    by p, as in DESIGN.md); each iteration computes ``s_ij = <u_ij, c_j> / sqrt(d_c)``,
    ``r_ij = softmax_j(s_ij)`` and ``c_j = sum_i p_i r_ij u_ij``.

    With ``iterations == 0``: ``r_ij = 1/J`` exactly and ``c_j = sum_i p_i (1/J) u_ij``. DESIGN.md writes
    gam's logit as ``sum_i p_i <o_j, u_ij>``; keeping the 1/J factor only rescales ``o_j`` (same model
    family) and makes both ``r == 1/J`` and ``logit_j == sum_i p_i r_ij <o_j, u_ij>`` hold exactly.

    No squash and no normalisation of concepts, so ``c_j`` is always linear in the votes (the
    contribution decomposition relies on it).
    """
    if iterations < 0:
        raise InterpError(f"routing iterations must be >= 0, got {iterations}")
    if keep is not None and (keep.dim() not in (2, 3) or keep.shape[0] != p.shape[0] or keep.shape[-1] != p.shape[1]):
        raise InterpError(f"keep mask must be (B, {p.shape[1]}) or (B, S, {p.shape[1]}), got {tuple(keep.shape)}")
    n_concepts = W.shape[-2]
    votes = torch.einsum("...bif,...ifjc->...bijc", f, W)
    routed = votes
    if keep is not None:
        keep = keep.to(device=votes.device, dtype=votes.dtype)
        if keep.dim() == 3:  # S coalitions per sample: broadcast the votes and p over them
            routed, p = votes.unsqueeze(1), p.unsqueeze(1)
        p = p * keep
    if iterations == 0:
        r = torch.full((*p.shape, n_concepts), 1.0 / n_concepts, dtype=votes.dtype, device=votes.device)
        return _weighted_sum(p, r, routed), r, votes
    scale = 1.0 / math.sqrt(W.shape[-1])
    if keep is None:
        concepts = votes.sum(dim=-3) / n_concepts
    else:
        concepts = (keep.unsqueeze(-1).unsqueeze(-1) * routed).sum(dim=-3) / n_concepts
    for _ in range(iterations):
        # <u_ij, c_j> as a broadcast product and sum: the same batched operation as
        # einsum("bijc,bjc->bij"), about 6x faster on CPU (einsum routes it through a slow bmm)
        s = (routed * concepts.unsqueeze(-3)).sum(-1) * scale
        r = torch.softmax(s, dim=-1)
        concepts = _weighted_sum(p, r, routed)
    return concepts, r, votes


def _weighted_sum(p: Tensor, r: Tensor, votes: Tensor) -> Tensor:
    """``c_j = sum_i p_i r_ij u_ij``: p ``(..., 7)``, r ``(..., 7, J)``, votes ``(..., 7, J, d_c)`` -> ``(..., J, d_c)``."""
    return ((p.unsqueeze(-1) * r).unsqueeze(-1) * votes).sum(dim=-3)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass
class RoutingOutput:
    """One forward pass. In eval mode ``logits == contributions.sum(1)`` (to float32 rounding).

    Attributes:
        logits: ``(B, J)`` float32.
        p: ``(B, 7)`` feature activations in [0, 1].
        r: ``(B, 7, J)`` routing coefficients; each row sums to 1 over concepts.
        contributions: ``(B, 7, J)``, ``p_i r_ij <o_j, f_i W_ij>``.
    """

    logits: Tensor
    p: Tensor
    r: Tensor
    contributions: Tensor


#: (query modality, source modality) of the six cross-modal encoders, as indices into (text, audio, vision).
#: The bimodal features first (ta: text queries audio, av, vt), then their reverses (at, va, tv), fused into tav.
#: The order fixes the order in which the encoders are built, hence their initial weights under a seed.
_BIMODAL: tuple[str, ...] = tuple(f for f in FEATURES if len(FEATURE_MODALITIES[f]) == 2)
_CROSS_PAIRS: dict[str, tuple[int, int]] = {
    **{f: (FEATURE_MODALITIES[f][0], FEATURE_MODALITIES[f][1]) for f in _BIMODAL},
    **{f[::-1]: (FEATURE_MODALITIES[f][1], FEATURE_MODALITIES[f][0]) for f in _BIMODAL},
}


def concept_dropout_noise(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str, generator: torch.Generator | None = None
) -> Tensor:
    """The multiplier of concept dropout: ``(B, J, d_c)`` float32 of 0 (probability ``p``) and ``1 / (1 - p)``.

    Drawn as ``nn.Dropout`` draws it on the CPU (``bernoulli_(1 - p)`` then ``/ (1 - p)``), from ``generator``
    or torch's global generator. One function for every training path, so that K seeds trained at once
    (:mod:`interp.ensemble_train`, one generator per seed) draw exactly the masks of K separate trainings.
    """
    noise = torch.empty(shape, device=device)
    return noise.bernoulli_(1.0 - p, generator=generator).div_(1.0 - p)


class RoutingModel(nn.Module):
    """Multimodal Routing: encoders -> seven features (f_i, p_i) -> routing -> concept logits.

    ``forward(text (B, T_t, d_t), audio (B, T_a, d_a), vision (B, T_v, d_v)) -> RoutingOutput``.
    Sequence lengths may differ per modality (any T >= 1). Padded batches pass ``lengths (B, 3)`` (real steps of
    text, audio, vision) and ``padding`` (``end`` or ``start``): padded steps are masked as attention keys and
    each feature is taken at the last real step, so padding never changes a sample's outputs; ``lengths=None``
    is full length (the behaviour of checkpoints trained before padding was supported). ``lengths`` may stay on the
    CPU when the inputs are on a GPU: the masks are made on the inputs' device without waiting for it (see
    :func:`interp.encoders.padding_masks`). Under ``torch.autocast`` the encoders run in the
    autocast dtype, while the heads, routing, logits and contributions always run in float32.
    Concept dropout is applied only in training mode, so the contribution identity
    ``logits == contributions.sum(1)`` holds exactly in eval mode (not in training mode).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        encoder_dropouts = (c.attn_dropout, c.relu_dropout, c.res_dropout)
        self.embed = nn.ModuleList(ModalityEmbedding(d, c.d_model, c.embed_dropout) for d in c.input_dims)
        self.self_encoders = nn.ModuleList(
            SelfAttentionEncoder(c.d_model, c.n_heads, c.n_layers, *encoder_dropouts) for _ in range(3)
        )
        self.cross_encoders = nn.ModuleDict(
            {name: CrossModalEncoder(c.d_model, c.n_heads, c.n_layers, *encoder_dropouts) for name in _CROSS_PAIRS}
        )
        self.fusion = Linear(3 * c.d_model, c.d_model)
        # Seven linear heads D -> d_f + 1, batched.
        bound = 1.0 / math.sqrt(c.d_model)
        self.head_weight = nn.Parameter(torch.empty(N_FEATURES, c.d_model, c.d_feature + 1).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.empty(N_FEATURES, c.d_feature + 1).uniform_(-bound, bound))
        # Routing weights W_ij (7, d_f, J, d_c) and concept read-outs o_j (J, d_c).
        self.W = nn.Parameter(torch.randn(N_FEATURES, c.d_feature, c.n_concepts, c.d_concept) / math.sqrt(c.d_feature))
        self.o = nn.Parameter(torch.randn(c.n_concepts, c.d_concept) / math.sqrt(c.d_concept))

    def n_parameters(self) -> int:
        """Number of scalar parameters."""
        return sum(p.numel() for p in self.parameters())

    def _check_inputs(self, text: Tensor, audio: Tensor, vision: Tensor, lengths: Tensor | None = None) -> None:
        stacked = n_stacked(self.o, 2)  # K when called with K stacked models' parameters (interp.ensemble_train)
        dims, layout = (3, "(batch, time, dim)") if stacked is None else (4, f"({stacked} models, batch, time, dim)")
        batch = text.shape[-3] if text.dim() == dims else None
        for name, x, d in zip(("text", "audio", "vision"), (text, audio, vision), self.config.input_dims):
            if x.dim() != dims or (stacked is not None and x.shape[0] != stacked):
                raise InterpError(f"{name} input must be {layout}, got shape {tuple(x.shape)}")
            if x.shape[-1] != d:
                raise InterpError(f"{name} input has feature dim {x.shape[-1]} but the model expects {d}")
            if x.shape[-2] < 1:
                raise InterpError(f"{name} input has an empty time axis")
            if x.shape[-3] != batch:
                raise InterpError(f"inputs disagree on batch size: text {batch}, {name} {x.shape[-3]}")
        if stacked is not None and lengths is not None and tuple(lengths.shape) != (stacked, batch, 3):
            raise InterpError(f"lengths of {stacked} stacked models must be ({stacked}, batch, 3), got "
                              f"{tuple(lengths.shape)}")

    def encode(
        self, text: Tensor, audio: Tensor, vision: Tensor, lengths: Tensor | None = None, padding: str = "end"
    ) -> Tensor:
        """Seven encoded feature vectors ``(B, 7, D)`` in the order t, a, v, ta, av, vt, tav.

        Runs in the ambient autocast dtype (if any). ``lengths (B, 3)`` / ``padding``: see the class docstring.
        """
        self._check_inputs(text, audio, vision, lengths)
        masks = padding_masks(lengths, (text.shape[-2], audio.shape[-2], vision.shape[-2]), padding, text.device)
        x = [emb(m, mask) for emb, m, mask in zip(self.embed, (text, audio, vision), masks)]
        index = [last_valid(mask) for mask in masks]
        unimodal = [enc.last_step(xm, mask, i) for enc, xm, mask, i in zip(self.self_encoders, x, masks, index)]
        last = {
            name: self.cross_encoders[name].last_step(x[q], x[k], masks[k], index[q])
            for name, (q, k) in _CROSS_PAIRS.items()
        }
        tav = self.fusion(torch.cat([last["at"], last["va"], last["tv"]], dim=-1))
        return torch.stack([*unimodal, last["ta"], last["av"], last["vt"], tav], dim=-2)

    def _heads(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``h (B, 7, D)`` float32 -> ``(f (B, 7, d_f), p (B, 7))``."""
        out = torch.einsum("...bid,...ide->...bie", h, self.head_weight) + self.head_bias.unsqueeze(-3)
        return out[..., :-1], torch.sigmoid(out[..., -1])

    def features(
        self, text: Tensor, audio: Tensor, vision: Tensor, lengths: Tensor | None = None, padding: str = "end"
    ) -> tuple[Tensor, Tensor]:
        """Routed features: ``f (B, 7, d_f)`` and ``p (B, 7)``, both float32."""
        h = self.encode(text, audio, vision, lengths, padding)
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self._heads(h.float())

    def forward(
        self,
        text: Tensor,
        audio: Tensor,
        vision: Tensor,
        lengths: Tensor | None = None,
        padding: str = "end",
        concept_noise: Tensor | None = None,
    ) -> RoutingOutput:
        """``text (B, T_t, d_t), audio (B, T_a, d_a), vision (B, T_v, d_v) -> RoutingOutput`` (float32).

        ``lengths (B, 3)`` real steps per modality and ``padding`` side, or None for full length.
        ``concept_noise (B, J, d_c)``: the concept-dropout multiplier used in training mode (see
        :func:`concept_dropout_noise`); None draws it from torch's global generator. Ignored in eval mode.
        """
        h = self.encode(text, audio, vision, lengths, padding)
        with torch.autocast(device_type=h.device.type, enabled=False):
            f, p = self._heads(h.float())
            W = self.W.float()
            o = self.o.float()
            concepts, r, votes = route(f, p, W, self.config.iterations)
            if self.training and self.config.concept_dropout > 0:
                if concept_noise is None:
                    concept_noise = concept_dropout_noise(concepts.shape, self.config.concept_dropout, concepts.device)
                concepts_used = concepts * concept_noise
            else:
                concepts_used = concepts
            logits = torch.einsum("...bjc,...jc->...bj", concepts_used, o)
            contributions = p.unsqueeze(-1) * r * (votes * o.unsqueeze(-3).unsqueeze(-3)).sum(-1)  # p_i r_ij <o_j, u_ij>
        return RoutingOutput(logits=logits, p=p, r=r, contributions=contributions)
