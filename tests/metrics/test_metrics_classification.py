"""Classification metrics against hand-computed values; seeded bootstrap; temperature recovery."""

import math

import numpy as np
import pytest

from core_model.metrics.classification import (
    apply_temperature,
    auroc,
    bootstrap_auroc,
    choose_threshold,
    evaluate_classification,
    expected_calibration_error,
    fit_temperature,
    operating_point,
    sigmoid,
    softmax,
)

Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


def test_auroc_tiny_example():
    # pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert auroc(Y, S) == (0.75, None)
    assert auroc([0, 1, np.nan, 1], [0.2, 0.9, 0.0, 0.1])[0] == 0.5  # nan labels left out


def test_auroc_degenerate_is_nan_with_reason():
    value, reason = auroc([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(value) and "only one label value" in reason
    value, reason = auroc([1, -1, 0], [0.1, 0.2, 0.3])
    assert math.isnan(value) and "uncertainty" in reason


def test_youden_threshold_and_operating_point():
    # ROC points: t=0.8 (tpr .5, fpr 0) J=.5 ; t=0.4 J=0 ; t=0.35 (1, .5) J=.5 ; t=0.1 J=0 -> first max
    t = choose_threshold(Y, S)
    assert t == 0.8
    op = operating_point(Y, S, t)
    assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (1, 0, 2, 1)
    assert op["sensitivity"] == 0.5 and op["specificity"] == 1.0 and op["accuracy"] == 0.75
    assert op["f1"] == pytest.approx(2 / 3)
    assert choose_threshold(Y, S, ("sensitivity", 1.0)) == 0.35
    assert choose_threshold(Y, S, 0.3) == 0.3
    assert choose_threshold([1, 1], [0.2, 0.3]) == 0.5  # one label value: default


def test_ece_constructed_cases():
    # 10 predictions at 0.9 with 6 positives (gap 0.3), 10 at 0.1 with 1 positive (gap 0) -> 0.15
    p = [0.9] * 10 + [0.1] * 10
    y = [1] * 6 + [0] * 4 + [1] + [0] * 9
    assert expected_calibration_error(y, p) == pytest.approx(0.15)
    # perfectly calibrated bins score 0
    assert expected_calibration_error([1, 0, 0, 0, 0], [0.2] * 5) == pytest.approx(0.0)
    # p = 1.0 falls in the last bin, not outside
    assert expected_calibration_error([0], [1.0]) == pytest.approx(1.0)
    # multi-class: top-label confidence 0.7 on 4 samples, 2 correct -> |0.5 - 0.7| = 0.2
    probs = np.array([[0.7, 0.2, 0.1]] * 4)
    assert expected_calibration_error([0, 0, 1, 2], probs, multiclass=True) == pytest.approx(0.2)


def test_temperature_scaling_recovers_known_temperature_binary():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2.0, 20000)
    y = (rng.random(20000) < sigmoid(true_logits)).astype(float)
    over_confident = true_logits * 2.5
    t = fit_temperature(over_confident, y)
    assert t == pytest.approx(2.5, rel=0.08)
    assert fit_temperature(true_logits, y) == pytest.approx(1.0, rel=0.08)
    # calibration improves
    before = expected_calibration_error(y, sigmoid(over_confident))
    after = expected_calibration_error(y, apply_temperature(over_confident, t))
    assert after < before / 2


def test_temperature_scaling_recovers_known_temperature_multiclass():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, (20000, 3))
    p = softmax(true_logits, axis=1)
    y = np.array([rng.choice(3, p=row) for row in p])
    t = fit_temperature(true_logits * 0.5, y, multiclass=True)  # under-confident: T should be 0.5
    assert t == pytest.approx(0.5, rel=0.08)


def test_bootstrap_is_seeded_and_stratified():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.2).astype(float)
    s = y + rng.normal(0, 1, 300)
    a = bootstrap_auroc(y, s, n_boot=200, seed=7)
    b = bootstrap_auroc(y, s, n_boot=200, seed=7)
    c = bootstrap_auroc(y, s, n_boot=200, seed=8)
    assert a == b
    assert a["per_class"][0]["ci_low"] != c["per_class"][0]["ci_low"]
    e = a["per_class"][0]
    assert e["ci_low"] < e["auroc"] < e["ci_high"]
    assert a["dropped_resamples"] == 0
    # plain bootstrap on 2 positives hits resamples without positives: they are dropped and counted
    y_small = np.array([1.0, 1.0] + [0.0] * 18)
    plain = bootstrap_auroc(y_small, np.linspace(0, 1, 20), n_boot=200, seed=0, stratified=False)
    assert plain["dropped_resamples"] > 0


def test_evaluate_binary_with_a_degenerate_class_does_not_crash():
    rng = np.random.default_rng(3)
    y = np.stack([(rng.random(200) < 0.3), np.zeros(200, bool)], axis=1).astype(float)
    z = rng.normal(0, 1, (200, 2)) + 2 * y
    with pytest.warns(UserWarning, match="undefined"):
        m = evaluate_classification(
            y, z, class_names=["pneumonia", "pneumothorax"], task="multilabel", y_val=y, logits_val=z, n_boot=50
        )
    assert math.isnan(m["per_class"]["pneumothorax"]["auroc"])
    assert m["auroc_macro"]["auroc"] == m["per_class"]["pneumonia"]["auroc"]
    assert set(m["thresholds"]) == {"pneumonia", "pneumothorax"}


def test_evaluate_multiclass():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 600)
    z = rng.normal(0, 1, (600, 3)) * 3
    z[np.arange(600), y] += 4
    m = evaluate_classification(
        y, z, class_names=["normal", "pneumonia", "covid19"], task="multiclass", y_val=y, logits_val=z, n_boot=50
    )
    assert m["top1_accuracy"] == pytest.approx(float((z.argmax(1) == y).mean()))
    assert m["temperature"] > 1  # the noise scale made the logits over-confident
    assert m["ece"] < m["ece_uncalibrated"]
    assert m["auroc_macro"]["auroc"] > 0.8
