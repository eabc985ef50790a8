"""File -> Export results: the selected images' results as DICOM SEG + SR (+ the heatmap as a
Secondary Capture) and as mask PNG + NIfTI + JSON, written by a worker off the GUI thread
(:func:`app.logic.results_export.export_results_job`) with progress and cancel. The image on
screen contributes the heatmap of the phrase shown (in the colormap shown); the others their
default heatmap. Research use only: the dialog says so, and so does every object written."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.logic.results_export import export_results_job, summary_text

log = logging.getLogger(__name__)

NOTICE = "Research use only - not for diagnostic use. Every object written says so."
SYNTHETIC = "The loaded model is a demo trained on synthetic phantoms: its results mean nothing for real images."


class ExportResultsDialog(QDialog):
    """Choose a folder and the kinds of output, then export ``uids`` with ``bundle``."""

    def __init__(self, parent: QWidget | None, runner, library, bundle, uids: list[str], *, heatmaps=None, lut=None):
        super().__init__(parent)
        self.setWindowTitle("Export results")
        self.setAccessibleName("Export results")
        self.runner, self.library, self.bundle, self.uids = runner, library, bundle, list(uids)
        self.heatmaps, self.lut = heatmaps or {}, lut
        self.task = None
        self.summary = None

        layout = QVBoxLayout(self)
        what = QLabel(
            f"{len(self.uids)} selected image{'s' if len(self.uids) != 1 else ''} - model {bundle.id} {bundle.version}.\n"
            "Stored analyses by this model are reused; images without one are analysed first."
        )
        what.setWordWrap(True)
        layout.addWidget(what)
        self.notice = QLabel(NOTICE + ("\n" + SYNTHETIC if bundle.synthetic else ""))
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #b45309;")
        layout.addWidget(self.notice)

        row = QHBoxLayout()
        row.addWidget(QLabel("Folder:"))
        self.folder = QLineEdit(str(Path.home() / "cxr-results"))
        self.folder.setAccessibleName("Output folder")
        row.addWidget(self.folder, 1)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._choose)
        row.addWidget(browse)
        layout.addLayout(row)

        self.dicom = QCheckBox("DICOM SEG + SR (and the heatmap as a Secondary Capture)")
        self.dicom.setChecked(True)
        self.plain = QCheckBox("Mask as PNG and NIfTI, and a JSON of everything")
        self.plain.setChecked(True)
        self.fractional = QCheckBox("Fractional SEG (the mask probabilities instead of the mask at the threshold)")
        for box in (self.dicom, self.plain, self.fractional):
            layout.addWidget(box)
        self.dicom.toggled.connect(self._update)
        self.plain.toggled.connect(self._update)
        layout.addWidget(
            QLabel("PNG / JPEG imports have no DICOM source: they get the PNG, NIfTI and JSON only.", wordWrap=True)
        )

        self.progress = QProgressBar()
        self.progress.setRange(0, max(1, len(self.uids)))
        self.progress.setValue(0)
        self.progress.setAccessibleName("Export progress")
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton("Cancel export", QDialogButtonBox.ButtonRole.RejectRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.close)
        layout.addWidget(self.buttons)
        self.resize(560, self.sizeHint().height())
        self._update()

    def _choose(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export results into", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def _update(self) -> None:
        running = self.task is not None
        self.fractional.setEnabled(self.dicom.isChecked() and not running)
        can = bool(self.uids) and (self.dicom.isChecked() or self.plain.isChecked()) and not running
        self.export_button.setEnabled(can)
        self.cancel_button.setEnabled(running)
        self.close_button.setEnabled(not running)
        for w in (self.folder, self.dicom, self.plain):
            w.setEnabled(not running)
        if not self.uids:
            self.status.setText("Select images in the browser first.")

    def start(self) -> None:
        folder = self.folder.text().strip()
        if not folder:
            self.status.setText("Choose a folder first.")
            return
        self.summary = None
        self.progress.setValue(0)
        self.status.setText("Exporting…")
        self.task = self.runner.start(
            "Export results",
            export_results_job,
            self.library,
            self.bundle,
            self.uids,
            folder,
            dicom=self.dicom.isChecked(),
            plain=self.plain.isChecked(),
            fractional=self.fractional.isChecked() and self.dicom.isChecked(),
            heatmaps=self.heatmaps,
            lut=self.lut,
            lane="background",
            on_progress=self._progress,
            on_result=self._done,
            on_failed=self._failed,
            on_finished=self._finished,
        )
        self._update()

    def cancel(self) -> None:
        if self.task is not None:
            self.runner.cancel(self.task)
            self.status.setText("Cancelling after the current image…")

    def _progress(self, done: int, total: int, _text: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def _done(self, summary) -> None:
        self.summary = summary
        text = summary_text(summary)
        details = [f"{uid}: {message}" for uid, message in summary.failed[:5]]
        self.status.setText(text + ("\n" + "\n".join(details) if details else ""))
        log.info("%s", text)

    def _failed(self, message: str) -> None:
        self.status.setText(f"Export failed: {message}")

    def _finished(self) -> None:
        self.task = None
        self._update()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        if self.task is not None:  # never leave a worker writing behind a closed dialog
            event.ignore()
            return
        super().closeEvent(event)


def open_export_results(window) -> ExportResultsDialog | None:
    """The dialog for the window's selection (and the shown image's heatmap), or a message."""
    from app.gui.dialogs import message

    if window.bundle is None:
        message(window, "Export results", "Load a model bundle first (File -> Choose model bundle…).")
        return None
    uids = window.browser.selected_uids()
    heatmaps, lut = {}, None
    controller = getattr(window, "analysis", None)
    shown = getattr(controller, "current_heat", None)
    uid = getattr(window, "current_uid", None)
    if shown and uid in uids:
        phrase, heat = shown[0], shown[1]
        heatmaps[uid] = (heat, phrase)
    try:
        from app.gui import colormaps

        lut = colormaps.table(controller.ai.heatmap_settings[2])
    except Exception:  # no panel yet: the writer's own colour table
        lut = None
    dialog = ExportResultsDialog(window, window.runner, window.library, window.bundle, uids, heatmaps=heatmaps, lut=lut)
    dialog.show()
    return dialog


def export_results_action(window) -> QAction:
    """The File menu's "Export results…" action (main_window's one-line hook)."""
    action = QAction("Export results (DICOM SEG / SR, JSON) for the selected images…", window)
    action.setStatusTip("Write the selected images' results as DICOM SEG + SR and as PNG / NIfTI / JSON")
    action.triggered.connect(lambda _checked=False: open_export_results(window))
    return action
