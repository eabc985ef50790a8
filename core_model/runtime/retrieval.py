"""The report bank: nearest-neighbour search over L2-normalised embeddings (numpy).

Embeddings are stored as fp16 and held as a contiguous fp32 matrix, so an exact query is one BLAS
matrix-vector product plus ``argpartition``. Large banks ship an HNSW index
(:mod:`core_model.runtime.report_index`, built at export); when the bundle has one that matches
the bank, :meth:`ReportBank.top_k` asks it for candidates and rescores them exactly. Exact search
(``exact=True``) is the oracle and the fallback (no index, or hnswlib not installed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from core_model.runtime.report_index import IndexMeta

log = logging.getLogger(__name__)


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
        self.index: Any = None  # an hnswlib index over self.embeddings (see attach_index)
        self.index_meta: IndexMeta | None = None

    @classmethod
    def load(cls, folder: Path, *, bank_sha256: str | None = None) -> ReportBank:
        """Read ``reports/`` of a verified bundle. ``bank_sha256``: the manifest's SHA-256 of
        embeddings.npy, which an index's ``index.json`` must name (else the bundle is refused)."""
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
        bank = cls(ids, texts, emb)
        from core_model.runtime.report_index import INDEX_META_NAME

        if (folder / INDEX_META_NAME).exists():
            bank.attach_index(folder, bank_sha256)
        return bank

    def attach_index(self, folder: Path, bank_sha256: str | None) -> None:
        """Check the index in ``folder`` against this bank and use it (BundleFormatError if it does
        not match; exact search, with a log line, when hnswlib is not installed)."""
        from core_model.runtime.report_index import ReportIndexError, open_index, read_meta
        from core_model.runtime.verify import BundleFormatError

        meta = read_meta(folder / "index.json")  # raises BundleFormatError on bad JSON
        try:
            if bank_sha256 is not None and meta.bank_sha256 != bank_sha256:
                raise ReportIndexError("it was built for another report bank (embeddings.npy hash differs)")
            index = open_index(folder, meta, self.embeddings)
        except ReportIndexError as exc:
            raise BundleFormatError(f"report index reports/index.hnsw refused: {exc}; re-export the bundle") from None
        if index is None:
            log.warning("hnswlib is not installed: report search over %d reports is exact (slower)", len(self))
            return
        self.index, self.index_meta = index, meta

    def __len__(self) -> int:
        return len(self.ids)

    def top_k(self, query: np.ndarray, k: int, *, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores (exact cosines) of the k best, best first; through the index when
        the bank has one, unless ``exact``."""
        n = len(self.ids)
        if n == 0 or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query, dtype=np.float32).ravel()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        k = min(k, n)
        if self.index is not None and not exact:
            try:  # hnswlib searches with max(ef_search, k) candidates
                labels, _ = self.index.knn_query(q[None], k=k, num_threads=1)
            except RuntimeError:  # fewer than k reachable: the exact answer instead
                labels = None
            if labels is not None:
                idx = labels[0].astype(np.int64)
                sc = self.embeddings[idx] @ q
                order = np.argsort(-sc, kind="stable")
                return idx[order], sc[order]
        scores = self.embeddings @ q
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return idx, scores[idx]

    def search(self, query: np.ndarray, k: int = 5) -> list[ReportHit]:
        idx, scores = self.top_k(query, k)
        return [ReportHit(self.ids[i], self.texts[i], float(s)) for i, s in zip(idx, scores)]
