"""Build the report bank's HNSW index at export (hnswlib; why hnswlib: core_model.runtime.report_index).

Building over 1 M reports takes minutes on 2 cores, so it happens here, never in the app. The
index is built over exactly the vectors the runtime holds (the stored fp16 embeddings, as fp32,
L2-normalised), with a fixed seed (several build threads make the graph differ from run to run; the
index.json recall is measured on the graph shipped); ``ef_search`` is the smallest of 32, 64, ... 1024 whose
recall@10 against exact search on held-out queries reaches the goal, and that recall is recorded
in ``index.json`` (and the model card).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core_model.fileio import atomic_path, atomic_write, sha256_file
from core_model.runtime.report_index import INDEX_META_NAME, INDEX_NAME, IndexMeta

RECALL_GOAL = 0.98


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the exact top-k found, rows being queries."""
    k = truth.shape[1]
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def held_out_queries(emb: np.ndarray, n: int = 200, seed: int = 0) -> np.ndarray:
    """Queries near the bank but not in it: bank vectors with noise of their own size, renormalised."""
    rng = np.random.default_rng(seed)
    q = emb[rng.choice(len(emb), size=min(n, len(emb)), replace=False)]
    q = q + rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(q.shape[1])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top(emb: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    scores = queries @ emb.T
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(idx, np.argsort(-np.take_along_axis(scores, idx, 1), axis=1), 1)


def build_report_index(
    reports: Path, *, M: int = 16, ef_construction: int = 200, threads: int = 0, goal: float = RECALL_GOAL
) -> IndexMeta:
    """Write ``index.hnsw`` + ``index.json`` next to ``embeddings.npy`` in ``reports``; return the meta."""
    import hnswlib

    from core_model.runtime.retrieval import ReportBank

    raw = np.load(reports / "embeddings.npy", allow_pickle=False)
    emb = ReportBank([str(i) for i in range(len(raw))], [""] * len(raw), raw).embeddings
    n, dim = emb.shape
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=M, ef_construction=ef_construction, random_seed=0)
    index.add_items(emb, np.arange(n), num_threads=threads or (os.cpu_count() or 1))
    queries = held_out_queries(emb)
    k = min(10, n)
    truth = exact_top(emb, queries, k)
    recall, ef = 0.0, 32
    for ef in (32, 64, 128, 256, 512, 1024):
        index.set_ef(ef)
        found, _ = index.knn_query(queries, k=k, num_threads=1)
        recall = recall_at_k(found, truth)
        if recall >= goal:
            break
    with atomic_path(reports / INDEX_NAME) as tmp:
        index.save_index(str(tmp))
    meta = IndexMeta(
        count=n,
        dim=dim,
        bank_sha256=sha256_file(reports / "embeddings.npy"),
        M=M,
        ef_construction=ef_construction,
        ef_search=ef,
        recall_at_10=round(recall, 4),
    )
    atomic_write(reports / INDEX_META_NAME, json.dumps(meta.to_json(), indent=1) + "\n")
    return meta
