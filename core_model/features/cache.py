"""On-disk feature cache: frozen-encoder outputs computed once, memory-mapped for training.

Layout of a cache folder::

    manifest.json              what was computed: encoders (id, weights hash), preprocessing,
                               shapes, patch pooling, shard size, bytes per item
    ids.json                   item ids in cache order
    shards/NNNNN.json          a shard's completion record (written last, atomically)
    shards/NNNNN.<part>.npy    arrays of the items [NNNNN*shard_size, ...) of that shard:
        image.pooled   (n, Di)        float16  the encoder's CLS
        image.tokens   (n, P, Di)     float16  patch tokens, optionally average-pooled k x k
        text.pooled    (n, Dt)        float16
        text.tokens    (sum T_i, Dt)  float16  real tokens only, no padding
        text.offsets   (n + 1,)       int64    item i's tokens are tokens[offsets[i]:offsets[i+1]]
        text.ids       (sum T_i,)     int32    their token ids (to tell [CLS]/[SEP] from words)
        valid          (n,)           bool     False when the image could not be read

Shards are fixed ranges of item indices, so any number of workers (or ``torchrun`` ranks) can
fill them independently and the result is byte-identical. A shard without its JSON record is
recomputed on resume. Numpy only: reading needs no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core_model.errors import UserError
from core_model.fileio import atomic_save_npy, atomic_write_bytes, atomic_write_json  # noqa: F401 (re-exported)

FORMAT_VERSION = 1
PARTS_IMAGE = ("image.pooled", "image.tokens")
PARTS_TEXT = ("text.pooled", "text.tokens", "text.offsets", "text.ids")


class CacheMismatchError(UserError):
    """An existing cache was built with other encoders, preprocessing or items."""


def ids_digest(ids: list[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\0")
    return h.hexdigest()


def data_digest(records, *, image: bool = True, text: bool = True) -> str:
    """Fingerprint of what the features are computed from: each image file's path, size and
    modification time, and each report's text. A cache whose data changed is never reused."""
    from core_model.data.webdataset import parse_member_ref

    h = hashlib.sha256()
    stats: dict[str, str] = {}  # tar shard -> its size and time (once per shard)
    for r in records:
        if image:
            ref = parse_member_ref(r.image_path)
            target = ref[0] if ref else r.image_path  # a webdataset member: its tar shard
            if target not in stats or not ref:
                try:
                    st = os.stat(target)
                    stats[target] = f"{st.st_size}\0{st.st_mtime_ns}"
                except OSError:
                    stats[target] = "missing"
            h.update(f"{r.image_path}\0{stats[target]}\0".encode())
        if text:
            h.update((r.report or "").encode())
            h.update(b"\0")
    return h.hexdigest()


def spec_key(spec: dict) -> dict:
    """The parts of a manifest that must match for a cache to be reused or resumed."""
    keep = {"format", "items", "ids_sha256", "data_sha256", "shard_size", "image", "text"}
    out = {k: spec.get(k) for k in keep}
    for part in ("image", "text"):
        if out.get(part):
            out[part] = {k: v for k, v in out[part].items() if k not in ("bytes_per_item",)}
    return out


def describe_mismatch(old: dict, new: dict) -> str:
    a, b = spec_key(old), spec_key(new)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                for sub in sorted(set(a[key]) | set(b[key])):
                    if a[key].get(sub) != b[key].get(sub):
                        diffs.append(
                            f"{key}.{sub}: cache has {_short(a[key].get(sub))}, asked {_short(b[key].get(sub))}"
                        )
            else:
                diffs.append(f"{key}: cache has {_short(a.get(key))}, asked {_short(b.get(key))}")
    return "; ".join(diffs)


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "..."


@dataclass
class ShardInfo:
    index: int
    start: int
    stop: int


