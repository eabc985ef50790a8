"""Reading a feature cache larger than memory as sequential shard streams (numpy only).

Random batches drawn by random access into memory maps are fine while the cache fits in the page
cache; past that, every batch seeks all over the disk. The streaming order makes an epoch
disk-bandwidth bound instead:

1. the shards holding training items are shuffled (seeded by ``seed`` and the epoch, the same
   on every ``torchrun`` rank) and dealt to the ranks round-robin (rank ``r`` reads only the
   shards ``r, r + world, ...`` of that order);
2. each rank reads its shards whole and in order, ``buffer`` shards at a time (a window), and
   shuffles the training items of a window among themselves (the shuffle buffer);
3. each rank's stream is cut (or, when its shards hold fewer items, padded with items of its
   last window, which is still in memory) to ``steps x batch / world`` items, and the global
   batch of step ``s`` interleaves the ranks' streams so that ``batch[r::world]`` is rank ``r``'s
   share: the training loop takes that slice as it always did.

:class:`ShardStream` holds at most two windows of shards in memory (the one being consumed and
the next, read ahead by one background thread in stream order); each array file of a shard is
read whole and sequentially (on Linux by the kernel's read-ahead of the whole file into the page
cache, gathered from a memory map without another copy, and dropped from the page cache when its
window is done).

What resumes exactly: the order is a pure function of (training items, shard size, seed, epoch,
world size, buffer, steps, batch), so a run resumed from a step-based checkpoint with the same
cache, seed, number of processes and stream settings draws the same batches as an uninterrupted
run (the window of the resume step is read again). A different number of processes (or buffer)
gives another order from the resume step on.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core_model.errors import ConfigError, UserError

STREAM_MODES = ("auto", "on", "off")
_FADVISE = hasattr(os, "posix_fadvise")


def available_memory_bytes() -> int:
    """Memory this process may fill: ``MemAvailable`` (Linux), bounded by a cgroup v2
    ``memory.max`` when one is set; the physical memory elsewhere."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = 1 << 34
    cg = Path("/sys/fs/cgroup")
    try:
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cg / "memory.current").read_text().strip())
            avail = min(avail, max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return int(avail)


def should_stream(mode: str | bool, cache_bytes: int, share: float, available: int | None = None) -> tuple[bool, str]:
    """Whether pretraining streams the cache, and why (a line for the log). ``mode``: auto, on or
    off (YAML's bare on / off arrive as true / false)."""
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode not in STREAM_MODES:
        raise ConfigError(f"cache.stream must be auto, on or off, not {mode!r}")
    if mode != "auto":
        return mode == "on", f"cache.stream={mode}"
    if not 0 < share <= 1:
        raise ConfigError(f"cache.stream_memory_share must be in (0, 1], not {share}")
    available = available_memory_bytes() if available is None else available
    big = cache_bytes > share * available
    rel = ">" if big else "<="
    return big, (f"cache {cache_bytes / 2**30:.2f} GiB {rel} {share:g} x {available / 2**30:.2f} GiB available memory")


def stream_order(
    train_idx: np.ndarray,
    shard_size: int,
    *,
    seed: int,
    epoch: int,
    world: int,
    steps: int,
    batch: int,
    buffer: int,
) -> tuple[np.ndarray, list[list[int]]]:
    """The epoch's global item order (``steps * batch`` items; step ``s`` is
    ``order[s * batch:(s + 1) * batch]`` and rank ``r``'s share of it ``[r::world]``) and, per
    rank, the shards it reads in order."""
    if batch % world:
        raise UserError(
            f"the global batch ({batch}) must be divisible by the number of processes ({world}) to stream the cache"
        )
    if buffer < 1:
        raise ConfigError(f"cache.stream_buffer_shards must be at least 1, not {buffer}")
    train_idx = np.asarray(train_idx, dtype=np.int64)
    shard_of = train_idx // shard_size
    shards = np.unique(shard_of)
    if len(shards) < world:
        raise UserError(
            f"streaming the cache needs at least one shard of training items per process: {len(shards)} shard(s), "
            f"{world} processes (use a smaller cache.shard_size or cache.stream=off)"
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))
    shards = rng.permutation(shards)
    items_of = {int(s): train_idx[shard_of == s] for s in shards}
    local = batch // world
    quota = steps * local
    order = np.empty((steps, local, world), dtype=np.int64)
    plans: list[list[int]] = []
    for r in range(world):
        mine = [int(s) for s in shards[r::world]]
        plans.append(mine)
        rr = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), r]))
        parts, last = [], np.zeros(0, np.int64)
        for w in range(0, len(mine), buffer):
            window = np.concatenate([items_of[s] for s in mine[w : w + buffer]])
            last = rr.permutation(window)
            parts.append(last)
        stream = np.concatenate(parts)
        if len(stream) < quota:  # pad with the last window's items (still in memory)
            stream = np.concatenate([stream, np.resize(last, quota - len(stream))])
        order[:, :, r] = stream[:quota].reshape(steps, local)
    return order.reshape(-1), plans


