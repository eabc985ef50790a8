"""Verifying a model bundle before it is loaded (torch-free): zip safety, manifest, hashes.

A bundle is a folder or a .zip (the format is defined once in :mod:`core_model.runtime.format`;
the layout is described in :mod:`core_model.export.bundle`). Loading checks, in order:

1. a .zip archive itself: no absolute paths, no ``..``, no links, no duplicate names, and budgets
   per member, in total and on the compression ratio, counted on the bytes actually streamed out
   (declared sizes can lie); the half-unpacked folder is removed on every refusal;
2. ``manifest.json`` (read with a size and a nesting-depth limit): format and version, the
   required files, and that the folder is a **closed set**: every file in it is listed, every
   listed file is there, is not a link, and matches its SHA-256;
3. (in :class:`core_model.runtime.bundle.Bundle`) config.json against the graphs: every graph is a
   manifest-listed file, its input/output names and static dimensions match the config, and a
   smoke inference on a built-in test image passes (:mod:`core_model.runtime.checks`).

Any failure raises a :class:`BundleError` subclass with a specific one-line message; nothing is
ever unpickled (``numpy.load(allow_pickle=False)``, JSON, ONNX).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from core_model.errors import UserError
from core_model.fileio import publish_dir, sha256_file
from core_model.runtime.format import (
    BUNDLE_FORMAT,
    MANIFEST,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    REPORT_INDEX_FILES,
    REQUIRED_FILES,
    SUPPORTED_VERSIONS,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(UserError):
    """The model bundle cannot be used; the message says why."""


class BundleFormatError(BundleError):
    pass


class BundleIntegrityError(BundleError):
    pass


class UnsafeArchiveError(BundleError):
    pass


def one_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of an exception's text, shortened (for messages built on third-party errors)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- JSON with limits ------------------------------------------------------------------------
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """Deepest nesting of objects/arrays in a JSON text (strings skipped), without parsing it."""
    if data.count(b"[") + data.count(b"{") == 0:
        return 0
    bare = np.frombuffer(_JSON_STRING.sub(b'""', data), dtype=np.uint8)
    step = np.isin(bare, (ord("["), ord("{"))).astype(np.int32) - np.isin(bare, (ord("]"), ord("}"))).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def loads_json(data: bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON bytes, refusing (with ``what`` in the message) text nested deeper than ``max_depth``."""
    depth = 0 if data.count(b"[") + data.count(b"{") <= max_depth else json_depth(data)
    if depth > max_depth:
        raise BundleFormatError(
            f"{what} is nested {depth} levels deep (at most {max_depth} allowed); not a file this app writes"
        )
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"{what} is not UTF-8 text ({one_line(exc)})") from exc
    except RecursionError as exc:  # the depth scan makes this unreachable; never let it escape
        raise BundleFormatError(f"{what} is nested too deeply to read") from exc
    except ValueError as exc:
        raise BundleFormatError(f"{what} is not valid JSON ({one_line(exc)})") from exc


def read_limited(path: Path, what: str, max_bytes: int) -> bytes:
    """A file's bytes, refusing one over ``max_bytes`` (checked on what is read, not only on stat)."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise BundleIntegrityError(f"{what} cannot be read ({exc.strerror or one_line(exc)})") from exc
    if len(data) > max_bytes:
        raise BundleFormatError(f"{what} is larger than {max_bytes >> 20} MiB; not a file this app writes")
    return data


def read_json(path: Path, what: str | None = None, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """Read a bundle's JSON file with a byte-size and a nesting-depth limit (BundleFormatError)."""
    what = what or path.name
    return loads_json(read_limited(path, what, max_bytes), what, max_depth=max_depth)


# ---- zip archives ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZipLimits:
    """Budgets for unpacking a bundle .zip, checked on the bytes streamed out (declared sizes are
    only a first, cheap filter). An ONNX graph cannot exceed 2 GiB (protobuf), so no member may."""

    member_bytes: int = 2 << 30
    total_bytes: int = 4 << 30
    ratio: float = 100.0  # uncompressed / compressed, per member ...
    ratio_floor: int = 1 << 20  # ... once the member has produced this many bytes
    members: int = 10_000


DEFAULT_ZIP_LIMITS = ZipLimits()

_CHUNK = 64 << 10  # small reads: the compressed bytes read ahead stay small beside what they unpack to


def _consumed(src, info: zipfile.ZipInfo) -> int:
    """Compressed bytes actually read so far for a member (the declared compressed size can lie too)."""
    left = getattr(src, "_compress_left", None)  # CPython's ZipExtFile; else the declared size
    return (
        info.compress_size - left if isinstance(left, int) and 0 <= left <= info.compress_size else info.compress_size
    )


