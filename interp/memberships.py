"""The per-sample values of samples.parquet from targets and logits: true and predicted concept memberships
(``(B, J)`` bool), concept probabilities, and the member concepts' names. Single-label tasks
(:data:`interp.schema.SINGLE_LABEL_TASKS`) take one concept per sample (argmax, softmax); the others any number
(logit > 0, sigmoid).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from interp.schema import SINGLE_LABEL_TASKS

__all__ = ["member_names", "memberships", "predictions", "probabilities"]


def probabilities(task: str, logits: np.ndarray) -> np.ndarray:
    """Concept probabilities from logits (B, J): softmax for single-label tasks, sigmoid for multi-label ones."""
    logits = logits.astype(np.float64)
    if task in SINGLE_LABEL_TASKS:
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def predictions(task: str, logits: np.ndarray) -> np.ndarray:
    """Predicted membership (B, J) bool: one-hot argmax (single-label) or logit > 0, i.e. prob > 0.5 (multi-label)."""
    if task in SINGLE_LABEL_TASKS:
        members = np.zeros(logits.shape, dtype=bool)
        members[np.arange(len(logits)), logits.argmax(axis=1)] = True
        return members
    return logits > 0


def memberships(task: str, targets: np.ndarray, n_concepts: int) -> np.ndarray:
    """True membership (B, J) bool from targets: class indices (single-label) or 0/1 rows (multi-label)."""
    if task in SINGLE_LABEL_TASKS:
        members = np.zeros((len(targets), n_concepts), dtype=bool)
        members[np.arange(len(targets)), np.asarray(targets, dtype=np.int64)] = True
        return members
    return np.asarray(targets) > 0.5


def member_names(members: np.ndarray, concepts: Sequence[str]) -> list[str]:
    """Each row's member concepts joined by "," ("" when none); ``members (B, J)`` bool.

    Joined once per distinct row (at most J of them for single-label tasks), not once per sample: a join per row
    was two thirds of ``interp.runwriter.samples_table``'s time, work that holds the GIL in the writer thread."""
    members = np.asarray(members, dtype=bool)
    if len(members) == 0:
        return []
    names = np.asarray(concepts, dtype=object)
    if members.shape[1] <= 62:  # each row as the integer of its bits: a fast 1-D unique
        codes = members.astype(np.int64) @ (np.int64(1) << np.arange(members.shape[1], dtype=np.int64))
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        distinct = members[first]
    else:
        distinct, inverse = np.unique(members, axis=0, return_inverse=True)
    joined = np.array([",".join(names[row]) for row in distinct], dtype=object)
    return joined[inverse.reshape(-1)].tolist()
