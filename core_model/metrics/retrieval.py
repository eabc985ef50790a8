"""Image-report retrieval metrics on L2-normalised embeddings (numpy only).

- Instance Recall@K: the paired item is among the top K (image->report and report->image), with
  the chance level K/N beside it.
- Precision@K by finding: the share of the top K retrieved items whose finding label matches the
  query's, as chest X-ray retrieval papers score it; the chance level is the label prevalence.
- With ``n_boot > 0``, each of them also gets its 95 % percentile bootstrap interval
  (``<name>_ci``): the queries are resampled, the candidate set stays whole (the one resampling
  scheme of :mod:`core_model.metrics.bootstrap`). :func:`per_query_hits` gives the per-query
  values every metric is the mean of (what a protocol table resamples and pairs across methods).
"""

from __future__ import annotations

import numpy as np


def _topk(sim: np.ndarray, k: int) -> np.ndarray:
    k = min(k, sim.shape[1])
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sim, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def recall_hits(sim: np.ndarray, ks=(1, 5, 10)) -> dict[int, np.ndarray]:
    """Per query, the (expected) hit of Recall@K: ``[N]`` values in [0, 1] for each K."""
    n = sim.shape[0]
    diag = sim[np.arange(n), np.arange(n)]
    # rank of the true pair = number of candidates scoring strictly higher; candidates scoring
    # exactly the same are ordered at random, and we take the expectation over that order (a
    # collapsed model whose embeddings are all equal then scores chance, K/N, not 1.0)
    greater = (sim > diag[:, None]).sum(axis=1)
    tied = (sim == diag[:, None]).sum(axis=1) - 1  # other candidates with the same score
    out = {}
    for k in ks:
        out[k] = np.clip((k - greater) / (tied + 1), 0.0, 1.0)
    return out


def recall_at_k(sim: np.ndarray, ks=(1, 5, 10)) -> dict[int, float]:
    """sim[i, j] = similarity of query i to candidate j; the correct candidate of i is j == i."""
    return {k: float(v.mean()) for k, v in recall_hits(sim, ks).items()}


def precision_hits(sim: np.ndarray, query_labels, candidate_labels, ks=(1, 5)) -> dict[int, np.ndarray]:
    """Per query, the share of its top K candidates with the query's finding: ``[N]`` per K."""
    query_labels = np.asarray(query_labels)
    candidate_labels = np.asarray(candidate_labels)
    top = _topk(sim, max(ks))
    matches = candidate_labels[top] == query_labels[:, None]
    return {k: matches[:, :k].mean(axis=1) for k in ks}


def precision_at_k(sim: np.ndarray, query_labels, candidate_labels, ks=(1, 5)) -> dict[int, float]:
    return {k: float(v.mean()) for k, v in precision_hits(sim, query_labels, candidate_labels, ks).items()}


def _valid_labels(labels) -> np.ndarray:
    return np.array([lab is not None and lab == lab and lab != "" for lab in labels], dtype=bool)


def per_query_hits(
    image_emb: np.ndarray, text_emb: np.ndarray, labels=None, ks=(1, 5, 10), precision_ks=(1, 5)
) -> dict[str, np.ndarray]:
    """``{metric name: [N] per-query values}`` (names as in :func:`retrieval_metrics`); the
    Precision@K values are nan for queries without a finding label (they are not scored)."""
    image_emb = np.asarray(image_emb, dtype=np.float32)
    text_emb = np.asarray(text_emb, dtype=np.float32)
    n = image_emb.shape[0]
    sim = image_emb @ text_emb.T
    out: dict[str, np.ndarray] = {}
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        for k, v in recall_hits(s, ks).items():
            out[f"{name}_R@{k}"] = v.astype(np.float64)
    if labels is not None:
        labels = np.asarray(labels)
        valid = _valid_labels(labels)
        if valid.sum() >= 2:
            lab = labels[valid]
            s_valid = sim[np.ix_(valid, valid)]
            for name, s in (("i2t", s_valid), ("t2i", s_valid.T)):
                for k, v in precision_hits(s, lab, lab, precision_ks).items():
                    full = np.full(n, np.nan)
                    full[valid] = v
                    out[f"{name}_P@{k}_finding"] = full
    return out


def retrieval_metrics(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels=None,
    ks=(1, 5, 10),
    precision_ks=(1, 5),
    *,
    n_boot: int = 0,
    seed: int = 0,
) -> dict:
    """All retrieval metrics for paired embeddings (row i of both is one image-report pair);
    with ``n_boot`` resamples also each metric's bootstrap interval as ``<name>_ci``."""
    n = int(np.asarray(image_emb).shape[0])
    hits = per_query_hits(image_emb, text_emb, labels, ks, precision_ks)
    result: dict = {"n": n}
    for name, v in hits.items():
        if name.startswith(("i2t_R", "t2i_R")):
            result[name] = float(v.mean())
    for k in ks:
        result[f"chance_R@{k}"] = min(1.0, k / max(n, 1))
    precision = {name: v for name, v in hits.items() if "_P@" in name}
    for name, v in precision.items():
        result[name] = float(np.nanmean(v))
    if precision:
        labels = np.asarray(labels)
        _, counts = np.unique(labels[_valid_labels(labels)], return_counts=True)
        result["chance_P_finding"] = float(((counts / counts.sum()) ** 2).sum())
    if n_boot:
        from core_model.metrics.bootstrap import mean_ci

        for name, v in hits.items():
            result[f"{name}_ci"] = mean_ci(v[~np.isnan(v)], n_boot=n_boot, seed=seed)
        result["bootstrap"] = {
            "n_boot": int(n_boot),
            "seed": int(seed),
            "method": "95 % percentile bootstrap over the queries (the candidates stay whole)",
        }
    return result
