"""WebDataset tar shards (the OpenCLIP convention) as image-report records (torch-free).

``data.kind: webdataset`` with ``data.path``: one ``.tar``, a folder of ``.tar`` files (sorted by
name), or a brace pattern such as ``/data/cxr-{000000..000009}.tar``. Each sample is the group of
members sharing a key (the member name up to the first dot of its file name): ``NNNNNN.jpg``
(or ``.jpeg`` / ``.png`` / ``.dcm``) and ``NNNNNN.txt`` (the report, UTF-8); an optional
``NNNNNN.json`` may give ``split``, ``patient_id``, ``study_id``, ``view``, ``finding`` (strings)
and ``labels`` (finding -> number). Record ids are ``<shard name>/<key>``.

Reading is bounded and refuses what a dataset shard never needs: the archive is walked with the
stdlib :mod:`tarfile` (headers in order, nothing extracted, plain uncompressed tar only; only the
text and JSON members are read here, each at most :data:`MAX_TEXT_BYTES`); a shard holds at most
:data:`MAX_MEMBERS` members; an image member larger than
:data:`core_model.imaging.limits.MAX_PIXEL_BYTES` is skipped (``too_large``). Symbolic or hard
links, devices, FIFOs, sparse members, absolute names and names with ``..`` are refused with a
:class:`~core_model.errors.DataError` naming the shard and the member, and so is a damaged or
truncated archive (never a traceback).

A record's ``image_path`` is a member reference (:func:`member_ref`): the shard, the byte offset
and size of the image member (checked against the shard's size) and its name. Precompute reads
those bytes once, when it encodes the image, and gives them to the one preprocessing function
(:func:`prepare_member`); under ``torchrun`` each rank encodes the cache shards of its own tar
shards (``core_model/features/precompute.py``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from core_model.data.records import ReadResult, Record, Skipped
from core_model.data.reports import clean_text
from core_model.errors import ConfigError, DataError
from core_model.imaging.errors import ImageReadError
from core_model.imaging.limits import MAX_PIXEL_BYTES, check_stored_bytes

IMAGE_EXTS = ("jpg", "jpeg", "png", "dcm")
MAX_TEXT_BYTES = 1 << 20  # a report (or a sample's JSON) larger than 1 MiB is not a report
MAX_MEMBERS = 1_000_000  # per shard (OpenCLIP shards hold about 10,000 samples)
_REF = re.compile(r"^(?P<tar>.+\.tar)::(?P<offset>\d+):(?P<size>\d+):(?P<name>.+)$")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


# ---- shard lists -------------------------------------------------------------------------------
def expand_shards(spec: str | os.PathLike) -> list[Path]:
    """The tar shards ``data.path`` names: a file, a folder of ``.tar`` files, or a brace
    pattern (``{000000..000009}``, zero padding kept; several braces multiply)."""
    text = os.path.expanduser(str(spec))
    if _BRACE.search(text):
        names = [text]
        while any(_BRACE.search(n) for n in names):
            out = []
            for n in names:
                m = _BRACE.search(n)
                if not m:
                    out.append(n)
                    continue
                lo, hi = int(m[1]), int(m[2])
                if hi < lo or hi - lo >= 1_000_000:
                    raise ConfigError(f"data.path: the range {m[0]} must count up, by fewer than 1,000,000")
                width = len(m[1])
                out += [n[: m.start()] + str(i).zfill(width) + n[m.end() :] for i in range(lo, hi + 1)]
            names = out
        paths = [Path(n) for n in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{len(missing)} of the {len(paths)} webdataset shards are missing (first: {missing[0]})")
        return paths
    path = Path(text)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
        if not paths:
            raise DataError(f"{path} holds no .tar shards")
        return paths
    if path.is_file():
        return [path]
    raise DataError(f"webdataset shards not found: {path}")


# ---- member references -------------------------------------------------------------------------
def member_ref(tar: str | os.PathLike, offset: int, size: int, name: str) -> str:
    return f"{os.path.abspath(tar)}::{int(offset)}:{int(size)}:{name}"


def parse_member_ref(ref: str) -> tuple[str, int, int, str] | None:
    """(tar, offset, size, member name) of a member reference, or None for a plain path."""
    m = _REF.match(str(ref))
    if not m:
        return None
    return m["tar"], int(m["offset"]), int(m["size"]), m["name"]


def read_member(ref: str) -> bytes:
    """The bytes of the member ``ref`` names (ImageReadError when the shard changed or is gone)."""
    parsed = parse_member_ref(ref)
    if parsed is None:
        raise ValueError(f"not a webdataset member reference: {ref!r}")
    tar, offset, size, name = parsed
    label = f"{Path(tar).name}:{name}"
    check_stored_bytes(size, source=label)
    try:
        with open(tar, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as exc:
        raise ImageReadError(f"{label}: shard cannot be read ({exc.strerror or exc})", reason="missing") from exc
    if len(data) != size:
        raise ImageReadError(
            f"{label}: the shard is shorter than its index says (changed since it was read)", reason="truncated"
        )
    return data


def prepare_member(ref: str, spec) -> np.ndarray:
    """The model input of a member's image, through the one preprocessing function (the bytes
    go to a private temporary file named like the member, so errors name it)."""
    from core_model.imaging.preprocess import prepare_input

    data = read_member(ref)
    name = PurePosixPath(parse_member_ref(ref)[3]).name  # type: ignore[index]
    with tempfile.TemporaryDirectory(prefix="wds-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return prepare_input(path, spec)


# ---- reading shards ----------------------------------------------------------------------------
def _check_member(shard: Path, m: tarfile.TarInfo) -> None:
    name = m.name
    where = f"{shard.name}: member {name!r}"
    if m.issym() or m.islnk():
        raise DataError(
            f"{where} is a {'symbolic' if m.issym() else 'hard'} link; webdataset shards hold plain files only"
        )
    if m.ischr() or m.isblk() or m.isfifo() or m.issparse() or not (m.isreg() or m.isdir()):
        raise DataError(f"{where} is a device, FIFO or special member; webdataset shards hold plain files only")
    p = PurePosixPath(name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in p.parts or "\\" in name:
        raise DataError(f"{where} has an absolute path or '..'; refused")


def _split_name(name: str) -> tuple[str, str]:
    p = PurePosixPath(name)
    stem, _, ext = p.name.partition(".")
    key = str(p.parent / stem) if str(p.parent) != "." else stem
    return key, ext.lower()


def _read_small(tar: tarfile.TarFile, m: tarfile.TarInfo) -> bytes | None:
    if m.size > MAX_TEXT_BYTES:
        return None
    fh = tar.extractfile(m)
    return fh.read(MAX_TEXT_BYTES + 1) if fh is not None else b""


def _meta(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def read_shard(shard: Path) -> ReadResult:
    """The samples of one tar shard (DataError for a hostile, damaged or truncated one)."""
    shard = Path(shard)
    size = shard.stat().st_size
    with open(shard, "rb") as f:
        magic = f.read(3)
    if magic[:2] == b"\x1f\x8b" or magic == b"BZh" or magic[:2] == b"\xfd7":
        raise DataError(f"{shard.name} is a compressed archive; webdataset shards are plain .tar files")
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    texts: dict[str, bytes | None] = {}
    metas: dict[str, bytes | None] = {}
    count, last = 0, "(start)"
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for m in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise DataError(f"{shard.name}: more than {MAX_MEMBERS:,} members; refused")
                _check_member(shard, m)
                if m.offset_data + m.size > size:
                    raise DataError(f"{shard.name} is truncated: member {m.name!r} runs past the end of the file")
                last = m.name
                if m.isdir():
                    continue
                key, ext = _split_name(m.name)
                if not ext or not key:
                    continue
                if ext in samples.setdefault(key, {}):
                    raise DataError(f"{shard.name}: two members named {key}.{ext}")
                samples[key][ext] = m
                if ext == "txt":
                    texts[key] = _read_small(tar, m)
                elif ext == "json":
                    metas[key] = _read_small(tar, m)
            end = tar.offset
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{shard.name} is not a readable tar archive or is damaged ({exc})") from None
    if count == 0:
        raise DataError(f"{shard.name} is not a tar archive or holds no members")
    if end > size or size - end < 1024:  # no end-of-archive blocks: cut short
        raise DataError(f"{shard.name} is truncated after member {last!r}")
    if end < size:  # tarfile stops quietly at a bad header: what follows must be the zero end blocks
        with open(shard, "rb") as f:
            f.seek(end)
            tail = f.read(min(size - end, 1 << 20) + 1)
        if len(tail) > (1 << 20) or tail.strip(b"\0"):
            raise DataError(f"{shard.name} is damaged: unreadable data after member {last!r} (byte {end:,})")

    out = ReadResult()
    for key, members in samples.items():
        sid = f"{shard.stem}/{key}"
        image = next((members[e] for e in IMAGE_EXTS if e in members), None)
        if image is None:
            out.skipped.append(Skipped(sid, "missing_image", f"{shard.name}: no {'/'.join(IMAGE_EXTS)} member"))
            continue
        if image.size > MAX_PIXEL_BYTES:
            out.skipped.append(Skipped(sid, "too_large", f"{image.name}: {image.size:,} bytes"))
            continue
        raw = texts.get(key)
        if "txt" in members and raw is None:
            out.skipped.append(Skipped(sid, "bad_report", f"{key}.txt larger than {MAX_TEXT_BYTES:,} bytes"))
            continue
        try:
            report = clean_text(raw.decode("utf-8"), deid="keep") if raw else ""
        except UnicodeDecodeError:
            out.skipped.append(Skipped(sid, "bad_report", f"{key}.txt is not UTF-8"))
            continue
        if not report:
            out.skipped.append(Skipped(sid, "empty_report", f"{shard.name}: no or empty {key}.txt"))
            continue
        meta = _meta(metas.get(key)) if "json" in members else {}
        if meta is None:
            out.skipped.append(Skipped(sid, "bad_metadata", f"{key}.json is not a JSON object (at most 1 MiB)"))
            continue
        labels = {}
        for k, v in (meta.get("labels") or {}).items() if isinstance(meta.get("labels"), Mapping) else ():
            labels[str(k)] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
        text = {
            k: str(meta[k]) if isinstance(meta.get(k), (str, int)) else None
            for k in ("split", "patient_id", "study_id", "view", "finding")
        }
        out.records.append(
            Record(
                id=sid,
                image_path=member_ref(shard, image.offset_data, image.size, image.name),
                report=report,
                split=text["split"],
                patient_id=text["patient_id"],
                study_id=text["study_id"],
                view=text["view"],
                labels=labels,
                finding=text["finding"],
            )
        )
    return out


def read_webdataset(spec: str | os.PathLike) -> ReadResult:
    """Every sample of every shard ``spec`` names, shard by shard in order."""
    out = ReadResult()
    for shard in expand_shards(spec):
        out.extend(read_shard(shard))
    if not out.records:
        raise DataError(f"no usable samples in the webdataset shards {spec} ({out.summary()})")
    return out
