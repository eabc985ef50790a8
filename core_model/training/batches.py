"""Batches of cached features as tensors (in RAM for small caches, memory-mapped for large, or
sequential shard streams for caches larger than memory: :class:`StreamingPairs`)."""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
import torch

from core_model.features.cache import FeatureCache

log = logging.getLogger(__name__)


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

    mode = "random"

    def reader_state(self) -> dict:
        """What a checkpoint keeps to draw the same order on resume."""
        return {"mode": self.mode}

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
        return (pooled, *_pad(seqs, ids))

    def batch(self, idx, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The batch's tensors on ``device``: features float32 (moved as stored, fp16, and
        widened there: the same values, half the bytes to copy), mask bool, token ids int64."""
        idx = np.asarray(idx, dtype=np.int64)
        out: dict[str, torch.Tensor] = {}
        if self.image:
            pooled, tokens = self._image(idx)
            out["image_pooled"] = _tensor(pooled)
            if tokens is not None:
                out["image_tokens"] = _tensor(tokens)
        if self.text:
            pooled, tokens, mask, token_ids = self._text(idx)
            out["text_pooled"] = _tensor(pooled)
            if tokens is not None:
                out["text_tokens"] = _tensor(tokens)
                out["text_mask"] = torch.from_numpy(mask)
                out["text_ids"] = torch.from_numpy(token_ids)
        moved = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        return {k: v.float() if v.is_floating_point() else v for k, v in moved.items()}


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _pad(seqs: list[np.ndarray], ids: list[np.ndarray]):
    """Token sequences of a batch padded to its longest: (tokens, mask, token ids)."""
    t_max = max(len(s) for s in seqs)
    dim = seqs[0].shape[1]
    tokens = np.zeros((len(seqs), t_max, dim), dtype=seqs[0].dtype)
    token_ids = np.zeros((len(seqs), t_max), dtype=np.int64)
    mask = np.zeros((len(seqs), t_max), dtype=bool)
    for j, (s, tid) in enumerate(zip(seqs, ids)):
        tokens[j, : len(s)] = s
        token_ids[j, : len(s)] = tid
        mask[j, : len(s)] = True
    return tokens, mask, token_ids


class StreamingPairs(CachedPairs):
    """Training batches from sequential shard streams (:mod:`core_model.features.stream`):
    same tensors as :class:`CachedPairs`, gathered from whole shards read ahead in stream order.
    :meth:`epoch_order` gives the epoch's global order (and tells the stream which shards come)."""

    mode = "stream"

    def __init__(
        self,
        cache: FeatureCache,
        train_idx: np.ndarray,
        *,
        seed: int,
        rank: int,
        world: int,
        steps: int,
        batch: int,
        buffer: int,
    ):
        super().__init__(cache, ram_limit_bytes=-1)  # never load_all: the stream reads the shards
        from core_model.features.stream import ShardStream

        parts = []
        if self.image:
            parts += ["image.pooled"] + (["image.tokens"] if self.image_tokens else [])
        if self.text:
            parts += ["text.pooled"] + (["text.tokens", "text.ids", "text.offsets"] if self.text_tokens else [])
        self.train_idx = np.asarray(train_idx, dtype=np.int64)
        self.seed, self.rank, self.world, self.steps, self.global_batch = seed, rank, world, steps, batch
        self.buffer = int(buffer)
        self.stream = ShardStream(cache.path, parts, self.buffer)

    def reader_state(self) -> dict:
        return {"mode": self.mode, "buffer": self.buffer}

    def epoch_order(self, epoch: int) -> np.ndarray:
        from core_model.features.stream import stream_order

        order, plans = stream_order(
            self.train_idx,
            self.cache.shard_size,
            seed=self.seed,
            epoch=epoch,
            world=self.world,
            steps=self.steps,
            batch=self.global_batch,
            buffer=self.buffer,
        )
        self.stream.set_plan(plans[self.rank])
        return order

    def _gather(self, idx: np.ndarray):
        shard, local = idx // self.cache.shard_size, idx % self.cache.shard_size
        arrays = self.stream.arrays(sorted({int(s) for s in shard}))
        return [(arrays[int(s)], int(j)) for s, j in zip(shard, local)]

    def _image(self, idx: np.ndarray):
        rows = self._gather(idx)  # one copy per item (fancy indexing per shard would copy twice)
        pooled = np.stack([a["image.pooled"][j] for a, j in rows])
        tokens = np.stack([a["image.tokens"][j] for a, j in rows]) if self.image_tokens else None
        return pooled, tokens

    def _text(self, idx: np.ndarray):
        rows = self._gather(idx)
        pooled = np.stack([a["text.pooled"][j] for a, j in rows])
        if not self.text_tokens:
            return pooled, None, None, None
        seqs, ids = [], []
        for a, j in rows:
            lo, hi = int(a["text.offsets"][j]), int(a["text.offsets"][j + 1])
            seqs.append(a["text.tokens"][lo:hi])
            ids.append(a["text.ids"][lo:hi])
        return (pooled, *_pad(seqs, ids))

    def close(self) -> None:
        self.stream.close()


def training_pairs(
    pairs: CachedPairs,
    cache_cfg,
    train_idx: np.ndarray,
    *,
    seed: int,
    rank: int,
    world: int,
    steps: int,
    batch: int,
    state: dict | None = None,
) -> CachedPairs:
    """The reader of pretraining batches: ``pairs`` itself (random access: in RAM, or memory
    maps) or a :class:`StreamingPairs` when ``cache.stream`` says so (``auto``: the cache is
    larger than ``cache.stream_memory_share`` of the available memory; rank 0 decides for every
    rank). ``state`` (a reader's :meth:`~CachedPairs.reader_state`, from a checkpoint) overrides
    the decision and the settings, so a resumed run draws the order it started with."""
    from core_model.features.stream import should_stream

    buffer = int(cache_cfg.stream_buffer_shards)
    if state is None:
        stream, why = should_stream(cache_cfg.stream, pairs.cache.nbytes(), float(cache_cfg.stream_memory_share))
        if world > 1:  # one decision for all ranks (their free memory differs a little)
            box = [stream, why]
            torch.distributed.broadcast_object_list(box, src=0)
            stream, why = bool(box[0]), str(box[1])
        log.info("pretraining reads the cache %s (%s)", "as shard streams" if stream else "by random access", why)
    else:
        stream = state.get("mode") == "stream"
        buffer = int(state.get("buffer", buffer))
    if not stream:
        return pairs
    return StreamingPairs(
        pairs.cache,
        train_idx,
        seed=seed,
        rank=rank,
        world=world,
        steps=steps,
        batch=batch,
        buffer=buffer,
    )
