"""Zero-shot scores from prompt pairs, and retrieval recall that a collapsed model cannot game."""

import numpy as np
import pytest

from core_model.metrics.retrieval import recall_at_k, retrieval_metrics
from core_model.metrics.zeroshot import zero_shot_evaluate, zero_shot_scores


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_zero_shot_scores_are_the_pairwise_softmax():
    x = _unit([[1.0, 0.2, 0.0], [0.1, 1.0, 0.0]])
    pos = [_unit([1.0, 0.0, 0.0])]
    neg = [np.stack([_unit([0.0, 1.0, 0.0]), _unit([0.0, 1.0, 0.1])])]  # two prompts, averaged
    s = zero_shot_scores(x, pos, neg, tau=0.1)
    neg_vec = _unit(neg[0].mean(0))
    expected = np.exp(x @ pos[0] / 0.1) / (np.exp(x @ pos[0] / 0.1) + np.exp(x @ neg_vec / 0.1))
    assert s.shape == (2, 1)
    assert np.allclose(s[:, 0], expected)
    assert s[0, 0] > 0.5 > s[1, 0]


def test_zero_shot_auroc_follows_the_prompts():
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(float)
    pos_dir, neg_dir = np.eye(8)[0], np.eye(8)[1]
    emb = rng.normal(0, 0.3, (200, 8)) + np.outer(labels, pos_dir) + np.outer(1 - labels, neg_dir)
    good = zero_shot_evaluate(emb, {"pneumonia": (pos_dir, neg_dir)}, labels[:, None], n_boot=50)
    swapped = zero_shot_evaluate(emb, {"pneumonia": (neg_dir, pos_dir)}, labels[:, None], n_boot=50)
    assert good["per_class"]["pneumonia"]["auroc"] > 0.95
    assert swapped["per_class"]["pneumonia"]["auroc"] < 0.05


def test_recall_of_a_collapsed_model_is_chance_not_perfect():
    n = 20
    same = np.ones((n, 4)) / 2.0
    r = retrieval_metrics(same, same)
    assert r["i2t_R@1"] == pytest.approx(1 / n) and r["t2i_R@5"] == pytest.approx(5 / n)
    assert r["chance_R@1"] == pytest.approx(1 / n)


def test_recall_hand_example():
    sim = np.array(
        [
            [0.9, 0.1, 0.2],
            [0.8, 0.5, 0.1],  # true pair ranked 2nd
            [0.3, 0.3, 0.3],
        ]
    )  # three-way tie: 1/3 chance to be first
    r = recall_at_k(sim, ks=(1, 2))
    assert r[1] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert r[2] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_precision_by_finding():
    img = np.eye(4)
    txt = np.eye(4)
    labels = ["pneumonia", "pneumonia", "normal", "normal"]
    r = retrieval_metrics(img, txt, labels=labels, ks=(1,), precision_ks=(1, 2))
    assert r["i2t_P@1_finding"] == 1.0
    assert r["i2t_R@1"] == 1.0
    assert r["chance_P_finding"] == pytest.approx(0.5)
