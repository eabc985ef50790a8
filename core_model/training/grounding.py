"""Lesion masks on the patch grid: what the grounding evaluation scores against, the positional
prior it must beat, and the targets of weak grounding supervision in pretraining.

A lesion mask (PNG, nonzero = lesion; phantoms' ``lesion_mask``, SIIM's pneumothorax masks,
RSNA boxes drawn as masks) is brought onto the model's square input by the one preprocessing
geometry (:func:`core_model.imaging.preprocess.to_square`, nearest neighbour), then onto the patch
grid: a patch is a lesion patch when at least ``hit_share`` of its pixels are lesion.

Weak supervision (``loss.grounding_weight`` > 0): a seeded ``loss.grounding_fraction`` of the
training images that carry a lesion mask lend it to pretraining; for those images the report's
word-to-patch heatmap is asked to put its mass on the lesion patches (a multiple-instance term,
:func:`core_model.losses.grounding_loss`). Everything else stays image-report contrastive. The
run's metadata says how many masks were used, so a model card can call it weak supervision.
"""

from __future__ import annotations

import numpy as np

__all__ = ["lesion_cells", "positional_prior", "weak_grounding_targets"]


def lesion_cells(mask_path: str, spec, rows: int, cols: int, hit_share: float) -> np.ndarray:
    """(rows, cols) bool: the patches of the lesion mask at ``mask_path`` holding >= ``hit_share``
    lesion, in the geometry of the model input ``spec``."""
    from PIL import Image

    from core_model.imaging.preprocess import to_square

    with Image.open(mask_path) as im:
        mask = np.asarray(im.convert("L")) > 127
    sq = to_square(mask.astype(np.uint8) * 255, spec, resample=Image.NEAREST) > 127
    return sq.reshape(rows, sq.shape[0] // rows, cols, sq.shape[1] // cols).mean(axis=(1, 3)) >= hit_share


def positional_prior(train_records, findings, spec, rows: int, cols: int, hit_share: float) -> dict:
    """Per finding, the patch that is most often a lesion patch in the *training* masks: a
    constant "heatmap" peaking there is the baseline a grounding model must beat (not chance)."""
    counts: dict[str, np.ndarray] = {}
    for r in train_records:
        if r.lesion_mask_path and r.finding in findings:
            c = counts.setdefault(r.finding, np.zeros((rows, cols)))
            c += lesion_cells(r.lesion_mask_path, spec, rows, cols, hit_share)
    return {f: divmod(int(c.argmax()), cols) for f, c in counts.items()}


def weak_grounding_targets(
    lesion_masks, train_idx, fraction: float, seed: int, spec, rows: int, cols: int, hit_share: float = 0.1
) -> dict[int, np.ndarray]:
    """Item index -> (rows * cols,) bool lesion patches, for a seeded ``fraction`` of the training
    items that have a lesion mask (at least one when the fraction is > 0 and any has one). Masks
    with no lesion patch at this grid are left out (nothing to point at)."""
    if fraction <= 0:
        return {}
    candidates = np.array([i for i in train_idx if lesion_masks[i]], dtype=np.int64)
    if not len(candidates):
        return {}
    n = max(1, int(round(min(fraction, 1.0) * len(candidates))))
    chosen = np.random.default_rng(seed).choice(candidates, size=n, replace=False)
    out = {}
    for i in sorted(int(x) for x in chosen):
        cells = lesion_cells(lesion_masks[i], spec, rows, cols, hit_share).reshape(-1)
        if cells.any():
            out[i] = cells
    return out
