"""Import DICOM files, folders, DICOMDIRs, zip archives and PNG/JPEG images into a library.

Design
------
* **Header-only.** DICOM files are read with ``stop_before_pixels``; the pixel data element is
  located and checked from its own header and the file size
  (:func:`core_model.imaging.dicom.scan_header` / ``check_header``). Header-only checks: not
  DICOM, no pixel data, truncated (header or pixel data shorter than announced, missing
  sequence delimiter), pixel data length inconsistent with Rows x Columns x Bits Allocated x
  Samples x Frames, badly encapsulated fragments, fewer fragments than frames, missing
  decoder for the transfer syntax. Only a full decode finds a corrupt compressed stream
  (``verify=True`` / ``--verify`` decodes every new file; reason ``decode_failed``).
* **De-duplication** by SOP Instance UID, against the database and within the run; PNG/JPEG
  images get UIDs derived from a SHA-256 of their bytes, so re-importing them adds nothing.
* **Copy or link.** ``copy`` writes ``managed/<2 hex>/<40 hex>.dcm`` (a SHA-256 of the UID:
  names never come from the files) atomically (staging file, then linked into place only if
  the name is free: a managed copy is never overwritten; one sync per batch) before the rows
  that point at them are committed; ``link`` records the absolute path. Zip members are always
  copied.
* **Untrusted input** (docs/SECURITY.md): the one sniffer (:mod:`core_model.imaging.sniff`)
  decides what a file is; size budgets (:mod:`core_model.imaging.limits`) are checked from
  the headers before anything is decoded; zip entries are streamed under an
  :class:`ArchiveBudget` (entry, archive total, compression ratio), encrypted entries and
  repeated entry names get their own answer.
* **Parallel header reads.** From ``PARALLEL_MIN_FILES`` plain files on, worker processes (one
  per core, started by a fork server, never by forking this process) run the sniffer, the
  header read, every header check and the field extraction (:func:`_header_job`); this process
  keeps de-duplication, copies, sidecar reports and the database, in the files' order, so the
  result is the same as with ``workers=1``. A pool that fails hands the rest back to this
  process. As with any multiprocessing, a script that imports from its top level needs the
  ``if __name__ == "__main__":`` guard; the frozen installer reads in this process.
  Issue 15: the worker's part lives in :mod:`app.library.header_job` (no SQLAlchemy, so the
  fork server, started in the background as soon as a folder is imported, loads only the
  imaging layer); headers are read by the fast header walk
  (:func:`~core_model.imaging.dicom.quick_scan`: one open, one read, only the elements the
  library needs converted; what it does not take exactly, pydicom reads) in chunks of
  ``HEADER_CHUNK`` files; the file size comes back with the fields (no second stat) and
  sidecar reports are looked up in the folder listings of the walk (no stat per image).
* **Batched commits** (every ``batch_size`` files or ``commit_interval`` seconds) in
  ``BEGIN IMMEDIATE`` transactions; the run row is updated in the same transaction, so after a
  ``kill -9`` the database holds whole batches only and running the import again completes it.
* **Progress** callbacks at most every ``progress_interval`` seconds (default 0.1: <= 10 per
  second) plus one final call; **cancel** with a ``threading.Event`` or any callable.
* **Rejections** are recorded per run with a reason code and a one-line message; one bad file
  never stops the rest. Logs name files and UIDs, never patient names or IDs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import sys
import time
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from app.library.db import Library, LibraryError, translate_error
from app.library.header_job import (  # noqa: F401 (re-exported: the importer's fields and header read)
    FIELD_KEYWORDS,
    _dicom_fields,
    _header_job,
    _name_search,
    _read_dicom_header,
    _s,
    _uid_from,
    patient_key,
)
from app.library.models import ImportRun, Instance, Patient, RejectedFile, Report, Series, Study, utcnow
from app.library.storage import UnsafePathError, managed_relpath, run_staging_dir, store_new
from core_model.errors import UserError
from core_model.fileio import atomic_write
from core_model.imaging.dicom import MEDIA_DIRECTORY_SOP_CLASS, QUICK_READ, decode_pixels, read_dataset, scan_header
from core_model.imaging.errors import ImageReadError
from core_model.imaging.limits import MAX_PIXEL_BYTES
from core_model.imaging.sniff import JPEG_MAGIC, PNG_MAGIC, kind_of_bytes, refusal  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
IGNORED_NAMES = {"thumbs.db", "desktop.ini", "dicomdir", "lockfile", "version"}
REPORT_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class ArchiveBudget:
    """What one zip archive may make the importer write, checked from the central directory
    *and* while each member is streamed out (declared sizes can lie). docs/SECURITY.md."""

    member_bytes: int = MAX_PIXEL_BYTES + (64 << 20)  # no importable image is larger
    total_bytes: int = 16 << 30  # all members of one archive together
    ratio: float = 200.0  # inflated / compressed size (DICOMs compress 2-30x; bombs 1000x)
    ratio_free_bytes: int = 16 << 20  # members up to this size may have any ratio
    archive_ratio_free_bytes: int = 64 << 20  # ... and archives up to this much in total
    members: int = 200_000


ARCHIVE_BUDGET = ArchiveBudget()
MAX_MEMBER_BYTES = ARCHIVE_BUDGET.member_bytes

REASONS = {
    "not_dicom": "not a DICOM, PNG or JPEG file",
    "no_pixel_data": "a DICOM object without an image (e.g. a structured report)",
    "truncated": "the file is shorter than its content",
    "pixel_data_mismatch": "pixel data inconsistent with the image header",
    "missing_decoder": "no decoder installed for the transfer syntax",
    "decode_failed": "the compressed pixel data could not be decoded",
    "unsupported": "an image type the app does not display",
    "missing_uid": "no SOP Instance UID",
    "missing": "the path does not exist",
    "unreadable": "the file could not be read (permissions, I/O error)",
    "unsafe_archive_member": "a zip entry with an absolute path, '..' or a symlink",
    "bad_archive": "the zip archive is corrupt",
    "encrypted": "an encrypted (password-protected) zip entry",
    "archive_budget": "a zip entry or archive that inflates beyond the import budget (zip bomb)",
    "too_large": "an image that declares more pixels than the app decodes (decompression bomb)",
    "too_deep": "a DICOM header with absurdly deep nested sequences",
    "bad_header": "a DICOM header element that cannot be parsed (corrupt file)",
    "invalid_values": "a NaN or zero rescale slope, or pixel values that are not finite numbers",
    "unsafe_path": "a file name the library refused to write (outside its folder)",
    "copy_failed": "the file could not be copied into the library",
    "internal_error": "an unexpected error in the importer (a bug; the file was skipped)",
}

_MIMIC_STUDY = re.compile(r"^s(\d+)$")
_MIMIC_PATIENT = re.compile(r"^p(\d+)$")
_NIH_NAME = re.compile(r"^(\d{8})_(\d{3})$")


@dataclass
class ImportProgress:
    done: int
    total: int
    imported: int
    duplicates: int
    rejected: int
    current: str
    elapsed: float


@dataclass
class Rejection:
    path: str
    reason: str
    message: str


@dataclass
class ImportSummary:
    run_id: int
    mode: str
    files_seen: int = 0
    imported: int = 0
    duplicates: int = 0
    ignored: int = 0
    reports: int = 0
    cancelled: bool = False
    elapsed_s: float = 0.0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def files_per_s(self) -> float:
        return self.files_seen / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rejected"] = [asdict(r) for r in self.rejected]
        d["files_per_s"] = round(self.files_per_s, 1)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


@dataclass
class _Candidate:
    display: str  # shown to the user and stored with rejections
    path: Path | None  # a file on disk (None for zip members until extracted)
    archive: Path | None = None
    member: str | None = None
    sidecars: tuple[tuple[str, bool], ...] = ()  # zip: (report member name, study-level)
    info: zipfile.ZipInfo | None = None  # zip: this entry (names may repeat inside one archive)
    abspath: str = ""  # a file on disk: its absolute path (computed once, at enumeration)


@dataclass
class _Pending:
    patient: dict
    study: dict
    series: dict
    instance: dict
    reports: list[dict]


def _cancel_fn(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a threading.Event or a callable")


PARALLEL_MIN_FILES = 200  # below this, starting worker processes costs more than it saves
MAX_WORKERS = 8
HEADER_CHUNK = 64  # files per task sent to a worker (fewer, larger messages between processes)


def _default_workers(n_files: int) -> int:
    if n_files < PARALLEL_MIN_FILES or getattr(sys, "frozen", False):  # frozen: no freeze_support hook
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


def _pool_context() -> Any:
    """The multiprocessing context of the header workers: a fork server (or spawn where there
    is none): never fork a process that may run Qt or database threads. The fork server starts
    with the header job's module loaded, so each worker starts with it."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["app.library.header_job"])
        return ctx
    return multiprocessing.get_context("spawn")


