"""Zero-shot classification from prompt pairs (numpy only).

For each class ``c`` there is a positive wording ("right pneumothorax") and a negative one ("no
pneumothorax"), each one or several prompt embeddings. Several prompts of one side are averaged
and re-normalised (prompt ensembling). With L2-normalised image embeddings ``x``:

    score_c(x) = softmax([x . pos_c, x . neg_c] / tau)[0] = sigmoid((x . pos_c - x . neg_c) / tau)

``tau`` is the model's contrastive temperature when known (it only changes the probabilities,
not the AUROC); default 1. AUROC per class comes from :mod:`core_model.metrics.classification`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from core_model.metrics.classification import bootstrap_auroc, sigmoid


def _l2(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def _prompt_vector(emb) -> np.ndarray:
    """``[D]`` or ``[K, D]`` prompt embeddings -> one unit vector."""
    e = np.asarray(emb, dtype=np.float64)
    if e.ndim == 2:
        e = _l2(e).mean(axis=0)
    return _l2(e)


def zero_shot_scores(image_emb, pos_prompts: Sequence, neg_prompts: Sequence, *, tau: float = 1.0) -> np.ndarray:
    """``[N, C]`` probabilities that each image shows class ``c`` (positive prompt wins).

    ``pos_prompts[c]`` / ``neg_prompts[c]``: ``[D]`` or ``[K, D]`` embeddings of class ``c``."""
    if len(pos_prompts) != len(neg_prompts):
        raise ValueError("one negative prompt set per positive prompt set")
    x = _l2(image_emb)
    pos = np.stack([_prompt_vector(p) for p in pos_prompts])
    neg = np.stack([_prompt_vector(n) for n in neg_prompts])
    if pos.shape[1] != x.shape[1]:
        raise ValueError(f"prompt dimension {pos.shape[1]} != image dimension {x.shape[1]}")
    return sigmoid((x @ pos.T - x @ neg.T) / tau)


def zero_shot_auroc(scores, labels, class_names: Sequence[str], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-class AUROC (with bootstrap CIs) and macro of zero-shot scores against 1 / 0 / nan labels."""
    boot = bootstrap_auroc(labels, scores, n_boot=n_boot, seed=seed)
    return {
        "per_class": {name: boot["per_class"][k] for k, name in enumerate(class_names)},
        "auroc_macro": boot["macro"],
        "bootstrap": {"n_boot": n_boot, "seed": seed, "stratified": True},
    }


def zero_shot_evaluate(
    image_emb, prompts: Mapping[str, tuple], labels, *, tau: float = 1.0, n_boot: int = 1000, seed: int = 0
) -> dict:
    """``prompts = {class_name: (pos_emb, neg_emb)}``; ``labels`` ``[N, C]`` in the same order."""
    names = list(prompts)
    scores = zero_shot_scores(image_emb, [prompts[n][0] for n in names], [prompts[n][1] for n in names], tau=tau)
    out = zero_shot_auroc(scores, labels, names, n_boot=n_boot, seed=seed)
    out["scores"] = scores
    return out