def _check_member(info: zipfile.ZipInfo, limits: ZipLimits = DEFAULT_ZIP_LIMITS) -> str:
    name = info.filename
    if not name.replace("\\", "/").strip("/") or "\x00" in name:
        raise UnsafeArchiveError(f"bundle archive holds an entry without a usable name ({name!r}); refusing it")
    mode = (info.external_attr >> 16) & 0xFFFF
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"bundle archive holds a link ({name!r}); refusing it")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"bundle archive holds an absolute path ({name!r}); refusing it")
    parts = Path(name.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"bundle archive holds a path that leaves its folder ({name!r}); refusing it")
    if info.flag_bits & 0x1:
        raise UnsafeArchiveError(f"bundle archive member {name!r} is encrypted; refusing it")
    if info.file_size > limits.member_bytes:
        raise UnsafeArchiveError(
            f"bundle archive member {name!r} is implausibly large ({info.file_size} bytes; "
            f"at most {limits.member_bytes} per file)"
        )
    if info.file_size > limits.ratio_floor and info.file_size > limits.ratio * max(info.compress_size, 1):
        raise UnsafeArchiveError(
            f"bundle archive member {name!r} claims a compression ratio over "
            f"{limits.ratio:.0f}:1 (a zip bomb?); refusing it"
        )
    return name


def default_cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cxr-adaptor")) / "bundles"


def _stream_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, limits: ZipLimits, total: int) -> int:
    """Copy one member to ``dest``, counting what comes out; -> the new running total."""
    name = info.filename
    written = 0
    with zf.open(info) as src, open(dest, "xb") as out:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            written += len(chunk)
            total += len(chunk)
            if written > limits.member_bytes:
                raise UnsafeArchiveError(
                    f"bundle archive member {name!r} unpacks to more than "
                    f"{limits.member_bytes} bytes; refusing the archive"
                )
            if total > limits.total_bytes:
                raise UnsafeArchiveError(
                    f"bundle archive unpacks to more than {limits.total_bytes} bytes in total; refusing it"
                )
            if written > limits.ratio_floor and written > limits.ratio * max(_consumed(src, info), 1):
                raise UnsafeArchiveError(
                    f"bundle archive member {name!r} unpacks at a compression ratio over "
                    f"{limits.ratio:.0f}:1 (a zip bomb?); refusing the archive"
                )
            out.write(chunk)
    if written != info.file_size:
        raise UnsafeArchiveError(
            f"bundle archive member {name!r} unpacks to {written} bytes but declares "
            f"{info.file_size}; the archive is damaged or forged"
        )
    return total


STALE_UNPACK_SECONDS = 24 * 3600


def _remove_stale_unpacks(cache_root: Path) -> None:
    """Remove half-unpacked folders a killed process left behind (older than a day, so never one
    another process is writing now)."""
    import time

    for p in cache_root.glob(".unpack-*"):
        try:
            if p.is_dir() and not p.is_symlink() and time.time() - p.stat().st_mtime > STALE_UNPACK_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def extract_zip(path: Path, cache_root: Path | None = None, *, limits: ZipLimits = DEFAULT_ZIP_LIMITS) -> Path:
    """Safely unpack a bundle .zip into a cache folder named by the archive's hash.

    Every refusal (unsafe name, budget exceeded while streaming, damaged data, full disk) removes
    the partly unpacked folder before raising."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise BundleFormatError(f"{path.name} is not a readable zip archive ({one_line(exc)})") from exc
    except OSError as exc:
        raise BundleFormatError(f"{path.name} cannot be read ({exc.strerror or one_line(exc)})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.members:
            raise UnsafeArchiveError(
                f"{path.name} holds {len(infos)} entries (at most {limits.members}); not a model bundle"
            )
        seen: set[str] = set()
        declared = 0
        for info in infos:
            name = _check_member(info, limits)
            key = name.replace("\\", "/").rstrip("/")
            if key in seen:
                raise UnsafeArchiveError(f"bundle archive holds {name!r} twice; refusing it")
            seen.add(key)
            declared += info.file_size
        if declared > limits.total_bytes:
            raise UnsafeArchiveError(
                f"{path.name} unpacks to {declared} bytes (at most {limits.total_bytes}); refusing it"
            )
        digest = sha256_file(path)[:20]
        cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
        target = cache_root / digest
        if (target / MANIFEST).exists():
            return target
        try:
            cache_root.mkdir(parents=True, exist_ok=True)
            _remove_stale_unpacks(cache_root)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_root))
        except OSError as exc:
            raise BundleError(f"cannot unpack {path.name} into {cache_root} ({exc.strerror or one_line(exc)})") from exc
        try:
            total = 0
            for info in infos:
                dest = tmp / info.filename.replace("\\", "/")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                total = _stream_member(zf, info, dest, limits, total)
            publish_dir(tmp, target)
        except BundleError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UnsafeArchiveError(f"{path.name} is damaged and cannot be unpacked ({one_line(exc)})") from exc
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"cannot unpack {path.name} into {cache_root} ({exc.strerror or one_line(exc)})") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def discard_unpacked(folder: Path) -> None:
    """Remove a folder :func:`extract_zip` made (the bundle in it was refused)."""
    shutil.rmtree(folder, ignore_errors=True)


# ---- the folder: a closed, hashed set ----------------------------------------------------------
def _listed_name(folder: Path, rel) -> str:
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise UnsafeArchiveError(
            f"{folder}: manifest.json lists a file name that is not a plain relative path ({rel!r})"
        )
    p = PurePosixPath(rel)
    if p.is_absolute() or (len(rel) > 1 and rel[1] == ":") or any(part in ("..", ".", "") for part in rel.split("/")):
        raise UnsafeArchiveError(f"{folder}: manifest names a file outside the bundle ({rel!r})")
    return rel


def _folder_files(folder: Path) -> set[str]:
    """Every file under ``folder`` as a relative POSIX path; links anywhere are refused."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                rel = (base / d).relative_to(folder).as_posix()
                raise UnsafeArchiveError(f"{folder}: {rel} is a link; refusing it")
        for f in filenames:
            p = base / f
            rel = p.relative_to(folder).as_posix()
            if p.is_symlink():
                raise UnsafeArchiveError(f"{folder}: {rel} is a link; refusing it")
            found.add(rel)
    return found