def _warm_header_workers() -> None:
    """Start the fork server in the background (it loads the imaging layer: about half a
    second), so that it is ready when the header workers are wanted. Once per process."""
    if getattr(sys, "frozen", False) or _default_workers(PARALLEL_MIN_FILES) <= 1:
        return
    ctx = _pool_context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    def start() -> None:
        try:
            forkserver.ensure_running()
        except Exception as exc:  # the pool reports it (and falls back) when it is needed
            log.debug("could not start the header workers' fork server: %s", type(exc).__name__)

    import threading

    threading.Thread(target=start, name="import-forkserver-start", daemon=True).start()


class _WorkerBug(Exception):
    """An unexpected exception in a worker process, by its type name."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class Importer:
    """One import run. ``Importer(lib, mode="copy").run([paths])`` -> :class:`ImportSummary`."""

    def __init__(
        self,
        library: Library,
        *,
        mode: str = "copy",
        batch_size: int = 250,
        commit_interval: float = 2.0,
        progress: Callable[[ImportProgress], None] | None = None,
        progress_interval: float = 0.1,
        cancel=None,
        verify: bool = False,
        fsync: bool = True,
        archive_budget: ArchiveBudget = ARCHIVE_BUDGET,
        workers: int | None = None,
    ):
        """``workers``: processes reading DICOM headers in parallel (None: one per core for
        imports of at least PARALLEL_MIN_FILES plain files, else none; 1: all in this process)."""
        if mode not in ("copy", "link"):
            raise ValueError("mode must be 'copy' or 'link'")
        self.lib = library
        self.mode = mode
        self.batch_size = max(1, int(batch_size))
        self.commit_interval = commit_interval
        self.progress = progress
        self.progress_interval = progress_interval
        self.cancelled = _cancel_fn(cancel)
        self.verify = verify
        self.fsync = fsync
        self.archive_budget = archive_budget
        self.workers = workers
        self._archive_written: dict[Path, int] = {}
        self._pending: list[_Pending] = []
        self._rejections: list[Rejection] = []
        self._unsaved_rejections: list[Rejection] = []
        self._known: set[str] = set()
        self._patients: dict[str, int] = {}
        self._studies: dict[str, int] = {}
        self._series: dict[str, int] = {}
        self._study_reports: set[tuple[str, str]] = set()
        self._unsynced: list[Path] = []
        self._zips: dict[Path, zipfile.ZipFile] = {}
        self._txt_listed: dict[str, set[str]] = {}  # walked folder -> its .txt names, lower case

    # -- public ----------------------------------------------------------------------------
    def run(self, paths: Iterable[str | os.PathLike]) -> ImportSummary:
        """Import ``paths``; returns the summary. Raises :class:`LibraryError` (one line) when the
        database fails under the run: what was committed before stays committed."""
        try:
            return self._run([Path(p).expanduser() for p in paths])
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise LibraryError(f"import stopped: the library database failed ({detail})") from exc

    def _run(self, paths: list[Path]) -> ImportSummary:
        started = time.monotonic()
        if self.workers is None or self.workers > 1:  # a folder may hold many files: start the
            if any(p.is_dir() for p in paths):  # workers' fork server while the folder is listed
                _warm_header_workers()
        run_id = self._start_run(paths)
        summary = ImportSummary(run_id=run_id, mode=self.mode)
        self.summary = summary
        self._staging = run_staging_dir(self.lib.staging_dir)
        status = "failed"
        headers = None
        try:
            with self.lib.session() as s:
                self._known = set(s.scalars(select(Instance.sop_instance_uid)))
            candidates = self._collect(paths, summary)
            total = len(candidates) + len(self._unsaved_rejections)
            summary.files_seen = total
            last_progress = last_commit = time.monotonic()
            self._emit(0, total, "", started)
            done = len(self._unsaved_rejections)
            headers = self._headers(candidates)
            for cand, header in headers:
                if self.cancelled():
                    summary.cancelled = True
                    break
                try:
                    self._process(cand, summary, header)
                except LibraryError:  # the library itself failed (disk full, read-only): stop the run
                    raise
                except Exception as exc:  # a bug must not stop the run: record it and go on
                    kind = exc.kind if isinstance(exc, _WorkerBug) else type(exc).__name__
                    log.warning("unexpected %s while importing %s", kind, cand.display)
                    self._reject(
                        cand.display,
                        "internal_error",
                        f"{Path(cand.display).name}: unexpected {kind} while importing; please report this file",
                    )
                done += 1
                now = time.monotonic()
                if (
                    len(self._pending) + len(self._unsaved_rejections) >= self.batch_size
                    or now - last_commit >= self.commit_interval
                ):
                    self._flush(summary)
                    last_commit = now
                if self.progress is not None and now - last_progress >= self.progress_interval:
                    self._emit(done, total, cand.display, started)
                    last_progress = now
            headers.close()  # stops the worker processes (at once when cancelled)
            headers = None
            summary.files_seen = done
            self._flush(summary)
            status = "cancelled" if summary.cancelled else "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if headers is not None:  # the run stopped on an error: stop the worker processes too
                headers.close()
            for zf in self._zips.values():
                zf.close()
            self._zips.clear()
            summary.elapsed_s = time.monotonic() - started
            self._finish_run(run_id, status, summary)
            shutil.rmtree(self._staging, ignore_errors=True)
        self._emit(summary.files_seen, summary.files_seen, "", started, final=True)
        log.info(
            "import run %d %s: %d imported, %d duplicates, %d rejected, %d ignored in %.2f s",
            run_id,
            status,
            summary.imported,
            summary.duplicates,
            len(summary.rejected),
            summary.ignored,
            summary.elapsed_s,
        )
        return summary

    # -- run bookkeeping ---------------------------------------------------------------------
    def _start_run(self, paths: list[Path]) -> int:
        with self.lib.write_connection() as conn:
            # runs left "running" by a process that no longer exists were killed
            from app.library.storage import _pid_alive

            host = socket.gethostname()
            for rid, pid, rhost in conn.execute(
                select(ImportRun.id, ImportRun.pid, ImportRun.host).where(ImportRun.status == "running")
            ):
                if rhost == host and not _pid_alive(pid):
                    conn.execute(
                        update(ImportRun).where(ImportRun.id == rid).values(status="interrupted", finished_at=utcnow())
                    )
            result = conn.execute(
                insert(ImportRun).values(
                    mode=self.mode,
                    sources=json.dumps([str(p) for p in paths]),
                    pid=os.getpid(),
                    host=host,
                    status="running",
                    files_seen=0,
                    imported=0,
                    duplicates=0,
                    rejected=0,
                    ignored=0,
                )
            )
            key = result.inserted_primary_key
            assert key is not None  # a single-row insert
            return int(key[0])

    def _finish_run(self, run_id: int, status: str, summary: ImportSummary) -> None:
        try:
            with self.lib.write_connection() as conn:
                conn.execute(
                    update(ImportRun)
                    .where(ImportRun.id == run_id)
                    .values(
                        status=status,
                        finished_at=utcnow(),
                        files_seen=summary.files_seen,
                        imported=summary.imported,
                        duplicates=summary.duplicates,
                        rejected=len(summary.rejected),
                        ignored=summary.ignored,
                    )
                )
        except Exception as exc:  # the run itself failed on the database: nothing more to record
            # the error that stopped the run reaches the user; this one only the debug log
            log.debug("could not record the end of import run %d: %s", run_id, str(exc).splitlines()[0], exc_info=True)

    def _emit(self, done: int, total: int, current: str, started: float, final: bool = False) -> None:
        if self.progress is None:
            return
        s = self.summary
        self.progress(
            ImportProgress(
                done=done,
                total=total,
                imported=s.imported + self._pending_count(),
                duplicates=s.duplicates,
                rejected=len(s.rejected),
                current=current,
                elapsed=time.monotonic() - started,
            )
        )

    def _pending_count(self) -> int:
        return len(self._pending)

    def _reject(self, display: str, reason: str, message: str) -> None:
        rej = Rejection(display, reason, message)
        self.summary.rejected.append(rej)
        self._unsaved_rejections.append(rej)
        log.debug("rejected %s: %s", display, reason)

    # -- enumeration -------------------------------------------------------------------------
    def _collect(self, paths: list[Path], summary: ImportSummary) -> list[_Candidate]:
        out: list[_Candidate] = []
        seen: set[str] = set()
        data_dir = self.lib.data_dir.resolve()

        def add(path: Path, key: str = "") -> None:
            key = key or os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                out.append(_Candidate(display=str(path), path=path, abspath=key))

        for root in paths:
            if not root.exists():
                self._reject(str(root), "missing", f"{root}: no such file or folder")
                continue
            if root.is_dir():
                for dirpath, dirnames, filenames in os.walk(root):
                    here = Path(dirpath)
                    if here.resolve() == data_dir:
                        dirnames[:] = []
                        continue
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    absolute = os.path.abspath(dirpath)
                    # the reports listed here: sidecar look-ups need no stat for the files without one
                    self._txt_listed[absolute] = {n.lower() for n in filenames if n.lower().endswith(".txt")}
                    for name in sorted(filenames):
                        path = here / name
                        kind = self._name_kind(name)
                        if kind == "ignore":
                            summary.ignored += 1
                        elif kind == "zip":
                            out.extend(self._zip_members(path))
                        else:
                            add(path, os.path.join(absolute, name))
            elif root.name.upper() == "DICOMDIR" or self._is_dicomdir(root):
                for path in self._dicomdir_files(root):
                    add(path)
            elif self._name_kind(root.name) == "zip" or self._has_magic(root, ZIP_MAGIC):
                out.extend(self._zip_members(root))
            else:
                add(root)
        return out

    @staticmethod
    def _name_kind(name: str) -> str:
        lower = name.lower()
        if lower.startswith(".") or lower in IGNORED_NAMES or lower.endswith((".txt", ".part")):
            return "ignore"  # hidden files, OS clutter, DICOMDIR inside a walked folder, reports
        if lower.endswith(".zip"):
            return "zip"
        return "file"

    @staticmethod
    def _has_magic(path: Path, magic: bytes) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(len(magic)) == magic
        except OSError:
            return False

    @staticmethod
    def _is_dicomdir(path: Path) -> bool:
        try:  # a file given by itself: read its header only when it may name the DICOMDIR class
            with open(path, "rb") as f:
                if MEDIA_DIRECTORY_SOP_CLASS.encode() not in f.read(QUICK_READ):
                    return False
        except OSError:
            return False
        try:
            scan = scan_header(path)
        except ImageReadError:
            return False
        sop = _s(scan.dataset, "SOPClassUID") or _s(getattr(scan.dataset, "file_meta", {}), "MediaStorageSOPClassUID")
        return sop == MEDIA_DIRECTORY_SOP_CLASS

    def _dicomdir_files(self, dicomdir: Path) -> list[Path]:
        try:  # the imaging layer's reader: budgets, bounded nesting, every element parsed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = read_dataset(dicomdir)
        except ImageReadError as exc:
            self._reject(str(dicomdir), exc.reason, f"unreadable DICOMDIR: {exc}")
            return []
        except Exception as exc:
            self._reject(str(dicomdir), "not_dicom", f"{dicomdir.name}: unreadable DICOMDIR ({type(exc).__name__})")
            return []
        base = dicomdir.parent
        files: list[Path] = []
        for record in ds.get("DirectoryRecordSequence", []) or []:
            fid = record.get("ReferencedFileID")
            if not fid:
                continue
            parts = [fid] if isinstance(fid, str) else [str(p) for p in fid]
            if any(p in ("..", "") or "/" in p or "\\" in p for p in parts):
                self._reject(
                    "/".join(parts),
                    "unsafe_archive_member",
                    f"{dicomdir.name}: a referenced file leaves the DICOMDIR's folder",
                )
                continue
            path = _resolve_case_insensitive(base, parts)
            if path is None:
                self._reject(
                    str(base.joinpath(*parts)),
                    "missing",
                    f"{'/'.join(parts)}: listed in {dicomdir.name} but not present",
                )
                continue
            files.append(path)
        return files

    def _zip_members(self, archive: Path) -> list[_Candidate]:
        try:
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            self._reject(
                str(archive), "bad_archive", f"{archive.name}: not a readable zip archive ({type(exc).__name__})"
            )
            return []
        names = {i.filename for i in infos}
        budget = self.archive_budget
        if len(infos) > budget.members:
            self._reject(
                str(archive),
                "archive_budget",
                f"{archive.name}: {len(infos):,} entries, more than the {budget.members:,} an archive may hold",
            )
            return []
        out = []
        occurrences: dict[str, int] = {}
        for info in infos:
            occurrences[info.filename] = seen = occurrences.get(info.filename, 0) + 1
            display = f"{archive}!{info.filename}" + (f" (entry {seen} of that name)" if seen > 1 else "")
            problem = _unsafe_member(info)
            if problem:
                self._reject(
                    display,
                    "unsafe_archive_member",
                    f"{archive.name}: entry {info.filename!r} {problem}; not extracted",
                )
                continue
            if info.is_dir():
                continue
            leaf = PurePosixPath(info.filename).name
            kind = self._name_kind(leaf)
            if kind == "ignore" or info.filename.startswith("__MACOSX/"):
                self.summary.ignored += 1
                continue
            if kind == "zip":
                self._reject(display, "unsupported", f"{archive.name}: nested archive {leaf}; extract it first")
                continue
            if info.flag_bits & 0x1:
                self._reject(
                    display,
                    "encrypted",
                    f"{archive.name}: entry {leaf} is encrypted (password-protected); decrypt the archive first",
                )
                continue
            problem = _budget_problem(info, budget)
            if problem:
                self._reject(display, "archive_budget", f"{archive.name}: entry {leaf} {problem}; not extracted")
                continue
            member = PurePosixPath(info.filename)
            sidecars: tuple[tuple[str, bool], ...] = ()
            same_stem = str(member.with_suffix(".txt"))
            if same_stem in names:
                sidecars += ((same_stem, False),)
            if _MIMIC_STUDY.match(member.parent.name):
                study_txt = str(member.parent.parent / f"{member.parent.name}.txt")
                if study_txt in names:
                    sidecars += ((study_txt, True),)
            out.append(
                _Candidate(
                    display=display, path=None, archive=archive, member=info.filename, sidecars=sidecars, info=info
                )
            )
        return out

    # -- one file ----------------------------------------------------------------------------
    def _headers(self, candidates: list[_Candidate]) -> Generator[tuple[_Candidate, tuple | None], None, None]:
        """(candidate, header) in order. Plain files' headers are read and checked by
        :func:`_header_job` in worker processes (the rest of the import stays here: duplicates,
        copies, the database); archive members, and everything when there are few files, get
        None (read in this process). A pool that breaks hands the rest back to this process."""
        plain = [str(c.path) for c in candidates if c.archive is None]
        workers = self.workers if self.workers is not None else _default_workers(len(plain))
        if workers <= 1 or not plain:
            for cand in candidates:
                yield cand, None
            return
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
        try:
            results: Iterator[tuple] | None = pool.map(_header_job, plain, chunksize=HEADER_CHUNK)
            for cand in candidates:
                header = None
                if cand.archive is None and results is not None:
                    try:
                        header = next(results)
                    except Exception as exc:  # BrokenProcessPool and the like: read here from now on
                        log.warning("header workers stopped (%s); reading headers in this process", type(exc).__name__)
                        results = None
                yield cand, header
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _process(self, cand: _Candidate, summary: ImportSummary, header: tuple | None = None) -> None:
        if header is not None:  # read by a worker process: a plain file
            assert cand.path is not None
            if header[0] == "internal":
                raise _WorkerBug(header[1])
            if header[0] == "kind":
                self._dispatch(cand, cand.path, header[1], summary)
            else:
                self._dicom(cand, cand.path, summary, header)
            return
        extracted: Path | None = None
        try:
            if cand.archive is not None:
                extracted = self._extract(cand)
                if extracted is None:
                    return
                path = extracted
            else:
                assert cand.path is not None  # a candidate is a file or an archive member
                path = cand.path
            try:
                with open(path, "rb") as f:
                    head = f.read(132)
            except OSError as exc:
                self._reject(
                    cand.display, "unreadable", f"{path.name}: cannot be read ({exc.strerror or type(exc).__name__})"
                )
                return
            kind = kind_of_bytes(head)  # the one sniffer, as render / predict / the viewer use
            self._dispatch(cand, path, kind, summary)
        finally:
            if extracted is not None and extracted.exists():
                extracted.unlink()

    def _dispatch(self, cand: _Candidate, path: Path, kind: str, summary: ImportSummary) -> None:
        if kind in ("png", "jpeg"):
            self._image(cand, path, kind, summary)
        elif kind == "dicom":
            self._dicom(cand, path, summary)
        else:
            err = refusal(PurePosixPath(cand.member).name if cand.member else path.name, kind)
            self._reject(cand.display, err.reason, str(err))

    def _open_zip(self, archive: Path) -> zipfile.ZipFile:
        """One open ZipFile per archive for the whole run (re-reading the central directory for
        every member would make large archives quadratic)."""
        zf = self._zips.get(archive)
        if zf is None:
            zf = self._zips[archive] = zipfile.ZipFile(archive)
        return zf

    def _archive_size(self, archive: Path) -> int:
        try:
            return archive.stat().st_size
        except OSError:
            return 0

    def _extract(self, cand: _Candidate) -> Path | None:
        """Stream one member to the staging folder under the archive budget; on any refusal the
        partial file is removed (atomic_write) before the rejection is recorded."""
        archive, member = cand.archive, cand.member
        assert archive is not None and member is not None  # only archive members are extracted
        tmp = self._staging / f"member-{hashlib.sha1(cand.display.encode()).hexdigest()[:16]}"
        budget = self.archive_budget
        written = self._archive_written.get(archive, 0)
        reader = None
        try:
            zf = self._open_zip(archive)
            info = cand.info if cand.info is not None else zf.getinfo(member)
            # the ratio holds for the archive as a whole too: many small members, each under the
            # per-member allowance, must not add up to a bomb
            archive_left = (
                max(budget.archive_ratio_free_bytes, int(budget.ratio * self._archive_size(archive))) - written
            )
            if archive_left <= 0 or budget.total_bytes - written <= 0:
                self._reject(
                    cand.display,
                    "archive_budget",
                    f"{archive.name}: entry {member} not extracted: the archive has already "
                    f"inflated to {_size(written)}, its budget (more than {budget.ratio:g} times its "
                    "size, or the total per archive: zip bomb)",
                )
                return None
            limit = min(info.file_size, budget.member_bytes, budget.total_bytes - written, archive_left)
            ratio_limit = max(budget.ratio_free_bytes, int(budget.ratio * max(info.compress_size, 1)))
            with zf.open(info) as src:
                reader = _LimitedReader(src, info.file_size, limit, ratio_limit, budget.ratio)
                atomic_write(tmp, reader, fsync=False, staging=self._staging, mkdir=True)
        except _TooLarge as exc:
            self._archive_written[archive] = written + (reader.read_bytes if reader else 0)
            reason = "bad_archive" if exc.args and exc.args[0] == "declared" else "archive_budget"
            self._reject(
                cand.display,
                reason,
                f"{archive.name}: entry {member} {exc.args[1]}; "
                f"stopped after {_size(reader.read_bytes if reader else 0)} and removed",
            )
            return None
        except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required for extraction"
            kind = "encrypted" if "encrypt" in str(exc).lower() or "password" in str(exc).lower() else "bad_archive"
            self._reject(
                cand.display,
                kind,
                f"{archive.name}: entry {member} cannot be extracted "
                f"({'encrypted' if kind == 'encrypted' else type(exc).__name__})",
            )
            return None
        except (zipfile.BadZipFile, OSError, KeyError, ValueError, NotImplementedError, EOFError, zlib.error) as exc:
            detail = str(exc).splitlines()[0][:100] if str(exc) else ""
            self._reject(
                cand.display,
                "bad_archive",
                f"{archive.name}: entry {member} cannot be extracted "
                f"({type(exc).__name__}{': ' + detail if detail else ''})",
            )
            return None
        assert reader is not None  # set before the write that succeeded
        self._archive_written[archive] = written + reader.read_bytes
        return tmp

    def _dicom(self, cand: _Candidate, path: Path, summary: ImportSummary, header: tuple | None = None) -> None:
        """``header``: what :func:`_read_dicom_header` returned in a worker process (None: read here)."""
        if header is None:
            header = _read_dicom_header(path, self._dicom_fields, dedupe=self._known)
        if header[0] == "unreadable":
            self._reject(cand.display, "unreadable", f"{path.name}: cannot be read ({header[1]})")
            return
        if header[0] == "refused":
            _, reason, text = header
            name = PurePosixPath(cand.member).name if cand.member else path.name
            message = (
                f"{name}: not a DICOM, PNG or JPEG file" if reason == "not_dicom" else _with_display(text, path, cand)
            )
            self._reject(cand.display, reason, message)
            return
        if header[0] == "missing_uid":
            self._reject(cand.display, "missing_uid", f"{path.name}: the file has no SOP Instance UID")
            return
        _, sop, fields = header
        if sop in self._known:
            summary.duplicates += 1
            return
        if self.verify:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    decode_pixels(read_dataset(path), source=path.name)
            except ImageReadError as exc:
                self._reject(cand.display, exc.reason, _with_display(str(exc), path, cand))
                return
        location = self._place(cand, path, sop, ".dcm", fields["instance"].get("file_size"))
        if location is None:
            return
        file_path, storage, size = location
        fields["instance"].update(
            file_path=file_path,
            storage=storage,
            file_size=size,
            original_path=cand.display if cand.archive else (cand.abspath or os.path.abspath(path)),
        )
        reports = self._sidecar_reports(cand, path)
        self._known.add(sop)
        self._pending.append(_Pending(reports=reports, **fields))

    def _dicom_fields(self, ds, sop: str, scan) -> dict:
        return _dicom_fields(ds, sop, scan)

    def _image(self, cand: _Candidate, path: Path, fmt: str, summary: ImportSummary) -> None:
        import struct

        from PIL import Image, UnidentifiedImageError

        from core_model.imaging.preprocess import open_plain_image

        try:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            sop = "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))
            if sop in self._known:
                summary.duplicates += 1
                return
            with open_plain_image(path) as img:  # declared size checked against the budget first
                width, height, mode = img.width, img.height, img.mode
                if fmt == "png":
                    img.verify()  # CRC of every chunk: finds truncated / corrupt PNGs cheaply
            if self.verify or fmt == "jpeg":
                with open_plain_image(path) as img:
                    if fmt == "jpeg":  # decode at 1/8 scale: every entropy-coded byte, 1/64 of the memory
                        img.draft("L", (max(1, width // 8), max(1, height // 8)))
                    img.load()  # JPEG has no checksums: decoding is the only check
        except ImageReadError as exc:
            self._reject(cand.display, exc.reason, _with_display(str(exc), path, cand))
            return
        except (UnidentifiedImageError, SyntaxError, ValueError, struct.error) as exc:
            self._reject(
                cand.display, "not_dicom", f"{path.name}: not a readable {fmt.upper()} image ({type(exc).__name__})"
            )
            return
        except (OSError, EOFError) as exc:
            reason = "truncated" if "truncat" in str(exc).lower() or isinstance(exc, EOFError) else "decode_failed"
            self._reject(cand.display, reason, f"{path.name}: {fmt.upper()} image could not be read ({exc})")
            return
        except Image.DecompressionBombError:
            self._reject(cand.display, "too_large", f"{path.name}: the image declares too many pixels; refused")
            return
        source_name = PurePosixPath(cand.member).name if cand.member else path.name
        parent_names = PurePosixPath(cand.member).parent.parts if cand.member else path.parent.parts
        study_folder = parent_names[-1] if parent_names else ""
        patient_folder = parent_names[-2] if len(parent_names) > 1 else ""
        m_study, m_patient = _MIMIC_STUDY.match(study_folder), _MIMIC_PATIENT.match(patient_folder)
        nih = _NIH_NAME.match(Path(source_name).stem)
        if m_study and m_patient:  # MIMIC-CXR(-JPG): files/pXX/p<subject>/s<study>/<dicom_id>.jpg
            pid, study_key = m_patient.group(1), f"mimic:{m_patient.group(1)}:{m_study.group(1)}"
        elif nih:  # NIH ChestX-ray14: <patient>_<follow-up>.png
            pid, study_key = nih.group(1), f"nih:{nih.group(1)}_{nih.group(2)}"
        else:
            pid, study_key = "", f"image:{sop}"
        study_uid = _uid_from("study:" + study_key)
        fields = {
            "patient": dict(
                patient_key=patient_key(pid, "", "", ""),
                patient_id=pid,
                issuer="",
                name="",
                name_search="",
                birth_date="",
                sex="",
            ),
            "study": dict(study_uid=study_uid, study_date="", study_time="", description="", accession_number=""),
            "series": dict(
                series_uid=_uid_from("series:" + study_key),
                modality="",
                series_number=None,
                description=f"{fmt.upper()} images",
                body_part="",
            ),
            "instance": dict(
                sop_instance_uid=sop,
                sop_class_uid="",
                study_date="",
                instance_number=None,
                source_format=fmt,
                modality="",
                view_position="",
                photometric="MONOCHROME2" if mode in ("L", "I;16", "I", "1", "F") else "RGB",
                rows=height,
                columns=width,
                frames=1,
                pixel_spacing_row=None,
                pixel_spacing_col=None,
                pixel_spacing_kind=None,
                transfer_syntax_uid="",
                bits_allocated=16 if mode.startswith("I") else 8,
                bits_stored=16 if mode.startswith("I") else 8,
                pixel_representation=0,
                burned_in_annotation="",
            ),
        }
        suffix = ".png" if fmt == "png" else ".jpg"
        location = self._place(cand, path, sop, suffix)
        if location is None:
            return
        file_path, storage, size = location
        fields["instance"].update(
            file_path=file_path,
            storage=storage,
            file_size=size,
            original_path=cand.display if cand.archive else os.path.abspath(path),
        )
        self._known.add(sop)
        self._pending.append(_Pending(reports=self._sidecar_reports(cand, path), **fields))

    def _place(
        self, cand: _Candidate, path: Path, sop: str, suffix: str, size: int | None = None
    ) -> tuple[str, str, int] | None:
        """Copy (or move, for extracted zip members) into the managed folder, or link (``size``:
        the file's size where the header read measured it)."""
        if self.mode == "link" and cand.archive is None:
            try:
                return (
                    cand.abspath or os.path.abspath(path),
                    "linked",
                    size if size is not None else path.stat().st_size,
                )
            except OSError as exc:
                self._reject(cand.display, "unreadable", f"{path.name}: {exc.strerror or type(exc).__name__}")
                return None
        # The name comes from a hash of the UID, never the UID; store_new checks containment and
        # never replaces an existing managed copy (a different file there keeps its name).
        rel = managed_relpath(sop, suffix)
        staged: Path | None = None
        try:
            if cand.archive is not None:
                staged = path
            else:
                staged = self._staging / f"copy-{uuid.uuid4().hex}"
                with open(path, "rb") as src:
                    atomic_write(staged, src, fsync=False, staging=self._staging, mkdir=True)
            size = staged.stat().st_size
            rel = store_new(staged, self.lib.data_dir, rel)
            self._unsynced.append(self.lib.data_dir / rel)  # made durable once per batch, before its rows commit
        except UnsafePathError as exc:
            self._reject(cand.display, "unsafe_path", f"{Path(cand.display).name}: {exc}")
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):  # every next copy fails too
                error = translate_error(exc, self.lib.db_path)
                assert error is not None  # these errnos always translate
                raise error from exc
            self._reject(
                cand.display,
                "copy_failed",
                f"{path.name}: could not be copied into the library ({exc.strerror or type(exc).__name__})",
            )
            return None
        finally:
            if staged is not None and cand.archive is None and staged.exists():
                staged.unlink()
        return rel, "managed", size

    def _sidecar_reports(self, cand: _Candidate, path: Path) -> list[dict]:
        """``image.txt`` beside ``image.png`` (instance report), and the MIMIC-CXR layout's
        ``s<study>.txt`` beside the ``s<study>/`` folder (study report)."""
        found: list[tuple[str, str, bool]] = []  # (text, source path, study-level)
        if cand.archive is not None:
            try:
                zf = self._open_zip(cand.archive)
                for name, study_level in cand.sidecars:
                    info = zf.getinfo(name)
                    if info.file_size <= REPORT_MAX_BYTES:
                        text = zf.read(info).decode("utf-8", "replace")
                        found.append((text, f"{cand.archive}!{name}", study_level))
            except (zipfile.BadZipFile, OSError, KeyError, zlib.error):
                pass
        else:
            same_stem = path.with_suffix(".txt")
            if self._may_be_file(same_stem, cand.abspath) and same_stem.is_file():
                found.append((_read_text(same_stem), os.path.abspath(same_stem), False))
            if _MIMIC_STUDY.match(path.parent.name):
                study_txt = path.parent.parent / f"{path.parent.name}.txt"
                folder = os.path.dirname(os.path.dirname(cand.abspath)) if cand.abspath else ""
                if self._may_be_file(study_txt, os.path.join(folder, study_txt.name) if folder else "") and (
                    study_txt.is_file()
                ):
                    found.append((_read_text(study_txt), os.path.abspath(study_txt), True))
        return [
            dict(text=t.strip(), source="sidecar_txt", source_path=src, study_level=study_level)
            for t, src, study_level in found
            if t and t.strip()
        ]

    def _may_be_file(self, path: Path, absolute: str) -> bool:
        """False when ``path`` (a report; ``absolute``: where a candidate's folder puts it) is
        not in the listing of a walked folder, so the stat can be skipped; True: stat it."""
        listed = self._txt_listed.get(os.path.dirname(absolute)) if absolute else None
        return listed is None or path.name.lower() in listed

    # -- database ----------------------------------------------------------------------------
    def _flush(self, summary: ImportSummary) -> None:
        if not self._pending and not self._unsaved_rejections:
            return
        pending, rejections = self._pending, self._unsaved_rejections
        if self._unsynced and self.fsync:
            _make_durable(self._unsynced)
        self._unsynced = []
        with self.lib.write_connection() as conn:
            self._resolve(
                conn, Patient, "patient_key", {p.patient["patient_key"]: p.patient for p in pending}, self._patients
            )
            self._resolve(
                conn,
                Study,
                "study_uid",
                {
                    p.study["study_uid"]: dict(p.study, patient_pk=self._patients[p.patient["patient_key"]])
                    for p in pending
                },
                self._studies,
            )
            self._resolve(
                conn,
                Series,
                "series_uid",
                {p.series["series_uid"]: dict(p.series, study_pk=self._studies[p.study["study_uid"]]) for p in pending},
                self._series,
            )
            now = utcnow()
            rows = [
                dict(
                    item.instance,
                    series_pk=self._series[item.series["series_uid"]],
                    patient_pk=self._patients[item.patient["patient_key"]],
                    import_run_id=summary.run_id,
                    imported_at=now,
                )
                for item in pending
            ]
            uids = [r["sop_instance_uid"] for r in rows]
            # another process may have imported some of them since we loaded the known set
            taken = (
                set(
                    conn.execute(select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(uids))).scalars()
                )
                if uids
                else set()
            )
            fresh = [r for r in rows if r["sop_instance_uid"] not in taken]
            if fresh:
                _insert_rows(conn, Instance, fresh)
            report_rows = self._report_rows(conn, pending, taken)
            if report_rows:
                conn.execute(insert(Report), report_rows)
            if rejections:
                conn.execute(
                    insert(RejectedFile),
                    [
                        dict(
                            run_id=summary.run_id, path=r.path, reason=r.reason, message=r.message, created_at=utcnow()
                        )
                        for r in rejections
                    ],
                )
            conn.execute(
                update(ImportRun)
                .where(ImportRun.id == summary.run_id)
                .values(
                    imported=summary.imported + len(fresh),
                    duplicates=summary.duplicates + len(taken),
                    rejected=len(summary.rejected),
                    ignored=summary.ignored,
                    files_seen=summary.files_seen,
                )
            )
        summary.imported += len(fresh)
        summary.duplicates += len(taken)
        summary.reports += len(report_rows)
        self._pending, self._unsaved_rejections = [], []

    def _report_rows(self, conn, pending: list[_Pending], taken: set[str]) -> list[dict]:
        wanted = [p for p in pending if p.reports and p.instance["sop_instance_uid"] not in taken]
        if not wanted:
            return []
        ids = dict(
            conn.execute(
                select(Instance.sop_instance_uid, Instance.id).where(
                    Instance.sop_instance_uid.in_([p.instance["sop_instance_uid"] for p in wanted])
                )
            ).all()
        )
        out = []
        for p in wanted:
            study_pk = self._studies[p.study["study_uid"]]
            for rep in p.reports:
                if rep["study_level"]:
                    key = (p.study["study_uid"], rep["source_path"])
                    if key in self._study_reports:
                        continue
                    exists = conn.execute(
                        select(Report.id).where(Report.study_pk == study_pk, Report.source_path == rep["source_path"])
                    ).first()
                    self._study_reports.add(key)
                    if exists:
                        continue
                    instance_pk = None
                else:
                    instance_pk = ids[p.instance["sop_instance_uid"]]
                out.append(
                    dict(
                        study_pk=study_pk,
                        instance_pk=instance_pk,
                        text=rep["text"],
                        source=rep["source"],
                        source_path=rep["source_path"],
                        created_at=utcnow(),
                    )
                )
        return out

    @staticmethod
    def _resolve(conn, model, key: str, wanted: dict[str, dict], cache: dict[str, int]) -> None:
        """Primary keys for ``wanted`` (key -> row values): cached, else looked up, else inserted,
        a few statements per batch rather than per file."""
        missing = [k for k in wanted if k not in cache]
        if not missing:
            return
        column = getattr(model, key)
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            cache.update(dict(conn.execute(select(column, model.id).where(column.in_(chunk))).all()))
        new_keys = [k for k in missing if k not in cache]
        if new_keys:  # inserted in bulk, then their keys looked up (no per-row RETURNING)
            _insert_rows(conn, model, [wanted[k] for k in new_keys])
            for start in range(0, len(new_keys), 500):
                chunk = new_keys[start : start + 500]
                cache.update(dict(conn.execute(select(column, model.id).where(column.in_(chunk))).all()))


