"""Pretraining batches from a feature cache larger than the memory it may use.

One synthetic cache in the real format (ViT-B-like shapes: 768-d, 64 patch tokens after 2 x 2
pooling, 40-112 report tokens, fp16; about 216 KiB per pair) of at least twice ``--memory-mib``,
read batch by batch into the training tensors (``CachedPairs.batch``: the loader alone, no model
step) by:

  stream     the streaming reader (core_model/features/stream.py): shards shuffled, read whole and
             in order, shuffled within a buffer of shards (at most two windows in memory, sized to
             fit the budget)
  random     random batches by random access into the memory maps (today's path for a cache
             that does not fit in RAM)
  in-memory  random batches from the whole cache in RAM (``load_all``): the ceiling
  disk bound the sequential read rate of the cache files (8 MiB reads) / bytes per pair: what a
             disk-bandwidth-bound epoch reaches
  disk random each pair's token slabs read with os.pread in a random order: the seek-bound rate
             of this disk (no decoding: a ceiling for random access)

No cgroup is available, so the memory budget is enforced on the page cache: every cache file is
dropped from it (``posix_fadvise(POSIX_FADV_DONTNEED)``) before each measured pass, and again each
time the random-access pass has read another ``--memory-mib`` of the cache, so it never finds more
than the budget's worth of the cache in the page cache (a flush-when-full stand-in for an LRU of
that size). The streaming reader keeps its own bound: it asks the kernel to read a window's files
ahead (``POSIX_FADV_WILLNEED``) and drops them (``POSIX_FADV_DONTNEED``) when the window is done, so
at most two windows (sized to fit the budget) are in the page cache; it reads no shard twice.

    python benchmarks/cache_streaming.py            # 512 MiB budget, 1.1 GiB cache: about 3 min here
    python benchmarks/cache_streaming.py --quick    # a smoke run (tiny cache; numbers mean nothing)

Targets (why these goals): ``stream_vs_disk_bound`` >= 0.8 x min(disk bound, in-memory): the
stream reaches the lower of its two ceilings (the disk's sequential rate, or the CPU cost of
building the batch tensors, which the in-memory rate measures): an epoch is bandwidth bound, not
seek bound. ``stream_vs_in_memory`` >= 0.8 x: what the issue asks (a cache twice the memory trains
almost as fast as one in RAM), reachable wherever the disk's sequential rate exceeds the loader's.
``stream_vs_random_mmap`` >= 1.0 x: never slower than random access at the same memory budget
(the gap is the disk's: on a fast virtual disk with a host cache it is small, on spinning disks
or network storage it is the seek penalty that "disk random" shows).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._targets import print_target  # noqa: E402

DIM, PATCHES, GRID = 768, 64, (8, 8)


def write_cache(path: Path, items: int, shard_size: int, seed: int = 0) -> int:
    """A complete cache of random features in the real format; returns its size in bytes."""
    from core_model.features.cache import FORMAT_VERSION, atomic_save_npy, atomic_write_json

    rng = np.random.default_rng(seed)
    (path / "shards").mkdir(parents=True, exist_ok=True)
    for s in range(0, items, shard_size):
        n = min(shard_size, items - s)
        lengths = rng.integers(40, 113, n)

        def feats(*shape):  # finite fp16 values in [0, 1), cheap to make
            return rng.integers(0, 0x3C00, shape, dtype=np.uint16).view(np.float16)

        arrays = {
            "image.pooled": feats(n, DIM),
            "image.tokens": feats(n, PATCHES, DIM),
            "text.pooled": feats(n, DIM),
            "text.tokens": feats(int(lengths.sum()), DIM),
            "text.ids": rng.integers(0, 30000, int(lengths.sum())).astype(np.int32),
            "text.offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "valid": np.ones(n, bool),
        }
        for part, arr in arrays.items():
            atomic_save_npy(path / "shards" / f"{s // shard_size:05d}.{part}.npy", arr)
    enc = {"name": "synthetic", "parameters": 0}
    atomic_write_json(path / "ids.json", [f"i{i}" for i in range(items)])
    atomic_write_json(
        path / "manifest.json",
        {
            "format": FORMAT_VERSION,
            "complete": True,
            "items": items,
            "shard_size": shard_size,
            "image": {"encoder": enc, "dim": DIM, "tokens": True, "grid": list(GRID)},
            "text": {"encoder": enc, "dim": DIM, "tokens": True},
            "research_use_only": True,
        },
    )
    return sum(f.stat().st_size for f in (path / "shards").glob("*.npy"))


def drop_page_cache(path: Path) -> None:
    for f in (path / "shards").glob("*.npy"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def sequential_read_rate(path: Path) -> float:
    """Bytes/s reading every cache file once, 8 MiB at a time, from a dropped page cache."""
    drop_page_cache(path)
    total, t0 = 0, time.perf_counter()
    for f in sorted((path / "shards").glob("*.npy")):
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(8 << 20):
                total += len(chunk)
    return total / (time.perf_counter() - t0)


def random_read_rate(cache, order: np.ndarray, limit_s: float) -> tuple[float, int]:
    """Pairs/s reading each pair's two token slabs (image and report tokens: 97 % of its bytes)
    with ``os.pread`` in a random order, from a dropped page cache: the seek-bound disk rate."""
    drop_page_cache(cache.path)
    fds: dict = {}
    done, t0 = 0, time.perf_counter()
    try:
        for i in order:
            s, j = divmod(int(i), cache.shard_size)
            a = cache._load(s)
            img, txt = a["image.tokens"], a["text.tokens"]
            lo, hi = int(a["text.offsets"][j]), int(a["text.offsets"][j + 1])
            for arr, start, count in ((img, j, 1), (txt, lo, hi - lo)):
                fd = fds.get(arr.filename) or fds.setdefault(arr.filename, os.open(arr.filename, os.O_RDONLY))
                row = arr[0].nbytes if arr.ndim > 1 else arr.itemsize
                os.pread(fd, row * count, arr.offset + row * start)
            done += 1
            if time.perf_counter() - t0 > limit_s:
                break
        return done / (time.perf_counter() - t0), done
    finally:
        for fd in fds.values():
            os.close(fd)


def measure(pairs, order: np.ndarray, batch: int, path: Path, budget: int, per_pair: float, limit_s: float):
    """pairs/s over ``order`` (stopping after ``limit_s``), flushing the page cache each time
    another ``budget`` bytes of the cache have been read."""
    drop_page_cache(path)
    done, since_flush, flushing, t0 = 0, 0.0, 0.0, time.perf_counter()
    for b in range(0, len(order) - batch + 1, batch):
        pairs.batch(order[b : b + batch])
        done += batch
        since_flush += batch * per_pair
        if since_flush >= budget:
            f0 = time.perf_counter()
            drop_page_cache(path)  # the emulated budget's cost is not the reader's
            flushing += time.perf_counter() - f0
            since_flush = 0.0
        if time.perf_counter() - t0 - flushing > limit_s:
            break
    return done / (time.perf_counter() - t0 - flushing), done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memory-mib", type=int, default=512, help="memory the readers may use (default 512)")
    ap.add_argument("--ratio", type=float, default=2.2, help="cache size / memory budget (default 2.2)")
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=30, help="longest measured pass (default 30)")
    ap.add_argument("--workdir", help="where the synthetic cache goes (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the cache (reused by the next run with --workdir)")
    ap.add_argument("--quick", action="store_true", help="a smoke run on a tiny cache")
    args = ap.parse_args(argv)
    if args.quick:
        args.memory_mib, args.shard_size, args.batch, args.seconds = 16, 16, 32, 5

    from core_model.features.cache import FeatureCache
    from core_model.training.batches import CachedPairs, StreamingPairs

    budget = args.memory_mib << 20
    per_pair_est = 2 * DIM * 2 + PATCHES * DIM * 2 + 76 * (DIM * 2 + 4) + 8 + 1
    items = int(np.ceil(args.ratio * budget / per_pair_est / args.shard_size)) * args.shard_size
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cache_streaming_"))
    path = work / f"cache_{items}_{args.shard_size}"
    print("Research use only. Feature cache streaming benchmark (loader only: CachedPairs.batch, no model step)")
    try:
        t0 = time.perf_counter()
        if not (path / "manifest.json").exists():
            size = write_cache(path, items, args.shard_size)
            print(f"wrote a synthetic cache of {items:,} pairs in {time.perf_counter() - t0:.0f} s")
        cache = FeatureCache(path)
        size = cache.nbytes()
        per_pair = size / items
        shard_bytes = per_pair * args.shard_size
        buffer = max(1, int(budget // (2 * shard_bytes)))  # two windows in memory
        print(
            f"cache {size / 2**30:.2f} GiB ({items:,} pairs, {per_pair / 1024:.0f} KiB each, "
            f"{cache.num_shards} shards of {shard_bytes / 2**20:.0f} MiB); memory budget {budget / 2**30:.2f} GiB "
            f"= {size / budget:.1f} x smaller; stream buffer {buffer} shard(s)"
        )
        steps = items // args.batch
        idx = np.arange(items)
        rows = {}
        bw = sequential_read_rate(path)
        rows["disk bound"] = (bw / per_pair, items)
        random_order = np.random.default_rng(0).permutation(items)
        rows["disk random"] = random_read_rate(cache, random_order, args.seconds)

        stream = StreamingPairs(cache, idx, seed=0, rank=0, world=1, steps=steps, batch=args.batch, buffer=buffer)
        order = stream.epoch_order(0)
        # no periodic flush here: the stream drops each window from the page cache itself when it
        # is done, so it never holds more than two windows (<= the budget) of the cache there
        rows["stream"] = measure(stream, order, args.batch, path, 1 << 62, per_pair, args.seconds)
        stream.close()

        mmap = CachedPairs(cache, ram_limit_bytes=0)
        rows["random"] = measure(mmap, random_order, args.batch, path, budget, per_pair, args.seconds)

        ram = CachedPairs(cache, ram_limit_bytes=float("inf"))
        rows["in-memory"] = measure(ram, random_order, args.batch, path, 1 << 62, per_pair, args.seconds)
        del ram

        print(f"\n{'reader':<12} {'pairs/s':>10} {'MiB/s':>8} {'pairs timed':>12} {'vs in-memory':>13}")
        for name, (rate, n) in rows.items():
            print(
                f"{name:<12} {rate:>10,.0f} {rate * per_pair / 2**20:>8,.0f} {n:>12,} "
                f"{rate / rows['in-memory'][0]:>12.2f}x"
            )
        s, r, m, d = (rows[k][0] for k in ("stream", "random", "in-memory", "disk bound"))
        ok = [
            print_target(
                "stream_vs_disk_bound",
                s,
                "pairs/s",
                baseline=min(d, m),
                goal=">= 0.8 x min(disk bound, in-memory)",
                met=s >= 0.8 * min(d, m),
            ),
            print_target("stream_vs_random_mmap", s, "pairs/s", baseline=r, goal=">= 1.0 x", met=s >= r),
            print_target("stream_vs_in_memory", s, "pairs/s", baseline=m, goal=">= 0.8 x", met=s >= 0.8 * m),
        ]
        if args.quick:
            print("(--quick: a smoke run; its numbers mean nothing)")
        print(json.dumps({k: round(v[0], 1) for k, v in rows.items()}))
        return 0 if all(ok) or args.quick else 1
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
