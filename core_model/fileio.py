"""Atomic writes and file hashes (stdlib + numpy; no torch): **the** atomic-write helper of the
project. A file is written to a unique temporary name in the same folder (or in a staging folder
on the same filesystem), optionally fsynced, then renamed over the target with ``os.replace``, so
a crash never leaves a half-written file behind; the temporary file is removed on any failure.

:func:`atomic_write` is the one implementation; ``atomic_write_bytes`` / ``_text`` / ``_json`` and
``atomic_save_npy`` only say how the content becomes bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np


class Readable(Protocol):
    """Anything with a binary ``read(n)``: an open file, a zip member, a size-limited reader."""

    def read(self, n: int = -1, /) -> bytes: ...


Content = bytes | bytearray | memoryview | str | BinaryIO | Readable | Callable[[BinaryIO], None]
_COPY_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def temp_path_for(path: str | os.PathLike, staging: str | os.PathLike | None = None) -> Path:
    """A unique temporary name for ``path``: beside it, or in ``staging`` (which must be on the
    same filesystem, so that ``os.replace`` is atomic). Ends in ``.part``."""
    p = Path(path)
    folder = Path(staging) if staging is not None else p.parent
    return folder / f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"


def atomic_write(
    path: str | os.PathLike,
    content: Content,
    *,
    fsync: bool = True,
    staging: str | os.PathLike | None = None,
    mkdir: bool = False,
) -> int:
    """Write ``content`` to ``path`` atomically; returns the number of bytes written.

    ``content``: bytes, a str (written as UTF-8, newlines unchanged), an open binary file (read
    to its end in 1 MiB chunks) or a callable that writes to the open binary file. ``fsync``: flush the file to disk before the rename (durable against a
    power cut; callers that sync a whole batch at once pass False). ``staging``: the folder for
    the temporary file (default: beside ``path``). ``mkdir``: create ``path``'s folder first."""
    p = Path(path)
    if mkdir:
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(p, staging)
    try:
        with open(tmp, "wb") as f:
            if hasattr(content, "read"):
                shutil.copyfileobj(content, f, _COPY_CHUNK)
            elif callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            size = f.tell()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return size


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True, mkdir: bool = False) -> None:
    atomic_write(path, data, fsync=fsync, mkdir=mkdir)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True, mkdir: bool = False) -> Path:
    atomic_write(path, text, fsync=fsync, mkdir=mkdir)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