_INSERTS: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[Any, ...]]] = {}


def _insert_rows(conn, model, rows: list[dict]) -> None:
    """``conn.execute(insert(model), rows)`` through the driver's ``executemany``: the same rows
    (a column a row leaves out gets its scalar default, or NULL), without SQLAlchemy's per-row
    parameter processing (a third of the import's database time in the issue 15 profile).
    Rows that differ in their keys, or leave out a column with a computed default, go through
    SQLAlchemy as before."""
    keys = tuple(rows[0])
    if any(len(r) != len(keys) for r in rows):
        conn.execute(insert(model), rows)
        return
    table = model.__table__
    prepared = _INSERTS.get((table.name, keys))
    if prepared is None:
        extra, values = [], []
        for column in table.columns:
            if column.key in keys or column.primary_key:
                continue
            default = column.default
            if default is None:
                continue  # NULL, as SQLAlchemy leaves it
            if not getattr(default, "is_scalar", False):
                conn.execute(insert(model), rows)  # a computed default: SQLAlchemy computes it
                return
            extra.append(column.name)
            values.append(default.arg)
        names = [table.columns[k].name for k in keys] + extra
        quoted = ", ".join(f'"{n}"' for n in names)
        sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({", ".join("?" * len(names))})'
        prepared = _INSERTS[(table.name, keys)] = (sql, tuple(values))
    sql, defaults = prepared
    try:
        params = [tuple([r[k] for k in keys]) + defaults for r in rows]
    except KeyError:  # same number of keys, other keys
        conn.execute(insert(model), rows)
        return
    conn.exec_driver_sql(sql, params)


