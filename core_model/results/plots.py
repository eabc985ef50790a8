"""PNG figures for run reports: ROC / precision-recall curves and segmentation example grids.

Matplotlib is used through the object API with the Agg canvas (``Figure`` + ``FigureCanvasAgg``),
never ``pyplot``, so importing this module does not change a process-wide backend (the app uses
Qt) and works without a display. No torch, no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core_model.fileio import atomic_write

RESEARCH_LINE = "Research use only - not for diagnosis."

# colours that stay distinguishable for common colour-vision deficiencies (Okabe-Ito)
_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
_TRUTH_RGB = (0.0, 0.62, 0.45)  # green
_PRED_RGB = (0.80, 0.47, 0.65)  # magenta
_TP_RGB, _FP_RGB, _FN_RGB = (0.94, 0.89, 0.26), (0.84, 0.37, 0.0), (0.0, 0.45, 0.70)


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    p = Path(path)
    atomic_write(p, lambda f: fig.savefig(f, format="png"), fsync=False, mkdir=True)
    return p


def _clean(y, s):
    y = np.asarray(y, dtype=np.float64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    keep = ~np.isnan(y)
    return y[keep], s[keep]


def plot_roc_pr(
    y,
    scores,
    class_name: str,
    path,
    *,
    threshold: float | None = None,
    auroc_ci: tuple[float, float] | None = None,
    subtitle: str = "",
) -> Path | None:
    """One PNG with the ROC curve (left) and the precision-recall curve (right) of one class,
    chance levels dashed, the operating point (``scores >= threshold``) marked. Returns None when
    the labels have a single value (no curve exists)."""
    from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

    y, s = _clean(y, scores)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    prec, rec, _ = precision_recall_curve(y, s)
    auroc = roc_auc_score(y, s)
    auprc = auc(rec, prec)
    prevalence = float(y.mean())
    fig = _figure(10.0, 6.0)
    ax1, ax2 = fig.subplots(1, 2)
    label = f"AUROC {auroc:.3f}"
    if auroc_ci and all(map(math.isfinite, auroc_ci)):
        label += f" (95% CI {auroc_ci[0]:.3f}-{auroc_ci[1]:.3f})"
    ax1.plot(fpr, tpr, color=_COLORS[0], lw=2, label=label)
    ax1.plot([0, 1], [0, 1], ls="--", color="0.55", lw=1, label="chance (0.5)")
    ax2.plot(rec, prec, color=_COLORS[1], lw=2, label=f"area under the curve {auprc:.3f}")
    ax2.axhline(prevalence, ls="--", color="0.55", lw=1, label=f"chance (prevalence {prevalence:.3f})")
    if threshold is not None and math.isfinite(threshold):
        pred = s >= threshold
        tp = float((pred & (y == 1)).sum())
        fp = float((pred & (y == 0)).sum())
        sens = tp / max((y == 1).sum(), 1)
        spec = 1 - fp / max((y == 0).sum(), 1)
        ppv = tp / (tp + fp) if tp + fp else float("nan")
        ax1.plot(
            [1 - spec],
            [sens],
            "o",
            color="k",
            ms=7,
            zorder=5,
            label=f"threshold {threshold:.3g}: sens {sens:.2f}, spec {spec:.2f}",
        )
        if math.isfinite(ppv):
            ax2.plot(
                [sens],
                [ppv],
                "o",
                color="k",
                ms=7,
                zorder=5,
                label=f"threshold {threshold:.3g}: recall {sens:.2f}, precision {ppv:.2f}",
            )
    ax1.set(
        xlabel="False positive rate (1 - specificity)",
        ylabel="True positive rate (sensitivity)",
        title="ROC curve",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    ax2.set(
        xlabel="Recall (sensitivity)",
        ylabel="Precision (PPV)",
        title="Precision-recall curve",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.01),
    )
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_aspect("equal")
        # below the axes, so the legend never hides a part of the curve
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8.5, frameon=False)
    n_pos = int(y.sum())
    head = f"{class_name}: {y.size} images, {n_pos} positive"
    fig.suptitle(head + (f" - {subtitle}" if subtitle else ""), fontsize=11)
    fig.text(0.5, 0.01, RESEARCH_LINE, ha="center", fontsize=8, color="0.35")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.26, top=0.88, wspace=0.22)
    return _save(fig, path)


def plot_curves(
    y,
    scores,
    class_names: Sequence[str],
    out_dir,
    *,
    prefix: str = "curves",
    thresholds: dict | None = None,
    cis: dict | None = None,
    subtitle: str = "",
) -> dict[str, Path | None]:
    """:func:`plot_roc_pr` for every class (columns of ``y`` / ``scores``); ``{class: path or None}``."""
    y2 = np.asarray(y, dtype=np.float64)
    s2 = np.asarray(scores, dtype=np.float64)
    if y2.ndim == 1:
        y2, s2 = y2[:, None], s2.reshape(len(s2), -1)
    out = {}
    for k, name in enumerate(class_names):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        out[name] = plot_roc_pr(
            y2[:, k],
            s2[:, k],
            name,
            Path(out_dir) / f"{prefix}_{safe}.png",
            threshold=(thresholds or {}).get(name),
            auroc_ci=(cis or {}).get(name),
            subtitle=subtitle,
        )
    return out


def _gray(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3:
        a = a.mean(axis=-1)
    lo, hi = np.percentile(a, 0.5), np.percentile(a, 99.5)
    return np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)


def _overlay(gray: np.ndarray, layers, alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    for mask, color in layers:
        m = np.asarray(mask, bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color)
    return rgb


def _outline(ax, mask, color):
    m = np.asarray(mask, bool)
    if m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=1.2)


def plot_segmentation_grid(
    images,
    truths,
    preds,
    path,
    *,
    threshold: float = 0.5,
    titles: Sequence[str] | None = None,
    max_rows: int = 8,
    title: str = "Segmentation examples",
) -> Path:
    """PNG grid, one row per example: the image, the truth (green), the prediction (magenta,
    thresholded ``p > threshold`` for probabilities), and the agreement map (yellow = both,
    orange = predicted only, blue = missed), with per-image Dice in the row label."""
    n = min(len(images), max_rows)
    if n == 0:
        raise ValueError("no example to plot")
    fig = _figure(12.0, 3.0 * n + 0.8)
    axes = np.atleast_2d(fig.subplots(n, 4))
    cols = ("Image", "Ground truth", "Prediction", "Agreement")
    for i in range(n):
        g = _gray(images[i])
        t = np.asarray(truths[i])
        t = t if t.dtype == bool else t > 0.5
        p = np.asarray(preds[i])
        p = p if p.dtype == bool else p > threshold
        if p.shape != g.shape or t.shape != g.shape:
            raise ValueError(f"example {i}: image {g.shape}, truth {t.shape}, prediction {p.shape} differ")
        inter, denom = int((p & t).sum()), int(p.sum() + t.sum())
        dice = 2 * inter / denom if denom else 1.0
        panels = (
            _overlay(g, []),
            _overlay(g, [(t, _TRUTH_RGB)]),
            _overlay(g, [(p, _PRED_RGB)]),
            _overlay(g, [(p & t, _TP_RGB), (p & ~t, _FP_RGB), (~p & t, _FN_RGB)], alpha=0.6),
        )
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=11)
        _outline(axes[i][1], t, _TRUTH_RGB)
        _outline(axes[i][2], p, _PRED_RGB)
        label = (titles[i] + "\n") if titles and i < len(titles) else ""
        if t.any():
            kind = f"lesion {int(t.sum())} px\nDice {dice:.2f}"
        elif p.any():
            kind = f"no lesion, {int(p.sum())} px predicted\nDice 0 (MGCA protocol)"
        else:
            kind = "no lesion, nothing predicted\nDice 1 (MGCA protocol)"
        axes[i][0].set_ylabel(f"{label}{kind}", fontsize=9)
    from matplotlib.patches import Patch

    handles = [
        Patch(color=_TRUTH_RGB, label="truth"),
        Patch(color=_PRED_RGB, label="prediction"),
        Patch(color=_TP_RGB, label="both"),
        Patch(color=_FP_RGB, label="predicted only"),
        Patch(color=_FN_RGB, label="missed"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"{title}  ({RESEARCH_LINE})", fontsize=12)
    fig.tight_layout(rect=(0, 0.35 / (3.0 * n + 0.8), 1, 1 - 0.35 / (3.0 * n + 0.8)))
    return _save(fig, path)


def pick_examples(dice_per_image, has_lesion, n: int = 6, *, pred_area=None, seed: int = 0) -> list[int]:
    """Indices for an honest grid: the best, a median and the worst image with a lesion, the
    lesion-free image with the largest false-positive area (when ``pred_area`` is given and one
    exists) and a random lesion-free one; deterministic for a seed."""
    d = np.asarray(dice_per_image, dtype=np.float64)
    lesion = np.asarray(has_lesion, bool)
    pos, neg = np.flatnonzero(lesion), np.flatnonzero(~lesion)
    picks: list[int] = []
    if pos.size:
        order = pos[np.argsort(d[pos], kind="stable")]
        picks += [int(order[-1]), int(order[len(order) // 2]), int(order[0])]
    if neg.size and pred_area is not None:
        area = np.asarray(pred_area)[neg]
        if area.max() > 0:
            picks.append(int(neg[int(np.argmax(area))]))
    rng = np.random.default_rng(seed)
    if neg.size:
        picks += [int(i) for i in rng.permutation(neg)[:2]]
    if pos.size > 3:
        picks.append(int(order[len(order) // 4]))
    out = list(dict.fromkeys(picks))
    return out[:n]


def plot_metric_vs_fraction(cells: list[dict], path, *, title: str, ylabel: str) -> Path | None:
    """A protocol column: the metric (seed mean, 95 % bootstrap interval as error bars) against the
    label fraction, one line per row and head; None when no cell of it was measured."""
    measured = [c for c in cells if c.get("status") == "measured"]
    if not measured:
        return None
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    keys = []
    for c in measured:
        if (c["row"], c["head"]) not in keys:
            keys.append((c["row"], c["head"]))
    for row, head in keys:
        pts = sorted((c for c in measured if c["row"] == row and c["head"] == head), key=lambda c: c["fraction"])
        x = [c["fraction"] for c in pts]
        y = [c["mean"] for c in pts]
        lo = [max(c["mean"] - c["ci_low"], 0) if c.get("ci_low") == c.get("ci_low") else 0 for c in pts]
        hi = [max(c["ci_high"] - c["mean"], 0) if c.get("ci_high") == c.get("ci_high") else 0 for c in pts]
        ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=f"{row} ({head})")
    ax.set_xscale("log")
    ax.set_xlabel("share of training labels")
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (research use only)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
