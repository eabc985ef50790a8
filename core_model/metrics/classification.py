"""Classification metrics (numpy, scikit-learn, scipy; no torch).

Conventions
- ``y``: binary / multi-label targets as a ``[N]`` or ``[N, C]`` array of 1 / 0 / nan (nan = unknown,
  e.g. CheXpert's ignored uncertain labels; such entries are left out per class), or multi-class
  targets as ``[N]`` integer class indices with ``task="multiclass"``.
- ``scores``: any monotone score for AUROC; logits where temperature scaling is involved.
- Operating threshold: a sample is called positive when ``probability >= threshold``.

What is computed, and how
- AUROC per class (one-vs-rest for multi-class) and macro (mean over the classes with a defined
  AUROC). A class whose labels have a single value gives ``nan`` with a reason, never an error.
- 95 % bootstrap confidence intervals: percentile intervals over ``n_boot`` resamples of the
  images, seeded (``numpy.random.default_rng(seed)``), **stratified** by default: each resample
  draws with replacement within each stratum (the label value for binary, the class for
  multi-class, the label pattern for multi-label), so every resample keeps the class counts and
  AUROC stays defined. ``stratified=False`` gives the plain bootstrap (resamples with one label
  value are dropped and counted). The macro interval resamples all classes together.
- Threshold chosen on validation: Youden's J (max sensitivity + specificity - 1) by default;
  ``"f1"`` (max F1), ``("sensitivity", 0.9)`` (highest threshold reaching that sensitivity),
  ``("specificity", 0.9)``, or a fixed number.
- Expected calibration error: 15 equal-width bins on [0, 1] (bin ``k`` holds ``k/15 <= p <
  (k+1)/15``, the last bin includes 1), ``sum_k |B_k|/N * |acc(B_k) - conf(B_k)|``. Binary and
  multi-label: the calibration of the predicted positive probability per class (``conf`` =
  mean probability, ``acc`` = fraction of positives), averaged over classes. Multi-class: the
  top-label ECE (``conf`` = max softmax probability, ``acc`` = top-1 correct).
- Temperature scaling (Guo et al. 2017): one scalar ``T > 0`` fitted on validation logits by
  minimising the NLL (sigmoid BCE for binary / multi-label, softmax cross-entropy for
  multi-class) with scipy's L-BFGS-B over ``log T`` and an analytic gradient. It does not change
  AUROC or top-1; it changes probabilities, ECE and the probability threshold.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

N_BINS = 15


# --------------------------------------------------------------------------- helpers


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _as_2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[:, None] if a.ndim == 1 else a


def one_hot(y_idx, n_classes: int) -> np.ndarray:
    y_idx = np.asarray(y_idx, dtype=np.int64)
    out = np.zeros((y_idx.size, n_classes))
    out[np.arange(y_idx.size), y_idx] = 1.0
    return out


# --------------------------------------------------------------------------- AUROC


def auroc(y, scores) -> tuple[float, str | None]:
    """Binary AUROC with nan labels left out: ``(value, None)`` or ``(nan, reason)``."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    y, s = y[keep], s[keep]
    if y.size == 0:
        return math.nan, "no labelled sample"
    if not np.isin(y, (0.0, 1.0)).all():
        return math.nan, "labels other than 0/1 (apply an uncertainty policy first)"
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        return math.nan, f"only one label value ({'positive' if n_pos else 'negative'}) among {y.size} samples"
    if not np.isfinite(s).all():
        return math.nan, "non-finite scores"
    return float(roc_auc_score(y, s)), None


def auroc_per_class(y, scores) -> tuple[list[float], list[str | None]]:
    y2, s2 = _as_2d(y), _as_2d(scores)
    vals, reasons = [], []
    for c in range(y2.shape[1]):
        v, r = auroc(y2[:, c], s2[:, c])
        vals.append(v)
        reasons.append(r)
    return vals, reasons


