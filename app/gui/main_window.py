"""The main window: study browser, viewer, AI / reports / review panels and menus, wired to the
library and the model through workers.

Everything slow runs in :class:`~app.gui.workers.TaskRunner` lanes (import, image loading,
analysis, heatmaps, retrieval, reviews, exports, thumbnails) as the Qt-free jobs of
:mod:`app.logic.jobs`; results come back as signals and are dropped when the user has moved on
to another image meanwhile. The shown image's analysis, heatmaps, similar reports and overlays
are the :class:`~app.gui.analysis_controller.AnalysisController`'s (``window.analysis``); the
window keeps the selection, the bundle, the images, reviews, import and export. Results are
cached in memory (the last few images, analyses and phrase heatmaps) and analyses in the
library, so going back to an image is instant.
"""

from __future__ import annotations

import getpass
import logging
import time
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.gui.ai_panel import RESEARCH_NOTICE, SYNTHETIC_NOTICE, AIPanel
from app.gui.analysis_controller import LRU, AnalysisController
from app.gui.browser import BrowserWidget
from app.gui.dialogs import ModelCardDialog, message
from app.gui.jobs import JobsWidget
from app.gui.reports_panel import ReportsPanel
from app.gui.review_panel import ReviewPanel
from app.gui.settings import Settings
from app.gui.viewer import ViewerWidget
from app.gui.workers import TaskRunner
from app.logic import jobs
from app.logic.overlay import Legend

log = logging.getLogger(__name__)

REVIEW_LOCK_TIMEOUT_S = 2.0  # a review waits this long for another program's lock, then is queued
REVIEW_RETRY_MS = 5000  # queued reviews are retried this often (and with "Retry now")


# -- the window ---------------------------------------------------------------------------------


