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

import logging
import time
from pathlib import Path

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui.ai_panel import RESEARCH_NOTICE, SYNTHETIC_NOTICE, AIPanel
from app.gui.analysis_controller import LRU, AnalysisController
from app.gui.browser import BrowserWidget
from app.gui.dialogs import ModelCardDialog, message
from app.gui.export_results import export_results_action
from app.gui.hanging import HangingWidget
from app.gui.jobs import JobsWidget
from app.gui.pacs_dialog import pacs_action
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
        self._thumb_queue: list = []
        self._last_refresh = 0.0
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
        self.act_remove = self._action(
            "Remove selected images from the library…",
            self.remove_selected,
            QKeySequence.StandardKey.Delete,
            context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
            tip="Managed copies are deleted; linked files are left where they are",
        )
        self.act_export_anon = self._action(
            "Export selected images anonymised…",
            self.export_anonymized_dialog,
            tip="PS3.15 basic profile, dates shifted per patient (as adaptor-review export-anonymized)",
        )
        self.act_relocate = self._action(
            "Find moved files…", self.relocate_dialog, tip="Point the library at linked files that were moved"
        )
        self.act_quit = self._action("Quit", self.close, QKeySequence.StandardKey.Quit)
        file_menu = self.menuBar().addMenu("&File")
        for a in (
            self.act_import_files,
            self.act_import_folder,
            pacs_action(self),  # File -> Connect to PACS... (app/gui/pacs_dialog.py)
            self.act_copy,
            None,
            self.act_bundle_dir,
            self.act_bundle_zip,
            self.act_card,
            None,
            self.act_export_png,
            self.act_export_csv,
            export_results_action(self),  # File -> Export results... (app/gui/export_results.py)
            None,
            self.act_export_anon,
            self.act_remove,
            self.act_relocate,
            None,
            self.act_quit,
        ):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)

        # Viewer keys work while the viewer or the browser has the focus (not while typing).
        self.act_presets = [
            self._action(f"Window preset {i + 1}", lambda i=i: self.viewer.set_preset(i), str(i + 1), context=W)
            for i in range(5)
        ]
        self.act_invert = self._action("Invert", lambda: self.viewer.toggle_invert(), "I", context=W)
        self.act_reset = self._action("Reset view", lambda: self.viewer.reset(), "Space", context=W)
        self.act_fit = self._action("Fit to window", lambda: self.viewer.fit(), "F", context=W)
        self.act_zoom_in = self._action("Zoom in", lambda: self.viewer.zoom(1.25), "+", context=W)
        self.act_zoom_out = self._action("Zoom out", lambda: self.viewer.zoom(0.8), "-", context=W)
        self.act_measure = self._action(
            "Measure distance",
            lambda on: [p.set_measure_mode(on) for p in self.hanging.panes],
            "M",
            context=W,
            checkable=True,
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
        for dock in (
            self.dock_browser,
            self.dock_ai,
            self.dock_reports,
            self.dock_review,
            self.dock_reader,
            self.dock_tags,
        ):
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
        # hanging: layouts, chest hanging, compare with prior, links, annotations (toolbar + keys)
        self.act_layouts = {
            name: self._action(
                f"Layout {name.replace('x', ' x ')}",
                lambda on, name=name: on and self.set_layout(name),
                key,
                checkable=True,
                tip=tip,
            )
            for name, key, tip in (
                ("1x1", "Ctrl+1", "One image"),
                ("1x2", "Ctrl+2", "The image and its other view (frontal + lateral), or its prior"),
                ("2x2", "Ctrl+4", "Current frontal + lateral above the prior study's"),
            )
        }
        self.act_prior = self._action(
            "Compare with prior",
            self.set_compare_prior,
            "P",
            context=W,
            checkable=True,
            tip="The same patient's most recent earlier study beside the current one (linked)",
        )
        self.act_link_window = self._action(
            "Link window/level", lambda on: self.hanging.set_linked(window=on), "Ctrl+Shift+K", checkable=True
        )
        self.act_link_view = self._action(
            "Link zoom and pan", lambda on: self.hanging.set_linked(view=on), "Ctrl+K", checkable=True
        )
        self.act_annotations = self._action(
            "Corner annotations",
            lambda on: [p.set_annotations_visible(on) for p in self.hanging.panes],
            "Ctrl+I",
            checkable=True,
        )
        self.act_annotations.setChecked(True)
        self.act_tags = self._action("DICOM tags…", self.open_tags, "Ctrl+T", tip="The active image's tags, searchable")
        self.act_dark = self._action(
            "Dark reading-room theme", self.set_dark, "Ctrl+Shift+D", checkable=True, tip="For reading in dim rooms"
        )
        self.act_wheel_images = self._action(
            "Wheel moves through images (Ctrl+wheel zooms)",
            lambda on: self.settings.set("viewer/wheel_images", bool(on)),
            checkable=True,
            tip="Off: the wheel zooms",
        )
        self.act_wheel_images.setChecked(bool(self.settings.get("viewer/wheel_images")))
        from PySide6.QtGui import QActionGroup

        group = QActionGroup(self)
        for a in self.act_layouts.values():
            group.addAction(a)
        self.act_layouts["1x1"].setChecked(True)  # the start state (set_layout: nothing to remember)
        self.toolbar = self.addToolBar("Layout")
        self.toolbar.setObjectName("toolbar_layout")
        for a in (*self.act_layouts.values(), None, self.act_prior, self.act_link_window, self.act_link_view):
            self.toolbar.addSeparator() if a is None else self.toolbar.addAction(a)
        hanging_menu = view_menu.addMenu("Layout and hanging")
        for a in (
            *self.act_layouts.values(),
            None,
            self.act_prior,
            self.act_link_window,
            self.act_link_view,
            self.act_annotations,
        ):
            hanging_menu.addSeparator() if a is None else hanging_menu.addAction(a)
        view_menu.addAction(self.act_tags)
        view_menu.addAction(self.act_wheel_images)
        view_menu.addAction(self.act_dark)
        viewer_keys.append(self.act_prior)
        for pane in self.hanging.panes:
            pane.addActions(viewer_keys)
        self.browser.table.addActions(viewer_keys)
        self.browser.table.addAction(self.act_remove)

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
        rs = lambda name: lambda: getattr(self.reader_study, name)()  # noqa: E731 (built before the controller)
        self.act_next_unreviewed = self._action(
            "Next unreviewed", lambda: self.reader_study.next_unreviewed(1), "N", context=W
        )
        self.act_prev_unreviewed = self._action(
            "Previous unreviewed", lambda: self.reader_study.next_unreviewed(-1), "Shift+N", context=W
        )
        self.act_approve_next = self._action("Approve and next", rs("approve_and_next"), "A", context=W)
        self.act_flag_next = self._action("Flag and next (with the comment)", rs("flag_and_next"), "Shift+X", context=W)
        self.act_save_labels = self._action("Save labels", rs("save"), ["Ctrl+Return", "Ctrl+Enter"])
        self.act_start_worklist = self._action(
            "Start worklist from the browser's images",
            lambda: self.reader_study.start_worklist(go_first=True),
            "Ctrl+Shift+W",
        )
        self.act_export_labels = self._action(
            "Export reader-study labels (CSV)…", self.export_labels_dialog, "Ctrl+Shift+L"
        )
        review_menu = self.menuBar().addMenu("&Review")
        for a in (
            self.act_next_unreviewed,
            self.act_prev_unreviewed,
            self.act_approve_next,
            self.act_flag_next,
            None,
            self.act_save_labels,
            self.act_start_worklist,
            self.act_export_labels,
        ):
            review_menu.addSeparator() if a is None else review_menu.addAction(a)
        worklist_keys = [self.act_next_unreviewed, self.act_prev_unreviewed, self.act_approve_next, self.act_flag_next]
        for pane in self.hanging.panes:
            pane.addActions(worklist_keys)
        self.browser.table.addActions(worklist_keys)
        self.addAction(self.act_save_labels)
        self.act_about = self._action("About", self.show_about)
        self.act_shortcuts = self._action("Keyboard shortcuts", self.show_shortcuts, "F1")
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self.act_shortcuts)
        help_menu.addAction(self.act_about)
        self.update_actions()

    def _connect(self) -> None:
        self.browser.current_changed.connect(self.show_uid)
        self.browser.hidden_changed.connect(self._hidden_changed)
        self.browser.thumbnails_needed.connect(self._queue_thumbnails)
        for pane in self.hanging.panes:
            pane.message.connect(self.status_message)
            pane.wheel_step.connect(self._wheel_step)
        self.hanging.active_changed.connect(self._pane_activated)
        self.image_shown.connect(lambda _uid: self.show_tags())
        self.dock_tags.visibilityChanged.connect(lambda on: on and self.show_tags())
        self.ai.choose_model.connect(self.choose_bundle_folder)
        self.ai.show_card.connect(self.show_model_card)

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
        hung = self.hung_index(uid)
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
        self._hang(uid)
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
        self._after_pane_image(self.hanging.active)
        self.image_shown.emit(uid)
        self.analyze_current()

    # -- hanging: the other panes -------------------------------------------------------------------
    def hung_index(self, uid: str | None) -> int | None:
        """The visible pane that holds ``uid`` (None: none)."""
        if uid is None:
            return None
        n = len(self.hanging.visible_panes())
        for k, slot in enumerate(self.hung[:n]):
            if slot.uid == uid:
                return k
        return None

    def set_layout(self, name: str) -> None:
        if self.act_layouts[name].isChecked() is False:
            self.act_layouts[name].setChecked(True)
            return
        if name == self.hanging.layout_name:
            return
        self.hanging.set_layout(name)
        self.settings.set("view/layout", name)
        self._rehang()

    def set_compare_prior(self, on: bool) -> None:
        self.compare_prior = bool(on)
        if on:  # current vs prior: window/level, zoom and pan linked by default
            self.act_link_window.setChecked(True)
            self.act_link_view.setChecked(True)
            if self.hanging.layout_name == "1x1":
                self.act_layouts["1x2"].setChecked(True)  # set_layout re-hangs
                return
        self._rehang()

    def _rehang(self) -> None:
        uid = self.hung[0].uid if self.hung else self.current_uid
        if uid is None:
            return
        if self.hanging.active != 0:
            self.browser.select_uid(uid)
            self.hanging.set_active(0)
        self._hang(uid)

    def _hang(self, uid: str | None) -> None:
        """Fill the other visible panes around ``uid`` (pane 0) and load their images."""
        from app.logic.hanging import Slot, hang

        layout = self.hanging.layout_name
        try:
            self.hung = hang(self.library, uid, layout, self.compare_prior) if uid is not None else [Slot(None, "")]
        except Exception as exc:  # the library went away: one pane, and say why
            log.warning("no hanging: %s", exc)
            self.hung = [Slot(uid, "selected")]
        visible = self.hanging.visible_panes()
        visible[0].set_index((1, len(visible)) if len(visible) > 1 else None)
        for k, pane in enumerate(visible[1:], 1):
            self.runner.cancel(self._tasks.pop(f"pane{k}", None))
            slot = self.hung[k] if k < len(self.hung) else Slot(None, "")
            if slot.uid is None:
                pane.set_image(None, slot.missing.capitalize() if slot.missing else "No image")
                continue
            cached = self.images.fetch(slot.uid)
            if cached is not None:
                self._pane_loaded(k, (slot.uid, *cached))
                continue
            pane.set_image(None, f"Loading the {slot.role}…")
            self._tasks[f"pane{k}"] = self.runner.start(
                "Load image",
                jobs.load_image_job,
                self.library,
                slot.uid,
                on_result=lambda payload, k=k: self._pane_loaded(k, payload),
                on_failed=lambda msg, k=k: self.hanging.panes[k].show_message(f"This image cannot be shown: {msg}"),
            )

    def _pane_loaded(self, k: int, payload) -> None:
        uid, image, title = payload
        self.images.put(uid, (image, title))
        if k >= len(self.hung) or self.hung[k].uid != uid or k >= len(self.hanging.visible_panes()):
            return
        role = self.hung[k].role
        self.hanging.panes[k].set_image(image, f"{role.capitalize()}: {title}" if role else title)
        self._after_pane_image(k)
        self.pane_shown.emit(k)

    def _after_pane_image(self, k: int) -> None:
        """A pane got its image: it follows the linked panes (window, view) and numbers itself."""
        pane = self.hanging.panes[k]
        n = len(self.hanging.visible_panes())
        pane.set_index((k + 1, n) if n > 1 else None)
        src = (
            self.hanging.active
            if k != self.hanging.active
            else next((i for i, p in enumerate(self.hanging.visible_panes()) if i != k and p.image is not None), None)
        )
        if src is None or n == 1:
            return
        other = self.hanging.panes[src]
        if self.hanging.link_window and other.image is not None:
            pane.set_state(other.state)
        if self.hanging.link_view and other.image is not None:
            pane.set_view_fraction(other.view_fraction())

    # -- library management: remove, relocate --------------------------------------------------------
    def remove_selected(self, uids: list[str] | None = None):
        """Ask, then remove the selected images (managed copies deleted, linked files left)."""
        if self.read_only:
            self.show_error("Not removed", f"This library is read-only ({self.read_only}).")
            return None
        uids = list(uids) if uids is not None else self.browser.selected_uids()
        if not uids:
            self.status_message("Select the images to remove first")
            return None
        from app.gui.dialogs import confirm_message
        from app.library.queries import removal_counts

        managed, linked = removal_counts(self.library, uids)
        n = managed + linked
        text = (
            f"Remove {n} image{'s' if n != 1 else ''} from the library?\n\n"
            f"{managed} managed cop{'ies' if managed != 1 else 'y'} in the library's folder will be deleted; "
            f"{linked} linked file{'s are' if linked != 1 else ' is'} left where {'they are' if linked != 1 else 'it is'}. "
            "Their analyses, reviews and reader-study labels are removed too."
        )
        box = confirm_message(self, "Remove from the library", text, "Remove", lambda: self._remove(uids))
        self._boxes.append(box)
        return box

    def _remove(self, uids: list[str]):
        if self.current_uid in uids:
            self.images.pop(self.current_uid, None)
        return self.runner.start(
            "Remove",
            jobs.remove_job,
            self.library,
            list(uids),
            on_result=self._removed,
            on_failed=lambda msg: self.show_error("Not removed", msg),
        )

    def _removed(self, n: int) -> None:
        self.status_message(f"Removed {n} image(s) from the library")
        was = self.current_uid
        self.refresh_browser(force=True)
        if was is not None and self.browser.model.row_of(was) is None:
            self.current_uid = None
            if not self.browser.select_row(0):
                self.show_uid(None)
        self.library_changed.emit()

    def export_anonymized_dialog(self) -> None:
        uids = self.browser.selected_uids()
        if not uids:
            self.status_message("Select the images to export first (Ctrl+A selects all shown)")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export anonymised copies to", str(Path.home()))
        if folder:
            self.export_anonymized(uids, folder)

    def export_anonymized(self, uids: list[str], folder: str):
        task = self.runner.start(
            "Export anonymised",
            jobs.export_anonymized_job,
            self.library,
            list(uids),
            str(folder),
            lane="background",
            on_result=self._anonymized,
            on_failed=lambda msg: self.show_error("Export failed", msg),
        )
        self.jobs.add(task, "Exporting anonymised copies")
        return task

    def _anonymized(self, summary) -> None:
        text = f"Exported {summary.exported} anonymised instance(s) to {summary.out_dir}"
        if summary.skipped_burned_in:
            text += f"; refused {summary.skipped_burned_in} with burned-in annotation"
        if summary.refused or summary.failed:
            text += f"; {len(summary.refused) + len(summary.failed)} not exported"
        self.status_message(text + ". Review the files before sharing them.", 15000)
        self.anonymized.emit(summary)

    def relocate_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Where are the moved files?", str(Path.home()))
        if folder:
            self.relocate(folder)

    def relocate(self, folder: str):
        return self.runner.start(
            "Find moved files",
            jobs.relocate_job,
            self.library,
            str(folder),
            on_result=self._relocated,
            on_failed=lambda msg: self.show_error("Moved files not found", msg),
        )

    def _relocated(self, summary) -> None:
        if summary.missing == 0:
            text = "No linked file is missing"
        else:
            text = f"Found {summary.found} of {summary.missing} missing linked file(s)"
            if summary.still_missing:
                text += f"; {len(summary.still_missing)} still missing"
        self.status_message(text, 15000)
        self.images.clear()
        if self.current_uid is not None:
            uid, self.current_uid, self.hung = self.current_uid, None, []
            self.show_uid(uid)  # loaded again from where the file is now
        self.library_changed.emit()

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

    def _wheel_step(self, step: int) -> None:
        """The mouse wheel over an image: the next / previous image of the list (the
        Weasis / OHIF habit; Ctrl+wheel zooms), or a zoom when the setting says so."""
        if self.act_wheel_images.isChecked():
            self.browser.select_relative(step)
        else:
            self.viewer.zoom(1.25 if step < 0 else 0.8)

    def _pane_activated(self, k: int) -> None:
        """The user pressed pane ``k``: its image becomes the current one (AI panel, review,
        overlays), without hanging again."""
        slot = self.hung[k] if k < len(self.hung) else None
        uid = slot.uid if slot is not None else None
        self.viewer = self.hanging.panes[k]
        self.current_uid = uid
        self.image_error = None
        self.analysis.reset()
        self.update_actions()
        self._show_text_panels(uid)
        if uid is not None:
            self.browser.select_uid(uid)  # show_uid sees it hung in the active pane: nothing more
            if self.viewer.image is not None:
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
        self.reader_study.show(self.current_uid)
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

    def export_labels_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export reader-study labels", str(Path.home() / "reader_labels.csv"), "CSV files (*.csv)"
        )
        if path:
            self.export_labels(path)

    def export_labels(self, path: str, uids: list[str] | None = None):
        """The labels (of ``uids``; default: the worklist's, else every label) as CSV, which says
        the browser filter it was made under."""
        from app.logic.reader_study import describe_filter

        wl = self.reader_study.worklist
        if uids is None and wl is not None:
            uids = list(wl.uids)
        return self.runner.start(
            "Export labels",
            jobs.export_labels_job,
            self.library,
            str(path),
            uids,
            wl.filter_text if wl is not None else describe_filter(self.browser.model.filters),
            on_result=lambda r: self.status_message(f"Wrote {r[1]} labels to {r[0]}"),
            on_failed=lambda msg: self.show_error("Export failed", msg),
        )

    # -- about, layout, close --------------------------------------------------------------------
    def shortcut_rows(self) -> list[tuple[str, str, str]]:
        """(menu, action, keys) of every action with a key, in menu order."""
        rows: list[tuple[str, str, str]] = []

        def visit(menu, where: str) -> None:
            for a in menu.actions():
                if a.menu() is not None:
                    visit(a.menu(), f"{where} > {a.text().replace('&', '')}")
                    continue
                keys = ", ".join(
                    k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts() if not k.isEmpty()
                )
                if keys:
                    rows.append((where, a.text(), keys))

        for menu_action in self.menuBar().actions():
            if menu_action.menu() is not None:
                visit(menu_action.menu(), menu_action.text().replace("&", ""))
        return rows

    def show_shortcuts(self) -> None:
        import html

        lines = "".join(
            f"<tr><td>{html.escape(m)}</td><td>{html.escape(t)}</td><td><b>{html.escape(k)}</b></td></tr>"
            for m, t, k in self.shortcut_rows()
        )
        mouse = (
            "<p>Mouse: left drag window/level (ruler in measure mode), right drag pan, wheel zoom, "
            "double click fit.</p>"
        )
        dlg = ModelCardDialog("Keyboard shortcuts", "", self)
        dlg.setWindowTitle("Keyboard shortcuts")
        dlg.setAccessibleName("Keyboard shortcuts")
        dlg.text.setHtml(f"<table cellpadding=3>{lines}</table>{mouse}")
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.shortcuts_dialog = dlg

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
        self._thumb_timer.stop()
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
