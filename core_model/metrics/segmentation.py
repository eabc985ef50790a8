"""Segmentation metrics with the all-empty baseline beside them (numpy only).

Three Dice scores are always reported, because the one the literature uses rewards predicting
nothing (NOTES.md section 1, defect 3):

``dice_mgca``
    The MGCA / Adaptor protocol: per image, ``2|P n T| / (|P| + |T|)``, and **1 when both the
    prediction and the truth are empty** (0 when only the truth is empty); averaged over images.
    (MGCA averages per batch and then over batches, which differs slightly when the last batch is
    smaller; we average over images.) Comparable with the published numbers.
``dice_positive``
    The same per-image Dice, averaged over the images whose truth is not empty only.
``dice_aggregate``
    Dataset-level Dice: ``2 sum|P n T| / (sum|P| + sum|T|)`` over all images.

IoU likewise: ``iou_positive`` (mean over images with a lesion) and ``iou_aggregate``. Also:
``empty_image_fp_rate`` (share of lesion-free images where something is predicted).

The all-empty predictor on the same masks scores ``dice_mgca`` = share of lesion-free images and
0 on every other metric; :meth:`SegmentationAccumulator.result` returns it as ``empty_baseline``
with ``beats_empty_baseline`` (the model's MGCA Dice is above the baseline's) and a ``warning``
text when it is not.

Predictions are probabilities (thresholded with ``p > threshold``, 0.5 as in MGCA) or boolean
masks; truths are binary (``> 0.5``). Accumulation is streaming: :meth:`update` takes a batch
(``[B, H, W]`` or ``[H, W]``) and keeps three integers per image.
"""

from __future__ import annotations

import math

import numpy as np


class SegmentationAccumulator:
    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold
        self._inter: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._true: list[np.ndarray] = []

    def update(self, pred, truth) -> None:
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} != mask shape {truth.shape}")
        if pred.ndim == 2:
            pred, truth = pred[None], truth[None]
        if pred.ndim == 4 and pred.shape[1] == 1:
            pred, truth = pred[:, 0], truth[:, 0]
        if pred.ndim != 3:
            raise ValueError(f"expected [B, H, W] or [H, W] arrays, got {pred.shape}")
        p = pred if pred.dtype == bool else pred > self.threshold
        t = truth if truth.dtype == bool else truth > 0.5
        b = p.shape[0]
        p = p.reshape(b, -1)
        t = t.reshape(b, -1)
        self._inter.append((p & t).sum(axis=1).astype(np.int64))
        self._pred.append(p.sum(axis=1).astype(np.int64))
        self._true.append(t.sum(axis=1).astype(np.int64))

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per image: intersection, predicted area, true area."""
        if not self._inter:
            z = np.zeros(0, np.int64)
            return z, z, z
        return np.concatenate(self._inter), np.concatenate(self._pred), np.concatenate(self._true)

    @property
    def n_images(self) -> int:
        return int(sum(a.size for a in self._inter))

    def result(self) -> dict:
        inter, pred, true = self.counts()
        return segmentation_scores(inter, pred, true)


def _scores(inter: np.ndarray, pred: np.ndarray, true: np.ndarray) -> dict:
    n = inter.size
    pos = true > 0
    neg = ~pos
    denom = pred + true
    with np.errstate(invalid="ignore", divide="ignore"):
        dice_img = np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)
        union = pred + true - inter
        iou_img = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    # MGCA: empty truth scores 1 only when the prediction is empty too (dice_img already does so)
    dice_mgca = float(dice_img.mean()) if n else math.nan
    dice_pos = float(dice_img[pos].mean()) if pos.any() else math.nan
    iou_pos = float(iou_img[pos].mean()) if pos.any() else math.nan
    s_denom = int(denom.sum())
    s_union = int((pred + true - inter).sum())
    return {
        "dice_mgca": dice_mgca,
        "dice_positive": dice_pos,
        "dice_aggregate": float(2 * inter.sum() / s_denom) if s_denom else (1.0 if n else math.nan),
        "iou_positive": iou_pos,
        "iou_aggregate": float(inter.sum() / s_union) if s_union else (1.0 if n else math.nan),
        "empty_image_fp_rate": float((pred[neg] > 0).mean()) if neg.any() else math.nan,
    }


def segmentation_scores(inter, pred, true) -> dict:
    """All metrics from per-image counts, with the all-empty baseline and the verdict."""
    inter, pred, true = (np.asarray(a, dtype=np.int64) for a in (inter, pred, true))
    n = int(inter.size)
    n_pos = int((true > 0).sum())
    model = _scores(inter, pred, true)
    zeros = np.zeros_like(inter)
    baseline = _scores(zeros, zeros, true)
    beats = bool(n and model["dice_mgca"] > baseline["dice_mgca"])
    out = {
        **model,
        "n_images": n,
        "n_positive": n_pos,
        "positive_fraction": n_pos / n if n else math.nan,
        "empty_baseline": baseline,
        "beats_empty_baseline": beats,
        "warning": None,
    }
    if n and not beats:
        out["warning"] = (
            f"The model does not beat the all-empty predictor: its MGCA-protocol Dice "
            f"{model['dice_mgca']:.3f} <= {baseline['dice_mgca']:.3f}, which is what predicting nothing "
            f"scores on these masks ({n - n_pos} of {n} images have no lesion). Look at the Dice over "
            f"positive images ({model['dice_positive']:.3f}) instead."
        )
    return out


def dice_mgca(pred, truth, threshold: float = 0.5) -> float:
    """MGCA-protocol Dice of a batch (convenience)."""
    acc = SegmentationAccumulator(threshold)
    acc.update(pred, truth)
    return acc.result()["dice_mgca"]


def dice_bootstrap(inter, pred, true, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """95 % percentile bootstrap intervals (test images resampled) of ``dice_mgca``,
    ``dice_positive``, ``dice_aggregate`` and ``iou_positive`` from per-image pixel counts."""
    from core_model.metrics.bootstrap import bootstrap_ci

    inter, pred, true = (np.asarray(a, dtype=np.float64) for a in (inter, pred, true))
    out = {}
    for key in ("dice_mgca", "dice_positive", "dice_aggregate", "iou_positive"):

        def stat(idx, key=key):
            return _scores(inter[idx], pred[idx], true[idx]).get(key, math.nan)

        out[key] = bootstrap_ci(stat, inter.size, n_boot=n_boot, seed=seed)
    return out


def count_scores(inter, pred, true) -> dict:
    """The Dice / IoU scores of per-image pixel counts (no empty-predictor baseline)."""
    return _scores(*(np.asarray(a, dtype=np.float64) for a in (inter, pred, true)))