class ShardStream:
    """The shards of one rank's stream, read whole, ahead of use, at most two windows at a time.

    :meth:`set_plan` gives the epoch's shards in stream order; :meth:`arrays` returns a shard's
    arrays (waiting for it when the read-ahead has not got there yet) and forgets the windows
    before the earliest one a batch asked for.
    """

    def __init__(self, path: Path, parts: list[str], buffer: int):
        self.path = Path(path)
        self.parts = parts
        self.buffer = int(buffer)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-stream")
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._plan: list[int] = []
        self._window: dict[int, int] = {}
        self.bytes_read = 0

    def set_plan(self, shards: list[int]) -> None:
        with self._lock:
            for f in self._futures.values():
                f.cancel()
            self._futures = {}
            self._plan = list(shards)
            self._window = {s: i // self.buffer for i, s in enumerate(self._plan)}

    def _files(self, shard: int) -> list[tuple[str, Path]]:
        files = [(part, self.path / "shards" / f"{shard:05d}.{part}.npy") for part in self.parts]
        return [(part, f) for part, f in files if f.exists()]

    def _read(self, shard: int) -> dict[str, np.ndarray]:
        """The shard's arrays. On Linux: memory maps whose whole files the kernel was asked to
        read ahead at once (``POSIX_FADV_WILLNEED``: large sequential reads, and no extra copy:
        the batch gathers straight from the page cache); elsewhere read into memory."""
        out = {}
        for part, f in self._files(shard):
            if _FADVISE:
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                finally:
                    os.close(fd)
                out[part] = np.load(f, mmap_mode="r", allow_pickle=False)
            else:
                out[part] = np.load(f, allow_pickle=False)
            self.bytes_read += out[part].nbytes
        return out

    def _forget(self, shard: int, fut: Future) -> None:
        """A window is done: its pages leave the page cache (the memory stays bounded)."""
        if not fut.cancel() and _FADVISE:
            for _, f in self._files(shard):
                try:
                    fd = os.open(f, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)

    def _submit(self, shard: int) -> Future:
        fut = self._futures.get(shard)
        if fut is None or fut.cancelled():
            fut = self._pool.submit(self._read, shard)
            self._futures[shard] = fut
        return fut

    def arrays(self, shards: list[int]) -> dict[int, dict[str, np.ndarray]]:
        """The arrays of ``shards`` (those a batch needs); then reads ahead the next window."""
        with self._lock:
            futs = {s: self._submit(s) for s in shards}
            windows = [self._window.get(s, 0) for s in shards]
            lo = min(windows) if windows else 0
            for s in list(self._futures):
                if self._window.get(s, lo) < lo and s not in futs:
                    self._forget(s, self._futures.pop(s))
            hi = max(windows, default=lo)
            top = hi + 1 if hi == lo else hi  # never more than two windows in memory
            ahead = [s for s in self._plan if lo <= self._window[s] <= top]
            for s in ahead:
                self._submit(s)
        return {s: f.result() for s, f in futs.items()}

    def resident_shards(self) -> int:
        with self._lock:
            return sum(1 for f in self._futures.values() if not f.cancelled())

    def close(self) -> None:
        with self._lock:
            for f in self._futures.values():
                f.cancel()
            self._futures = {}
        self._pool.shutdown(wait=True)
