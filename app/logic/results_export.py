"""Library images' results as DICOM SEG / SR / heatmap Secondary Capture and as plain files
(Qt-free): what ``adaptor-review analyze --out-dicom / --out-json`` and File -> Export results
run (the writers are :mod:`core_model.dicom_results`).

Each image's analysis comes from the library's cache first (:func:`app.logic.analysis.analyze_many`:
the same bundle by content hash is reused; otherwise the model runs and the result is stored as
usual). A stored mask is 8-bit (the app keeps the probabilities as a PNG), so the exported binary
mask is the stored mask at the bundle's threshold: what the app shows; at the demo bundle's
threshold 0.5 that equals the runtime's own mask pixel for pixel (``rint(255 p) >= 127.5`` exactly
when ``p >= 0.5``). The default heatmap (the most likely finding at or above its threshold) goes
out as a Secondary Capture when the analysis has one; the app adds the phrase shown on screen.

Each output folder also gets ``index.json``: for every image written, its folder (``img-<key>``),
its SOP Instance UID and the files (never a patient attribute); a failing image is listed there
with the reason and does not stop the others."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.logic.analysis import AnalysisResult, CancelFn, ProgressFn, analyze_many, instance_file
from core_model.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class ExportSummary:
    total: int = 0
    written: list[dict] = field(default_factory=list)  # index entries of the images written
    failed: list[tuple[str, str]] = field(default_factory=list)  # (uid, message)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (uid, note), e.g. PNG sources
    cancelled: bool = False
    dicom_dir: Path | None = None
    plain_dir: Path | None = None
    index_files: list[Path] = field(default_factory=list)

    @property
    def dicom_objects(self) -> int:
        return sum(len(e.get("dicom", {})) for e in self.written)


class ResultsExporter:
    """Writes each analysis it is given (an ``on_result`` hook of :func:`analyze_many`) and
    collects what was written; :meth:`finish` writes the index files."""

    def __init__(
        self,
        library,
        bundle,
        *,
        dicom_dir: str | Path | None = None,
        plain_dir: str | Path | None = None,
        fractional: bool = False,
        heatmaps: dict[str, tuple[np.ndarray, str]] | None = None,
        lut: np.ndarray | None = None,
    ):
        if dicom_dir is None and plain_dir is None:
            raise UserError("give a folder for the DICOM results (--out-dicom), the plain results (--out-json) or both")
        self.library, self.bundle = library, bundle
        self.summary = ExportSummary(
            dicom_dir=Path(dicom_dir).expanduser() if dicom_dir is not None else None,
            plain_dir=Path(plain_dir).expanduser() if plain_dir is not None else None,
        )
        for folder in (self.summary.dicom_dir, self.summary.plain_dir):
            if folder is not None and folder.exists() and not folder.is_dir():
                raise UserError(f"{folder} exists and is not a folder")
        self.fractional = fractional
        self.heatmaps = dict(heatmaps or {})
        self.lut = lut
        self._lock = threading.Lock()

    def __call__(self, result: AnalysisResult) -> None:
        self.write(result)

    def write(self, result: AnalysisResult) -> dict | None:
        """Write one analysis's results; a failure is recorded (and logged by UID), not raised."""
        from core_model.dicom_results import NotDicomSourceError, write_results

        uid = result.uid
        heat, phrase = self.heatmaps.get(uid, (result.heatmap, result.heatmap_phrase))
        try:
            path = instance_file(self.library, uid)
            written = write_results(
                path,
                result,
                self.bundle,
                dicom_dir=self.summary.dicom_dir,
                plain_dir=self.summary.plain_dir,
                fractional=self.fractional,
                heatmap=heat if phrase else None,
                heatmap_phrase=phrase if heat is not None else None,
                lut=self.lut,
            )
        except NotDicomSourceError as exc:  # --out-dicom alone and a PNG / JPEG import: nothing to write
            with self._lock:
                self.summary.notes.append((uid, f"not exported: {exc}"))
            return None
        except UserError as exc:
            self._fail(uid, str(exc))
            return None
        except Exception as exc:  # one image's failure must not stop the export
            log.debug("exporting the results of %s failed", uid, exc_info=True)
            self._fail(uid, f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return None
        folder = written.dicom_folder or written.plain_folder
        entry = dict(
            sop_instance_uid=uid,
            folder=folder.name if folder else None,
            dicom={k: p.name for k, p in written.dicom.items()},
            files={k: p.name for k, p in written.plain.items()},
            uids=dict(written.uids),
            domain=result.domain.status,
        )
        with self._lock:
            self.summary.written.append(entry)
            for note in written.notes:
                self.summary.notes.append((uid, note))
        return entry

    def _fail(self, uid: str, message: str) -> None:
        log.warning("results of %s not exported: %s", uid, message)
        with self._lock:
            self.summary.failed.append((uid, message))

    def finish(self, *, total: int, cancelled: bool = False, failed: Sequence[tuple[str, str]] = ()) -> ExportSummary:
        """Record the analysis failures too and write ``index.json`` into each output folder."""
        from core_model.dicom_results import RESEARCH_USE, SYNTHETIC_MODEL
        from core_model.fileio import atomic_write_json, jsonable

        s = self.summary
        s.total, s.cancelled = total, s.cancelled or cancelled
        known = {u for u, _ in s.failed}
        s.failed.extend((u, m) for u, m in failed if u not in known)
        if not s.written and not s.failed:
            return s
        index = dict(
            notice=RESEARCH_USE,
            synthetic_model=bool(self.bundle.synthetic),
            synthetic_note=SYNTHETIC_MODEL if self.bundle.synthetic else None,
            bundle=dict(
                id=str(self.bundle.id), version=str(self.bundle.version), content_hash=self.bundle.content_hash
            ),
            images=s.written,
            failed=[dict(sop_instance_uid=u, message=m) for u, m in s.failed],
            notes=[dict(sop_instance_uid=u, note=n) for u, n in s.notes],
            cancelled=s.cancelled,
        )
        for folder in dict.fromkeys(f for f in (s.dicom_dir, s.plain_dir) if f is not None):
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / "index.json", jsonable(index))
            s.index_files.append(folder / "index.json")
        return s