def _nanmean_or_nan(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def _strata(y2: np.ndarray) -> np.ndarray:
    filled = np.where(np.isnan(y2), -9.0, y2)
    _, inv = np.unique(filled, axis=0, return_inverse=True)
    return inv.ravel()


def bootstrap_indices(n: int, n_boot: int, seed: int, strata: np.ndarray | None = None):
    """Yield ``n_boot`` index arrays of length ``n`` (stratified when ``strata`` is given)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    groups = [np.flatnonzero(strata == g) for g in np.unique(strata)]
    for _ in range(n_boot):
        yield np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])


def bootstrap_auroc(
    y, scores, *, n_boot: int = 1000, seed: int = 0, stratified: bool = True, alpha: float = 0.05
) -> dict:
    """Per-class and macro AUROC with percentile bootstrap CIs.

    Returns ``{"per_class": [{"auroc", "ci_low", "ci_high", "reason"}...], "macro": {...},
    "n_boot", "seed", "stratified", "dropped_resamples"}``."""
    from sklearn.metrics import roc_auc_score

    y2, s2 = _as_2d(y), _as_2d(scores)
    n, c = y2.shape
    point, reasons = auroc_per_class(y2, s2)
    valid = [k for k in range(c) if not math.isnan(point[k])]
    boots = np.full((n_boot, c), np.nan)
    dropped = 0
    strata = _strata(y2) if stratified else None
    for b, idx in enumerate(bootstrap_indices(n, n_boot, seed, strata)):
        yb, sb = y2[idx], s2[idx]
        for k in valid:
            yk, sk = yb[:, k], sb[:, k]
            keep = ~np.isnan(yk)
            yk, sk = yk[keep], sk[keep]
            pos = yk.sum()
            if pos == 0 or pos == yk.size:
                continue
            boots[b, k] = roc_auc_score(yk, sk)
        if valid and np.isnan(boots[b, valid]).any():
            dropped += 1
    lo_q, hi_q = 100 * alpha / 2, 100 * (1 - alpha / 2)

    def ci(col):
        col = col[~np.isnan(col)]
        if col.size < 2:
            return math.nan, math.nan
        return float(np.percentile(col, lo_q)), float(np.percentile(col, hi_q))

    per_class = []
    for k in range(c):
        lo, hi = ci(boots[:, k]) if k in valid else (math.nan, math.nan)
        per_class.append({"auroc": point[k], "ci_low": lo, "ci_high": hi, "reason": reasons[k]})
    complete = ~np.isnan(boots[:, valid]).any(axis=1) if valid else np.zeros(n_boot, bool)
    macro_boot = boots[complete][:, valid].mean(axis=1) if valid else np.array([])
    mlo, mhi = ci(macro_boot)
    macro = {
        "auroc": _nanmean_or_nan(point),
        "ci_low": mlo,
        "ci_high": mhi,
        "n_classes": len(valid),
        "reason": None if valid else "no class has both label values",
    }
    return {
        "per_class": per_class,
        "macro": macro,
        "n_boot": n_boot,
        "seed": seed,
        "stratified": stratified,
        "alpha": alpha,
        "dropped_resamples": int(dropped),
    }


# --------------------------------------------------------------------------- thresholds


def choose_threshold(y, probs, method="youden") -> float:
    """Operating threshold for one class chosen on validation data (positive if ``p >= t``).

    ``method``: ``"youden"`` | ``"f1"`` | ``("sensitivity", target)`` | ``("specificity", target)``
    | a number (returned as is). Falls back to 0.5 when the validation labels have one value."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if isinstance(method, (int, float)):
        return float(method)
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    y, p = y[keep], p[keep]
    if y.size == 0 or y.min() == y.max():
        return 0.5
    if method == "f1":
        prec, rec, thr = precision_recall_curve(y, p)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)[:-1]
        return float(thr[int(np.argmax(f1))])
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if method == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    if isinstance(method, (tuple, list)) and len(method) == 2:
        kind, target = method
        if kind == "sensitivity":
            ok = np.flatnonzero(tpr >= target)
            return float(thr[ok[0]]) if ok.size else float(thr[-1])
        if kind == "specificity":
            ok = np.flatnonzero(1 - fpr >= target)
            return float(thr[ok[-1]]) if ok.size else float(thr[0])
    raise ValueError(f"unknown threshold method {method!r}")


def operating_point(y, probs, threshold: float) -> dict:
    """Confusion counts, accuracy, sensitivity, specificity, PPV, NPV, F1 at ``p >= threshold``."""
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    y, p = y[keep] == 1, p[keep] >= threshold
    tp = int((y & p).sum())
    fp = int((~y & p).sum())
    tn = int((~y & ~p).sum())
    fn = int((y & ~p).sum())

    def div(a, b):
        return a / b if b else math.nan

    sens, spec = div(tp, tp + fn), div(tn, tn + fp)
    ppv = div(tp, tp + fp)
    f1 = div(2 * tp, 2 * tp + fp + fn)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": div(tp + tn, y.size),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": div(tn, tn + fn),
        "f1": f1,
    }


# --------------------------------------------------------------------------- calibration


