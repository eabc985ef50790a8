"""Batches of cached features as tensors (in RAM for small caches, memory-mapped for large)."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import torch

from core_model.features.cache import FeatureCache


def report_groups(reports: list[str | None]) -> np.ndarray:
    """Integer ids shared by reports with the same normalised text (case, spaces, punctuation)."""
    ids: dict[str, int] = {}
    out = np.empty(len(reports), dtype=np.int64)
    for i, text in enumerate(reports):
        key = re.sub(r"[^a-z0-9]+", " ", (text or "").lower()).strip()
        digest = hashlib.sha1(key.encode()).hexdigest()
        out[i] = ids.setdefault(digest, len(ids))
    return out


class CachedPairs:
    """Gathers image and report features for index batches from a :class:`FeatureCache`."""

    def __init__(self, cache: FeatureCache, *, ram_limit_bytes: float = 8e9, image: bool = True, text: bool = True):
        self.cache = cache
        self.image = image and cache.has_image
        self.text = text and cache.has_text
        self.image_tokens = self.image and bool(cache.manifest["image"].get("tokens"))
        self.text_tokens = self.text and bool(cache.manifest["text"].get("tokens"))
        self.arrays = cache.load_all() if cache.nbytes() <= ram_limit_bytes else None

    def _image(self, idx: np.ndarray):
        if self.arrays is not None:
            pooled = self.arrays["image.pooled"][idx]
            tokens = self.arrays["image.tokens"][idx] if self.image_tokens else None
        else:
            pooled = self.cache.image_pooled(idx)
            tokens = self.cache.image_tokens(idx) if self.image_tokens else None
        return pooled, tokens

    def _text(self, idx: np.ndarray):
        if self.arrays is not None:
            pooled = self.arrays["text.pooled"][idx]
        else:
            pooled = self.cache.text_pooled(idx)
        if not self.text_tokens:
            return pooled, None, None, None
        seqs, ids = [], []
        for i in idx:
            if self.arrays is not None:
                lo, hi = self.arrays["text.offsets"][i], self.arrays["text.offsets"][i + 1]
                seqs.append(self.arrays["text.tokens"][lo:hi])
                ids.append(self.arrays["text.ids"][lo:hi])
            else:
                t, tid = self.cache.text_tokens(int(i))
                seqs.append(t)
                ids.append(tid)
        t_max = max(len(s) for s in seqs)
        dim = seqs[0].shape[1]
        tokens = np.zeros((len(seqs), t_max, dim), dtype=np.float32)
        token_ids = np.zeros((len(seqs), t_max), dtype=np.int64)
        mask = np.zeros((len(seqs), t_max), dtype=bool)
        for j, (s, tid) in enumerate(zip(seqs, ids)):
            tokens[j, : len(s)] = s
            token_ids[j, : len(s)] = tid
            mask[j, : len(s)] = True
        return pooled, tokens, mask, token_ids

    def batch(self, idx, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        out: dict[str, torch.Tensor] = {}
        if self.image:
            pooled, tokens = self._image(idx)
            out["image_pooled"] = torch.from_numpy(np.asarray(pooled, dtype=np.float32))
            if tokens is not None:
                out["image_tokens"] = torch.from_numpy(np.asarray(tokens, dtype=np.float32))
        if self.text:
            pooled, tokens, mask, token_ids = self._text(idx)
            out["text_pooled"] = torch.from_numpy(np.asarray(pooled, dtype=np.float32))
            if tokens is not None:
                out["text_tokens"] = torch.from_numpy(tokens)
                out["text_mask"] = torch.from_numpy(mask)
                out["text_ids"] = torch.from_numpy(token_ids)
        return {k: v.to(device, non_blocking=True) for k, v in out.items()}
