"""The report index: an HNSW graph over the report bank for large banks (hnswlib), checked first.

Exact search (:meth:`core_model.runtime.retrieval.ReportBank.top_k` with ``exact=True``) stays
the oracle and the fallback: the bank uses the index only when the bundle ships one that matches
it, and when hnswlib is importable; the index only proposes candidates, their scores are always
recomputed exactly from the bank's embeddings.

Why hnswlib (0.8.0) and not usearch (2.26.6), measured on this 2-core machine, 100,000 x 256-d
normalised vectors, M = 16 / connectivity 16, ef_construction = expansion_add = 200, 2 threads to
build, one thread per query, both libraries on the same seeded banks in one session (a one-off
comparison; ``benchmarks/runtime_latency.py`` repeats the hnswlib side at 100k / 1M):

- build: hnswlib 80 s, usearch 150 s (random Gaussian bank); hnswlib 45 s on a clustered bank;
- one top-10 query at the same ef (32-256): hnswlib 0.11-0.67 ms, usearch 0.30-2.0 ms;
- recall@10 at equal ef: the same for both (both are HNSW);
- installed size: hnswlib one 8.6 MB extension, no dependencies; usearch 11 MB plus its required
  ``numkong`` (46 MB), against the installer's size budget;
- against hnswlib: it ships as an sdist only, so installing it needs a C++ compiler (42 s here).

At 1 M reports (clustered synthetic bank) hnswlib built in 724 s and answered top-10 in 0.81 ms
(exact: 56.8 ms) at recall@10 1.000 with ef 256.

The file is hnswlib's own binary format (``save_index``/``load_index``), never pickle. Before the
native loader sees it, :func:`check_index_file` validates the whole file's structure in Python
(header fields against the bank's count and dimension, every neighbour id in range, every level
list well formed, the stored vectors equal to the bank's on sampled rows), so a crafted file is
refused with a clear message instead of reaching C++ code that trusts it. The manifest's SHA-256
covers both files; ``index.json`` records the bank's SHA-256, count and dimension.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_NAME = "index.hnsw"  # inside reports/
INDEX_META_NAME = "index.json"
INDEX_KIND = "hnswlib-ip"
# hnswlib's saveIndex header: offsetLevel0, max_elements, cur_element_count, size_data_per_element,
# label_offset, offsetData (size_t), maxlevel (int), enterpoint (uint32), maxM, maxM0, M (size_t),
# mult (double), ef_construction (size_t)
_HEADER = struct.Struct("<6QiI3QdQ")
MAX_M = 128
MAX_LEVEL = 64


class ReportIndexError(ValueError):
    """The index files are malformed or do not belong to this bank (the caller wraps it)."""


@dataclass(frozen=True)
class IndexMeta:
    count: int
    dim: int
    bank_sha256: str
    M: int
    ef_construction: int
    ef_search: int
    recall_at_10: float | None

    def to_json(self) -> dict:
        return {
            "kind": INDEX_KIND,
            "count": self.count,
            "dim": self.dim,
            "bank_sha256": self.bank_sha256,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "recall_at_10": self.recall_at_10,
        }

    @classmethod
    def from_json(cls, d: object) -> IndexMeta:
        if not isinstance(d, dict) or d.get("kind") != INDEX_KIND:
            raise ReportIndexError(f"index.json is not a {INDEX_KIND} index description")
        try:
            meta = cls(
                count=int(d["count"]),
                dim=int(d["dim"]),
                bank_sha256=str(d["bank_sha256"]),
                M=int(d["M"]),
                ef_construction=int(d["ef_construction"]),
                ef_search=int(d["ef_search"]),
                recall_at_10=None if d.get("recall_at_10") is None else float(d["recall_at_10"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportIndexError(f"index.json lacks or mangles a field ({exc})") from None
        if not (2 <= meta.M <= MAX_M and 1 <= meta.ef_search <= 1 << 16 and meta.count >= 1 and meta.dim >= 1):
            raise ReportIndexError("index.json holds out-of-range parameters (M, ef_search, count or dim)")
        return meta


def check_index_file(path: Path, meta: IndexMeta, embeddings: np.ndarray, *, sample: int = 64) -> None:
    """Validate an hnswlib index file against the bank, structurally, before any native code reads it.

    ``embeddings``: the bank's L2-normalised fp32 matrix (what the index was built over).
    """
    n, dim = embeddings.shape
    if (meta.count, meta.dim) != (n, dim):
        raise ReportIndexError(
            f"the index covers {meta.count} reports of dimension {meta.dim}, the bank holds {n} of dimension {dim}"
        )
    size = path.stat().st_size
    if size < _HEADER.size:
        raise ReportIndexError("index.hnsw is shorter than its header")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (off0, max_el, cur, per_el, label_off, data_off, maxlevel, enter, max_m, max_m0, m, _mult, _efc) = (
        _HEADER.unpack_from(raw[: _HEADER.size].tobytes())
    )
    links0 = max_m0 * 4 + 4
    expected = dict(
        offsetLevel0=(off0, 0),
        max_elements=(max_el, n),
        element_count=(cur, n),
        M=(m, meta.M),
        maxM=(max_m, meta.M),
        maxM0=(max_m0, 2 * meta.M),
        offsetData=(data_off, links0),
        label_offset=(label_off, links0 + 4 * dim),
        size_data_per_element=(per_el, links0 + 4 * dim + 8),
    )
    wrong = [f"{k} {got} (expected {want})" for k, (got, want) in expected.items() if got != want]
    if wrong:
        raise ReportIndexError("index.hnsw does not match the bank: " + ", ".join(wrong))
    if not (0 <= maxlevel < MAX_LEVEL) or enter >= n:
        raise ReportIndexError("index.hnsw has an out-of-range top level or entry point")
    level0_end = _HEADER.size + n * per_el
    if size < level0_end + 4 * n:
        raise ReportIndexError("index.hnsw is truncated")
    block = raw[_HEADER.size : level0_end].reshape(n, per_el)
    head = block[:, :4].copy().view("<u4").ravel()
    counts = head & 0xFFFF
    if (head >> 16).any():  # hnswlib keeps the deleted mark in these bytes; we never delete
        raise ReportIndexError("index.hnsw marks reports as deleted")
    if (counts > max_m0).any():
        raise ReportIndexError("index.hnsw has a neighbour list longer than its maximum")
    ids = block[:, 4:links0].copy().view("<u4")
    used = np.arange(max_m0)[None, :] < counts[:, None]
    if (ids[used] >= n).any():
        raise ReportIndexError("index.hnsw links to a report that does not exist")
    # labels are bank rows; insertion from several threads stores them in any order
    labels = block[:, label_off:per_el].copy().view("<u8").ravel()
    if not np.array_equal(np.sort(labels), np.arange(n, dtype=np.uint64)):
        raise ReportIndexError("index.hnsw does not label each report exactly once")
    rows = np.random.default_rng(0).choice(n, size=min(sample, n), replace=False)
    stored = block[rows, data_off:label_off].copy().view("<f4")
    if not np.allclose(stored, embeddings[labels[rows].astype(np.int64)], atol=1e-6):
        raise ReportIndexError("index.hnsw was built over other vectors than this bank's embeddings")
    # the upper levels: per report a uint32 byte count, then that many bytes of level lists
    tail = raw[level0_end:].tobytes()
    per_level = max_m * 4 + 4
    pos, top, top_seen = 0, [], 0
    unpack = struct.Struct("<I").unpack_from
    for i in range(n):
        if pos + 4 > len(tail):
            raise ReportIndexError("index.hnsw is truncated in its upper levels")
        (nbytes,) = unpack(tail, pos)
        pos += 4
        if nbytes:
            levels, rem = divmod(nbytes, per_level)
            if rem or levels > maxlevel or pos + nbytes > len(tail):
                raise ReportIndexError(f"index.hnsw has a malformed level list for report {i}")
            lists = np.frombuffer(tail, "<u4", count=nbytes // 4, offset=pos).reshape(levels, max_m + 1)
            c = lists[:, 0] & 0xFFFF
            if (c > max_m).any() or (lists[:, 1:][np.arange(max_m)[None, :] < c[:, None]] >= n).any():
                raise ReportIndexError(f"index.hnsw has a bad upper-level neighbour list for report {i}")
            pos += nbytes
            top_seen = max(top_seen, levels)
            if levels == maxlevel:
                top.append(i)
    if pos != len(tail):
        raise ReportIndexError("index.hnsw has trailing bytes")
    if top_seen != maxlevel or (maxlevel and enter not in top):
        raise ReportIndexError("index.hnsw's entry point is not on its top level")


def read_meta(path: Path) -> IndexMeta:
    from core_model.runtime.verify import read_json

    return IndexMeta.from_json(read_json(path, "reports/index.json"))


def open_index(folder: Path, meta: IndexMeta, embeddings: np.ndarray):
    """The loaded hnswlib index, or None when hnswlib is not installed (exact search then)."""
    try:
        import hnswlib
    except ImportError:
        return None
    path = folder / INDEX_NAME
    check_index_file(path, meta, embeddings)
    index = hnswlib.Index(space="ip", dim=meta.dim)
    try:
        index.load_index(str(path), max_elements=meta.count)
    except RuntimeError as exc:  # hnswlib's own consistency checks
        raise ReportIndexError(f"index.hnsw cannot be loaded ({exc})") from None
    index.set_ef(max(meta.ef_search, 10))
    index.set_num_threads(1)
    return index