class _TooLarge(Exception):
    pass


class _LimitedReader:
    """Reads a zip member chunk by chunk and stops (``_TooLarge``) as soon as it inflates past
    its declared size, the member / archive budget or the compression-ratio budget."""

    def __init__(self, src, declared: int, limit: int, ratio_limit: int, ratio: float):
        self.src, self.declared, self.limit, self.ratio_limit, self.ratio = src, declared, limit, ratio_limit, ratio
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n if n is not None and n >= 0 else 1 << 20)
        self.read_bytes += len(data)
        if self.read_bytes > self.declared:
            raise _TooLarge("declared", "inflates beyond its declared size")
        if self.read_bytes > self.ratio_limit:
            raise _TooLarge("budget", f"inflates more than {self.ratio:g} times its compressed size (zip bomb)")
        if self.read_bytes > self.limit:
            raise _TooLarge("budget", "inflates beyond the import budget for one entry or one archive (zip bomb)")
        return data


def _budget_problem(info: zipfile.ZipInfo, budget: ArchiveBudget) -> str:
    """What the central directory alone shows to be over budget, else ''."""
    if info.file_size > budget.member_bytes:
        return f"declares {_size(info.file_size)}, more than the {_size(budget.member_bytes)} budget"
    if info.file_size > budget.ratio_free_bytes and info.file_size > budget.ratio * max(info.compress_size, 1):
        return (
            f"declares {_size(info.file_size)} from {_size(info.compress_size)}, "
            f"a compression ratio over {budget.ratio:g} (zip bomb)"
        )
    return ""


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def _unsafe_member(info: zipfile.ZipInfo) -> str:
    name = info.filename
    mode = (info.external_attr >> 16) & 0xFFFF
    if mode and stat.S_ISLNK(mode):
        return "is a symbolic link"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        return "points outside the archive ('..')"
    return ""


