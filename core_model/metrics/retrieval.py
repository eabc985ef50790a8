"""Image-report retrieval metrics on L2-normalised embeddings (numpy only).

- Instance Recall@K: the paired item is among the top K (image->report and report->image), with
  the chance level K/N beside it.
- Precision@K by finding: the share of the top K retrieved items whose finding label matches the
  query's, as chest X-ray retrieval papers score it; the chance level is the label prevalence.
"""

from __future__ import annotations

import numpy as np


def _topk(sim: np.ndarray, k: int) -> np.ndarray:
    k = min(k, sim.shape[1])
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sim, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def recall_at_k(sim: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    """sim[i, j] = similarity of query i to candidate j; the correct candidate of i is j == i."""
    n = sim.shape[0]
    diag = sim[np.arange(n), np.arange(n)]
    # rank of the true pair = number of candidates scoring strictly higher; candidates scoring
    # exactly the same are ordered at random, and we take the expectation over that order (a
    # collapsed model whose embeddings are all equal then scores chance, K/N, not 1.0)
    greater = (sim > diag[:, None]).sum(axis=1)
    tied = (sim == diag[:, None]).sum(axis=1) - 1  # other candidates with the same score
    out = {}
    for k in ks:
        p_hit = np.clip((k - greater) / (tied + 1), 0.0, 1.0)
        out[k] = float(p_hit.mean())
    return out


def precision_at_k(sim: np.ndarray, query_labels, candidate_labels, ks=(1, 5)) -> dict[int, float]:
    query_labels = np.asarray(query_labels)
    candidate_labels = np.asarray(candidate_labels)
    out = {}
    top = _topk(sim, max(ks))
    matches = candidate_labels[top] == query_labels[:, None]
    for k in ks:
        out[k] = float(matches[:, :k].mean())
    return out


def retrieval_metrics(
    image_emb: np.ndarray, text_emb: np.ndarray, labels=None, ks=(1, 5, 10), precision_ks=(1, 5)
) -> dict:
    """All retrieval metrics for paired embeddings (row i of both is one image-report pair)."""
    image_emb = np.asarray(image_emb, dtype=np.float32)
    text_emb = np.asarray(text_emb, dtype=np.float32)
    n = image_emb.shape[0]
    sim = image_emb @ text_emb.T
    result: dict = {"n": n}
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        for k, v in recall_at_k(s, ks).items():
            result[f"{name}_R@{k}"] = v
    for k in ks:
        result[f"chance_R@{k}"] = min(1.0, k / max(n, 1))
    if labels is not None:
        labels = np.asarray(labels)
        valid = np.array([lab is not None and lab == lab and lab != "" for lab in labels])
        if valid.sum() >= 2:
            lab = labels[valid]
            s_valid = sim[np.ix_(valid, valid)]
            for name, s in (("i2t", s_valid), ("t2i", s_valid.T)):
                for k, v in precision_at_k(s, lab, lab, precision_ks).items():
                    result[f"{name}_P@{k}_finding"] = v
            _, counts = np.unique(lab, return_counts=True)
            result["chance_P_finding"] = float(((counts / counts.sum()) ** 2).sum())
    return result