class FeatureCache:
    """Read access to a complete cache (memory-mapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.exists():
            raise UserError(f"{self.path} is not a feature cache (no manifest.json); run `adaptor-train precompute`")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT_VERSION:
            raise UserError(
                f"{self.path}: feature cache format {self.manifest.get('format')} is not supported "
                f"(expected {FORMAT_VERSION}); recompute it"
            )
        if not self.manifest.get("complete"):
            raise UserError(f"{self.path}: feature cache is incomplete; rerun `adaptor-train precompute` to finish it")
        self.ids: list[str] = json.loads((self.path / "ids.json").read_text())
        self._index = {k: i for i, k in enumerate(self.ids)}
        self.shard_size = int(self.manifest["shard_size"])
        self.n = len(self.ids)
        self._shards: dict[int, dict[str, np.ndarray]] = {}
        self.has_image = bool(self.manifest.get("image"))
        self.has_text = bool(self.manifest.get("text"))
        self._valid = (
            np.concatenate([self._load(s)["valid"] for s in range(self.num_shards)]) if self.n else np.zeros(0, bool)
        )

    @property
    def num_shards(self) -> int:
        return (self.n + self.shard_size - 1) // self.shard_size

    @property
    def valid(self) -> np.ndarray:
        return self._valid

    def index_of(self, item_id: str) -> int:
        return self._index[item_id]

    def _load(self, shard: int) -> dict[str, np.ndarray]:
        arrays = self._shards.get(shard)
        if arrays is None:
            arrays = {}
            base = self.path / "shards" / f"{shard:05d}"
            parts = (
                ["valid"] + (list(PARTS_IMAGE) if self.has_image else []) + (list(PARTS_TEXT) if self.has_text else [])
            )
            for part in parts:
                f = base.with_name(f"{base.name}.{part}.npy")
                if part == "image.tokens" and not f.exists():
                    continue
                if part == "text.tokens" and not f.exists():
                    continue
                arrays[part] = np.load(f, mmap_mode="r", allow_pickle=False)
            self._shards[shard] = arrays
        return arrays

    def _locate(self, idx: np.ndarray):
        idx = np.asarray(idx, dtype=np.int64)
        return idx // self.shard_size, idx % self.shard_size

    def image_pooled(self, idx) -> np.ndarray:
        shard, local = self._locate(idx)
        return np.stack([self._load(s)["image.pooled"][j] for s, j in zip(shard, local)])

    def image_tokens(self, idx) -> np.ndarray:
        shard, local = self._locate(idx)
        return np.stack([self._load(s)["image.tokens"][j] for s, j in zip(shard, local)])

    def text_tokens(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, j = divmod(int(i), self.shard_size)
        a = self._load(s)
        lo, hi = int(a["text.offsets"][j]), int(a["text.offsets"][j + 1])
        return a["text.tokens"][lo:hi], a["text.ids"][lo:hi]

    def text_pooled(self, idx) -> np.ndarray:
        shard, local = self._locate(idx)
        return np.stack([self._load(s)["text.pooled"][j] for s, j in zip(shard, local)])

    def text_lengths(self) -> np.ndarray:
        out = []
        for s in range(self.num_shards):
            off = self._load(s)["text.offsets"]
            out.append(np.diff(off))
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def load_all(self) -> dict[str, np.ndarray]:
        """Everything in RAM (concatenated over shards): for caches that fit in memory."""
        out: dict[str, np.ndarray] = {"valid": self._valid}
        shards = [self._load(s) for s in range(self.num_shards)]
        for part in ("image.pooled", "image.tokens", "text.pooled"):
            if shards and part in shards[0]:
                out[part] = np.concatenate([np.asarray(a[part]) for a in shards])
        if self.has_text and shards and "text.tokens" in shards[0]:
            toks, ids, offs, base = [], [], [np.zeros(1, np.int64)], 0
            for a in shards:
                toks.append(np.asarray(a["text.tokens"]))
                ids.append(np.asarray(a["text.ids"]))
                offs.append(np.asarray(a["text.offsets"][1:]) + base)
                base += int(a["text.offsets"][-1])
            out["text.tokens"] = np.concatenate(toks)
            out["text.ids"] = np.concatenate(ids)
            out["text.offsets"] = np.concatenate(offs)
        return out

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in (self.path / "shards").glob("*.npy"))
