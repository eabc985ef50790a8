"""The report bank: exact nearest-neighbour search over L2-normalised embeddings (numpy).

Embeddings are stored as fp16 and held as a contiguous fp32 matrix, so a query is one BLAS
matrix-vector product plus ``argpartition`` (exact; no approximate index to validate).
"""

from __future__ import annotations

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
    def load(cls, folder: Path) -> ReportBank:
        from core_model.runtime.format import MAX_REPORT_DEPTH, MAX_REPORT_LINE_BYTES
        from core_model.runtime.verify import BundleFormatError, BundleIntegrityError, load_npy, loads_json

        emb = load_npy(folder / "embeddings.npy")
        if emb.ndim != 2 or emb.dtype.kind != "f":
            raise BundleFormatError(
                f"report bank: embeddings.npy holds {emb.dtype} of shape {emb.shape}, not a float matrix"
            )
        if not np.isfinite(emb).all():
            raise BundleFormatError("report bank: embeddings.npy holds NaN or infinite values")
        ids, texts = [], []
        try:
            f = open(folder / "reports.jsonl", "rb")
        except OSError as exc:
            raise BundleIntegrityError(f"reports.jsonl cannot be read ({exc.strerror or exc})") from exc
        with f:
            line_no = 0
            while True:
                line = f.readline(MAX_REPORT_LINE_BYTES + 1)
                if not line:
                    break
                line_no += 1
                if len(line) > MAX_REPORT_LINE_BYTES:
                    raise BundleFormatError(
                        f"reports.jsonl line {line_no} is longer than "
                        f"{MAX_REPORT_LINE_BYTES >> 20} MiB; not a report record"
                    )
                if not line.strip():
                    continue
                row = loads_json(line, f"reports.jsonl line {line_no}", max_depth=MAX_REPORT_DEPTH)
                if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("text"), str):
                    raise BundleFormatError(
                        f"reports.jsonl line {line_no} is not a report record (an object with id and text)"
                    )
                ids.append(str(row["id"]))
                texts.append(row["text"])
        if emb.shape[0] != len(ids):
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
