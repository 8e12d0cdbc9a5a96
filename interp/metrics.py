"""The paper's Table 1/2 metrics, as plain numpy functions.

Sentiment (CMU-MOSI / CMU-MOSEI): Acc7 on ``clip(round(y), -3, 3)``; Acc2 and weighted F1 in two conventions,
both reported (peers quote either, often without saying which):

* **non-zero** (keys ``acc2``, ``f1``): negative (y < 0) vs positive (y > 0) on the samples whose label is not 0
  (MulT's convention; MMSA's ``Non0_acc_2``);
* **has-0** (keys ``acc2_has0``, ``f1_has0``): negative (y < 0) vs non-negative (y >= 0) on all samples
  (MMSA's ``Has0_acc_2`` / ``Has0_F1_score``); the prediction is non-negative when the expected score is >= 0.

MAE and Pearson r of the expected score ``sum_j prob_j · (j - 3)`` against the continuous label. Emotion /
IEMOCAP: per-emotion binary accuracy and weighted F1, and their means.

Where ours differ from the peers' code, and why:

* F1 is scikit-learn's ``f1_score(y_true, y_pred, average="weighted")`` with the truth first. MulT's
  ``eval_metrics.py`` calls ``f1_score(predictions, truth, average="weighted")``: the arguments swapped, so its
  "weighted" F1 weighs classes by their *predicted* support, a different number whenever the model predicts one
  class more often than it occurs.
* Acc7 is the argmax class of the 7 logits, as in the routing authors' code (the model is a 7-way classifier);
  MulT and MMSA regress one score and round it (``clip(round(pred), -3, 3)``).
* MAE and r use the softmax expected score ``sum_j P(j)·(j - 3)``; the routing authors' code uses the raw-logit
  weighted sum ``sum_j logit_j·(j - 3)``, which is not on the label's scale.
* Pearson r of a constant prediction (or constant labels) is NaN, not a number rounding noise produced.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np



def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of equal entries of two (N,) arrays."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == y_pred))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of each class present in ``y_true``, averaged with weights = class support (scikit-learn's "weighted").

    y_true, y_pred: (N,) class labels of any hashable dtype. A class never predicted has F1 = 0.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    classes, support = np.unique(y_true, return_counts=True)
    scores = []
    for cls in classes:
        true_positive = np.sum((y_pred == cls) & (y_true == cls))
        predicted = np.sum(y_pred == cls)
        actual = np.sum(y_true == cls)
        denominator = predicted + actual
        scores.append(0.0 if denominator == 0 else 2.0 * true_positive / denominator)
    return float(np.average(scores, weights=support))


def sentiment_classes(scores: np.ndarray) -> np.ndarray:
    """7-class index 0..6 of continuous sentiment scores (N,): ``clip(round(y), -3, 3) + 3``."""
    return (np.clip(np.round(np.asarray(scores, dtype=np.float64)), -3, 3) + 3).astype(np.int64)


def expected_score(probs: np.ndarray) -> np.ndarray:
    """Expected sentiment score (N,) of class probabilities (N, 7) over the scores -3..3."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs @ (np.arange(probs.shape[1]) - (probs.shape[1] - 1) / 2)


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (N,) arrays; NaN when N < 2 or either is constant.

    "Constant" allows for float rounding: a spread (max - min) within 1e-12 of the values' magnitude counts as
    none, so identical predictions computed in different batches do not yield a correlation of rounding noise.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or y.size != x.size:
        return float("nan")
    for values in (x, y):
        if np.ptp(values) <= 1e-12 * max(1.0, float(np.abs(values).max())):
            return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def sentiment_metrics(logits: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Acc7, Acc2 and weighted F1 in both conventions, MAE, Pearson r and the majority-class Acc2 baselines.

    logits: (N, 7) concept logits "-3".."3"; scores: (N,) continuous labels in [-3, 3].
    ``acc2`` / ``f1`` (non-zero): ``expected score > 0`` vs ``y > 0`` on the samples with ``y != 0``.
    ``acc2_has0`` / ``f1_has0`` (has-0, MMSA's Has0_acc_2): ``expected score >= 0`` vs ``y >= 0`` on all samples.
    ``acc7``: argmax class vs ``clip(round(y), -3, 3)``. See the module docstring for the differences to peers.
    """
    scores = np.asarray(scores, dtype=np.float64)
    logits64 = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits64 - logits64.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)  # softmax in float64: metrics need no float32 rounding
    predicted_class = np.asarray(logits).argmax(axis=1)
    expected = expected_score(probs)
    # a neutral prediction's expected score is 0 up to float rounding (±1e-17): count it as exactly 0
    decided = np.where(np.abs(expected) < 1e-12, 0.0, expected)
    non_zero = scores != 0
    truth_positive = scores[non_zero] > 0
    predicted_positive = decided[non_zero] > 0
    majority = max(truth_positive.mean(), 1 - truth_positive.mean()) if truth_positive.size else float("nan")
    truth_non_negative = scores >= 0
    predicted_non_negative = decided >= 0
    majority_has0 = (
        max(truth_non_negative.mean(), 1 - truth_non_negative.mean()) if scores.size else float("nan")
    )
    return {
        "acc7": accuracy(sentiment_classes(scores), predicted_class),
        "acc2": accuracy(truth_positive, predicted_positive),
        "f1": weighted_f1(truth_positive, predicted_positive),
        "acc2_has0": accuracy(truth_non_negative, predicted_non_negative),
        "f1_has0": weighted_f1(truth_non_negative, predicted_non_negative),
        "mae": float(np.mean(np.abs(expected - scores))),
        "corr": pearson_r(expected, scores),
        "acc2_majority": float(majority),
        "acc2_has0_majority": float(majority_has0),
        "n": int(len(scores)),
        "n_nonzero": int(non_zero.sum()),
    }


def multilabel_metrics(logits: np.ndarray, targets: np.ndarray, concepts: Sequence[str]) -> dict[str, float]:
    """Per-emotion binary accuracy and weighted F1 (prediction: logit > 0), with their means.

    logits: (N, J); targets: (N, J) 0/1. Keys: ``acc_<concept>``, ``f1_<concept>``, ``acc_mean``, ``f1_mean``.
    """
    predicted = np.asarray(logits) > 0
    truth = np.asarray(targets) > 0.5
    result: dict[str, float] = {}
    for j, concept in enumerate(concepts):
        result[f"acc_{concept}"] = accuracy(truth[:, j], predicted[:, j])
        result[f"f1_{concept}"] = weighted_f1(truth[:, j], predicted[:, j])
    result["acc_mean"] = float(np.mean([result[f"acc_{c}"] for c in concepts]))
    result["f1_mean"] = float(np.mean([result[f"f1_{c}"] for c in concepts]))
    result["n"] = int(len(truth))
    return result


def task_metrics(
    task: str, logits: np.ndarray, targets: np.ndarray, concepts: Sequence[str], scores: np.ndarray | None = None
) -> dict[str, float]:
    """The metrics of a task: :func:`sentiment_metrics` (needs the continuous ``scores``) or :func:`multilabel_metrics`."""
    if task == "sentiment":
        if scores is None:
            scores = np.asarray(targets, dtype=np.float64) - 3  # class centres when no continuous label is known
        return sentiment_metrics(logits, scores)
    return multilabel_metrics(logits, targets, concepts)


#: The headline metric of each task and whether larger is better (used for display).
HEADLINE = {"sentiment": ("acc2", True), "emotion": ("f1_mean", True), "iemocap": ("f1_mean", True)}
