"""The window's exports: the view as PNG (with its overlays and legend), the selected images'
predictions as CSV and the reader-study labels as CSV, each a job of :mod:`app.logic.jobs` in a
worker. (DICOM SEG / SR results are :mod:`app.gui.export_results`'s.)
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from app.logic import jobs


class ExportController(QObject):
    """PNG / CSV / labels exports of ``window`` (the main window: its ``viewer``, ``browser``,
    ``bundle``, ``reader_study`` and ``runner``)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window

    def export_png_dialog(self) -> None:
        if self.window.viewer.display is None:
            self.window.status_message("No image to export")
            return
        path, _ = QFileDialog.getSaveFileName(
            self.window, "Export the view as PNG", str(Path.home() / "view.png"), "PNG images (*.png)"
        )
        if path:
            self.export_png(path)

    def export_png(self, path: str):
        if self.window.viewer.display is None:
            self.window.status_message("No image to export")
            return None
        task = self.window.runner.start(
            "Export PNG",
            jobs.export_png_job,
            path,
            self.window.viewer.display.copy(),
            list(self.window.viewer.layers()),
            self.window.viewer.view_rect(),
            self.window.analysis.export_legend(),
            on_result=lambda p: self.window.status_message(f"Exported the view to {p}"),
            on_failed=lambda msg: self.window.show_error("Export failed", msg),
        )
        return task

    def export_csv_dialog(self) -> None:
        uids = self.window.browser.selected_uids()
        if not uids:
            self.window.status_message("Select the images to export first (Ctrl+A selects all shown)")
            return
        path, _ = QFileDialog.getSaveFileName(
            self.window, "Export predictions", str(Path.home() / "predictions.csv"), "CSV files (*.csv)"
        )
        if path:
            self.export_csv(uids, path)

    def export_csv(self, uids: list[str], path: str):
        if not str(path).lower().endswith(".csv"):
            path = str(path) + ".csv"
        task = self.window.runner.start(
            "Export CSV",
            jobs.export_csv_job,
            self.window.library,
            self.window.bundle,
            list(uids),
            path,
            on_result=lambda r: self.window.status_message(f"Wrote {r[1]} rows to {r[0]}"),
            on_failed=lambda msg: self.window.show_error("Export failed", msg),
        )
        return task

    def export_labels_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self.window, "Export reader-study labels", str(Path.home() / "reader_labels.csv"), "CSV files (*.csv)"
        )
        if path:
            self.export_labels(path)

    def export_labels(self, path: str, uids: list[str] | None = None):
        """The labels (of ``uids``; default: the worklist's, else every label) as CSV, which says
        the browser filter it was made under."""
        from app.logic.reader_study import describe_filter

        wl = self.window.reader_study.worklist
        if uids is None and wl is not None:
            uids = list(wl.uids)
        return self.window.runner.start(
            "Export labels",
            jobs.export_labels_job,
            self.window.library,
            str(path),
            uids,
            wl.filter_text if wl is not None else describe_filter(self.window.browser.model.filters),
            on_result=lambda r: self.window.status_message(f"Wrote {r[1]} labels to {r[0]}"),
            on_failed=lambda msg: self.window.show_error("Export failed", msg),
        )
