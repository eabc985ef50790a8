"""Segmentation metrics on hand-made masks: the three Dice scores, IoU and the all-empty baseline."""

import numpy as np
import pytest

from core_model.metrics.segmentation import SegmentationAccumulator, dice_mgca


def _cases():
    truth = np.zeros((4, 4, 4), bool)
    pred = np.zeros((4, 4, 4), bool)
    truth[0, 0, :4] = True
    pred[0, 0, :2] = True  # A: |T|=4 |P|=2 |PnT|=2 -> Dice 2/3, IoU 1/2
    # B: both empty -> MGCA Dice 1
    pred[2, 3, 3] = True  # C: empty truth, 1 px predicted -> 0
    truth[3, 1, :2] = True  # D: lesion missed -> 0
    return pred, truth


def test_hand_computed_scores_and_baseline():
    pred, truth = _cases()
    acc = SegmentationAccumulator()
    acc.update(pred, truth)
    r = acc.result()
    assert r["dice_mgca"] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)
    assert r["dice_positive"] == pytest.approx((2 / 3 + 0) / 2)
    assert r["dice_aggregate"] == pytest.approx(2 * 2 / (3 + 6))
    assert r["iou_positive"] == pytest.approx((0.5 + 0) / 2)
    assert r["iou_aggregate"] == pytest.approx(2 / 7)
    assert r["empty_image_fp_rate"] == pytest.approx(0.5)
    assert (r["n_images"], r["n_positive"]) == (4, 2)
    base = r["empty_baseline"]
    assert base["dice_mgca"] == 0.5 and base["dice_positive"] == 0 and base["dice_aggregate"] == 0
    # 0.417 < 0.5: the model loses to predicting nothing, and the result says so
    assert r["beats_empty_baseline"] is False
    assert "does not beat the all-empty predictor" in r["warning"]


def test_a_good_model_beats_the_baseline_and_gets_no_warning():
    _, truth = _cases()
    acc = SegmentationAccumulator()
    acc.update(truth.astype(float) * 0.9, truth)
    r = acc.result()
    assert r["dice_mgca"] == 1.0 and r["dice_positive"] == 1.0
    assert r["beats_empty_baseline"] is True and r["warning"] is None


def test_streaming_equals_one_batch_and_threshold_is_strict():
    rng = np.random.default_rng(0)
    probs = rng.random((10, 8, 8))
    truth = rng.random((10, 8, 8)) < 0.2
    truth[3:6] = False
    whole = SegmentationAccumulator()
    whole.update(probs, truth)
    parts = SegmentationAccumulator()
    for k in range(10):
        parts.update(probs[k], truth[k])  # [H, W] one at a time
    assert parts.result() == whole.result()
    assert parts.n_images == 10
    assert dice_mgca(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2))) == 1.0  # 0.5 is not > 0.5: empty


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        SegmentationAccumulator().update(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