def verify_folder(folder: Path) -> dict:
    """Check manifest, the closed set of files and every hash; return the manifest."""
    manifest_path = folder / MANIFEST
    if manifest_path.is_symlink():
        raise UnsafeArchiveError(f"{folder}: manifest.json is a link; refusing it")
    if not manifest_path.is_file():
        raise BundleFormatError(f"{folder} is not a model bundle (no manifest.json)")
    manifest = read_json(manifest_path, f"{folder}: manifest.json")
    if not isinstance(manifest, dict):
        raise BundleFormatError(f"{folder}: manifest.json is not an object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"{folder}: not a CXR Adaptor bundle (format {str(manifest.get('format'))[:60]!r})")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        shown = version if isinstance(version, int) and not isinstance(version, bool) else repr(str(version)[:20])
        raise BundleFormatError(
            f"{folder}: bundle format version {shown} is not supported by this app "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); update the app or re-export"
        )
    for key in ("id", "version"):
        value = manifest.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 200 or "\n" in value):
            raise BundleFormatError(f"{folder}: manifest.json '{key}' must be a short line of text")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleFormatError(f"{folder}: manifest.json lists no files")
    for rel, digest in files.items():
        _listed_name(folder, rel)
        if rel == MANIFEST:
            raise BundleFormatError(f"{folder}: manifest.json lists itself; re-export the bundle")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise BundleFormatError(f"{folder}: manifest.json gives {rel} no SHA-256 (a 64-digit hex string)")
    for req in REQUIRED_FILES:
        if req not in files:
            raise BundleFormatError(f"{folder}: the manifest does not list the required file {req}")
    index_listed = [f for f in REPORT_INDEX_FILES if f in files]
    if index_listed and len(index_listed) != len(REPORT_INDEX_FILES):
        missing = sorted(set(REPORT_INDEX_FILES) - set(index_listed))
        raise BundleFormatError(
            f"{folder}: the manifest lists {index_listed[0]} without {missing[0]}; "
            "the report index needs both files (re-export the bundle)"
        )
    present = _folder_files(folder)
    unlisted = sorted(present - set(files) - {MANIFEST})
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise BundleIntegrityError(
            f"{folder}: {shown} {'is' if len(unlisted) == 1 else 'are'} not listed in "
            f"manifest.json; a bundle holds only the files its manifest lists "
            f"(remove {'it' if len(unlisted) == 1 else 'them'} or re-export the bundle)"
        )
    for rel, digest in files.items():
        if rel not in present:
            raise BundleIntegrityError(f"{folder}: {rel} is missing")
        if sha256_file(folder / rel) != digest:
            raise BundleIntegrityError(
                f"{folder}: {rel} does not match its SHA-256 in manifest.json "
                f"(altered or damaged); re-export or re-download the bundle"
            )
    return manifest


def open_bundle_folder(path: str | os.PathLike, cache_root: Path | None = None) -> tuple[Path, dict]:
    """-> (verified folder, manifest). A .zip is unpacked into ``cache_root`` first; when the
    unpacked folder is refused, it is removed again."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BundleError(f"model bundle {p} does not exist")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise BundleFormatError(f"{p.name} is neither a bundle folder nor a .zip bundle")
        folder = extract_zip(p, cache_root)
        try:
            return folder, verify_folder(folder)
        except BaseException:
            discard_unpacked(folder)
            raise
    if not p.is_dir():
        raise BundleFormatError(f"{p} is neither a bundle folder nor a .zip bundle")
    return p, verify_folder(p)


def load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise BundleFormatError(f"{path.name} is not a plain numeric array ({one_line(exc)})") from exc
