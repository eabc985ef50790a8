"""Small file helpers shared by the dataset readers (stdlib only)."""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from pathlib import Path

from core_model.errors import DataError


def require_file(path, what: str) -> Path:
    """The path as a Path, or a DataError that names what is missing."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} not found: {p}")
    return p


def require_dir(path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"{what} is not a folder: {p}")
    return p


def open_text(path, what: str = "label file") -> io.TextIOBase:
    """Open a text/CSV label file that may be plain, ``.gz`` or a ``.zip`` holding one CSV/TXT."""
    p = require_file(path, what)
    name = p.name.lower()
    try:
        if name.endswith(".gz"):
            return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8-sig", newline="")
        if name.endswith(".zip"):
            zf = zipfile.ZipFile(p)
            members = [m for m in zf.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
            texts = [m for m in members if m.lower().endswith((".csv", ".txt"))] or members
            if len(texts) != 1:
                raise DataError(f"{what} {p}: expected one CSV/TXT inside the zip, found {len(texts)}")
            return io.TextIOWrapper(zf.open(texts[0]), encoding="utf-8-sig", newline="")
        return open(p, encoding="utf-8-sig", newline="")
    except (OSError, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {what} {p}: {exc}") from exc


def index_files(folder, suffixes=(".dcm",), what: str = "image folder") -> tuple[dict[str, str], int]:
    """Map file stem -> absolute path for every file below ``folder`` (recursive) with one of the
    suffixes (case-insensitive). Returns the map and the number of duplicate stems (first kept)."""
    root = require_dir(folder, what).resolve()
    found: dict[str, str] = {}
    duplicates = 0
    suffixes = tuple(s.lower() for s in suffixes)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            low = fn.lower()
            for suf in suffixes:
                if low.endswith(suf):
                    stem = fn[: -len(suf)]
                    if stem in found:
                        duplicates += 1
                    else:
                        found[stem] = os.path.join(dirpath, fn)
                    break
    return found, duplicates
