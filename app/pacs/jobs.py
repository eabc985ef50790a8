"""Retrieve studies from a DICOMweb server into the library, and send result objects back.

Retrieve (WADO-RS): the selected studies are fetched by a small, bounded thread pool
(``workers`` requests in flight, default 4) rather than one sequential loop; each study is
written, byte for byte, into its own folder under the library's staging folder. A study counts
only when all of its objects arrived and every one is a well-formed DICOM file (the importer's
header checks, run before anything is imported): a study that fails (404, invalid DICOM, a
timeout, a broken-off answer) or is cancelled half-way is discarded whole. Complete studies go
to the one importer (:class:`app.library.importer.Importer`, copy mode) while the transfers go
on: whenever the importer is idle it takes every complete study that is ready, in one run and
one transaction, so a study is in the library whole or not at all; deduplicated by SOP Instance
UID like any import. Non-image objects (SR, SEG, presentation states, key object selections)
are skipped and counted. Cancel keeps the complete studies and drops the others. A server-wide
failure (unreachable, refused credentials) stops the retrieve and is raised after the complete
studies are imported (none, when the server refuses from the start).
The staging folders are always removed.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from app.pacs.client import Cancelled, PacsClient, StoreResult
from app.pacs.errors import FATAL, PacsError, PacsInvalidResponse

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
MAX_WORKERS = 16
NON_IMAGE_MODALITIES = {"SR", "SEG", "PR", "KO", "DOC", "REG", "RWV", "PLAN"}


@dataclass
class RetrieveProgress:
    done: int  # studies finished (retrieved, failed or skipped)
    total: int
    instances: int  # objects received so far
    bytes: int
    failed: int
    stage: str  # "retrieving" | "importing" | "done"
    current: str = ""  # a study UID


@dataclass
class StudyOutcome:
    study_uid: str
    ok: bool
    instances: int = 0  # image objects retrieved
    skipped: int = 0  # non-image objects skipped
    bytes: int = 0
    error: str = ""


@dataclass
class RetrieveSummary:
    requested: int
    outcomes: list[StudyOutcome] = field(default_factory=list)
    cancelled: bool = False
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    import_runs: list[int] = field(default_factory=list)  # the importer's runs (one per chunk)
    elapsed_s: float = 0.0

    @property
    def retrieved(self) -> list[StudyOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[StudyOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def studies_per_s(self) -> float:
        return len(self.retrieved) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        state = "cancelled" if self.cancelled else "finished"
        not_done = self.requested - len(self.outcomes)
        return (
            f"Retrieve {state}: {len(self.retrieved)} of {self.requested} studies retrieved"
            + (f", {len(self.failed)} failed" if self.failed else "")
            + (f", {not_done} not retrieved (cancelled)" if not_done and self.cancelled else "")
            + f"; {self.imported} images imported, {self.duplicates} already in the library"
            + (f", {self.rejected} rejected by the importer" if self.rejected else "")
            + f" ({self.elapsed_s:.1f} s)"
        )


def _cancel_fn(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return lambda: bool(cancel())


def check_study_files(study_uid: str, files: Sequence[Path]) -> tuple[list[Path], int]:
    """The image files of a retrieved study and how many non-image objects were skipped.
    :class:`PacsInvalidResponse` when any object is not well-formed DICOM (so the study is
    discarded whole, never half-imported)."""
    from core_model.imaging.dicom import check_header, scan_header
    from core_model.imaging.errors import ImageReadError, NoPixelDataError
    from core_model.imaging.sniff import HEAD_BYTES, kind_of_bytes

    images: list[Path] = []
    skipped = 0
    for n, path in enumerate(files, 1):
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        if kind_of_bytes(head) != "dicom":
            raise PacsInvalidResponse(
                f"the PACS sent invalid DICOM for study {study_uid} (object {n} is not a DICOM file)"
            )
        try:
            scan = scan_header(path)
        except ImageReadError as exc:
            raise PacsInvalidResponse(
                f"the PACS sent invalid DICOM for study {study_uid} (object {n}: {exc.reason})"
            ) from exc
        modality = str(scan.dataset.get("Modality", "") or "").upper()
        if modality in NON_IMAGE_MODALITIES:
            skipped += 1
            continue
        try:
            check_header(scan)
        except NoPixelDataError:
            skipped += 1
            continue
        except ImageReadError as exc:
            raise PacsInvalidResponse(
                f"the PACS sent a damaged image for study {study_uid} (object {n}: {exc.reason})"
            ) from exc
        images.append(path)
    return images, skipped


def retrieve_studies(
    library,
    client: PacsClient,
    study_uids: Iterable[str],
    *,
    progress: Callable[[RetrieveProgress], None] | None = None,
    cancel=None,
    workers: int = DEFAULT_WORKERS,
    fsync: bool = True,
) -> RetrieveSummary:
    """Retrieve ``study_uids`` from ``client`` into ``library`` (see the module docstring).
    Raises the server-wide :class:`PacsError` (unreachable, credentials) once the studies that
    were complete before it are imported; per-study failures are in the summary's outcomes."""
    from app.library.importer import Importer
    from app.library.storage import run_staging_dir

    uids = list(dict.fromkeys(u.strip() for u in study_uids if u and u.strip()))
    if not uids:
        raise PacsError("no study selected to retrieve")
    if library.read_only:
        raise PacsError(f"the library {library.db_path} is read-only: nothing can be retrieved into it")
    cancelled = _cancel_fn(cancel)
    stop = threading.Event()  # cancel, or a server-wide failure: the workers stop early

    def stopped() -> bool:
        return stop.is_set() or cancelled()

    started = time.monotonic()
    summary = RetrieveSummary(requested=len(uids))
    counters = {"instances": 0, "bytes": 0}
    lock = threading.Lock()

    def on_bytes(n: int) -> None:
        with lock:
            counters["instances"] += 1
            counters["bytes"] += n

    def emit(stage: str, current: str = "") -> None:
        if progress is not None:
            progress(
                RetrieveProgress(
                    done=len(summary.outcomes),
                    total=len(uids),
                    instances=counters["instances"],
                    bytes=counters["bytes"],
                    failed=len(summary.failed),
                    stage=stage,
                    current=current,
                )
            )

    root = run_staging_dir(Path(library.staging_dir))  # removed at the end, or with a dead process
    batch: list[Path] = []  # images of complete studies not yet handed to the importer
    fatal: PacsError | None = None
    importing: Future | None = None
    import_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pacs-import")

    def fetch(index: int, uid: str) -> tuple[StudyOutcome, list[Path]]:
        folder = root / f"{index:06d}"
        got = client.retrieve_study(uid, folder, cancelled=stopped, on_bytes=on_bytes)
        images, skipped = check_study_files(uid, got.files)
        return StudyOutcome(uid, True, instances=len(images), skipped=skipped, bytes=got.bytes), images

    def import_files(files: list[Path], on_progress=None):
        # one run, one transaction, no cancel: the complete studies it holds go in whole
        result = Importer(
            library,
            mode="copy",
            progress=on_progress,
            batch_size=len(files) + 1,
            commit_interval=float("inf"),
            fsync=fsync,
        ).run(files)
        for f in files:  # the library has its own copies now
            f.unlink(missing_ok=True)
        return result

    def collect(fut: Future) -> None:
        result = fut.result()  # a LibraryError (disk full, read-only) stops the retrieve
        summary.imported += result.imported
        summary.duplicates += result.duplicates
        summary.rejected += len(result.rejected)
        summary.import_runs.append(result.run_id)

    def hand_over() -> None:
        """While the transfers go on, the importer takes whatever complete studies are ready
        whenever it is idle (so its chunks grow when it is the slower side)."""
        nonlocal importing, batch
        if importing is not None and importing.done():
            done_fut, importing = importing, None
            collect(done_fut)
        if batch and importing is None:
            importing, batch = import_pool.submit(import_files, batch), []

    try:
        emit("retrieving")
        n_workers = max(1, min(int(workers), MAX_WORKERS, len(uids)))
        with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="pacs-wado") as pool:
            pending: dict[Future, str] = {}
            queue = list(enumerate(uids))
            while queue or pending:
                while queue and len(pending) < n_workers * 2 and not stopped():  # bounded look-ahead
                    index, uid = queue.pop(0)
                    pending[pool.submit(fetch, index, uid)] = uid
                if not pending:
                    break
                done, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
                if cancelled():
                    stop.set()
                if stop.is_set():
                    client.abort()  # in-flight answers end now, not at their timeout
                for fut in done:
                    uid = pending.pop(fut)
                    try:
                        outcome, images = fut.result()
                    except Cancelled:
                        continue
                    except FATAL as exc:
                        fatal = fatal or exc
                        stop.set()
                        continue
                    except PacsError as exc:
                        outcome, images = StudyOutcome(uid, False, error=str(exc)), []
                    except OSError as exc:  # the staging folder (disk full): the study is not complete
                        outcome, images = (
                            StudyOutcome(uid, False, error=f"could not write the study ({exc.strerror})"),
                            [],
                        )
                    summary.outcomes.append(outcome)
                    batch.extend(images)
                    log.info("WADO-RS study %s: %s", uid, "retrieved" if outcome.ok else "failed")
                    emit("retrieving", uid)
                hand_over()
                if stopped():
                    queue.clear()
        summary.cancelled = cancelled()
        if importing is not None or batch:
            emit("importing")
        if importing is not None:
            wait([importing])
            last, importing = importing, None
            collect(last)
        if batch:
            files, batch = batch, []
            collect(import_pool.submit(import_files, files, lambda _p: emit("importing")))
        if fatal is not None:
            raise fatal
    finally:
        import_pool.shutdown(wait=True)
        shutil.rmtree(root, ignore_errors=True)
        summary.elapsed_s = time.monotonic() - started
    emit("done")
    return summary


def send_objects(client: PacsClient, objects: Iterable[str | Path | Dataset]) -> list[StoreResult]:
    """STOW-RS of result objects (DICOM SEG / SR files or datasets): one result per object."""
    objects = list(objects)
    if not objects:
        raise PacsError("nothing to send: give at least one DICOM file")
    return client.store(objects)


# -- the GUI's background jobs (Qt-free: ``ctx`` is app.gui.workers.TaskContext) ---------------
def search_job(ctx, client: PacsClient, query):
    """QIDO-RS search off the GUI thread."""
    return client.search_studies(query)


def retrieve_job(ctx, library, client: PacsClient, study_uids: list[str], workers: int = DEFAULT_WORKERS):
    """Retrieve into the library with the task's progress and cancel."""

    def progress(p: RetrieveProgress) -> None:
        if p.stage == "importing":
            ctx.progress(p.done, p.total, f"importing {p.instances} objects")
        else:
            failed = f", {p.failed} failed" if p.failed else ""
            ctx.progress(p.done, p.total, f"{p.done} of {p.total} studies, {p.instances} objects{failed}")

    try:
        return retrieve_studies(
            library, client, study_uids, progress=progress, cancel=ctx.cancel_event, workers=workers
        )
    finally:
        client.close()
