"""One batch of interpretation values (:class:`RunBatch`), what :class:`interp.runwriter.RunWriter` writes: its
shapes checked (:func:`check_shapes`), and batches merged into one (:func:`concat_batches`), so that a row
group's tables are built once rather than batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from interp.errors import RunError
from interp.schema import FEATURES


@dataclass
class RunBatch:
    """One batch of interpretation values for B samples (numpy, float32 unless stated).

    sample_ids: B strings; split: B split names (or one name for all); rows: (B,) int64 row within the split;
    targets: (B,) int class index (single-label tasks) or (B, J) 0/1 (multi-label tasks);
    scores: (B,) continuous label (sentiment) or None; logits: (B, J); p: (B, 7); r: (B, 7, J);
    contributions: (B, 7, J); transcripts: B strings or None; modality_labels: CH-SIMS per-modality labels
    ``{"T", "A", "V": (B,)}`` (columns ``label_T`` ...) or None; videos: B video ids or None (older callers).
    """

    sample_ids: Sequence[str]
    split: Sequence[str] | str
    rows: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    p: np.ndarray
    r: np.ndarray
    contributions: np.ndarray
    scores: np.ndarray | None = None
    transcripts: Sequence[str] | None = None
    modality_labels: dict[str, np.ndarray] | None = None
    videos: Sequence[str] | None = None

    @property
    def size(self) -> int:
        return len(self.sample_ids)


def concat_batches(batches: Sequence[RunBatch]) -> RunBatch | None:
    """The batches as one, samples in order; None where their optional fields (scores, transcripts, videos,
    modality labels) are set in some and not in others, which only batch by batch can be written."""
    first = batches[0]
    optional = ("scores", "transcripts", "modality_labels", "videos")
    if any((getattr(b, name) is None) != (getattr(first, name) is None) for b in batches for name in optional):
        return None
    if len(batches) == 1:
        return first

    def arrays(name: str) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(b, name)) for b in batches])

    def strings(name: str) -> list[str]:
        return [value for b in batches for value in getattr(b, name)]

    if all(isinstance(b.split, str) and b.split == first.split for b in batches):
        split: Sequence[str] | str = first.split
    else:
        split = [name for b in batches for name in ([b.split] * b.size if isinstance(b.split, str) else b.split)]
    return RunBatch(
        sample_ids=strings("sample_ids"),
        split=split,
        rows=arrays("rows"),
        targets=arrays("targets"),
        logits=arrays("logits"),
        p=arrays("p"),
        r=arrays("r"),
        contributions=arrays("contributions"),
        scores=arrays("scores") if first.scores is not None else None,
        transcripts=strings("transcripts") if first.transcripts is not None else None,
        modality_labels=(
            {m: np.concatenate([np.asarray(b.modality_labels[m]) for b in batches]) for m in first.modality_labels}  # type: ignore[index]
            if first.modality_labels is not None else None
        ),
        videos=strings("videos") if first.videos is not None else None,
    )


def check_shapes(batch: RunBatch, n_concepts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p (B, 7), r (B, 7, J), contributions (B, 7, J))`` of ``batch`` as float32; a :class:`RunError` where
    their shapes do not match B, the 7 features and J."""
    n, n_features = batch.size, len(FEATURES)
    p = np.asarray(batch.p, dtype=np.float32)
    r = np.asarray(batch.r, dtype=np.float32)
    contributions = np.asarray(batch.contributions, dtype=np.float32)
    if r.shape != (n, n_features, n_concepts) or contributions.shape != r.shape or p.shape != (n, n_features):
        raise RunError(f"batch shapes do not match: p {p.shape}, r {r.shape}, contributions {contributions.shape}")
    return p, r, contributions
