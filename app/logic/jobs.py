"""The app's background jobs, as plain functions (Qt-free).

Each job is what one :class:`~app.gui.workers.TaskRunner` task runs in a worker thread:
``job(ctx, *args)`` where ``ctx`` is the task's context (``ctx.progress(done, total, text)``,
``ctx.cancelled()``, ``ctx.cancel_event``); the return value is delivered to the GUI thread as
the task's result, a :class:`~core_model.errors.UserError` as its one-line failure message.
The window (:mod:`app.gui.main_window`) and the analysis controller
(:mod:`app.gui.analysis_controller`) only start them and show what comes back, so everything
slow stays testable without Qt.
"""

from __future__ import annotations

import logging

from app.logic import analysis as analysis_logic
from core_model.errors import UserError

log = logging.getLogger(__name__)


def import_job(ctx, library, paths: list[str], mode: str):
    """Import ``paths`` (files, folders, zips) into the library with progress and cancel."""
    from app.library.importer import Importer

    def progress(p) -> None:
        ctx.progress(p.done, p.total, f"{p.imported} imported, {p.duplicates} duplicates, {p.rejected} rejected")

    return Importer(library, mode=mode, progress=progress, cancel=ctx.cancel_event).run(paths)


def load_image_job(ctx, library, uid: str):
    """``(uid, ViewImage, title)`` of a library instance."""
    from app.library.queries import get_instance
    from app.logic.image import load_image

    with library.session() as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError("this image is no longer in the library")
        path = library.resolve(inst.file_path, inst.storage)
        title = f"{inst.view_position or inst.source_format.upper()} {inst.modality}".strip()
        name = (inst.original_path or "").replace("\\", "/").rsplit("/", 1)[-1] or path.name
    return uid, load_image(path), f"{title} · {name}"


def open_bundle_job(ctx, path: str):
    """``(path, Bundle)``, loaded with the app's inference threads."""
    from app.logic.bundles import gui_threads, open_bundle

    return path, open_bundle(path, threads=gui_threads())


def analyze_job(ctx, library, bundle, uid: str, force: bool):
    return analysis_logic.analyze_instance(library, bundle, uid, force=force, cancelled=ctx.cancelled)


def heatmap_job(ctx, library, bundle, result, uid: str, phrase: str, source: str):
    heat, ratio = analysis_logic.phrase_heatmap(library, bundle, result, uid, phrase)
    return uid, phrase, source, heat, ratio


def similar_job(ctx, library, bundle, result, uid: str):
    return uid, analysis_logic.similar_reports(library, bundle, result, uid)


def analyze_all_job(ctx, library, bundle, uids: list[str] | None):
    if uids is None:  # every image without an analysis by this bundle (a query: off the GUI thread)
        uids = analysis_logic.unanalysed_uids(
            library, str(bundle.id), str(bundle.version), bundle_hash=bundle.content_hash
        )
    return analysis_logic.analyze_many(library, bundle, uids, progress=ctx.progress, cancelled=ctx.cancelled)


def flush_reviews_job(ctx, queue, lock_timeout: float):
    """Save the queued reviews (app.library.pending); another program's lock makes this wait
    ``lock_timeout`` at most, off the GUI thread, and the reviews stay queued."""
    return queue.flush(lock_timeout=lock_timeout)


def thumbnails_job(ctx, library, rows):
    """``[(uid, pixels or None)]`` for browser rows (None: unreadable; the viewer says why)."""
    from app.logic.thumbnails import make_thumbnail

    out = []
    for row in rows:
        if ctx.cancelled():
            break
        try:
            out.append(
                (row.sop_instance_uid, make_thumbnail(library, row.sop_instance_uid, row.file_path, row.storage))
            )
        except Exception as exc:  # an unreadable image has no thumbnail; the viewer says why
            log.debug("no thumbnail for %s: %s", row.sop_instance_uid, exc)
            out.append((row.sop_instance_uid, None))
    return out


def export_png_job(ctx, path: str, base, layers, view, legend):
    from app.logic.overlay import export_view_png

    return export_view_png(path, base, layers, view=view, legend=legend)


def export_csv_job(ctx, library, bundle, uids: list[str], path: str):
    """``(path written, row count)``: the stored analyses by ``bundle`` of ``uids`` as CSV."""
    from app.logic.predictions_csv import prediction_rows, write_predictions_csv

    results, errors = {}, {}
    if bundle is not None:
        for uid in uids:
            r = analysis_logic.cached_analysis(
                library, uid, str(bundle.id), str(bundle.version), bundle_hash=bundle.content_hash, load_arrays=False
            )
            if r is not None:
                results[uid] = r
    rows, classes = prediction_rows(library, uids, results, errors)
    return write_predictions_csv(path, rows, classes), len(rows)


def save_labels_job(ctx, library, bundle, uid: str, labels, facts: dict, lock_timeout: float):
    """``(uid, saved)``: commit each reader-study label of ``uid`` (app.logic.reader_study). The
    AI probabilities come from the shown analysis, else from the one stored for ``bundle``."""
    from app.logic.reader_study import save_labels

    facts = dict(facts)
    if bundle is not None and not facts.get("probabilities"):
        stored = analysis_logic.cached_analysis(
            library, uid, str(bundle.id), str(bundle.version), bundle_hash=bundle.content_hash, load_arrays=False
        )
        if stored is not None:
            facts["probabilities"] = dict(stored.probabilities)
    return uid, save_labels(library, uid, labels, facts, lock_timeout=lock_timeout)


def export_labels_job(ctx, library, path: str, uids: list[str] | None, filter_text: str):
    """``(path written, row count)``: the reader-study labels of ``uids`` (None: all) as CSV."""
    from app.logic.reader_study import export_labels

    return export_labels(library, path, uids, filter_text)


def study_tree_job(ctx, library, filters: dict):
    """``(filters, tree)``: the browser's filtered images as a Patient -> Study -> Series ->
    Image tree (app.logic.study_tree)."""
    from app.logic.study_tree import build_tree

    return filters, build_tree(library, filters)


def remove_job(ctx, library, uids: list[str]):
    """``removed``: the instances taken out of the library (managed copies deleted, linked files
    left where they are; app.library.queries.remove_instances)."""
    from app.library.queries import remove_instances

    return remove_instances(library, uids)


def relocate_job(ctx, library, folder: str):
    """Find the linked files that moved into ``folder`` (app.library.queries.relocate_linked)."""
    from app.library.queries import relocate_linked

    return relocate_linked(library, folder, cancelled=ctx.cancelled)


def export_anonymized_job(ctx, library, uids: list[str], out_dir: str):
    """The anonymised export of ``uids`` (app.library.anonymize, the CLI's export-anonymized)."""
    from app.library.anonymize import export_anonymized

    return export_anonymized(library, list(uids), out_dir)
