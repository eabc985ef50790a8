"""The main window's actions, menus, toolbar and keyboard shortcuts (File, View, Analysis,
Review, Help), built by :func:`build_actions` as ``window.act_*`` actions whose slots are the
window's controllers (library, bundles, exports, hanging, reader study) and its own; the
shortcut table (:func:`shortcut_rows`, F1) is read back from the menus.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMessageBox

from app.gui.ai_panel import RESEARCH_NOTICE
from app.gui.dialogs import ModelCardDialog, message
from app.gui.export_results import export_results_action


def _action(window, text: str, slot, shortcut=None, *, context=None, tip: str = "", checkable=False) -> QAction:
    action = QAction(text, window)
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


def _open_pacs(window) -> None:
    # imported on first use: the DICOMweb client (pydicom, requests, urllib3) is not needed for
    # the window's first paint (benchmarks/app_responsiveness.py, cold start)
    from app.gui.pacs_dialog import open_pacs_dialog

    open_pacs_dialog(window)


def build_actions(window) -> None:
    """The window's actions (``window.act_*``), its menus, the layout toolbar and the keys of
    the panes and the browser."""
    W = Qt.ShortcutContext.WidgetWithChildrenShortcut
    window.act_import_files = _action(
        window, "Import files…", window.library_ctl.import_files_dialog, QKeySequence.StandardKey.Open
    )
    window.act_import_folder = _action(
        window, "Import folder…", window.library_ctl.import_folder_dialog, "Ctrl+Shift+O"
    )
    window.act_copy = _action(
        window,
        "Copy imported files into the library",
        window.library_ctl.set_copy_mode,
        checkable=True,
        tip="Off: link files where they are (zip members are always copied)",
    )
    window.act_copy.setChecked(bool(window.settings.get("import/copy")))
    window.act_bundle_dir = _action(
        window, "Choose model bundle folder…", window.bundles.choose_bundle_folder, "Ctrl+B"
    )
    window.act_bundle_zip = _action(window, "Choose model bundle (.zip)…", window.bundles.choose_bundle_zip)
    window.act_card = _action(window, "Model card…", window.bundles.show_model_card)
    window.act_export_png = _action(window, "Export view as PNG…", window.exports.export_png_dialog, "Ctrl+E")
    window.act_export_csv = _action(
        window, "Export predictions CSV for the selected images…", window.exports.export_csv_dialog, "Ctrl+Shift+E"
    )
    window.act_remove = _action(
        window,
        "Remove selected images from the library…",
        window.library_ctl.remove_selected,
        QKeySequence.StandardKey.Delete,
        context=Qt.ShortcutContext.WidgetWithChildrenShortcut,
        tip="Managed copies are deleted; linked files are left where they are",
    )
    window.act_export_anon = _action(
        window,
        "Export selected images anonymised…",
        window.library_ctl.export_anonymized_dialog,
        tip="PS3.15 basic profile, dates shifted per patient (as adaptor-review export-anonymized)",
    )
    window.act_relocate = _action(
        window,
        "Find moved files…",
        window.library_ctl.relocate_dialog,
        tip="Point the library at linked files that were moved",
    )
    window.act_quit = _action(window, "Quit", window.close, QKeySequence.StandardKey.Quit)
    file_menu = window.menuBar().addMenu("&File")
    for a in (
        window.act_import_files,
        window.act_import_folder,
        _action(  # File -> Connect to PACS... (app/gui/pacs_dialog.py)
            window,
            "Connect to PACS…",
            lambda: _open_pacs(window),
            tip="Search a DICOMweb server (PACS, Orthanc) and retrieve studies into the library",
        ),
        window.act_copy,
        None,
        window.act_bundle_dir,
        window.act_bundle_zip,
        window.act_card,
        None,
        window.act_export_png,
        window.act_export_csv,
        export_results_action(window),  # File -> Export results... (app/gui/export_results.py)
        None,
        window.act_export_anon,
        window.act_remove,
        window.act_relocate,
        None,
        window.act_quit,
    ):
        file_menu.addSeparator() if a is None else file_menu.addAction(a)

    # Viewer keys work while the viewer or the browser has the focus (not while typing).
    window.act_presets = [
        _action(window, f"Window preset {i + 1}", lambda i=i: window.viewer.set_preset(i), str(i + 1), context=W)
        for i in range(5)
    ]
    window.act_invert = _action(window, "Invert", lambda: window.viewer.toggle_invert(), "I", context=W)
    window.act_reset = _action(window, "Reset view", lambda: window.viewer.reset(), "Space", context=W)
    window.act_fit = _action(window, "Fit to window", lambda: window.viewer.fit(), "F", context=W)
    window.act_zoom_in = _action(window, "Zoom in", lambda: window.viewer.zoom(1.25), "+", context=W)
    window.act_zoom_out = _action(window, "Zoom out", lambda: window.viewer.zoom(0.8), "-", context=W)
    window.act_measure = _action(
        window,
        "Measure distance",
        lambda on: [p.set_measure_mode(on) for p in window.hanging.panes],
        "M",
        context=W,
        checkable=True,
    )
    window.act_next = _action(
        window, "Next image", lambda: window.browser.select_relative(1), ["Right", "Down"], context=W
    )
    window.act_prev = _action(
        window, "Previous image", lambda: window.browser.select_relative(-1), ["Left", "Up"], context=W
    )
    view_menu = window.menuBar().addMenu("&View")
    for a in (
        *window.act_presets,
        None,
        window.act_invert,
        window.act_reset,
        window.act_fit,
        window.act_zoom_in,
        window.act_zoom_out,
        window.act_measure,
        None,
        window.act_next,
        window.act_prev,
        None,
    ):
        view_menu.addSeparator() if a is None else view_menu.addAction(a)
    for dock in (
        window.dock_browser,
        window.dock_ai,
        window.dock_reports,
        window.dock_review,
        window.dock_reader,
        window.dock_tags,
    ):
        view_menu.addAction(dock.toggleViewAction())
    viewer_keys = [
        *window.act_presets,
        window.act_invert,
        window.act_reset,
        window.act_fit,
        window.act_zoom_in,
        window.act_zoom_out,
        window.act_measure,
        window.act_next,
        window.act_prev,
    ]
    # hanging: layouts, chest hanging, compare with prior, links, annotations (toolbar + keys)
    window.act_layouts = {
        name: _action(
            window,
            f"Layout {name.replace('x', ' x ')}",
            lambda on, name=name: on and window.hanging_ctl.set_layout(name),
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
    window.act_prior = _action(
        window,
        "Compare with prior",
        window.hanging_ctl.set_compare_prior,
        "P",
        context=W,
        checkable=True,
        tip="The same patient's most recent earlier study beside the current one (linked)",
    )
    window.act_link_window = _action(
        window, "Link window/level", lambda on: window.hanging.set_linked(window=on), "Ctrl+Shift+K", checkable=True
    )
    window.act_link_view = _action(
        window, "Link zoom and pan", lambda on: window.hanging.set_linked(view=on), "Ctrl+K", checkable=True
    )
    window.act_annotations = _action(
        window,
        "Corner annotations",
        lambda on: [p.set_annotations_visible(on) for p in window.hanging.panes],
        "Ctrl+I",
        checkable=True,
    )
    window.act_annotations.setChecked(True)
    window.act_tags = _action(
        window, "DICOM tags…", window.open_tags, "Ctrl+T", tip="The active image's tags, searchable"
    )
    window.act_dark = _action(
        window,
        "Dark reading-room theme",
        window.set_dark,
        "Ctrl+Shift+D",
        checkable=True,
        tip="For reading in dim rooms",
    )
    window.act_wheel_images = _action(
        window,
        "Wheel moves through images (Ctrl+wheel zooms)",
        lambda on: window.settings.set("viewer/wheel_images", bool(on)),
        checkable=True,
        tip="Off: the wheel zooms",
    )
    window.act_wheel_images.setChecked(bool(window.settings.get("viewer/wheel_images")))
    group = QActionGroup(window)
    for a in window.act_layouts.values():
        group.addAction(a)
    window.act_layouts["1x1"].setChecked(True)  # the start state (set_layout: nothing to remember)
    window.toolbar = window.addToolBar("Layout")
    window.toolbar.setObjectName("toolbar_layout")
    for a in (*window.act_layouts.values(), None, window.act_prior, window.act_link_window, window.act_link_view):
        window.toolbar.addSeparator() if a is None else window.toolbar.addAction(a)
    hanging_menu = view_menu.addMenu("Layout and hanging")
    for a in (
        *window.act_layouts.values(),
        None,
        window.act_prior,
        window.act_link_window,
        window.act_link_view,
        window.act_annotations,
    ):
        hanging_menu.addSeparator() if a is None else hanging_menu.addAction(a)
    view_menu.addAction(window.act_tags)
    view_menu.addAction(window.act_wheel_images)
    view_menu.addAction(window.act_dark)
    viewer_keys.append(window.act_prior)
    for pane in window.hanging.panes:
        pane.addActions(viewer_keys)
    window.browser.table.addActions(viewer_keys)
    window.browser.table.addAction(window.act_remove)

    window.act_analyze = _action(window, "Analyze image again", lambda: window.analyze_current(force=True), "Ctrl+R")
    window.act_analyze_all = _action(
        window,
        "Analyze all images",
        window.analyze_all,
        "Ctrl+Shift+R",
        tip="Analyse every image without an analysis by this model",
    )
    window.act_cancel = _action(window, "Cancel running jobs", window.cancel_jobs)
    ai_menu = window.menuBar().addMenu("&Analysis")
    for a in (window.act_analyze, window.act_analyze_all, None, window.act_cancel):
        ai_menu.addSeparator() if a is None else ai_menu.addAction(a)
    rs = lambda name: lambda: getattr(window.reader_study, name)()  # noqa: E731 (built before the controller)
    window.act_next_unreviewed = _action(
        window, "Next unreviewed", lambda: window.reader_study.next_unreviewed(1), "N", context=W
    )
    window.act_prev_unreviewed = _action(
        window, "Previous unreviewed", lambda: window.reader_study.next_unreviewed(-1), "Shift+N", context=W
    )
    window.act_approve_next = _action(window, "Approve and next", rs("approve_and_next"), "A", context=W)
    window.act_flag_next = _action(
        window, "Flag and next (with the comment)", rs("flag_and_next"), "Shift+X", context=W
    )
    window.act_save_labels = _action(window, "Save labels", rs("save"), ["Ctrl+Return", "Ctrl+Enter"])
    window.act_start_worklist = _action(
        window,
        "Start worklist from the browser's images",
        lambda: window.reader_study.start_worklist(go_first=True),
        "Ctrl+Shift+W",
    )
    window.act_export_labels = _action(
        window, "Export reader-study labels (CSV)…", window.exports.export_labels_dialog, "Ctrl+Shift+L"
    )
    review_menu = window.menuBar().addMenu("&Review")
    for a in (
        window.act_next_unreviewed,
        window.act_prev_unreviewed,
        window.act_approve_next,
        window.act_flag_next,
        None,
        window.act_save_labels,
        window.act_start_worklist,
        window.act_export_labels,
    ):
        review_menu.addSeparator() if a is None else review_menu.addAction(a)
    worklist_keys = [
        window.act_next_unreviewed,
        window.act_prev_unreviewed,
        window.act_approve_next,
        window.act_flag_next,
    ]
    for pane in window.hanging.panes:
        pane.addActions(worklist_keys)
    window.browser.table.addActions(worklist_keys)
    window.addAction(window.act_save_labels)
    window.act_about = _action(window, "About", lambda: show_about(window))
    window.act_shortcuts = _action(window, "Keyboard shortcuts", lambda: show_shortcuts(window), "F1")
    help_menu = window.menuBar().addMenu("&Help")
    help_menu.addAction(window.act_shortcuts)
    help_menu.addAction(window.act_about)
    window.update_actions()


def shortcut_rows(window) -> list[tuple[str, str, str]]:
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

    for menu_action in window.menuBar().actions():
        if menu_action.menu() is not None:
            visit(menu_action.menu(), menu_action.text().replace("&", ""))
    return rows


def show_shortcuts(window) -> None:
    import html

    lines = "".join(
        f"<tr><td>{html.escape(m)}</td><td>{html.escape(t)}</td><td><b>{html.escape(k)}</b></td></tr>"
        for m, t, k in window.shortcut_rows()
    )
    mouse = (
        "<p>Mouse: left drag window/level (ruler in measure mode), right drag pan, wheel zoom, double click fit.</p>"
    )
    dlg = ModelCardDialog("Keyboard shortcuts", "", window)
    dlg.setWindowTitle("Keyboard shortcuts")
    dlg.setAccessibleName("Keyboard shortcuts")
    dlg.text.setHtml(f"<table cellpadding=3>{lines}</table>{mouse}")
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.show()
    window.shortcuts_dialog = dlg


def show_about(window) -> None:
    window._boxes.append(
        message(
            window,
            "About CXR Adaptor review",
            "CXR Adaptor review: look at chest X-rays and at what an Adaptor model makes of them.\n\n"
            f"{RESEARCH_NOTICE}. Not a medical device.\n\n"
            "Keys: 1-5 window presets, I invert, Space reset, F fit, M measure, arrows next/previous image; "
            "left drag window/level, right drag pan, wheel zoom.",
            icon=QMessageBox.Icon.Information,
        )
    )
