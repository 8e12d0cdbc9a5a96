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


def test_acc2_both_conventions_by_hand():
    # labels: -2, -0.5, 0 (neutral), 0 (neutral), +1, +3
    scores = np.array([-2.0, -0.5, 0.0, 0.0, 1.0, 3.0])
    # predicted classes: -2, +1, 0 (neutral), -1, +2, -3  -> expected scores about -2, 1, 0, -1, 2, -3
    predicted = np.array([1, 4, 3, 2, 5, 0])
    metrics = sentiment_metrics(one_hot_logits(predicted), scores)
    # non-zero (neg vs pos, zeros dropped): truth -,-,+,+ vs pred -,+,+,- -> 2 of 4
    assert metrics["acc2"] == pytest.approx(2 / 4)
    # weighted F1 non-zero: class neg (support 2): tp 1, predicted 2, actual 2 -> 1/2; class pos likewise -> 1/2
    assert metrics["f1"] == pytest.approx(0.5)
    # has-0 (neg vs non-neg, all six): truth N,N,nn,nn,nn,nn vs pred N,nn,nn,N,nn,N -> rows 0, 2, 4 right -> 3 of 6
    assert metrics["acc2_has0"] == pytest.approx(3 / 6)
    # weighted F1 has-0: class N (support 2): tp 1, predicted 3, actual 2 -> 2/5; class nn (support 4): tp 2,
    # predicted 3, actual 4 -> 4/7; weighted (2·2/5 + 4·4/7) / 6
    assert metrics["f1_has0"] == pytest.approx((2 * 2 / 5 + 4 * 4 / 7) / 6)
    # majority baselines: non-zero 2 of 4 -> 0.5; has-0: 4 non-negative of 6
    assert metrics["acc2_majority"] == pytest.approx(0.5)
    assert metrics["acc2_has0_majority"] == pytest.approx(4 / 6)


def test_has0_counts_a_neutral_prediction_as_non_negative():
    # the expected score of a neutral prediction is 0 up to float rounding; it must count as non-negative
    logits = np.array([[0.1, 0.2, 0.3, 5.0, 0.3, 0.2, 0.1]])  # symmetric: expected score exactly 0 mathematically
    metrics = sentiment_metrics(np.repeat(logits, 2, axis=0), np.array([0.0, -1.0]))
    assert metrics["acc2_has0"] == pytest.approx(0.5)


def test_pearson_r_of_a_constant_prediction_is_nan():
    # identical logits in every row: the expected score is constant (up to rounding), r is undefined
    # (this row gives an expected-score std of 1e-16 from rounding alone: a naive "std > 0" guard lets it through)
    logits = np.tile(np.array([[0.1, -0.1, 0.6, 0.1, -0.5, 0.4, 1.3]]), (50, 1))
    scores = np.linspace(-3, 3, 50)
    assert np.isnan(sentiment_metrics(logits, scores)["corr"])
    assert np.isnan(sentiment_metrics(one_hot_logits(np.arange(7)), np.zeros(7))["corr"])
    # a varying prediction still gets its ordinary Pearson r
    varied = sentiment_metrics(one_hot_logits(np.array([0, 2, 4, 6])), np.array([-3.0, -1.0, 1.0, 2.5]))
    expected = np.array([-3.0, -1.0, 1.0, 3.0])
    assert varied["corr"] == pytest.approx(np.corrcoef(expected, [-3.0, -1.0, 1.0, 2.5])[0, 1], abs=1e-6)
