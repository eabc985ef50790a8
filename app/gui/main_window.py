"""The main window: study browser, viewer, AI / reports / review panels and menus, wired to the
library and the model through workers.

Everything slow runs in :class:`~app.gui.workers.TaskRunner` lanes (import, image loading,
analysis, heatmaps, retrieval, reviews, exports, thumbnails) as the Qt-free jobs of
:mod:`app.logic.jobs`; results come back as signals and are dropped when the user has moved on
to another image meanwhile. The shown image's analysis, heatmaps, similar reports and overlays
are the :class:`~app.gui.analysis_controller.AnalysisController`'s (``window.analysis``). The
other jobs are controllers the window wires to its widgets: reviews (``window.reviews``), the
reader study (``window.reader_study``), the panes around the image (``window.hanging_ctl``,
:mod:`app.gui.hanging`), import / remove / relocate / anonymised export / thumbnails
(``window.library_ctl``), the model bundle (``window.bundles``), the PNG / CSV / labels exports
(``window.exports``); the actions and menus are built by :mod:`app.gui.menus`. The window keeps
the selection, the shown image and the state they share. Results are cached in memory (the last
few images, analyses and phrase heatmaps) and analyses in the library, so going back to an
image is instant.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QLabel,
    QMainWindow,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.ai_panel import RESEARCH_NOTICE, SYNTHETIC_NOTICE, AIPanel
from app.gui.analysis_controller import LRU, AnalysisController
from app.gui.browser import BrowserWidget
from app.gui.bundle_controller import BundleController
from app.gui.dialogs import message
from app.gui.exports import ExportController
from app.gui.hanging import HangingController, HangingWidget
from app.gui.jobs import JobsWidget
from app.gui.library_controller import LibraryController
from app.gui.menus import build_actions, shortcut_rows
from app.gui.reader_controller import ReaderStudyController
from app.gui.reader_panel import ReaderPanel
from app.gui.reports_panel import ReportsPanel
from app.gui.review_controller import ReviewController
from app.gui.review_panel import ReviewPanel
from app.gui.settings import Settings
from app.gui.tag_browser import TagBrowser
from app.gui.workers import TaskRunner
from app.logic import jobs
from app.logic.overlay import Legend

log = logging.getLogger(__name__)


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
    pane_shown = Signal(int)  # a pane other than the active one got its image
    library_changed = Signal()  # images removed or relocated
    anonymized = Signal(object)  # ExportSummary of an anonymised export

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
        self._boxes: list = []
        self.remember_layout = restore_layout  # screenshots use the default layout and keep none
        self.read_only: str | None = library.read_only_reason

        title_state = f"read-only ({self.read_only})" if self.read_only else "research use only"
        if self.read_only:
            title_state += " - research use only"
        self.setWindowTitle(f"CXR Adaptor review - {Path(str(library.db_path)).name} - {title_state}")
        self.setAccessibleName("CXR Adaptor review")
        self.setObjectName("MainWindow")
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks)

        # the panes (1x1 / 1x2 / 2x2); ``self.viewer`` is the active one (pane 0: the browser's image)
        self.hanging = HangingWidget()
        self.hanging.setMinimumWidth(self.fontMetrics().horizontalAdvance("M") * 24)
        self.viewer = self.hanging.panes[0]
        self.hung: list = []  # app.logic.hanging.Slot per visible pane
        self.compare_prior = False
        # the synthetic-model banner sits above the viewer for as long as such a model is loaded
        self.synthetic_banner = QLabel(f"⚠ {SYNTHETIC_NOTICE}.")
        self.synthetic_banner.setAccessibleName("Synthetic model notice")
        self.synthetic_banner.setWordWrap(True)
        self.synthetic_banner.setStyleSheet("background: #b35900; color: white; font-weight: bold; padding: 4px 8px;")
        self.synthetic_banner.setVisible(False)
        # the browser's filter hides the shown image: said above it, and nothing acts on it
        self.hidden_banner = QLabel("")
        self.hidden_banner.setAccessibleName("Hidden image notice")
        self.hidden_banner.setWordWrap(True)
        self.hidden_banner.setStyleSheet("background: #555; color: white; padding: 4px 8px;")
        self.hidden_banner.setVisible(False)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(self.synthetic_banner)
        central_layout.addWidget(self.hidden_banner)
        central_layout.addWidget(self.hanging, 1)
        self.setCentralWidget(central)
        self.browser = BrowserWidget(library, runner=self.runner)
        self.ai = AIPanel(self.settings)
        self.reports = ReportsPanel()
        self.review = ReviewPanel()
        self.reader = ReaderPanel()
        self.tags = TagBrowser()
        self.dock_browser = self._dock("Studies", self.browser, Qt.DockWidgetArea.LeftDockWidgetArea)
        ai_scroll = QScrollArea()
        ai_scroll.setWidgetResizable(True)
        ai_scroll.setWidget(self.ai)
        # page 1: a blinded reader study hides the AI results until the case is labelled
        self.ai_stack = QStackedWidget()
        self.ai_stack.addWidget(ai_scroll)
        self.ai_blind = QLabel("AI results are hidden until you label this case (blinded reader study).")
        self.ai_blind.setAccessibleName("AI results hidden")
        self.ai_blind.setWordWrap(True)
        self.ai_blind.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.ai_stack.addWidget(self.ai_blind)
        self.dock_ai = self._dock("AI", self.ai_stack, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_reports = self._dock("Reports", self.reports, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_review = self._dock("Review", self.review, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dock_reader = self._dock("Reader study", self.reader, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.dock_reports, self.dock_review)
        self.tabifyDockWidget(self.dock_review, self.dock_reader)
        self.dock_tags = self._dock("Tags", self.tags, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.dock_reader, self.dock_tags)
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
        # approve / flag reviews and their queue (app.gui.review_controller)
        self.reviews = ReviewController(self)
        self.reviews.review_saved.connect(self.review_saved)
        self.reviews.error_shown.connect(self.error_shown)
        # the reader study: worklist, labels, blinding (app.gui.reader_controller)
        self.reader_study = ReaderStudyController(self)
        # the panes around the selected image (app.gui.hanging), import / remove / relocate /
        # anonymised export / thumbnails, the model bundle, and the PNG / CSV / labels exports
        self.hanging_ctl = HangingController(self)
        self.library_ctl = LibraryController(self)
        self.bundles = BundleController(self)
        self.exports = ExportController(self)
        build_actions(self)  # actions, menus, toolbar and keys (app.gui.menus)
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
        if self.read_only:
            self._set_read_only(self.read_only)
        self.browser.apply_filters()
        if select_first and self.browser.model.rows:
            self.browser.select_row(0)
        self.reviews.start()

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

    def _connect(self) -> None:
        self.browser.current_changed.connect(self.show_uid)
        self.browser.hidden_changed.connect(self._hidden_changed)
        self.browser.thumbnails_needed.connect(self.library_ctl.queue_thumbnails)
        for pane in self.hanging.panes:
            pane.message.connect(self.status_message)
            pane.wheel_step.connect(self.hanging_ctl.wheel_step)
        self.hanging.active_changed.connect(self.hanging_ctl.pane_activated)
        self.image_shown.connect(lambda _uid: self.show_tags())
        self.dock_tags.visibilityChanged.connect(lambda on: on and self.show_tags())
        self.ai.choose_model.connect(self.bundles.choose_bundle_folder)
        self.ai.show_card.connect(self.bundles.show_model_card)

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
        hung = self.hanging_ctl.hung_index(uid)
        if hung is not None and len(self.hanging.visible_panes()) > 1:
            if hung != self.hanging.active:  # already hung in another pane: make it the active one
                self.hanging.set_active(hung)
                return
            if uid == self.current_uid:
                return
        if self.hanging.active != 0:
            self.hanging.blockSignals(True)
            self.hanging.set_active(0)
            self.hanging.blockSignals(False)
        self.viewer = self.hanging.panes[0]
        self.current_uid = uid
        self.image_error = None
        self.analysis.reset()
        self.update_actions()
        self.runner.cancel(self._tasks.pop("image", None))
        self._show_text_panels(uid)
        self.hanging_ctl.hang(uid)
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
        self.reviews.show(self.visible_uid() if uid is not None else None)
        self.reader_study.show(uid)
        if uid is None:
            self.reports.set_own([])
            self.reports.set_similar(None, "No image selected")
            return
        from app.library.queries import get_instance, reports_for

        with self.library.session() as s:
            inst = get_instance(s, uid)
            if inst is None:
                return
            texts = [r.text for r in reports_for(s, inst)]
        self.reports.set_own(texts)
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
        self.hanging_ctl.after_pane_image(self.hanging.active)
        self.image_shown.emit(uid)
        self.analyze_current()

    # -- tags -----------------------------------------------------------------------------------
    def show_tags(self, force: bool = False) -> None:
        """The active image's DICOM tags in the tag browser (when it is shown)."""
        if not (force or self.dock_tags.isVisible()):
            return
        image = self.viewer.image
        self.tags.set_dataset(getattr(image, "header", None) if image is not None else None, self.viewer.title)

    def open_tags(self) -> None:
        self.dock_tags.show()
        self.dock_tags.raise_()
        self.show_tags(force=True)
        self.tags.search.setFocus()

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

    def export_legend(self) -> Legend:
        return self.analysis.export_legend()

    # -- review (the review controller's state and actions: app.gui.review_controller) ----------
    @property
    def review_queue(self):
        return self.reviews.queue

    @property
    def _review_flush(self):
        return self.reviews.flush_task

    @property
    def _review_timer(self):
        return self.reviews.timer

    @property
    def _busy_box(self):
        return self.reviews.busy_box

    def save_review(self, status: str, comment: str) -> None:
        self.reviews.save(status, comment)

    def flush_reviews(self) -> None:
        self.reviews.flush()

    def visible_uid(self) -> str | None:
        """The shown image, unless the browser's filter hides it (then nothing is acted on)."""
        return None if self.browser.current_hidden() else self.current_uid

    def current_hidden_reason(self) -> str | None:
        if self.current_uid is not None and self.browser.current_hidden():
            return "the shown image is hidden by the browser's filter: clear the filter to act on it"
        return None

    def _hidden_changed(self, hidden: bool) -> None:
        reason = self.current_hidden_reason()
        self.hidden_banner.setText(f"Hidden: {reason}." if reason else "")
        self.hidden_banner.setVisible(bool(reason))
        self.reviews.show(self.visible_uid())
        self.reader_study.show(self.current_uid)
        self.update_actions()

    def _set_read_only(self, reason: str) -> None:
        """A library that cannot be written: browse, look, analyse; nothing is saved."""
        self.review.set_read_only(reason)
        for action in (self.act_import_files, self.act_import_folder, self.act_remove, self.act_relocate):
            action.setEnabled(False)
            action.setStatusTip(f"The library is read-only ({reason})")
        self.setAcceptDrops(False)
        self.status_message(f"Library opened read-only ({reason}): browsing only, nothing is saved", 30000)

    # -- drag and drop: imported (app.gui.library_controller) ------------------------------------
    def dragEnterEvent(self, event) -> None:
        self.library_ctl.drag_enter(event)

    def dragMoveEvent(self, event) -> None:
        self.library_ctl.drag_enter(event)

    def dropEvent(self, event) -> None:
        self.library_ctl.drop(event)

    # -- library, bundle, export and menu jobs the tests and app.gui.app drive through the window
    def import_paths(self, paths: list[str]):
        return self.library_ctl.import_paths(paths)

    def remove_selected(self, uids: list[str] | None = None):
        return self.library_ctl.remove_selected(uids)

    def relocate(self, folder: str):
        return self.library_ctl.relocate(folder)

    def export_anonymized(self, uids: list[str], folder: str):
        return self.library_ctl.export_anonymized(uids, folder)

    def load_bundle(self, path: str, *, quiet: bool = False, remembered: bool = False) -> None:
        self.bundles.load_bundle(path, quiet=quiet, remembered=remembered)

    def remembered_bundle(self) -> str | None:
        return self.bundles.remembered_bundle()

    def load_remembered_bundle(self) -> bool:
        return self.bundles.load_remembered_bundle()

    def _bundle_loaded(self, payload, remembered: bool = False) -> None:
        self.bundles._bundle_loaded(payload, remembered)

    def show_model_card(self) -> None:
        self.bundles.show_model_card()

    def export_png(self, path: str):
        return self.exports.export_png(path)

    def export_csv(self, uids: list[str], path: str):
        return self.exports.export_csv(uids, path)

    def export_labels(self, path: str, uids: list[str] | None = None):
        return self.exports.export_labels(path, uids)

    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        return shortcut_rows(self)

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
            on_progress=lambda *_: self.library_ctl.refresh_browser(),
        )
        self.jobs.add(task, "Analysing")
        return task

    def _batch_done(self, summary) -> None:
        if summary.total == 0:
            self.status_message("Every image already has an analysis by this model")
            self.batch_finished.emit(summary)
            return
        self.library_ctl.refresh_browser(force=True)
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

    # -- layout, theme, close --------------------------------------------------------------------
    def _restore_layout(self) -> None:
        geometry = self.settings.get("window/geometry")
        state = self.settings.get("window/state")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        layout = str(self.settings.get("view/layout") or "1x1")
        if layout in self.act_layouts and layout != "1x1":
            self.act_layouts[layout].setChecked(True)
        if self.settings.get("view/dark"):
            self.act_dark.setChecked(True)

    def fit_to_screen(self, available=None) -> None:
        """Keep the window inside the screen it opens on (``available``: that screen's free area,
        by default the window's screen): a 1366 x 768 laptop shows every control."""
        if available is None:
            screen = self.screen() or QApplication.primaryScreen()
            if screen is None:
                return
            available = screen.availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()  # title bar and borders
        width = min(self.width(), available.width() - frame.width())
        height = min(self.height(), available.height() - frame.height())
        if (width, height) != (self.width(), self.height()):
            em = self.fontMetrics().horizontalAdvance("M")
            self.resize(width, height)
            self.resizeDocks(
                [self.dock_browser, self.dock_ai], [int(width * 0.3), int(width * 0.28)], Qt.Orientation.Horizontal
            )
            self.browser.table.setColumnWidth(1, em * 11)
        x = min(
            max(self.x(), available.left()), max(available.left(), available.right() - self.frameGeometry().width())
        )
        y = min(
            max(self.y(), available.top()), max(available.top(), available.bottom() - self.frameGeometry().height())
        )
        self.move(x, y)

    def set_dark(self, on: bool) -> None:
        """The dark reading-room theme (remembered)."""
        from app.gui.theme import apply_theme

        apply_theme(QApplication.instance(), dark=bool(on))
        self.settings.set("view/dark", bool(on))

    def save_layout(self) -> None:
        if not self.remember_layout:
            return
        self.settings.set("window/geometry", self.saveGeometry())
        self.settings.set("window/state", self.saveState())
        self.settings.sync()

    def is_idle(self) -> bool:
        return not self.bundle_loading and not self.runner.running()

    def closeEvent(self, event) -> None:
        self.library_ctl.stop()
        self.reviews.stop()  # queued reviews stay in pending_reviews.json for the next start
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
