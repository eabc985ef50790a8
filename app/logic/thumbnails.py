"""Small cached thumbnails for the study browser (Qt-free).

A thumbnail is the library's default display (:func:`app.logic.image.display_file`) shrunk
to fit ``size`` pixels, kept as an 8-bit PNG under the library's data folder
(``thumbnails/<size>/<2 hex>/<40 hex>.png``, from a SHA-256 of the SOP Instance UID), written atomically. Making one decodes the
whole image, so the app makes them in a worker thread, for the rows on screen only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

SIZE = 96  # shown at 48 logical pixels: sharp at 200 % scaling


def thumbnail_path(library, uid: str, size: int = SIZE) -> Path:
    # named after a hash of the UID, never the UID itself (untrusted text: it may hold "../")
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()
    return library.data_dir / "thumbnails" / f"{int(size)}" / digest[:2] / f"{digest[2:42]}.png"


def load_cached(library, uid: str, size: int = SIZE) -> np.ndarray | None:
    from PIL import Image

    path = thumbnail_path(library, uid, size)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    except (OSError, ValueError):
        return None


def make_thumbnail(library, uid: str, file_path: str, storage: str, size: int = SIZE) -> np.ndarray:
    """The cached thumbnail, or a new one (decoding the image). Raises the imaging layer's
    UserError when the image cannot be read."""
    from io import BytesIO

    from PIL import Image

    from app.logic.image import display_file
    from core_model.fileio import atomic_write_bytes

    cached = load_cached(library, uid, size)
    if cached is not None:
        return cached
    pixels = display_file(library.resolve(file_path, storage)).pixels
    img = Image.fromarray(pixels, "L")
    img.thumbnail((size, size), Image.BILINEAR, reducing_gap=2.0)
    buf = BytesIO()
    img.save(buf, format="PNG")
    if getattr(library, "read_only", False):  # opened read-only: nothing is written into it
        return np.asarray(img, dtype=np.uint8).copy()
    try:
        atomic_write_bytes(thumbnail_path(library, uid, size), buf.getvalue(), fsync=False, mkdir=True)
    except OSError:
        pass  # a read-only library still shows thumbnails, it only cannot keep them
    return np.asarray(img, dtype=np.uint8).copy()
