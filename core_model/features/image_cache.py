"""One-time downsized copies of a collection (decoding full-size files limits precompute).

Each image is decoded once through :func:`core_model.imaging.preprocess.load_display`, shrunk
so its longest side is ``max_side`` (never enlarged) and stored as an 8-bit PNG named by a hash
of its source path. Reruns skip what exists. Numpy + Pillow only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from core_model.data.records import Record
from core_model.fileio import atomic_write
from core_model.imaging.errors import ImageReadError
from core_model.imaging.preprocess import load_display


def cached_name(path: str) -> str:
    return hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:24] + ".png"


def _one(args) -> str | None:
    src, dst, max_side = args
    if os.path.exists(dst):
        return None
    try:
        gray = load_display(src, draft_size=max_side)
    except ImageReadError as exc:
        return f"{exc.reason}: {exc}"
    img = Image.fromarray(gray)
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
    atomic_write(dst, lambda f: img.save(f, format="PNG"), fsync=False)
    return None


def resize_images(
    records: list[Record], out_dir: str | os.PathLike, max_side: int = 512, workers: int = 2
) -> list[Record]:
    """Return copies of ``records`` pointing at downsized PNGs in ``out_dir`` (unreadable
    images keep their original path, so precompute reports them with the reason)."""
    from core_model.data.webdataset import parse_member_ref
    from core_model.errors import UserError

    if any(parse_member_ref(r.image_path) for r in records[:1]):
        raise UserError("--resize-cache reads image files; webdataset shards are encoded from the tars directly")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(r.image_path, str(out / cached_name(r.image_path)), max_side) for r in records]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            errors = list(pool.map(_one, jobs, chunksize=16))
    else:
        errors = [_one(j) for j in jobs]
    return [
        dataclasses.replace(r, image_path=dst) if err is None else r
        for r, (_, dst, _), err in zip(records, jobs, errors)
    ]
