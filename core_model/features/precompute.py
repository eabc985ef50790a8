"""Run the frozen encoders once over a dataset and fill a :mod:`feature cache <core_model.features.cache>`.

- Images are decoded and preprocessed by :func:`core_model.imaging.preprocess.prepare_input` in
  parallel DataLoader workers (decoding, not the encoder, limits precompute from full-size files);
  ``resize_cache`` in :mod:`core_model.features.image_cache` shrinks a collection once beforehand.
- On CUDA the encoders run under bf16 autocast with large batches; features are stored as fp16.
- Under ``torchrun`` each rank fills the shards ``s % world_size == rank``; rank 0 finalises.
  Records from WebDataset tar shards (``data.kind: webdataset``) are dealt by tar instead: rank
  ``r`` fills the cache shards that start in the tar shards ``r, r + world, ...``, so each rank
  reads its own tars (:func:`shard_owners`).
- Resumable: finished shards are kept, unfinished ones recomputed. A cache built with other
  encoders, preprocessing or items is refused, never mixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from core_model.data.records import Record
from core_model.data.webdataset import parse_member_ref, prepare_member
from core_model.errors import UserError
from core_model.features.cache import (
    FORMAT_VERSION,
    CacheMismatchError,
    FeatureCache,
    atomic_save_npy,
    atomic_write_json,
    data_digest,
    describe_mismatch,
    ids_digest,
    spec_key,
)
from core_model.imaging.errors import ImageReadError
from core_model.imaging.preprocess import PreprocessSpec, prepare_input

log = logging.getLogger(__name__)


@dataclass
class PrecomputeOptions:
    image: bool = True
    text: bool = True
    image_tokens: bool = True
    text_tokens: bool = True
    patch_pool: int = 1  # average-pool the patch grid k x k before storing
    batch_size: int = 32
    text_batch_size: int = 64
    workers: int = 2
    shard_size: int = 256
    device: str = "auto"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    return torch.device(device)


class _ImageDataset(Dataset):
    def __init__(self, paths: list[str], spec: PreprocessSpec):
        self.paths = paths
        self.spec = spec

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            if parse_member_ref(self.paths[i]):  # a sample of a webdataset tar shard
                x = prepare_member(self.paths[i], self.spec)
            else:
                x = prepare_input(self.paths[i], self.spec)
            return i, torch.from_numpy(x), ""
        except ImageReadError as exc:
            return i, torch.zeros(self.spec.channels, self.spec.size, self.spec.size), f"{exc.reason}: {exc}"
        except Exception as exc:  # a broken file must never stop the run
            return i, torch.zeros(self.spec.channels, self.spec.size, self.spec.size), f"unreadable_image: {exc}"


def _collate(batch):
    idx = torch.tensor([b[0] for b in batch])
    x = torch.stack([b[1] for b in batch])
    return idx, x, [b[2] for b in batch]


def build_manifest(
    records: list[Record], image_encoder, text_encoder, spec: PreprocessSpec, opts: PrecomputeOptions
) -> dict:
    ids = [r.id for r in records]
    m: dict = {
        "format": FORMAT_VERSION,
        "items": len(ids),
        "ids_sha256": ids_digest(ids),
        "data_sha256": data_digest(
            records,
            image=bool(opts.image and image_encoder is not None),
            text=bool(opts.text and text_encoder is not None),
        ),
        "shard_size": opts.shard_size,
        "image": None,
        "text": None,
        "research_use_only": True,
    }
    if opts.image and image_encoder is not None:
        grid = image_encoder.grid(spec.size)
        k = max(1, int(opts.patch_pool))
        if opts.image_tokens and (grid[0] % k or grid[1] % k):
            raise UserError(f"patch grid {grid} is not divisible by patch_pool {k}")
        m["image"] = {
            "encoder": image_encoder.identity(),
            "preprocess": spec.to_dict(),
            "preprocess_fingerprint": spec.fingerprint(),
            "dim": image_encoder.dim,
            "encoder_grid": list(grid),
            "patch_pool": k,
            "tokens": bool(opts.image_tokens),
            "grid": [grid[0] // k, grid[1] // k] if opts.image_tokens else None,
        }
    if opts.text and text_encoder is not None:
        m["text"] = {
            "encoder": text_encoder.identity(),
            "max_length": text_encoder.max_length,
            "dim": text_encoder.dim,
            "tokens": bool(opts.text_tokens),
        }
    return m


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def precompute(
    records: list[Record],
    out_dir: str | Path,
    image_encoder,
    text_encoder,
    spec: PreprocessSpec,
    opts: PrecomputeOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> FeatureCache:
    """Fill (or finish) the cache at ``out_dir`` for ``records``; returns the complete cache."""
    opts = opts or PrecomputeOptions()
    out = Path(out_dir)
    rank, world = _dist()
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        from collections import Counter

        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise UserError(f"item ids must be unique; {dup!r} appears more than once")
    if not records:
        raise UserError("no items to precompute")
    manifest = build_manifest(records, image_encoder, text_encoder, spec, opts)
    shards_dir = out / "shards"

    manifest_path = out / "manifest.json"
    old = json_load(manifest_path) if manifest_path.exists() else None
    if old is not None and spec_key(old) != spec_key(manifest):
        if not overwrite:  # every rank checks, so every rank stops
            raise CacheMismatchError(
                f"{out} holds features of other encoders, preprocessing or items "
                f"({describe_mismatch(old, manifest)}); use another cache folder or --overwrite"
            )
        old = None
        if rank == 0:
            for f in shards_dir.glob("*"):
                f.unlink()
    if rank == 0:
        shards_dir.mkdir(parents=True, exist_ok=True)
        if old is None or not old.get("complete"):
            atomic_write_json(out / "ids.json", ids)
            atomic_write_json(manifest_path, {**manifest, "complete": False})
    _barrier()

    if old is not None and old.get("complete"):
        log.info("feature cache %s is complete; nothing to do", out)
        return FeatureCache(out)

    device = resolve_device(opts.device)
    n_shards = (len(records) + opts.shard_size - 1) // opts.shard_size
    owners = shard_owners(records, opts.shard_size, world)
    todo = [s for s in range(n_shards) if owners[s] == rank and not (shards_dir / f"{s:05d}.json").exists()]
    if image_encoder is not None:
        image_encoder.to(device)
    if text_encoder is not None:
        text_encoder.to(device)

    total = sum(min(opts.shard_size, len(records) - s * opts.shard_size) for s in todo)
    bar = None
    if progress and rank == 0 and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="precompute", dynamic_ncols=True)
    t0 = time.perf_counter()
    done = 0
    image_iter = _image_batches(records, todo, spec, opts) if manifest["image"] else None
    for s in todo:
        start, stop = s * opts.shard_size, min((s + 1) * opts.shard_size, len(records))
        arrays: dict[str, np.ndarray] = {}
        valid = np.ones(stop - start, dtype=bool)
        skipped: list[dict] = []
        if manifest["image"]:
            pooled, tokens = [], []
            seen = 0
            while seen < stop - start:
                idx, x, errors = next(image_iter)
                p, t = _encode_images(image_encoder, x, device, opts)
                pooled.append(p)
                if t is not None:
                    tokens.append(t)
                for j, err in zip(idx.tolist(), errors):
                    if err:
                        valid[j - start] = False
                        reason, _, detail = err.partition(": ")
                        skipped.append({"id": records[j].id, "reason": reason, "detail": detail[:300]})
                seen += len(idx)
                if bar is not None:
                    bar.update(len(idx))
                    bar.set_postfix(img_s=f"{(done + seen) / max(time.perf_counter() - t0, 1e-9):.0f}")
            arrays["image.pooled"] = np.concatenate(pooled)
            if tokens:
                arrays["image.tokens"] = np.concatenate(tokens)
        if manifest["text"]:
            arrays.update(_encode_texts(text_encoder, records[start:stop], device, opts))
            for j, r in enumerate(records[start:stop]):
                if not (r.report or "").strip():
                    valid[j] = False
                    skipped.append({"id": r.id, "reason": "empty_report", "detail": ""})
        arrays["valid"] = valid
        for part, arr in arrays.items():
            atomic_save_npy(shards_dir / f"{s:05d}.{part}.npy", arr)
        atomic_write_json(
            shards_dir / f"{s:05d}.json",
            {"shard": s, "start": start, "stop": stop, "valid": int(valid.sum()), "skipped": skipped},
        )
        done += stop - start
        if on_shard is not None:
            on_shard(s)
    if bar is not None:
        bar.close()
    _barrier()

    if rank == 0:
        missing = [s for s in range(n_shards) if not (shards_dir / f"{s:05d}.json").exists()]
        if missing:
            raise UserError(
                f"{len(missing)} shards are missing after precompute (first: {missing[0]}); rerun to finish"
            )
        sizes = _bytes_per_item(shards_dir, len(records))
        skipped_all = []
        for s in range(n_shards):
            skipped_all += json_load(shards_dir / f"{s:05d}.json")["skipped"]
        final = {
            **manifest,
            "complete": True,
            "bytes_per_item": sizes,
            "valid_items": len(records) - len({d["id"] for d in skipped_all}),
            "skipped": skipped_all[:1000],
            "skipped_total": len(skipped_all),
        }
        atomic_write_json(out / "manifest.json", final)
    _barrier()
    return FeatureCache(out)


def shard_owners(records: list[Record], shard_size: int, world: int) -> list[int]:
    """The rank that fills each cache shard: ``s % world``, or for records read from tar shards
    the rank of the tar the cache shard starts in (tars dealt round-robin in record order)."""
    n_shards = (len(records) + shard_size - 1) // shard_size
    tars: dict[str, int] = {}
    owners = []
    for s in range(n_shards):
        ref = parse_member_ref(records[s * shard_size].image_path)
        if ref is None:
            owners.append(s % world)
            continue
        for r in records[s * shard_size : (s + 1) * shard_size]:  # number the tars in record order
            t = parse_member_ref(r.image_path)
            if t is not None:
                tars.setdefault(t[0], len(tars))
        owners.append(tars[ref[0]] % world)
    return owners


def json_load(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


def _bytes_per_item(shards_dir: Path, n: int) -> dict:
    by_part: dict[str, int] = {}
    for f in shards_dir.glob("*.npy"):
        part = f.name.split(".", 1)[1].rsplit(".npy", 1)[0]
        by_part[part] = by_part.get(part, 0) + f.stat().st_size
    out = {k: round(v / max(n, 1), 1) for k, v in sorted(by_part.items())}
    out["total"] = round(sum(by_part.values()) / max(n, 1), 1)
    return out


def _image_batches(records: list[Record], shards: list[int], spec: PreprocessSpec, opts: PrecomputeOptions):
    """One DataLoader over all pending shards; batches never straddle a shard boundary."""
    batches = []
    for s in shards:
        start, stop = s * opts.shard_size, min((s + 1) * opts.shard_size, len(records))
        for b in range(start, stop, opts.batch_size):
            batches.append(list(range(b, min(b + opts.batch_size, stop))))
    ds = _ImageDataset([r.image_path for r in records], spec)
    loader = DataLoader(
        ds,
        batch_sampler=batches,
        num_workers=opts.workers,
        collate_fn=_collate,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
    yield from loader


@torch.no_grad()
def _encode_images(encoder, x: torch.Tensor, device: torch.device, opts: PrecomputeOptions):
    x = x.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        cls, patches = encoder(x)
    pooled = cls.float().half().cpu().numpy()
    if not opts.image_tokens:
        return pooled, None
    k = max(1, int(opts.patch_pool))
    if k > 1:
        b, p, d = patches.shape
        g = int(round(p**0.5))
        grid = patches.float().transpose(1, 2).reshape(b, d, g, p // g)
        patches = F.avg_pool2d(grid, k).flatten(2).transpose(1, 2)
    return pooled, patches.float().half().cpu().numpy()


@torch.no_grad()
def _encode_texts(encoder, records: list[Record], device: torch.device, opts: PrecomputeOptions) -> dict:
    pooled, toks, ids, lengths = [], [], [], []
    texts = [(r.report or "").strip() or "." for r in records]
    for b in range(0, len(texts), opts.text_batch_size):
        enc = encoder.tokenize(texts[b : b + opts.text_batch_size])
        input_ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            p, t = encoder(input_ids, mask)
        pooled.append(p.float().half().cpu().numpy())
        if opts.text_tokens:
            t = t.float().half().cpu().numpy()
            m = mask.cpu().numpy().astype(bool)
            iid = input_ids.cpu().numpy().astype(np.int32)
            for i in range(t.shape[0]):
                toks.append(t[i][m[i]])
                ids.append(iid[i][m[i]])
                lengths.append(int(m[i].sum()))
    out = {"text.pooled": np.concatenate(pooled)}
    if opts.text_tokens:
        out["text.tokens"] = np.concatenate(toks)
        out["text.ids"] = np.concatenate(ids)
        out["text.offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return out