def _resolve_case_insensitive(base: Path, parts: list[str]) -> Path | None:
    path = base.joinpath(*parts)
    if path.is_file():
        return path
    current = base
    for part in parts:
        try:
            match = next((c for c in os.listdir(current) if c.lower() == part.lower()), None)
        except OSError:
            return None
        if match is None:
            return None
        current = current / match
    return current if current.is_file() else None


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(REPORT_MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def _make_durable(paths: list[Path]) -> None:
    """Get a batch of new managed files onto the disk before the rows pointing at them commit:
    one ``sync()`` per batch (4x faster than an fsync per file on this machine's disk), or an
    fsync per file where ``os.sync`` does not exist (Windows)."""
    if hasattr(os, "sync"):
        os.sync()
        return
    for path in paths:
        try:
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        except OSError:
            pass


def _with_display(message: str, path: Path, cand: _Candidate) -> str:
    """Messages from the imaging layer name the file; for zip members use the member name."""
    if cand.member and message.startswith(path.name):
        return PurePosixPath(cand.member).name + message[len(path.name) :]
    return message


def import_paths(library: Library, paths: Iterable[str | os.PathLike], **options) -> ImportSummary:
    """Convenience wrapper: ``Importer(library, **options).run(paths)``."""
    paths = list(paths)
    if not paths:
        raise UserError("nothing to import: give at least one file or folder")
    return Importer(library, **options).run(paths)
