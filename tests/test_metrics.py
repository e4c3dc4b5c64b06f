"""Metrics on hand-computed cases (as MulT / MMSA compute them)."""

import math

import numpy as np
import pytest

from mfsa_pipe.metrics import classification_metrics, compute_metrics, json_safe, multilabel_metrics, regression_metrics

PRED = np.array([2.5, -0.5, 0.5, -2.6, 1.2, 3.7, -1.0])
TRUE = np.array([2.0, 0.0, -0.3, -3.0, 2.0, 2.6, 1.0])


def test_regression_hand_computed():
    m = regression_metrics(PRED, TRUE)
    # rounded clip(-3, 3), half to even: pred [2, 0, 0, -3, 1, 3, -1] vs truth [2, 0, 0, -3, 2, 3, 1]
    assert m["acc7"] == pytest.approx(5 / 7)
    # clip(-2, 2) then round: pred [2, 0, 0, -2, 1, 2, -1] vs truth [2, 0, 0, -2, 2, 2, 1]
    assert m["acc5"] == pytest.approx(5 / 7)
    assert m["mae"] == pytest.approx(6.1 / 7)
    # non-zero truths (index 1 dropped): truth>0 [1,0,0,1,1,1], pred>0 [1,1,0,1,1,0]
    assert m["acc2"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx((4 * 0.75 + 2 * 0.5) / 6)
    # has-zero: truth>=0 [1,1,0,0,1,1,1], pred>=0 [1,0,1,0,1,1,0]
    assert m["acc2_has0"] == pytest.approx(4 / 7)
    assert m["f1_has0"] == pytest.approx((5 * (2 / 3) + 2 * 0.4) / 7)


def test_round_half_to_even():
    # 2.5 -> 2 and -0.5 -> 0 (numpy), where rounding half away from zero would give 3 and -1
    assert regression_metrics(np.array([2.5]), np.array([2.0]))["acc7"] == 1.0
    assert regression_metrics(np.array([2.5]), np.array([3.0]))["acc7"] == 0.0
    assert regression_metrics(np.array([-0.5]), np.array([0.0]))["acc7"] == 1.0
    assert regression_metrics(np.array([1.5]), np.array([2.0]))["acc7"] == 1.0
    # acc5 clips to [-2, 2] first: 2.9 and 2.0 agree, -2.6 and -2.0 agree (acc7: 3 vs 2, -3 vs -2)
    assert regression_metrics(np.array([2.9, -2.6]), np.array([2.0, -2.0]))["acc5"] == 1.0
    assert regression_metrics(np.array([2.9, -2.6]), np.array([2.0, -2.0]))["acc7"] == 0.0


def test_correlation_and_constant_prediction():
    t = np.array([-2.0, -1.0, 0.5, 1.0, 3.0])
    assert regression_metrics(2 * t + 1, t)["corr"] == pytest.approx(1.0)
    assert regression_metrics(-t, t)["corr"] == pytest.approx(-1.0)
    m = regression_metrics(np.zeros(5), t)
    assert math.isnan(m["corr"])  # undefined, reported as null in JSON
    assert json_safe(m)["corr"] is None


def test_multilabel_per_label():
    # 4 samples, labels A and B, logits (N, K, 2); argmax 1 = positive
    logits = np.array([
        [[0.0, 1.0], [1.0, 0.0]],
        [[1.0, 0.0], [1.0, 0.0]],
        [[0.0, 1.0], [0.0, 1.0]],
        [[1.0, 0.0], [0.0, 1.0]],
    ])
    truth = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    m = multilabel_metrics(logits, truth, ["A", "B"])
    assert m["A_acc"] == pytest.approx(3 / 4)  # pred A [1,0,1,0]
    assert m["B_acc"] == pytest.approx(3 / 4)  # pred B [0,0,1,1]
    # A: class1 (support 3) P=1 R=2/3 F1=0.8; class0 (support 1) P=1/2 R=1 F1=2/3
    assert m["A_f1"] == pytest.approx((3 * 0.8 + 1 * (2 / 3)) / 4)
    assert m["mean_acc"] == pytest.approx(0.75)


def test_classification():
    truth = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 2, 0])
    logits = np.eye(3)[pred]
    m = classification_metrics(logits, truth, ["a", "b", "c"])
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * (2 / 3) + 3 * 0.8) / 6)


def test_compute_metrics_dispatch():
    assert set(compute_metrics(PRED, TRUE, {"task": "regression"})) >= {"mae", "acc7", "acc2", "f1_has0"}
    out = compute_metrics(np.eye(2)[[0, 1]], np.array([0, 1]), {"task": "classification", "classes": ["x", "y"]})
    assert out["acc"] == 1.0
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(3), np.zeros(4))
