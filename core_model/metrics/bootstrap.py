"""Bootstrap intervals for any per-image statistic, and the paired bootstrap between two methods.

One resampling scheme for every metric of the project: :func:`bootstrap_indices` of
:mod:`core_model.metrics.classification` (seeded, optionally stratified), percentile intervals.

- :func:`bootstrap_ci`: the 95 % percentile interval of ``stat(indices)`` (accuracy, Dice from
  per-image counts, Recall / Precision@K from per-query hits, the pointing game from per-image
  hits, ...). Resamples where the statistic is undefined (``nan``) are dropped and counted.
- :func:`paired_bootstrap`: the difference ``stat_a - stat_b`` of two methods scored on the
  *same* test images, each resample applied to both (so the images' difficulty cancels). Gives
  the interval of the difference and a two-sided p-value for "no difference" (twice the smaller
  share of resamples on either side of 0, at least ``1 / n_valid``): "A beats B" is claimed only
  when the whole interval lies above 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from core_model.metrics.classification import bootstrap_indices

Stat = Callable[[np.ndarray], float]


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan
    return float(np.percentile(values, 100 * alpha / 2)), float(np.percentile(values, 100 * (1 - alpha / 2)))


def bootstrap_ci(
    stat: Stat,
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    strata: np.ndarray | None = None,
    alpha: float = 0.05,
) -> dict:
    """``{"value", "ci_low", "ci_high", "n", "n_boot", "dropped_resamples"}`` of ``stat`` over
    ``n`` images (``stat`` takes an index array into them)."""
    value = float(stat(np.arange(n))) if n else math.nan
    boots = np.array([float(stat(idx)) for idx in bootstrap_indices(n, n_boot, seed, strata)]) if n else np.array([])
    lo, hi = _interval(boots, alpha)
    return {
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "n": int(n),
        "n_boot": int(n_boot),
        "dropped_resamples": int(np.isnan(boots).sum()),
    }


def paired_bootstrap(
    stat_a: Stat,
    stat_b: Stat,
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    strata: np.ndarray | None = None,
    alpha: float = 0.05,
) -> dict:
    """The difference ``stat_a - stat_b`` on the same ``n`` images: ``{"difference", "ci_low",
    "ci_high", "p_value", "a_better", "n", "n_boot", "dropped_resamples"}``; ``a_better`` is True
    only when the whole interval is above 0."""
    everything = np.arange(n)
    diff = float(stat_a(everything)) - float(stat_b(everything)) if n else math.nan
    boots = []
    for idx in bootstrap_indices(n, n_boot, seed, strata) if n else ():
        boots.append(float(stat_a(idx)) - float(stat_b(idx)))
    d = np.array(boots, dtype=np.float64)
    lo, hi = _interval(d, alpha)
    valid = d[~np.isnan(d)]
    if valid.size:
        share = min(float((valid <= 0).mean()), float((valid >= 0).mean()))
        p = min(1.0, max(2 * share, 1.0 / valid.size))
    else:
        p = math.nan
    return {
        "difference": diff,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "a_better": bool(lo == lo and lo > 0),
        "n": int(n),
        "n_boot": int(n_boot),
        "dropped_resamples": int(d.size - valid.size),
    }


def accuracy_ci(y_idx, scores, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Top-1 accuracy with its stratified (by class) bootstrap interval."""
    y_idx = np.asarray(y_idx).astype(np.int64).ravel()
    correct = (np.asarray(scores).argmax(axis=1) == y_idx).astype(np.float64)
    return bootstrap_ci(lambda i: correct[i].mean(), len(correct), n_boot=n_boot, seed=seed, strata=y_idx, alpha=alpha)


def mean_ci(values, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """The mean of per-image values (pointing-game hits, per-query precision) with its interval."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return bootstrap_ci(lambda i: v[i].mean(), len(v), n_boot=n_boot, seed=seed, alpha=alpha)
