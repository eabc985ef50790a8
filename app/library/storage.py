"""Files the library owns: managed copies of imported images and analysis outputs.

Every file is written to a temporary name in the library's ``staging/<pid>-<token>/`` folder
(same filesystem) and moved into place with ``os.replace``: a managed copy or a mask is either
complete or absent, never half written. The importer then makes each batch of copies durable
with one ``os.sync()`` (an fsync per file where that does not exist) before committing the rows
that point at them; analysis files are fsynced one by one. A crash in between leaves at worst
an unreferenced complete file, which :func:`collect_orphans` finds.

**Names on disk never come from the files.** A managed copy is named after a SHA-256 of its SOP
Instance UID (:func:`managed_relpath`), never the UID itself (a UID is untrusted text: it may hold
``../`` or spell another instance's name); every path the library writes is checked to lie
inside its folder (:func:`inside`); and a managed copy is never overwritten
(:func:`store_new`: the new file is linked into place only if the name is free, else it gets a
fresh name; an identical leftover of a killed run is reused).

Masks are stored as 8-bit PNG (lossless, viewable), heatmaps as float32 ``.npy`` (exact
values for the colour bar), under ``derived/<instance id>/``; the database keeps their paths
relative to the data folder, so a library folder can be moved or backed up as a whole.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from core_model.errors import UserError
from core_model.fileio import atomic_write_bytes

_COPY_CHUNK = 1 << 20


MANAGED_SUFFIXES = (".dcm", ".png", ".jpg")


class UnsafePathError(UserError):
    """A path the library was about to write lies outside its folder (a bug or a hostile name)."""


def managed_relpath(sop_uid: str, suffix: str = ".dcm") -> str:
    """``managed/<2 hex>/<40 hex><suffix>`` from a SHA-256 of the UID: the UID never becomes a
    file name (it is untrusted text), 256 buckets keep folders small, and re-importing the same
    instance lands on the same name (where :func:`store_new` finds and reuses an identical
    leftover of a killed run)."""
    if suffix not in MANAGED_SUFFIXES:
        raise ValueError(f"managed copies end in one of {MANAGED_SUFFIXES}, not {suffix!r}")
    digest = hashlib.sha256(sop_uid.encode("utf-8", "surrogatepass")).hexdigest()
    return f"managed/{digest[:2]}/{digest[2:42]}{suffix}"


def inside(data_dir: Path, rel: str, folder: str = "") -> Path:
    """``data_dir / rel`` after checking that it resolves (symlinks included) inside
    ``data_dir / folder``; :class:`UnsafePathError` otherwise."""
    root = (Path(data_dir) / folder).resolve()
    target = (Path(data_dir) / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(root) or target == root:
        raise UnsafePathError(f"refused to write {rel!r}: it is not inside the library's {folder or 'data'} folder")
    return Path(data_dir) / rel


def _same_content(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(_COPY_CHUNK), fb.read(_COPY_CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def _link_new(tmp: Path, dst: Path) -> bool:
    """Give ``tmp`` the name ``dst`` only if that name is free (atomic); False when taken."""
    try:
        os.link(tmp, dst)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
    # no hard links on this filesystem: reserve the name exclusively, then move the data in
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    os.replace(tmp, dst)
    return True


def store_new(tmp: Path, data_dir: Path, rel: str) -> str:
    """Move the complete file ``tmp`` (in the staging folder) to ``data_dir / rel`` without ever
    replacing an existing file: an identical file already there (left by a killed run) is
    reused; a different one keeps its name and ``tmp`` gets ``<name>-<8 hex><suffix>``. Returns
    the relative path used. Every candidate path is checked with :func:`inside`."""
    stem, suffix = os.path.splitext(rel)
    candidate = rel
    for _attempt in range(8):
        dst = inside(data_dir, candidate, "managed")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if _link_new(tmp, dst):
            if tmp.exists():
                tmp.unlink()
            return candidate
        if candidate == rel and _same_content(tmp, dst):
            tmp.unlink()
            return candidate
        candidate = f"{stem}-{uuid.uuid4().hex[:8]}{suffix}"
    raise OSError(errno.EEXIST, "no free name for a managed copy")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def run_staging_dir(staging_root: Path) -> Path:
    """A private staging folder for this process, after removing those of dead processes."""
    staging_root.mkdir(parents=True, exist_ok=True)
    for child in staging_root.iterdir():
        pid = child.name.split("-", 1)[0]
        if child.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(child, ignore_errors=True)
    path = staging_root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sync_folders(paths: set[Path]) -> None:
    """fsync the folders that received new names, so the renames survive a power cut."""
    for path in paths:
        _fsync_dir(path)


# -- analysis outputs -----------------------------------------------------------------------


_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _derived_rel(data_dir: Path, instance_pk: int, token: str, name: str) -> str:
    if not _TOKEN.fullmatch(str(token)) or ".." in str(token):
        raise UnsafePathError(f"refused to write an analysis file named with {token!r}")
    rel = f"derived/{int(instance_pk)}/{token}-{name}"
    inside(data_dir, rel, "derived")
    return rel


def save_mask(data_dir: Path, instance_pk: int, token: str, mask: np.ndarray) -> str:
    """A 2-D mask (bool, 0/1, or probabilities in [0, 1], or uint8) -> 8-bit PNG; returns the
    path relative to ``data_dir``."""
    from io import BytesIO

    from PIL import Image

    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError("a mask must be a 2-D array")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buf = BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    rel = _derived_rel(data_dir, instance_pk, token, "mask.png")
    atomic_write_bytes(data_dir / rel, buf.getvalue(), mkdir=True)
    return rel


def save_heatmap(data_dir: Path, instance_pk: int, token: str, heatmap: np.ndarray) -> str:
    from io import BytesIO

    arr = np.asarray(heatmap, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError("a heatmap must be a 2-D array")
    buf = BytesIO()
    np.save(buf, arr, allow_pickle=False)
    rel = _derived_rel(data_dir, instance_pk, token, "heatmap.npy")
    atomic_write_bytes(data_dir / rel, buf.getvalue(), mkdir=True)
    return rel


def load_mask(data_dir: Path, rel: str) -> np.ndarray:
    from PIL import Image

    with Image.open(data_dir / rel) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def load_heatmap(data_dir: Path, rel: str) -> np.ndarray:
    return np.load(data_dir / rel, allow_pickle=False)


def collect_orphans(data_dir: Path, referenced: set[str], folder: str) -> list[Path]:
    """Files under ``data_dir/folder`` that no row references (left by a crash between writing a
    file and committing its row). Returns them; the caller decides whether to delete."""
    root = data_dir / folder
    if not root.exists():
        return []
    orphans = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(data_dir).as_posix()
            if rel not in referenced and not name.endswith(".part"):
                orphans.append(path)
    return orphans