def _ece_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    if conf.size == 0:
        return math.nan
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    b = np.clip(b, 0, n_bins - 1)
    total = 0.0
    for k in range(n_bins):
        m = b == k
        if m.any():
            total += m.sum() / conf.size * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def expected_calibration_error(y, probs, *, multiclass: bool = False, n_bins: int = N_BINS) -> float:
    """ECE with ``n_bins`` equal-width bins (see the module docstring for the definition used)."""
    if multiclass:
        probs = np.asarray(probs, dtype=np.float64)
        y = np.asarray(y).astype(np.int64).ravel()
        conf = probs.max(axis=1)
        correct = (probs.argmax(axis=1) == y).astype(np.float64)
        return _ece_bins(conf, correct, n_bins)
    y2, p2 = _as_2d(y), _as_2d(probs)
    per = []
    for k in range(y2.shape[1]):
        keep = ~np.isnan(y2[:, k])
        per.append(_ece_bins(p2[keep, k], y2[keep, k], n_bins))
    return _nanmean_or_nan(per)


def _nll_and_grad_binary(log_t, z, y):
    t = math.exp(log_t[0])
    a = z / t
    # BCE with logits: softplus(a) - y * a
    loss = np.logaddexp(0.0, a) - y * a
    p = sigmoid(a)
    # dL/da = p - y; da/dlogT = -a
    grad = float(((p - y) * (-a)).mean())
    return float(loss.mean()), np.array([grad])


def _nll_and_grad_multiclass(log_t, z, y_idx):
    t = math.exp(log_t[0])
    a = z / t
    amax = a.max(axis=1, keepdims=True)
    lse = (amax + np.log(np.exp(a - amax).sum(axis=1, keepdims=True))).ravel()
    rows = np.arange(a.shape[0])
    loss = lse - a[rows, y_idx]
    p = softmax(a, axis=1)
    # dL/da = p - onehot; da/dlogT = -a
    g = (p * (-a)).sum(axis=1) - (-a[rows, y_idx])
    return float(loss.mean()), np.array([float(g.mean())])


def fit_temperature(logits, y, *, multiclass: bool = False, bounds=(0.05, 20.0)) -> float:
    """Temperature ``T`` minimising the validation NLL of ``logits / T`` (L-BFGS-B over log T).

    Binary / multi-label: sigmoid BCE over all labelled entries (nan labels left out). Multi-class:
    softmax cross-entropy with integer targets. Returns 1.0 when there is nothing to fit."""
    from scipy.optimize import minimize

    z = np.asarray(logits, dtype=np.float64)
    if multiclass:
        y_idx = np.asarray(y).astype(np.int64).ravel()
        if z.ndim != 2 or z.shape[0] == 0:
            return 1.0
        fun, args = _nll_and_grad_multiclass, (z, y_idx)
    else:
        y2, z2 = _as_2d(y), _as_2d(z)
        keep = ~np.isnan(y2)
        if not keep.any():
            return 1.0
        fun, args = _nll_and_grad_binary, (z2[keep], y2[keep])
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize(fun, x0=np.array([0.0]), args=args, jac=True, method="L-BFGS-B", bounds=[(lo, hi)])
    return float(math.exp(res.x[0]))


