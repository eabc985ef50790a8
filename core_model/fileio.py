"""Atomic writes and file hashes (stdlib + numpy; no torch): **the** atomic-write helper of the
project. A file is written to a unique temporary name in the same folder (or in a staging folder
on the same filesystem), optionally fsynced, then renamed over the target with ``os.replace``, so
a crash never leaves a half-written file behind; the temporary file is removed on any failure.

:func:`atomic_path` is the one implementation (for writers that insist on a file name, such as
safetensors, onnx or Qt's image writer); :func:`atomic_write` feeds it content or a callable
writing to an open file, and ``atomic_write_bytes`` / ``_text`` / ``_json`` and
``atomic_save_npy`` only say how the content becomes bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
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


@contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    fsync: bool = True,
    staging: str | os.PathLike | None = None,
    mkdir: bool = False,
) -> Iterator[Path]:
    """Yield a temporary file name for ``path``; when the block finishes, the file written there
    is (optionally) fsynced and renamed over ``path``. On any exception, or when the block wrote
    nothing, the temporary file is removed and ``path`` is left as it was.

    ``fsync``: flush the file to disk before the rename (durable against a power cut; callers
    that sync a whole batch at once pass False). ``staging``: the folder for the temporary file
    (default: beside ``path``). ``mkdir``: create ``path``'s folder first."""
    p = Path(path)
    if mkdir:
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(p, staging)
    try:
        yield tmp
        if not tmp.is_file():
            raise OSError(f"nothing was written for {p.name}")
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(
    path: str | os.PathLike,
    content: Content,
    *,
    fsync: bool = True,
    staging: str | os.PathLike | None = None,
    mkdir: bool = False,
) -> int:
    """Write ``content`` to ``path`` atomically (see :func:`atomic_path` for the options); returns
    the number of bytes written. ``content``: bytes, a str (written as UTF-8, newlines unchanged),
    an open binary file (read to its end in 1 MiB chunks) or a callable that writes to the open
    binary file."""
    with atomic_path(path, fsync=False, staging=staging, mkdir=mkdir) as tmp:
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
    return size


def publish_dir(staged: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the finished folder ``staged`` to ``target`` (same filesystem), replacing a folder
    already there: the old one is renamed aside first and removed after, so ``target`` is always
    either the old or the new complete folder (absent only between the two renames), never a
    mixture. The folder counterpart of :func:`atomic_path`."""
    staged, target = Path(staged), Path(target)
    aside = None
    if target.exists():
        aside = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, aside)
    try:
        os.replace(staged, target)
    except BaseException:
        if aside is not None and not target.exists():
            os.replace(aside, target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return target


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True, mkdir: bool = False) -> None:
    atomic_write(path, data, fsync=fsync, mkdir=mkdir)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True, mkdir: bool = False) -> Path:
    atomic_write(path, text, fsync=fsync, mkdir=mkdir)
    return Path(path)


def jsonable(obj):
    """``obj`` as strict-JSON-ready Python: numpy scalars and arrays as numbers and lists, tuples
    and sets as lists, keys as strings, paths as strings, typed config sections (dataclasses) as
    mappings, and non-finite floats as ``None``. The one JSON conversion of the project."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr, allow_pickle=False))
