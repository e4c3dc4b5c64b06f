"""Metrics on hand-computed cases (as MulT / MMSA compute them)."""

import math

import numpy as np
import pytest

from mfsa_pipe.datasets.base import LabelSpec
from mfsa_pipe.training.metrics import classification_metrics, compute_metrics, multilabel_metrics, regression_metrics
from mfsa_pipe.json_values import json_safe

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
    assert set(compute_metrics(PRED, TRUE, LabelSpec(task="regression"))) >= {"mae", "acc7", "acc2", "f1_has0"}
    out = compute_metrics(np.eye(2)[[0, 1]], np.array([0, 1]), LabelSpec(task="classification", classes=("x", "y")))
    assert out["acc"] == 1.0
    with pytest.raises(ValueError):
        regression_metrics(np.zeros(3), np.zeros(4))


def test_classification_has_ece_and_temperature_changes_only_it():
    truth = np.array([0, 0, 1, 2, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 2, 2, 0]] * 2.0
    spec = LabelSpec(task="classification", classes=("a", "b", "c"))
    plain = compute_metrics(logits, truth, spec)
    hot = compute_metrics(logits, truth, spec, temperatures={"classification": 0.1})
    assert 0.0 <= plain["ece"] <= 1.0 and hot["ece"] != pytest.approx(plain["ece"])
    assert {k: v for k, v in hot.items() if k != "ece"} == {k: v for k, v in plain.items() if k != "ece"}


def test_ece_hand_computed():
    from mfsa_pipe.training.metrics import expected_calibration_error

    # confidences 0.88 and 0.92 share bin 13 of 15 ((0.867, 0.933]): accuracy 1/2 vs mean conf 0.9;
    # 0.7 (bin 10, right) and 0.65 (bin 9, wrong) are alone in theirs
    probs = np.array([[0.88, 0.12], [0.08, 0.92], [0.3, 0.7], [0.65, 0.35]])
    truth = np.array([0, 0, 1, 1])
    expected = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1 - 0.7) + 1 / 4 * abs(0 - 0.65)
    assert expected_calibration_error(probs, truth) == pytest.approx(expected)  # 0.4375
    # a per-sample |correct - confidence| (no binning) would give (0.12 + 0.92 + 0.3 + 0.65) / 4
    assert expected == pytest.approx(0.4375)
    # the same through classification_metrics on log-probabilities (softmax(log p) = p)
    m = classification_metrics(np.log(probs), truth, ["x", "y"])
    assert m["ece"] == pytest.approx(0.4375)
    assert expected_calibration_error(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2])) == 0.0  # sure and right


def test_multihead_metrics_match_sklearn_on_labelled_subsets():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from mfsa_pipe.training.metrics import expected_calibration_error, headline, multihead_metrics, softmax

    rng = np.random.default_rng(1)
    heads = [{"name": "emotion", "classes": ["neutral", "sad", "happy", "angry"]},
             {"name": "sentiment", "classes": ["negative", "neutral", "positive"]}]
    n = 40
    logits = rng.normal(size=(n, 7))
    truth = np.stack([rng.integers(0, 4, n), rng.integers(0, 3, n)], 1)
    truth[rng.random(n) < 0.3, 0] = -1
    truth[rng.random(n) < 0.5, 1] = -1
    temps = {"emotion": 2.0}
    spec = LabelSpec.from_dict({"task": "multihead", "heads": heads})
    m = compute_metrics(logits, truth, spec, temperatures=temps)
    assert m == multihead_metrics(logits, truth, spec, temperatures=temps)
    cols = {"emotion": slice(0, 4), "sentiment": slice(4, 7)}
    for h, head in enumerate(heads):
        name, k = head["name"], len(head["classes"])
        known = truth[:, h] >= 0
        y, z = truth[known, h], logits[known][:, cols[name]]
        p = z.argmax(1)
        got = m[name]
        assert got["n"] == known.sum()
        assert got["acc"] == pytest.approx(accuracy_score(y, p))
        assert got["weighted_f1"] == pytest.approx(f1_score(y, p, labels=range(k), average="weighted", zero_division=0))
        assert got["macro_f1"] == pytest.approx(f1_score(y, p, labels=range(k), average="macro", zero_division=0))
        assert got["confusion"] == confusion_matrix(y, p, labels=range(k)).tolist()
        assert got["ece"] == pytest.approx(expected_calibration_error(softmax(z, temps.get(name, 1.0)), y))
    assert m["mean_weighted_f1"] == pytest.approx((m["emotion"]["weighted_f1"] + m["sentiment"]["weighted_f1"]) / 2)
    assert m["mean_acc"] == pytest.approx((m["emotion"]["acc"] + m["sentiment"]["acc"]) / 2)
    assert "emotion.acc" in headline("multihead", heads=["emotion", "sentiment"])
    # a head nobody labelled: NaN metrics, left out of the means
    truth[:, 1] = -1
    m = multihead_metrics(logits, truth, spec)
    assert m["sentiment"]["n"] == 0 and math.isnan(m["sentiment"]["acc"]) and m["sentiment"]["confusion"] == [[0] * 3] * 3
    assert m["mean_weighted_f1"] == pytest.approx(m["emotion"]["weighted_f1"])
    assert json_safe(m)["sentiment"]["acc"] is None


def test_fit_temperature_recovers_a_known_temperature():
    from mfsa_pipe.training.metrics import fit_temperature, nll, softmax

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, size=(4000, 5))
    probs = softmax(true_logits)
    labels = (probs.cumsum(1) > rng.random((4000, 1))).argmax(1)  # drawn from softmax(true_logits)
    for scale in (3.0, 0.4):  # over- and under-confident by a factor
        logits = true_logits * scale
        t = fit_temperature(logits, labels)
        assert t == pytest.approx(scale, rel=0.1)
        assert nll(logits, labels, t) < nll(logits, labels) - 0.05
    assert 0.05 <= fit_temperature(np.eye(3)[[0, 1, 2]] * 50, np.array([1, 2, 0])) <= 20  # bounded
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, np.int64)) == 1.0
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((4, 3)), np.zeros(3, np.int64))