def export_results(
    library,
    bundle,
    uids: list[str],
    *,
    dicom_dir: str | Path | None = None,
    plain_dir: str | Path | None = None,
    fractional: bool = False,
    heatmaps: dict[str, tuple[np.ndarray, str]] | None = None,
    lut: np.ndarray | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
    on_written: Callable[[dict], None] | None = None,
) -> ExportSummary:
    """Analyse (cache first) and export ``uids``; see the module docstring."""
    exporter = ResultsExporter(
        library, bundle, dicom_dir=dicom_dir, plain_dir=plain_dir, fractional=fractional, heatmaps=heatmaps, lut=lut
    )

    def on_result(result: AnalysisResult) -> None:
        entry = exporter.write(result)
        if entry is not None and on_written is not None:
            on_written(entry)

    batch = analyze_many(
        library, bundle, uids, force=force, progress=progress, cancelled=cancelled, on_result=on_result
    )
    return exporter.finish(total=batch.total, cancelled=batch.cancelled, failed=batch.failed)


def export_results_job(
    ctx,
    library,
    bundle,
    uids: list[str],
    folder: str,
    *,
    dicom: bool = True,
    plain: bool = True,
    fractional: bool = False,
    heatmaps: dict[str, tuple[np.ndarray, str]] | None = None,
    lut: np.ndarray | None = None,
) -> ExportSummary:
    """File -> Export results (run by ``app.gui.workers.TaskRunner``): both kinds into ``folder``."""
    return export_results(
        library,
        bundle,
        uids,
        dicom_dir=folder if dicom else None,
        plain_dir=folder if plain else None,
        fractional=fractional,
        heatmaps=heatmaps,
        lut=lut,
        progress=ctx.progress,
        cancelled=ctx.cancelled,
    )


def summary_text(summary: ExportSummary) -> str:
    """What the dialog (and a log line) says when an export ends."""
    folder = summary.dicom_dir or summary.plain_dir
    state = "Export cancelled" if summary.cancelled else "Export finished"
    text = (
        f"{state}: results of {len(summary.written)} of {summary.total} images written "
        f"({summary.dicom_objects} DICOM objects) to {folder}"
    )
    if summary.failed:
        text += f"; {len(summary.failed)} failed"
    if summary.notes:
        text += f"; {len(summary.notes)} with a note (see index.json)"
    return text + "."
