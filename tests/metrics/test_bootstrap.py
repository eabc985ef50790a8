"""Bootstrap intervals for any per-image statistic and the paired bootstrap between two methods."""

from __future__ import annotations

import numpy as np
import pytest

from core_model.metrics.bootstrap import accuracy_ci, bootstrap_ci, mean_ci, paired_bootstrap
from core_model.metrics.classification import auroc_per_class, evaluate_classification
from core_model.metrics.segmentation import SegmentationAccumulator, dice_bootstrap


def test_interval_brackets_the_value_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    small = mean_ci(rng.random(30) < 0.6, n_boot=400, seed=1)
    large = mean_ci(rng.random(3000) < 0.6, n_boot=400, seed=1)
    for r in (small, large):
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    assert large["ci_high"] - large["ci_low"] < (small["ci_high"] - small["ci_low"]) / 4
    assert mean_ci(np.ones(20), n_boot=50)["ci_low"] == 1.0  # a constant has a zero-width interval
    again = mean_ci(np.arange(30) % 3 == 0, n_boot=100, seed=7)
    assert again == mean_ci(np.arange(30) % 3 == 0, n_boot=100, seed=7)  # seeded


def test_paired_bootstrap_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.4).astype(float)
    good = y + rng.normal(0, 0.6, 300)
    weak = y + rng.normal(0, 2.0, 300)

    def auc(scores):
        return lambda i: auroc_per_class(y[i], scores[i])[0][0]

    strata = y.astype(int)
    better = paired_bootstrap(auc(good), auc(weak), 300, n_boot=150, seed=0, strata=strata)
    assert better["a_better"] and better["difference"] > 0 and better["p_value"] < 0.01
    assert better["ci_low"] <= better["difference"] <= better["ci_high"]
    same = paired_bootstrap(auc(good), auc(good), 300, n_boot=50, seed=0, strata=strata)
    assert same["difference"] == 0 and not same["a_better"] and same["p_value"] == 1.0
    worse = paired_bootstrap(auc(weak), auc(good), 300, n_boot=150, seed=0, strata=strata)
    assert not worse["a_better"] and worse["ci_high"] < 0


def test_undefined_resamples_are_dropped_and_counted():
    values = np.array([1.0, np.nan, 0.0, 1.0])
    r = bootstrap_ci(lambda i: values[i].mean(), 4, n_boot=200, seed=0)
    assert r["dropped_resamples"] > 0 and r["dropped_resamples"] < 200


@pytest.mark.filterwarnings("ignore:no validation set")
def test_covidx_style_accuracy_gets_an_interval():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 200)
    logits = np.eye(3)[y] * 2 + rng.normal(0, 1.2, (200, 3))
    direct = accuracy_ci(y, logits, n_boot=200)
    assert direct["value"] == pytest.approx((logits.argmax(1) == y).mean())
    assert direct["ci_low"] < direct["value"] < direct["ci_high"]
    names = ["normal", "pneumonia", "covid19"]
    ev = evaluate_classification(y, logits, class_names=names, task="multiclass", n_boot=200)
    assert ev["accuracy_ci"]["value"] == pytest.approx(ev["accuracy"])
    assert ev["accuracy_ci"]["ci_low"] <= ev["accuracy"] <= ev["accuracy_ci"]["ci_high"]


def test_every_dice_gets_an_interval_from_per_image_counts():
    rng = np.random.default_rng(2)
    truth = np.zeros((40, 16, 16), bool)
    truth[:12, 4:10, 4:10] = True
    pred = truth.copy()
    pred[:12, 4:10, 4:8] = rng.random((12, 6, 4)) < 0.8
    pred[30:33, 0:3, 0:3] = True  # false positives on three empty images
    acc = SegmentationAccumulator()
    acc.update(pred.astype(float), truth)
    point = acc.result()
    boot = dice_bootstrap(*acc.counts(), n_boot=300, seed=0)
    for key in ("dice_mgca", "dice_positive", "dice_aggregate", "iou_positive"):
        assert boot[key]["value"] == pytest.approx(point[key])
        assert boot[key]["ci_low"] <= point[key] <= boot[key]["ci_high"]
