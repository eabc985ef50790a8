"""The library's contents from the window: import (dialogs, paths, drag and drop, the copy /
link mode), remove, find moved files, anonymised export, and the browser's thumbnails, each a
Qt-free job of :mod:`app.logic.jobs` in the window's :class:`~app.gui.workers.TaskRunner`.

:class:`LibraryController` reports through the window (``status_message``, ``show_error``, its
``import_finished`` / ``library_changed`` / ``anonymized`` signals) and refreshes its browser.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.gui.dialogs import message
from app.logic import jobs


class LibraryController(QObject):
    """Import, remove, relocate, anonymised export and thumbnails for ``window`` (the main window:
    its ``library``, ``runner``, ``settings``, ``browser``, ``jobs``, ``images``, ``current_uid``)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self._thumb_queue: list = []
        self._last_refresh = 0.0
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setSingleShot(True)
        self._thumb_timer.setInterval(30)
        self._thumb_timer.timeout.connect(self._start_thumbnails)

    def stop(self) -> None:
        self._thumb_timer.stop()

    def remove_selected(self, uids: list[str] | None = None):
        """Ask, then remove the selected images (managed copies deleted, linked files left)."""
        if self.window.read_only:
            self.window.show_error("Not removed", f"This library is read-only ({self.window.read_only}).")
            return None
        uids = list(uids) if uids is not None else self.window.browser.selected_uids()
        if not uids:
            self.window.status_message("Select the images to remove first")
            return None
        from app.gui.dialogs import confirm_message
        from app.library.queries import removal_counts

        managed, linked = removal_counts(self.window.library, uids)
        n = managed + linked
        text = (
            f"Remove {n} image{'s' if n != 1 else ''} from the library?\n\n"
            f"{managed} managed cop{'ies' if managed != 1 else 'y'} in the library's folder will be deleted; "
            f"{linked} linked file{'s are' if linked != 1 else ' is'} left where {'they are' if linked != 1 else 'it is'}. "
            "Their analyses, reviews and reader-study labels are removed too."
        )
        box = confirm_message(self.window, "Remove from the library", text, "Remove", lambda: self._remove(uids))
        self.window._boxes.append(box)
        return box

    def _remove(self, uids: list[str]):
        if self.window.current_uid in uids:
            self.window.images.pop(self.window.current_uid, None)
        return self.window.runner.start(
            "Remove",
            jobs.remove_job,
            self.window.library,
            list(uids),
            on_result=self._removed,
            on_failed=lambda msg: self.window.show_error("Not removed", msg),
        )

    def _removed(self, n: int) -> None:
        self.window.status_message(f"Removed {n} image(s) from the library")
        was = self.window.current_uid
        self.refresh_browser(force=True)
        if was is not None and self.window.browser.model.row_of(was) is None:
            self.window.current_uid = None
            if not self.window.browser.select_row(0):
                self.window.show_uid(None)
        self.window.library_changed.emit()

    def export_anonymized_dialog(self) -> None:
        uids = self.window.browser.selected_uids()
        if not uids:
            self.window.status_message("Select the images to export first (Ctrl+A selects all shown)")
            return
        folder = QFileDialog.getExistingDirectory(self.window, "Export anonymised copies to", str(Path.home()))
        if folder:
            self.export_anonymized(uids, folder)

    def export_anonymized(self, uids: list[str], folder: str):
        task = self.window.runner.start(
            "Export anonymised",
            jobs.export_anonymized_job,
            self.window.library,
            list(uids),
            str(folder),
            lane="background",
            on_result=self._anonymized,
            on_failed=lambda msg: self.window.show_error("Export failed", msg),
        )
        self.window.jobs.add(task, "Exporting anonymised copies")
        return task

    def _anonymized(self, summary) -> None:
        text = f"Exported {summary.exported} anonymised instance(s) to {summary.out_dir}"
        if summary.skipped_burned_in:
            text += f"; refused {summary.skipped_burned_in} with burned-in annotation"
        if summary.refused or summary.failed:
            text += f"; {len(summary.refused) + len(summary.failed)} not exported"
        self.window.status_message(text + ". Review the files before sharing them.", 15000)
        self.window.anonymized.emit(summary)

    def relocate_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Where are the moved files?", str(Path.home()))
        if folder:
            self.relocate(folder)

    def relocate(self, folder: str):
        return self.window.runner.start(
            "Find moved files",
            jobs.relocate_job,
            self.window.library,
            str(folder),
            on_result=self._relocated,
            on_failed=lambda msg: self.window.show_error("Moved files not found", msg),
        )

    def _relocated(self, summary) -> None:
        if summary.missing == 0:
            text = "No linked file is missing"
        else:
            text = f"Found {summary.found} of {summary.missing} missing linked file(s)"
            if summary.still_missing:
                text += f"; {len(summary.still_missing)} still missing"
        self.window.status_message(text, 15000)
        self.window.images.clear()
        if self.window.current_uid is not None:
            uid, self.window.current_uid, self.window.hung = self.window.current_uid, None, []
            self.window.show_uid(uid)  # loaded again from where the file is now
        self.window.library_changed.emit()

    def set_copy_mode(self, on: bool) -> None:
        self.window.settings.set("import/copy", bool(on))

    def import_files_dialog(self) -> None:
        start = self.window.settings.get("import/last_folder") or str(Path.home())
        files, _ = QFileDialog.getOpenFileNames(
            self.window,
            "Import images",
            start,
            "Images (*.dcm *.dicom *.png *.jpg *.jpeg *.zip DICOMDIR);;All files (*)",
        )
        if files:
            self.window.settings.set("import/last_folder", str(Path(files[0]).parent))
            self.import_paths(files)

    def import_folder_dialog(self) -> None:
        start = self.window.settings.get("import/last_folder") or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self.window, "Import a folder", start)
        if folder:
            self.window.settings.set("import/last_folder", folder)
            self.import_paths([folder])

    def import_paths(self, paths: list[str]):
        paths = [str(p) for p in paths]
        if not paths:
            return None
        mode = "copy" if self.window.act_copy.isChecked() else "link"
        task = self.window.runner.start(
            "Import",
            jobs.import_job,
            self.window.library,
            paths,
            mode,
            lane="background",
            on_result=self._import_done,
            on_failed=lambda msg: self.window.show_error("Import failed", msg),
            on_progress=lambda *_: self.refresh_browser(),
        )
        self.window.jobs.add(task, "Importing")
        self.window.status_message(f"Importing {len(paths)} item(s)…")
        return task

    def refresh_browser(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_refresh > 1.5:
            self._last_refresh = now
            self.window.browser.refresh()
            if self.window.current_uid is None and self.window.browser.model.rows:
                # the first image arrived: show it, in the next event-loop pass (short stalls)
                QTimer.singleShot(0, lambda: self.window.current_uid is None and self.window.browser.select_row(0))

    def _import_done(self, summary) -> None:
        self.refresh_browser(force=True)
        self.window.browser.set_findings(
            list(self.window.bundle.classes) if self.window.bundle is not None else [],
            dict(self.window.bundle.thresholds) if self.window.bundle is not None else None,
        )
        state = "Import cancelled" if summary.cancelled else "Import finished"
        text = (
            f"{state}: {summary.imported} imported, {summary.duplicates} duplicates, "
            f"{len(summary.rejected)} rejected ({summary.elapsed_s:.1f} s)"
        )
        self.window.status_message(text, 15000)
        if summary.rejected:
            details = "\n".join(f"{r.path}\n    {r.reason}: {r.message}" for r in summary.rejected[:500])
            self.window._boxes.append(
                message(
                    self.window,
                    "Import",
                    f"{text}. Some files were not imported.",
                    details,
                    QMessageBox.Icon.Information,
                )
            )
        self.window.import_finished.emit(summary)

    def drag_enter(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def drop(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.import_paths(paths)
        else:
            event.ignore()

    def queue_thumbnails(self, rows) -> None:
        self._thumb_queue.extend(rows)
        if not self._thumb_timer.isActive():
            self._thumb_timer.start()

    def _start_thumbnails(self) -> None:
        batch, self._thumb_queue = self._thumb_queue[:24], self._thumb_queue[24:]
        if not batch:
            return
        self.window.runner.start(
            "Thumbnails",
            jobs.thumbnails_job,
            self.window.library,
            batch,
            lane="thumbnails",
            on_result=self._thumbnails_done,
        )
        if self._thumb_queue:
            self._thumb_timer.start()

    def _thumbnails_done(self, items) -> None:
        for uid, pixels in items:
            self.window.browser.model.set_thumbnail(uid, pixels)
