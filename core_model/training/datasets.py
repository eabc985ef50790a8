"""From a run config to records and a complete feature cache (shared by the training commands)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from core_model.data.records import ReadResult, Record
from core_model.errors import UserError
from core_model.features.cache import FeatureCache
from core_model.imaging.preprocess import PreprocessSpec

log = logging.getLogger(__name__)


def load_records(data: dict) -> ReadResult:
    """Read the dataset a config's ``data`` section names (phantoms are generated when missing)."""
    from core_model.data.readers import read_dataset

    result = read_dataset(data)
    if data.get("limit"):
        result.records = result.records[: int(data["limit"])]
    assign_missing_splits(result.records, float(data.get("val_fraction", 0.1)), seed=int(data.get("seed", 0) or 0))
    return result


def assign_missing_splits(records: list[Record], val_fraction: float, seed: int = 0) -> None:
    """Records without a split get train/val by patient (hash of patient id and seed: stable)."""
    if all(r.split for r in records):
        return
    for r in records:
        if r.split:
            if r.split == "validate":
                r.split = "val"
            continue
        key = f"{seed}:{r.patient_id or r.id}".encode()
        u = int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF
        r.split = "val" if u < val_fraction else "train"


def preprocess_spec(cfg: dict) -> PreprocessSpec:
    p = cfg["preprocess"]
    return PreprocessSpec(
        size=int(p["size"]),
        mean=float(p["mean"]),
        std=float(p["std"]),
        resize=p.get("resize", "letterbox"),
        resize_to=p.get("resize_to"),
    )


def cache_key(cfg: dict, records: list[Record], parts: str = "image+text") -> str:
    enc, c = cfg["encoders"], cfg["cache"]
    blob = json.dumps(
        {
            "parts": parts,
            "image": enc["image"],
            "text": enc["text"],
            "max_length": enc["text_max_length"],
            "preprocess": preprocess_spec(cfg).to_dict(),
            "pool": c.patch_pool,
            "image_tokens": c.image_tokens,
            "text_tokens": c.text_tokens,
            "ids": hashlib.sha256("\0".join(r.id for r in records).encode()).hexdigest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cache_dir(cfg: dict, records: list[Record], parts: str = "image+text") -> Path:
    """Our own cache folder for these records and settings: one per set of parts (image and
    report features, or image features only), next to the data."""
    data = cfg["data"]
    base = Path(data["path"]) if data.get("path") else Path("runs")
    if base.suffix:  # a manifest or archive file: next to it
        base = base.parent
    name = f"{_slug(cfg['encoders']['image'])}__{_slug(cfg['encoders']['text'])}__{cache_key(cfg, records, parts)}"
    return base / "features" / name


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(name)).strip("-")[-40:]


def ensure_cache(
    cfg: dict,
    records: list[Record],
    cache_dir: Path | None = None,
    *,
    overwrite: bool = False,
    image: bool = True,
    text: bool = True,
    progress: bool = True,
) -> FeatureCache:
    """Return the complete cache for these records, precomputing (or finishing) it when needed."""
    from core_model.features.cache import FeatureCache

    managed = not (cache_dir or cfg["cache"].dir)  # our own folder: recompute on any change
    parts = "image+text" if (image and text) else ("image" if image else "text")
    if managed and parts != "image+text":
        # a complete image+text cache of the same records serves image-only (or text-only) work too
        full = default_cache_dir(cfg, records, "image+text") / "manifest.json"
        if full.exists():
            m = json.loads(full.read_text())
            if m.get("complete") and _matches(m, cfg, records, image, text):
                return FeatureCache(full.parent)
    cache_dir = Path(cache_dir or cfg["cache"].dir or default_cache_dir(cfg, records, parts))
    manifest = cache_dir / "manifest.json"
    if manifest.exists() and not overwrite:
        m = json.loads(manifest.read_text())
        if m.get("complete") and _matches(m, cfg, records, image, text):
            return FeatureCache(cache_dir)
    from core_model.encoders import create_image_encoder, create_text_encoder
    from core_model.features.precompute import PrecomputeOptions, precompute

    enc, c = cfg["encoders"], cfg["cache"]
    allow = bool(enc.get("allow_download", False))
    image_encoder = create_image_encoder(enc["image"], allow_download=allow) if image else None
    text_encoder = (
        create_text_encoder(enc["text"], allow_download=allow, max_length=int(enc["text_max_length"])) if text else None
    )
    opts = PrecomputeOptions(
        image=image,
        text=text,
        image_tokens=c.image_tokens,
        text_tokens=c.text_tokens,
        patch_pool=c.patch_pool,
        batch_size=c.batch_size,
        workers=c.workers,
        shard_size=c.shard_size,
        device=c.device,
    )
    t0 = time.perf_counter()
    if managed and manifest.exists():
        print(f"feature cache {cache_dir} was computed from other data or settings; recomputing it")
    cache = precompute(
        records,
        cache_dir,
        image_encoder,
        text_encoder,
        preprocess_spec(cfg),
        opts,
        overwrite=overwrite or managed,
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    per_item = cache.manifest.get("bytes_per_item", {}).get("total", 0)
    print(
        f"feature cache {cache_dir}: {cache.n} items ({int(cache.valid.sum())} usable) in {seconds:.1f} s; "
        f"{per_item / 1024:.1f} KiB per item, {cache.nbytes() / 2**20:.1f} MiB in all"
    )
    return cache


def _matches(manifest: dict, cfg: dict, records: list[Record], image: bool, text: bool) -> bool:
    """Cheap check that a complete cache is the one this config asks for (names, not hashes:
    anything else goes through precompute, which compares weight hashes and refuses mixing)."""
    from core_model.features.cache import data_digest, ids_digest

    enc, c = cfg["encoders"], cfg["cache"]
    if manifest.get("ids_sha256") != ids_digest([r.id for r in records]):
        return False
    has_text = bool(manifest.get("text"))
    if manifest.get("data_sha256") != data_digest(records, image=bool(manifest.get("image")), text=has_text):
        return False
    m_img, m_txt = manifest.get("image"), manifest.get("text")
    if image and not (
        m_img
        and m_img["encoder"]["name"] == str(enc["image"])
        and m_img["preprocess"] == preprocess_spec(cfg).to_dict()
        and m_img["patch_pool"] == c.patch_pool
        and m_img["tokens"] == c.image_tokens
    ):
        return False
    if text and not (
        m_txt
        and m_txt["encoder"]["name"] == str(enc["text"])
        and m_txt["max_length"] == int(enc["text_max_length"])
        and m_txt["tokens"] == c.text_tokens
    ):
        return False
    return True


def summary(result: ReadResult) -> dict:
    from collections import Counter

    return {
        "records": len(result.records),
        "skipped": len(result.skipped),
        "skipped_by_reason": result.skip_counts(),
        "splits": dict(Counter(r.split or "none" for r in result.records)),
        "findings": dict(Counter(r.finding for r in result.records if r.finding)),
    }


def split_array(records: list[Record]) -> np.ndarray:
    return np.array([r.split or "" for r in records], dtype=object)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)