class MainWindow(QMainWindow):
    image_shown = Signal(str)  # uid
    analysis_shown = Signal(str)  # uid
    heatmap_shown = Signal(str)  # phrase
    bundle_changed = Signal()
    import_finished = Signal(object)  # ImportSummary
    batch_finished = Signal(object)  # BatchSummary
    review_saved = Signal(str)
    error_shown = Signal(str)

    def __init__(
        self, library, *, settings: Settings | None = None, restore_layout: bool = True, select_first: bool = True
    ):
        super().__init__()
        self.library = library
        self.settings = settings or Settings()
        self.runner = TaskRunner(self)
        self.bundle = None
        self.bundle_path: str | None = None
        self.bundle_error: str | None = None
        self.bundle_loading = False
        self.current_uid: str | None = None
        self.image_error: str | None = None
        self.last_error: str | None = None
        self.messages: list[str] = []
        self.images = LRU(4)
        self._tasks: dict[str, object] = {}
        self._thumb_queue: list = []
        self._last_refresh = 0.0
        self._boxes: list = []
        self.remember_layout = restore_layout  # screenshots use the default layout and keep none
        # reviews not saved yet (another program holds the library); none in a read-only library
        from app.library.pending import ReviewQueue

        self.read_only: str | None = library.read_only_reason
        self.review_queue = None if self.read_only else ReviewQueue(library)
        self._review_flush = None  # the flush task in flight
        self._review_flush_again = False
        self._busy_box = None

        title_state = f"read-only ({self.read_only})" if self.read_only else "research use only"
        if self.read_only:
            title_state += " - research use only"
        self.setWindowTitle(f"CXR Adaptor review - {Path(str(library.db_path)).name} - {title_state}")
        self.setAccessibleName("CXR Adaptor review")
        self.setObjectName("MainWindow")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

        self.viewer = ViewerWidget()
        self.viewer.setMinimumWidth(self.fontMetrics().horizontalAdvance("M") * 24)
        # the synthetic-model banner sits above the viewer for as long as such a model is loaded
        self.synthetic_banner = QLabel(f"⚠ {SYNTHETIC_NOTICE}.")
        self.synthetic_banner.setAccessibleName("Synthetic model notice")
        self.synthetic_banner.setWordWrap(True)
        self.synthetic_banner.setStyleSheet("background: #b35900; color: white; font-weight: bold; padding: 4px 8px;")
        self.synthetic_banner.setVisible(False)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(self.synthetic_banner)
        central_layout.addWidget(self.viewer, 1)
        self.setCentralWidget(central)
        self.browser = BrowserWidget(library)
        self.ai = AIPanel(self.settings)
        self.reports = ReportsPanel()
        self.review = ReviewPanel()
        self.dock_browser = self._dock("Studies", self.browser, Qt.DockWidgetArea.LeftDockWidgetArea)
        ai_scroll = QScrollArea()
        ai_scroll.setWidgetResizable(True)
        ai_scroll.setWidget(self.ai)
        self.dock_ai = self._dock("AI", ai_scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_reports = self._dock("Reports", self.reports, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_review = self._dock("Review", self.review, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.dock_reports, self.dock_review)
        self.dock_reports.raise_()

        self.jobs = JobsWidget(self.runner)
        self.notice = QLabel(f"<b>{RESEARCH_NOTICE}</b>")
        self.notice.setAccessibleName("Research use notice")
        self.notice.setStyleSheet("color: #b35900; padding: 0 6px;")
        self.statusBar().addPermanentWidget(self.jobs, 1)
        self.statusBar().addPermanentWidget(self.notice)

        # the shown image's analysis, heatmaps, similar reports and overlays
        self.analysis = AnalysisController(self)
        self.analysis.analysis_shown.connect(self.analysis_shown)
        self.analysis.heatmap_shown.connect(self.heatmap_shown)
        self._make_actions()
        self._connect()
        fm = self.fontMetrics()
        em = fm.horizontalAdvance("M")
        self.resize(em * 150, fm.height() * 56)
        self.resizeDocks([self.dock_browser, self.dock_ai], [em * 60, em * 41], Qt.Orientation.Horizontal)
        self.resizeDocks(
            [self.dock_ai, self.dock_reports], [fm.height() * 36, fm.height() * 17], Qt.Orientation.Vertical
        )
        if restore_layout:
            self._restore_layout()
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setSingleShot(True)
        self._thumb_timer.setInterval(30)
        self._thumb_timer.timeout.connect(self._start_thumbnails)
        self._review_timer = QTimer(self)
        self._review_timer.setSingleShot(True)
        self._review_timer.setInterval(REVIEW_RETRY_MS)
        self._review_timer.timeout.connect(self.flush_reviews)
        if self.read_only:
            self._set_read_only(self.read_only)
        self.browser.apply_filters()
        if select_first and self.browser.model.rows:
            self.browser.select_row(0)
        if self.review_queue is not None and len(self.review_queue):
            self.review.set_note(f"Saving {len(self.review_queue)} review(s) kept from the last session…")
            self.flush_reviews()

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setAccessibleName(f"{title} panel")
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(area, dock)
        return dock

    # -- actions and menus ------------------------------------------------------------------------
    def _action(self, text: str, slot, shortcut=None, *, context=None, tip: str = "", checkable=False) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(s) for s in seqs])
        if context is not None:
            action.setShortcutContext(context)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.setCheckable(checkable)
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda _checked=False: slot())
        return action

    def _make_actions(self) -> None:
        W = Qt.ShortcutContext.WidgetWithChildrenShortcut
        self.act_import_files = self._action("Import files…", self.import_files_dialog, QKeySequence.StandardKey.Open)
        self.act_import_folder = self._action("Import folder…", self.import_folder_dialog, "Ctrl+Shift+O")
        self.act_copy = self._action(
            "Copy imported files into the library",
            self._set_copy_mode,
            checkable=True,
            tip="Off: link files where they are (zip members are always copied)",
        )
        self.act_copy.setChecked(bool(self.settings.get("import/copy")))
        self.act_bundle_dir = self._action("Choose model bundle folder…", self.choose_bundle_folder, "Ctrl+B")
        self.act_bundle_zip = self._action("Choose model bundle (.zip)…", self.choose_bundle_zip)
        self.act_card = self._action("Model card…", self.show_model_card)
        self.act_export_png = self._action("Export view as PNG…", self.export_png_dialog, "Ctrl+E")
        self.act_export_csv = self._action(
            "Export predictions CSV for the selected images…", self.export_csv_dialog, "Ctrl+Shift+E"
        )
        self.act_quit = self._action("Quit", self.close, QKeySequence.StandardKey.Quit)
        file_menu = self.menuBar().addMenu("&File")
        for a in (
            self.act_import_files,
            self.act_import_folder,
            self.act_copy,
            None,
            self.act_bundle_dir,
            self.act_bundle_zip,
            self.act_card,
            None,
            self.act_export_png,
            self.act_export_csv,
            None,
            self.act_quit,
        ):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)

        # Viewer keys work while the viewer or the browser has the focus (not while typing).
        self.act_presets = [
            self._action(f"Window preset {i + 1}", lambda i=i: self.viewer.set_preset(i), str(i + 1), context=W)
            for i in range(5)
        ]
        self.act_invert = self._action("Invert", self.viewer.toggle_invert, "I", context=W)
        self.act_reset = self._action("Reset view", self.viewer.reset, "Space", context=W)
        self.act_fit = self._action("Fit to window", self.viewer.fit, "F", context=W)
        self.act_zoom_in = self._action("Zoom in", lambda: self.viewer.zoom(1.25), "+", context=W)
        self.act_zoom_out = self._action("Zoom out", lambda: self.viewer.zoom(0.8), "-", context=W)
        self.act_measure = self._action(
            "Measure distance", self.viewer.set_measure_mode, "M", context=W, checkable=True
        )
        self.act_next = self._action(
            "Next image", lambda: self.browser.select_relative(1), ["Right", "Down"], context=W
        )
        self.act_prev = self._action(
            "Previous image", lambda: self.browser.select_relative(-1), ["Left", "Up"], context=W
        )
        view_menu = self.menuBar().addMenu("&View")
        for a in (
            *self.act_presets,
            None,
            self.act_invert,
            self.act_reset,
            self.act_fit,
            self.act_zoom_in,
            self.act_zoom_out,
            self.act_measure,
            None,
            self.act_next,
            self.act_prev,
            None,
        ):
            view_menu.addSeparator() if a is None else view_menu.addAction(a)
        for dock in (self.dock_browser, self.dock_ai, self.dock_reports, self.dock_review):
            view_menu.addAction(dock.toggleViewAction())
        viewer_keys = [
            *self.act_presets,
            self.act_invert,
            self.act_reset,
            self.act_fit,
            self.act_zoom_in,
            self.act_zoom_out,
            self.act_measure,
            self.act_next,
            self.act_prev,
        ]
        self.viewer.addActions(viewer_keys)
        self.browser.table.addActions(viewer_keys)

        self.act_analyze = self._action("Analyze image again", lambda: self.analyze_current(force=True), "Ctrl+R")
        self.act_analyze_all = self._action(
            "Analyze all images",
            self.analyze_all,
            "Ctrl+Shift+R",
            tip="Analyse every image without an analysis by this model",
        )
        self.act_cancel = self._action("Cancel running jobs", self.cancel_jobs)
        ai_menu = self.menuBar().addMenu("&Analysis")
        for a in (self.act_analyze, self.act_analyze_all, None, self.act_cancel):
            ai_menu.addSeparator() if a is None else ai_menu.addAction(a)
        self.act_about = self._action("About", self.show_about)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self.act_about)
        self.update_actions()

    def _connect(self) -> None:
        self.browser.current_changed.connect(self.show_uid)
        self.browser.thumbnails_needed.connect(self._queue_thumbnails)
        self.viewer.message.connect(self.status_message)
        self.ai.choose_model.connect(self.choose_bundle_folder)
        self.ai.show_card.connect(self.show_model_card)
        self.review.review_requested.connect(self.save_review)
        self.review.retry_requested.connect(self.flush_reviews)

    def update_actions(self) -> None:
        loaded = self.bundle is not None
        self.act_card.setEnabled(loaded)
        self.act_analyze.setEnabled(loaded and self.current_uid is not None)
        self.act_analyze_all.setEnabled(loaded)

    # -- messages -------------------------------------------------------------------------------
    def status_message(self, text: str, timeout_ms: int = 8000) -> None:
        self.messages.append(text)
        self.statusBar().showMessage(text, timeout_ms)

    def show_error(self, title: str, text: str, details: str = "") -> None:
        """Errors from workers and actions: a non-blocking message box and the status bar."""
        self.last_error = text
        self.status_message(f"{title}: {text}", 15000)
        self.error_shown.emit(text)
        self._boxes = [b for b in self._boxes if b is not None and _alive(b)]
        self._boxes.append(message(self, title, text, details))

    # -- selection, image, analysis -------------------------------------------------------------
    def show_uid(self, uid: str | None) -> None:
        self.current_uid = uid
        self.image_error = None
        self.analysis.reset()
        self.update_actions()
        self.runner.cancel(self._tasks.pop("image", None))
        self._show_text_panels(uid)
        if uid is None:
            self.viewer.set_image(None, "No image selected")
            return
        cached = self.images.fetch(uid)
        if cached is not None:
            self._image_loaded((uid, *cached))
            return
        self.viewer.info.setText("Loading…")
        self._tasks["image"] = self.runner.start(
            "Load image",
            jobs.load_image_job,
            self.library,
            uid,
            on_result=self._image_loaded,
            on_failed=lambda msg, uid=uid: self._image_failed(uid, msg),
        )

    def _show_text_panels(self, uid: str | None) -> None:
        if uid is None:
            self.reports.set_own([])
            self.review.set_reviews(None)
            self.reports.set_similar(None, "No image selected")
            return
        from app.library.queries import get_instance, reports_for, reviews_for

        with self.library.session() as s:
            inst = get_instance(s, uid)
            if inst is None:
                self.review.set_reviews(None)
                return
            texts = [r.text for r in reports_for(s, inst)]
            reviews = [(r.status, r.comment, r.created_at) for r in reviews_for(s, inst)]
        pending = (
            [(p.status, p.comment, p.created_at) for p in self.review_queue.items(uid)]
            if self.review_queue is not None
            else []
        )
        self.reports.set_own(texts)
        self.review.set_reviews(reviews, pending)
        self.reports.set_similar(
            None,
            "Analysing…"
            if self.bundle is not None
            else "No model loaded: choose a model bundle to find similar reports",
        )

    def _image_failed(self, uid: str, msg: str) -> None:
        if uid != self.current_uid:
            return
        self.image_error = msg
        self.viewer.show_message(f"This image cannot be shown: {msg}")
        self.status_message(f"Cannot show the image: {msg}")
        self.image_shown.emit(uid)

    def _image_loaded(self, payload) -> None:
        uid, image, title = payload
        self.images.put(uid, (image, title))
        if uid != self.current_uid:
            return
        self.viewer.set_image(image, title)
        self.image_shown.emit(uid)
        self.analyze_current()

    # -- the analysis controller's state and actions (app.gui.analysis_controller) --------------
    @property
    def current_result(self):
        """The shown image's analysis by the loaded model (None: none yet)."""
        return self.analysis.current_result

    @property
    def current_heat(self):
        """(phrase, heatmap, source, peak-to-mean ratio) of the heatmap shown, or None."""
        return self.analysis.current_heat

    @property
    def analysis_error(self) -> str | None:
        return self.analysis.analysis_error

    @property
    def results(self) -> LRU:
        return self.analysis.results

    @property
    def heatmaps(self) -> LRU:
        return self.analysis.heatmaps

    @property
    def _mask_sig(self):
        return self.analysis._mask_sig

    @property
    def _heat_sig(self):
        return self.analysis._heat_sig

    def analyze_current(self, force: bool = False) -> None:
        self.analysis.analyze_current(force)

    def cancel_analysis(self) -> None:
        self.analysis.cancel_analysis()

    def request_heatmap(self, phrase: str, source: str = "") -> None:
        self.analysis.request_heatmap(phrase, source)

    # -- review ---------------------------------------------------------------------------------
    def save_review(self, status: str, comment: str) -> None:
        """Queue the review (never lost: app.library.pending keeps it on disk) and save the queue
        in a worker. When another program holds the library the review stays queued, the panel
        and a message say so, and it is saved by "Retry now" or automatically once the lock is
        gone."""
        uid = self.current_uid
        if uid is None:
            return
        if self.review_queue is None:
            self.show_error(
                "Review not saved",
                f"This library is read-only ({self.read_only}): reviews cannot "
                "be saved. Open a writable copy of the library to review.",
            )
            return
        from app.library.pending import PendingReview

        try:
            reviewer = getpass.getuser()
        except Exception:
            reviewer = ""
        self.review_queue.add(PendingReview(uid, status, comment, reviewer))
        self.review.clear_comment()
        self._refresh_review_panel(uid)
        self.review.set_note("Saving the review…")
        self.flush_reviews()

    def flush_reviews(self) -> None:
        """Save the queued reviews in a worker (one flush at a time; a request meanwhile runs
        another flush right after)."""
        self._review_timer.stop()
        if self.review_queue is None or not len(self.review_queue):
            return
        if self._review_flush is not None and not self._review_flush.done:
            self._review_flush_again = True
            return
        self._review_flush = self.runner.start(
            "Save review",
            jobs.flush_reviews_job,
            self.review_queue,
            REVIEW_LOCK_TIMEOUT_S,
            on_result=self._reviews_flushed,
            on_failed=lambda msg: self._reviews_not_saved(msg, busy=False),
            on_finished=self._review_flush_finished,
        )

    def _review_flush_finished(self) -> None:
        if self._review_flush_again:
            self._review_flush_again = False
            QTimer.singleShot(0, self.flush_reviews)

    def _reviews_flushed(self, result) -> None:
        for _item, why in result.dropped:
            self.show_error("Review not saved", why)
        for item in result.saved:
            self.status_message(f"Review saved: {item.status}")
        if result.saved or result.dropped:
            self.browser.refresh()
        if self.current_uid is not None:
            self._refresh_review_panel(self.current_uid)
        if result.left:
            self._reviews_not_saved(result.error or "the library could not be written", busy=result.busy)
        else:
            self.review.set_note(None)
            if self._busy_box is not None and _alive(self._busy_box):
                self._busy_box.close()
            self._busy_box = None
        for uid in dict.fromkeys(item.uid for item in result.saved):
            self.review_saved.emit(uid)

    def _reviews_not_saved(self, msg: str, *, busy: bool) -> None:
        n = len(self.review_queue) if self.review_queue is not None else 0
        kept = (
            f"{'The review is' if n == 1 else f'{n} reviews are'} kept and will be saved "
            "automatically when the library is free."
        )
        if busy:
            note = f"Waiting: another program is using the library. {kept}"
            text = (
                f"Another program is using the library {Path(str(self.library.db_path)).name}: it holds "
                f"the database lock (another adaptor-review, an import, or a database tool such as "
                f"sqlite3 or DB Browser).\n\n{kept} Close that program or let it finish; "
                "“Retry now” tries again at once."
            )
        else:
            note = f"Not saved yet: {msg}. {kept}"
            text = f"{msg}.\n\n{kept} “Retry now” tries again."
        if self.review_queue is not None and self.review_queue.persist_error:
            note += f" (Kept in memory only: {self.review_queue.persist_error}; do not quit.)"
        self.review.set_note(note, retry=True)
        self.last_error = note
        self.status_message(note, 15000)
        if self._busy_box is None or not _alive(self._busy_box):  # one message per episode, not per retry
            from app.gui.dialogs import retry_message

            self._busy_box = retry_message(
                self, "Library busy" if busy else "Review not saved", text, self.flush_reviews
            )
            self._boxes.append(self._busy_box)
            self.error_shown.emit(note)
        self._review_timer.start()

    def _refresh_review_panel(self, uid: str) -> None:
        similar = self.current_result.similar if self.current_result is not None else None
        self._show_text_panels(uid)
        if similar is not None:
            self.reports.set_similar(similar)

    def _set_read_only(self, reason: str) -> None:
        """A library that cannot be written: browse, look, analyse; nothing is saved."""
        self.review.set_read_only(reason)
        for action in (self.act_import_files, self.act_import_folder):
            action.setEnabled(False)
            action.setStatusTip(f"The library is read-only ({reason})")
        self.setAcceptDrops(False)
        self.status_message(f"Library opened read-only ({reason}): browsing only, nothing is saved", 30000)

    # -- import ---------------------------------------------------------------------------------
    def _set_copy_mode(self, on: bool) -> None:
        self.settings.set("import/copy", bool(on))

    def import_files_dialog(self) -> None:
        start = self.settings.get("import/last_folder") or str(Path.home())
        files, _ = QFileDialog.getOpenFileNames(
            self, "Import images", start, "Images (*.dcm *.dicom *.png *.jpg *.jpeg *.zip DICOMDIR);;All files (*)"
        )
        if files:
            self.settings.set("import/last_folder", str(Path(files[0]).parent))
            self.import_paths(files)

    def import_folder_dialog(self) -> None:
        start = self.settings.get("import/last_folder") or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Import a folder", start)
        if folder:
            self.settings.set("import/last_folder", folder)
            self.import_paths([folder])

    def import_paths(self, paths: list[str]):
        paths = [str(p) for p in paths]
        if not paths:
            return None
        mode = "copy" if self.act_copy.isChecked() else "link"
        task = self.runner.start(
            "Import",
            jobs.import_job,
            self.library,
            paths,
            mode,
            lane="background",
            on_result=self._import_done,
            on_failed=lambda msg: self.show_error("Import failed", msg),
            on_progress=lambda *_: self.refresh_browser(),
        )
        self.jobs.add(task, "Importing")
        self.status_message(f"Importing {len(paths)} item(s)…")
        return task

    def refresh_browser(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_refresh > 1.5:
            self._last_refresh = now
            self.browser.refresh()
            if self.current_uid is None and self.browser.model.rows:
                # the first image arrived: show it, in the next event-loop pass (short stalls)
                QTimer.singleShot(0, lambda: self.current_uid is None and self.browser.select_row(0))

    def _import_done(self, summary) -> None:
        self.refresh_browser(force=True)
        self.browser.set_findings(
            list(self.bundle.classes) if self.bundle is not None else [],
            dict(self.bundle.thresholds) if self.bundle is not None else None,
        )
        state = "Import cancelled" if summary.cancelled else "Import finished"
        text = (
            f"{state}: {summary.imported} imported, {summary.duplicates} duplicates, "
            f"{len(summary.rejected)} rejected ({summary.elapsed_s:.1f} s)"
        )
        self.status_message(text, 15000)
        if summary.rejected:
            details = "\n".join(f"{r.path}\n    {r.reason}: {r.message}" for r in summary.rejected[:500])
            self._boxes.append(
                message(self, "Import", f"{text}. Some files were not imported.", details, QMessageBox.Icon.Information)
            )
        self.import_finished.emit(summary)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.import_paths(paths)
        else:
            event.ignore()

    # -- thumbnails -----------------------------------------------------------------------------
    def _queue_thumbnails(self, rows) -> None:
        self._thumb_queue.extend(rows)
        if not self._thumb_timer.isActive():
            self._thumb_timer.start()

    def _start_thumbnails(self) -> None:
        batch, self._thumb_queue = self._thumb_queue[:24], self._thumb_queue[24:]
        if not batch:
            return
        self.runner.start(
            "Thumbnails", jobs.thumbnails_job, self.library, batch, lane="thumbnails", on_result=self._thumbnails_done
        )
        if self._thumb_queue:
            self._thumb_timer.start()

    def _thumbnails_done(self, items) -> None:
        for uid, pixels in items:
            self.browser.model.set_thumbnail(uid, pixels)

    # -- model ----------------------------------------------------------------------------------
    def choose_bundle_folder(self) -> None:
        start = str(Path(self.bundle_path).parent) if self.bundle_path else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a model bundle folder", start)
        if folder:
            self.load_bundle(folder)

    def choose_bundle_zip(self) -> None:
        start = str(Path(self.bundle_path).parent) if self.bundle_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model bundle", start, "Model bundles (*.zip)")
        if path:
            self.load_bundle(path)

    def load_bundle(self, path: str, *, quiet: bool = False, remembered: bool = False) -> None:
        """Load in a worker; a failure keeps the library usable and says what is wrong.
        ``remembered``: the bundle comes from the settings, not from the user's choice now (a
        synthetic one is then refused unless this is the library it was chosen for)."""
        self.bundle_loading = True
        self.ai.set_busy(f"Loading the model {Path(path).name}…")
        self.runner.start(
            "Load model",
            jobs.open_bundle_job,
            str(path),
            on_result=lambda payload: self._bundle_loaded(payload, remembered=remembered),
            on_failed=lambda msg, p=str(path): self._bundle_failed(p, msg, quiet),
        )

    # The remembered bundle ("model/last_bundle", loaded when the app starts without --bundle)
    # is the last bundle that loaded and is not synthetic. A synthetic (demo) bundle is never
    # remembered: `--demo` loads it for the demo's own library, and a real library never opens
    # with it; one remembered by an older version is refused when it turns out synthetic. A
    # bundle that fails to load is forgotten.
    def remembered_bundle(self) -> str | None:
        """The bundle to load when a library opens (None: none, or its path is gone)."""
        last = self.settings.get("model/last_bundle")
        return str(last) if last and Path(last).exists() else None

    def load_remembered_bundle(self) -> bool:
        path = self.remembered_bundle()
        if path:
            self.load_bundle(path, quiet=True, remembered=True)
        return bool(path)

    def _forget_bundle(self, path: str) -> None:
        if self.settings.get("model/last_bundle") and str(self.settings.get("model/last_bundle")) == str(path):
            self.settings.set("model/last_bundle", "")

    def _bundle_failed(self, path: str, msg: str, quiet: bool) -> None:
        self.bundle_loading = False
        self.bundle_error = msg
        self._forget_bundle(path)  # a bundle that cannot run never stays the default
        self.ai.set_busy(None)
        if self.bundle is None:
            self.ai.set_model(None, error=msg)
        if quiet:
            self.status_message(f"Model not loaded: {msg}", 15000)
        else:
            keep = f" Still using {self.bundle.id} {self.bundle.version}." if self.bundle is not None else ""
            self.show_error("Model not loaded", msg + keep)
        self.bundle_changed.emit()

    def _bundle_loaded(self, payload, remembered: bool = False) -> None:
        from app.logic.bundles import describe

        path, bundle = payload
        self.bundle_loading = False
        if bundle.synthetic and remembered:
            # the demo model remembered by an older version: never the default for a library
            self._forget_bundle(path)
            self.bundle_error = (
                f"the remembered model {bundle.id} {bundle.version} is a demo model trained on "
                "synthetic phantoms; it is not loaded for this library (choose it again if you "
                "mean to)"
            )
            self.ai.set_busy(None)
            if self.bundle is None:
                self.ai.set_model(None, error=self.bundle_error)
            self.status_message(f"Model not loaded: {self.bundle_error}", 15000)
            self.bundle_changed.emit()
            return
        self.bundle, self.bundle_path, self.bundle_error = bundle, path, None
        if bundle.synthetic:
            self._forget_bundle(path)  # shown with a banner, never remembered
        else:
            self.settings.set("model/last_bundle", path)
        self.synthetic_banner.setVisible(bundle.synthetic)
        self.ai.set_busy(None)
        self.ai.set_model(describe(bundle), mask_label=bundle.mask_label, synthetic=bundle.synthetic)
        self.browser.set_findings(list(bundle.classes), dict(bundle.thresholds))
        self.status_message(f"Model loaded: {describe(bundle)}")
        self.update_actions()
        self.bundle_changed.emit()
        if self.current_uid is not None and self.viewer.image is not None:
            self.reports.set_similar(None, "Analysing…")
            self.analyze_current()

    def show_model_card(self) -> None:
        if self.bundle is None:
            self.status_message("No model loaded")
            return
        dlg = ModelCardDialog(f"{self.bundle.id} {self.bundle.version}", self.bundle.card_markdown, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.model_card_dialog = dlg

    # -- batch analysis -------------------------------------------------------------------------
    def analyze_all(self, uids: list[str] | None = None):
        """Analyse every image without an analysis by this model (or the given ones) in the
        background, with progress and cancel."""
        if self.bundle is None:
            self.show_error("Analyze all", "Choose a model bundle first.")
            return None
        task = self.runner.start(
            "Analyze all",
            jobs.analyze_all_job,
            self.library,
            self.bundle,
            uids,
            lane="background",
            on_result=self._batch_done,
            on_failed=lambda msg: self.show_error("Analysis stopped", msg),
            on_progress=lambda *_: self.refresh_browser(),
        )
        self.jobs.add(task, "Analysing")
        return task

    def _batch_done(self, summary) -> None:
        if summary.total == 0:
            self.status_message("Every image already has an analysis by this model")
            self.batch_finished.emit(summary)
            return
        self.refresh_browser(force=True)
        state = "Analysis cancelled" if summary.cancelled else "Analysis finished"
        text = (
            f"{state}: {summary.analysed} analysed, {summary.cached} already done, "
            f"{len(summary.failed)} failed ({summary.elapsed_s:.1f} s)"
        )
        self.status_message(text, 15000)
        if summary.failed:
            details = "\n".join(f"{uid}: {msg}" for uid, msg in summary.failed[:500])
            self._boxes.append(message(self, "Analyze all", f"{text}.", details))
        self.batch_finished.emit(summary)

    def cancel_jobs(self) -> None:
        self.runner.cancel_all("background")
        self.status_message("Cancelling…")

    # -- export ---------------------------------------------------------------------------------
    def export_png_dialog(self) -> None:
        if self.viewer.display is None:
            self.status_message("No image to export")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export the view as PNG", str(Path.home() / "view.png"), "PNG images (*.png)"
        )
        if path:
            self.export_png(path)

    def export_legend(self) -> Legend:
        return self.analysis.export_legend()

    def export_png(self, path: str):
        if self.viewer.display is None:
            self.status_message("No image to export")
            return None
        task = self.runner.start(
            "Export PNG",
            jobs.export_png_job,
            path,
            self.viewer.display.copy(),
            list(self.viewer.layers()),
            self.viewer.view_rect(),
            self.export_legend(),
            on_result=lambda p: self.status_message(f"Exported the view to {p}"),
            on_failed=lambda msg: self.show_error("Export failed", msg),
        )
        return task

    def export_csv_dialog(self) -> None:
        uids = self.browser.selected_uids()
        if not uids:
            self.status_message("Select the images to export first (Ctrl+A selects all shown)")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export predictions", str(Path.home() / "predictions.csv"), "CSV files (*.csv)"
        )
        if path:
            self.export_csv(uids, path)

    def export_csv(self, uids: list[str], path: str):
        if not str(path).lower().endswith(".csv"):
            path = str(path) + ".csv"
        task = self.runner.start(
            "Export CSV",
            jobs.export_csv_job,
            self.library,
            self.bundle,
            list(uids),
            path,
            on_result=lambda r: self.status_message(f"Wrote {r[1]} rows to {r[0]}"),
            on_failed=lambda msg: self.show_error("Export failed", msg),
        )
        return task

    # -- about, layout, close --------------------------------------------------------------------
    def show_about(self) -> None:
        self._boxes.append(
            message(
                self,
                "About CXR Adaptor review",
                "CXR Adaptor review: look at chest X-rays and at what an Adaptor model makes of them.\n\n"
                f"{RESEARCH_NOTICE}. Not a medical device.\n\n"
                "Keys: 1-5 window presets, I invert, Space reset, F fit, M measure, arrows next/previous image; "
                "left drag window/level, right drag pan, wheel zoom.",
                icon=QMessageBox.Icon.Information,
            )
        )

    def _restore_layout(self) -> None:
        geometry = self.settings.get("window/geometry")
        state = self.settings.get("window/state")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)

    def save_layout(self) -> None:
        if not self.remember_layout:
            return
        self.settings.set("window/geometry", self.saveGeometry())
        self.settings.set("window/state", self.saveState())
        self.settings.sync()

    def is_idle(self) -> bool:
        return not self.bundle_loading and not self.runner.running()

    def closeEvent(self, event) -> None:
        self._thumb_timer.stop()
        self._review_timer.stop()  # queued reviews stay in pending_reviews.json for the next start
        self.save_layout()
        self.runner.shutdown(15000)
        for box in self._boxes:
            if _alive(box):
                box.close()
        super().closeEvent(event)


def _alive(obj) -> bool:
    try:
        from shiboken6 import isValid
    except ImportError:  # pragma: no cover
        return True
    return isValid(obj)
