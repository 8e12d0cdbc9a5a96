"""Padded sequences: how many time steps of each sample are real, for either padding side.

A data set's sequences have one length T per modality, so shorter samples are padded with all-zero steps:
the MMSA layout pads at the **end** (and stores ``audio_lengths`` / ``vision_lengths``); the MulT layout pads at
the **start** and stores no lengths. :func:`valid_lengths` finds the real steps of a (N, T, d) array by counting
the all-zero steps at the padded side; the model turns lengths into attention key-padding masks
(:func:`interp.encoders.padding_masks`) and takes each feature at the last real step.

Lengths are (N, 3) int64 in the order text, audio, vision, each in [1, T_m]; a sample with no real step at all
(every step zero) keeps one step, so attention always has a key. ``None`` means "every sample is full length"
(the behaviour before padding was supported).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from interp.errors import DataError
from interp.schema import MODALITIES

#: Padding sides: ``end`` (MMSA: real steps first), ``start`` (MulT: real steps last), ``none`` (no padding found).
PADDING_SIDES: tuple[str, ...] = ("end", "start", "none")


def zero_run(array: np.ndarray, side: str) -> np.ndarray:
    """(N,) int64: the number of consecutive all-zero time steps of a (N, T, d) array at ``side`` (end or start).

    Walks the steps from ``side`` inwards, keeping only the samples whose steps so far are all zero: data without
    padding is settled by its first step, so a load reads one step of it, not all T (no (N, T, d) temporary)."""
    if side not in ("end", "start"):
        raise DataError(f"unknown padding side {side!r}; choose end or start")
    n, steps = int(array.shape[0]), int(array.shape[1])
    run = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)  # samples whose steps walked so far are all zero
    for step in (range(steps) if side == "start" else range(steps - 1, -1, -1)):
        if alive.size == 0:
            break
        alive = alive[~np.any(array[alive, step, :] != 0, axis=1)]
        run[alive] += 1
    return run


def valid_lengths(array: np.ndarray, side: str) -> np.ndarray:
    """(N,) int64 real steps of a (N, T, d) array padded at ``side``: T minus the zero run, at least 1."""
    steps = int(array.shape[1])
    return np.maximum(steps - zero_run(array, side), 1).astype(np.int64)


def checked_lengths(name: str, value: object, n: int, steps: int) -> np.ndarray:
    """Stored lengths (e.g. MMSA ``audio_lengths``) as (N,) int64 clipped to [1, T]; DataError if malformed.

    Lengths above T (MMSA stores the unpadded length of sequences cut at T) are clipped to T; 0 becomes 1.
    """
    try:
        lengths = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{name} is not a numeric array; expected one length per sample") from None
    if lengths.shape[0] != n:
        raise DataError(f"{name} has {lengths.shape[0]} entries but the split has {n} samples")
    if not np.isfinite(lengths).all() or (lengths < 0).any():
        raise DataError(f"{name} holds negative or non-finite lengths; expected whole numbers >= 0")
    return np.clip(np.round(lengths), 1, steps).astype(np.int64)


def stack_lengths(
    arrays: Mapping[str, np.ndarray], stored: Mapping[str, np.ndarray | None], side: str
) -> np.ndarray | None:
    """(N, 3) int64 lengths (text, audio, vision): ``stored[m]`` where given, else detected at ``side``.

    Returns None when every sample of every modality is full length (nothing to mask).
    """
    columns = []
    for modality in MODALITIES:
        given = stored.get(modality)
        columns.append(given if given is not None else valid_lengths(arrays[modality], side))
    lengths = np.stack(columns, axis=1).astype(np.int64)
    full = np.array([arrays[m].shape[1] for m in MODALITIES], dtype=np.int64)
    return None if bool((lengths == full).all()) else lengths


def length_summary(lengths: Sequence[int] | np.ndarray, steps: int) -> dict[str, float]:
    """min / median / mean / max of (N,) lengths and the fraction of padded samples (length < T)."""
    values = np.asarray(lengths, dtype=np.float64)
    if values.size == 0:
        return {"min": float("nan"), "median": float("nan"), "mean": float("nan"), "max": float("nan"),
                "padded_fraction": float("nan")}
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": float(values.max()),
        "padded_fraction": float(np.mean(values < steps)),
    }