def apply_temperature(logits, temperature: float, *, multiclass: bool = False) -> np.ndarray:
    """Calibrated probabilities: ``sigmoid(z / T)`` or ``softmax(z / T)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return softmax(z, axis=1) if multiclass else sigmoid(z)


def nll(logits, y, *, multiclass: bool = False, temperature: float = 1.0) -> float:
    z = np.asarray(logits, dtype=np.float64)
    if multiclass:
        return _nll_and_grad_multiclass(np.array([math.log(temperature)]), z, np.asarray(y).astype(np.int64).ravel())[0]
    y2, z2 = _as_2d(y), _as_2d(z)
    keep = ~np.isnan(y2)
    return _nll_and_grad_binary(np.array([math.log(temperature)]), z2[keep], y2[keep])[0]


def top1_accuracy(y_idx, scores) -> float:
    y_idx = np.asarray(y_idx).astype(np.int64).ravel()
    return float((np.asarray(scores).argmax(axis=1) == y_idx).mean()) if y_idx.size else math.nan


# --------------------------------------------------------------------------- the whole evaluation


def evaluate_classification(
    y_test,
    logits_test,
    *,
    class_names: Sequence[str],
    task: str = "binary",
    y_val=None,
    logits_val=None,
    threshold_method="youden",
    calibrate: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    stratified: bool = True,
) -> dict:
    """Every classification metric of a run, JSON-ready (nan -> None is left to the writer).

    ``task``: ``binary`` (one class, ``[N]`` or ``[N, 1]``), ``multilabel`` (``[N, C]``
    sigmoid logits) or ``multiclass`` (``[N, C]`` softmax logits, ``y`` = class indices). When
    validation logits are given, the temperature and the operating thresholds are fitted on them
    (and stored in the result for the app); otherwise ``T = 1`` and the threshold 0.5, with a
    warning. Test-set numbers never influence either."""
    if task not in ("binary", "multilabel", "multiclass"):
        raise ValueError(f"task must be binary, multilabel or multiclass, not {task!r}")
    multiclass = task == "multiclass"
    warnings_out: list[str] = []
    zt = _as_2d(logits_test)
    c = zt.shape[1]
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for {c} logit columns")
    yt_idx = np.asarray(y_test).astype(np.int64).ravel() if multiclass else None
    yt = one_hot(yt_idx, c) if multiclass else _as_2d(y_test)
    have_val = y_val is not None and logits_val is not None
    if have_val:
        zv = _as_2d(logits_val)
        yv_idx = np.asarray(y_val).astype(np.int64).ravel() if multiclass else None
        yv = one_hot(yv_idx, c) if multiclass else _as_2d(y_val)
    else:
        warnings_out.append("no validation set: temperature 1 and threshold 0.5 (not tuned)")
    temperature = 1.0
    if calibrate and have_val:
        temperature = fit_temperature(zv, yv_idx if multiclass else yv, multiclass=multiclass)
    p_raw = apply_temperature(zt, 1.0, multiclass=multiclass)
    p_cal = apply_temperature(zt, temperature, multiclass=multiclass)
    boot = bootstrap_auroc(yt, p_raw, n_boot=n_boot, seed=seed, stratified=stratified)
    per_class = {}
    for k, name in enumerate(class_names):
        entry = dict(boot["per_class"][k])
        if entry["reason"]:
            warnings_out.append(f"AUROC of {name!r} undefined: {entry['reason']}")
        if have_val:
            pv = apply_temperature(zv, temperature, multiclass=multiclass)
            thr = choose_threshold(yv[:, k], pv[:, k], threshold_method)
        else:
            thr = 0.5
        entry["operating_point"] = operating_point(yt[:, k], p_cal[:, k], thr)
        keep = ~np.isnan(yt[:, k])
        entry["n"] = int(keep.sum())
        entry["n_positive"] = int(np.nansum(yt[:, k]))
        per_class[name] = entry
    out = {
        "task": task,
        "n_test": int(zt.shape[0]),
        "auroc_macro": boot["macro"],
        "per_class": per_class,
        "bootstrap": {
            "n_boot": n_boot,
            "seed": seed,
            "stratified": stratified,
            "ci": 0.95,
            "method": "percentile",
            "dropped_resamples": boot["dropped_resamples"],
        },
        "threshold_method": threshold_method if not isinstance(threshold_method, tuple) else list(threshold_method),
        "thresholds": {name: per_class[name]["operating_point"]["threshold"] for name in class_names},
        "threshold_applies_to": (
            "softmax(logits / temperature)[class]" if multiclass else "sigmoid(logit / temperature)"
        ),
        "temperature": temperature,
        "ece_bins": N_BINS,
        "ece_uncalibrated": expected_calibration_error(yt_idx if multiclass else yt, p_raw, multiclass=multiclass),
        "ece": expected_calibration_error(yt_idx if multiclass else yt, p_cal, multiclass=multiclass),
        "nll_uncalibrated": nll(zt, yt_idx if multiclass else yt, multiclass=multiclass),
        "nll": nll(zt, yt_idx if multiclass else yt, multiclass=multiclass, temperature=temperature),
        "warnings": warnings_out,
    }
    if multiclass:
        from core_model.metrics.bootstrap import accuracy_ci

        out["top1_accuracy"] = top1_accuracy(yt_idx, zt)
        out["accuracy"] = out["top1_accuracy"]
        out["accuracy_ci"] = accuracy_ci(yt_idx, zt, n_boot=n_boot, seed=seed)
    elif c == 1:
        out["accuracy"] = per_class[class_names[0]]["operating_point"]["accuracy"]
    else:
        out["accuracy"] = _nanmean_or_nan([per_class[n]["operating_point"]["accuracy"] for n in class_names])
    for w in warnings_out:
        warnings.warn(w, stacklevel=2)
    return out
