"""The report bank: exact nearest-neighbour search over L2-normalised embeddings (numpy).

Embeddings are stored as fp16 and held as a contiguous fp32 matrix, so a query is one BLAS
matrix-vector product plus ``argpartition`` (exact; no approximate index to validate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ReportHit:
    id: str
    text: str
    score: float  # cosine similarity


class ReportBank:
    def __init__(self, ids: list[str], texts: list[str], embeddings: np.ndarray):
        if len(ids) != len(texts) or len(ids) != embeddings.shape[0]:
            raise ValueError("report bank: ids, texts and embeddings differ in length")
        self.ids = ids
        self.texts = texts
        e = np.ascontiguousarray(embeddings, dtype=np.float32)
        norms = np.linalg.norm(e, axis=1, keepdims=True) if len(e) else np.ones((0, 1), np.float32)
        self.embeddings = e / np.maximum(norms, 1e-12)

    @classmethod
    def load(cls, folder: Path) -> "ReportBank":
        from core_model.runtime.bundle import BundleFormatError, load_npy

        emb = load_npy(folder / "embeddings.npy")
        ids, texts = [], []
        with open(folder / "reports.jsonl", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    ids.append(str(row["id"]))
                    texts.append(str(row["text"]))
                except (ValueError, KeyError) as exc:
                    raise BundleFormatError(f"reports.jsonl line {line_no} is not a report record ({exc})") from exc
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise BundleFormatError(f"report bank: {len(ids)} reports but embeddings of shape {emb.shape}")
        return cls(ids, texts, emb)

    def __len__(self) -> int:
        return len(self.ids)

    def top_k(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the k best, best first."""
        n = len(self.ids)
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query, dtype=np.float32).ravel()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        scores = self.embeddings @ q
        k = min(k, n)
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return idx, scores[idx]

    def search(self, query: np.ndarray, k: int = 5) -> list[ReportHit]:
        idx, scores = self.top_k(query, k)
        return [ReportHit(self.ids[i], self.texts[i], float(s)) for i, s in zip(idx, scores)]
