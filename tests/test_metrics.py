"""Metric functions against small cases computed by hand."""

import numpy as np
import pytest

from interp.metrics import (
    expected_score,
    multilabel_metrics,
    sentiment_classes,
    sentiment_metrics,
    weighted_f1,
)


def one_hot_logits(classes, n_classes=7, strength=20.0):
    logits = np.zeros((len(classes), n_classes))
    logits[np.arange(len(classes)), classes] = strength
    return logits


def test_weighted_f1_by_hand():
    y_true = np.array([1, 1, 1, 0])
    y_pred = np.array([1, 0, 1, 1])
    # class 1: tp=2, predicted=3, actual=3 -> F1 = 4/6; class 0: tp=0 -> F1 = 0; weights 3 and 1
    assert weighted_f1(y_true, y_pred) == pytest.approx((3 * (4 / 6) + 1 * 0.0) / 4)


def test_sentiment_classes_round_and_clip():
    scores = np.array([-3.4, 2.6, 0.4, -0.6, 3.0, -2.2])
    assert sentiment_classes(scores).tolist() == [0, 6, 3, 2, 6, 1]


def test_expected_score_of_one_hot_probabilities():
    probs = np.eye(7)
    assert expected_score(probs).tolist() == [-3, -2, -1, 0, 1, 2, 3]


def test_sentiment_metrics_exclude_zero_labels_from_acc2():
    # labels: +2, -1, 0 (excluded), +0.4 (positive but rounds to class 0)
    scores = np.array([2.0, -1.0, 0.0, 0.4])
    # predicted classes: 2 (score 2), 1 ... i.e. -2, 0 (neutral), -3
    predicted = np.array([5, 1, 3, 0])
    metrics = sentiment_metrics(one_hot_logits(predicted), scores)
    # Acc7: true classes 5, 2, 3, 3 vs predicted 5, 1, 3, 0 -> 2 of 4
    assert metrics["acc7"] == pytest.approx(0.5)
    # Acc2 on the 3 non-zero labels: truth +,-,+ vs expected score > 0: +,-,- -> 2 of 3
    assert metrics["acc2"] == pytest.approx(2 / 3)
    assert metrics["n_nonzero"] == 3
    # weighted F1: class True (support 2): tp 1, predicted 1, actual 2 -> 2/3; class False (support 1): tp 1,
    # predicted 2, actual 1 -> 2/3; weighted -> 2/3
    assert metrics["f1"] == pytest.approx(2 / 3)
    # MAE of expected scores (2, -2, 0, -3) vs labels, nearly one-hot probabilities
    assert metrics["mae"] == pytest.approx(np.mean([0, 1, 0, 3.4]), abs=1e-6)
    assert metrics["acc2_majority"] == pytest.approx(2 / 3)


def test_multilabel_metrics_by_hand():
    targets = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    logits = np.array([[2.0, -1.0], [-1.0, 3.0], [-2.0, 1.0], [1.0, 1.0]])
    metrics = multilabel_metrics(logits, targets, ["happy", "sad"])
    # happy: truth 1,1,0,0 vs pred 1,0,0,1 -> acc 0.5
    assert metrics["acc_happy"] == pytest.approx(0.5)
    # sad: truth 0,1,0,1 vs pred 0,1,1,1 -> acc 0.75
    assert metrics["acc_sad"] == pytest.approx(0.75)
    # sad F1: class 1 (support 2) tp 2, predicted 3 -> 0.8; class 0 (support 2) tp 1, predicted 1, actual 2 -> 2/3
    assert metrics["f1_sad"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert metrics["acc_mean"] == pytest.approx(0.625)
