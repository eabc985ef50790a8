"""Loading and checking a model bundle (torch-free).

A bundle is a folder or a .zip (see :mod:`core_model.export.bundle` for the layout). Loading
checks, in order: the archive itself (no absolute paths, no ``..``, no links, no oversized
members), ``manifest.json`` (format and version), that every listed file exists, and the SHA-256
of every listed file. Any failure raises a :class:`BundleError` subclass with a specific message;
nothing is ever unpickled (``numpy.load(allow_pickle=False)``, JSON, ONNX).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

from core_model.errors import UserError
from core_model.fileio import sha256_file as _sha256

BUNDLE_FORMAT = "cxr-adaptor-bundle"
SUPPORTED_VERSIONS = (1,)
REQUIRED = ("config.json", "model_card.json", "image.onnx", "text.onnx", "tokenizer/tokenizer.json",
            "reports/reports.jsonl", "reports/embeddings.npy")
MAX_MEMBER_BYTES = 4 << 30


class BundleError(UserError):
    """The model bundle cannot be used; the message says why."""


class BundleFormatError(BundleError):
    pass


class BundleIntegrityError(BundleError):
    pass


class UnsafeArchiveError(BundleError):
    pass


def _check_member(info: zipfile.ZipInfo) -> str:
    name = info.filename
    mode = (info.external_attr >> 16) & 0xFFFF
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"bundle archive holds a link ({name!r}); refusing it")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"bundle archive holds an absolute path ({name!r}); refusing it")
    parts = Path(name.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"bundle archive holds a path that leaves its folder ({name!r}); refusing it")
    if info.file_size > MAX_MEMBER_BYTES:
        raise UnsafeArchiveError(f"bundle archive member {name!r} is implausibly large ({info.file_size} bytes)")
    return name


def extract_zip(path: Path, cache_root: Path | None = None) -> Path:
    """Safely unpack a bundle .zip into a cache folder named by the archive's hash."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise BundleFormatError(f"{path.name} is not a readable zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            _check_member(info)
        digest = _sha256(path)[:20]
        if cache_root is None:
            from platformdirs import user_cache_dir

            cache_root = Path(user_cache_dir("cxr-adaptor")) / "bundles"
        target = cache_root / digest
        if (target / "manifest.json").exists():
            return target
        cache_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_root))
        try:
            for info in infos:
                if info.is_dir():
                    continue
                dest = tmp / info.filename
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def verify_folder(folder: Path) -> dict:
    """Check manifest, presence and hashes; return the manifest."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise BundleFormatError(f"{folder} is not a model bundle (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"{folder}: manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleFormatError(f"{folder}: not a CXR Adaptor bundle (format {manifest.get('format')!r})"
                                if isinstance(manifest, dict) else f"{folder}: manifest.json is not an object")
    version = manifest.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise BundleFormatError(f"{folder}: bundle format version {version!r} is not supported by this app "
                                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))}); update the app or re-export")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BundleFormatError(f"{folder}: manifest.json lists no files")
    for req in REQUIRED:
        if req not in files:
            raise BundleFormatError(f"{folder}: the manifest does not list the required file {req}")
    root = folder.resolve()
    for rel, digest in files.items():
        p = (folder / rel)
        if ".." in Path(rel).parts or not p.resolve().is_relative_to(root):
            raise UnsafeArchiveError(f"{folder}: manifest names a file outside the bundle ({rel!r})")
        if p.is_symlink():
            raise UnsafeArchiveError(f"{folder}: {rel} is a link; refusing it")
        if not p.is_file():
            raise BundleIntegrityError(f"{folder}: {rel} is missing")
        if _sha256(p) != digest:
            raise BundleIntegrityError(f"{folder}: {rel} does not match its SHA-256 in manifest.json "
                                       f"(altered or damaged); re-export or re-download the bundle")
    return manifest


def open_bundle_folder(path: str | os.PathLike, cache_root: Path | None = None) -> tuple[Path, dict]:
    p = Path(path).expanduser()
    if not p.exists():
        raise BundleError(f"model bundle {p} does not exist")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise BundleFormatError(f"{p.name} is neither a bundle folder nor a .zip bundle")
        p = extract_zip(p, cache_root)
    return p, verify_folder(p)


class SessionSet:
    """One onnxruntime session per graph, created on first use (thread-safe)."""

    def __init__(self, folder: Path, graphs: dict[str, str | None], threads: int = 0):
        self.folder = folder
        self.graphs = graphs
        self.threads = threads
        self._sessions: dict = {}
        self._lock = threading.Lock()

    def get(self, name: str):
        s = self._sessions.get(name)
        if s is not None:
            return s
        with self._lock:
            if name not in self._sessions:
                import onnxruntime as ort

                file = self.graphs.get(name)
                if not file:
                    raise BundleError(f"this bundle has no {name} graph")
                opts = ort.SessionOptions()
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                if self.threads:
                    opts.intra_op_num_threads = self.threads
                try:
                    self._sessions[name] = ort.InferenceSession(str(self.folder / file), sess_options=opts,
                                                                providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own exception types
                    raise BundleFormatError(f"the {name} graph ({file}) cannot be loaded: {exc}") from exc
            return self._sessions[name]


def load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise BundleFormatError(f"{path.name} is not a plain numeric array ({exc})") from exc
