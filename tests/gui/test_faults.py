"""The app under library faults, through the real widgets offscreen: another program holding the
SQLite write lock while the user approves (a real second sqlite3 connection), a read-only
library, a library that cannot be opened at start-up (the dialog instead of exit 2), and the
missing system libraries of Qt's xcb platform plugin (a real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.library.queries import get_instance, reviews_for
from tests.gui.conftest import analysis_rows, close_window, shoot, show_image, uid_of

pytestmark = pytest.mark.qt
ROOT = Path(__file__).resolve().parents[2]


def hold_write_lock(db: Path) -> sqlite3.Connection:
    """Another program with an open write transaction (sqlite3 shell, DB Browser, an import)."""
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE IF NOT EXISTS other_program (x)")
    return other


def saved_reviews(library, uid: str) -> list[tuple[str, str]]:
    with library.session() as s:
        return [(r.status, r.comment) for r in reviews_for(s, get_instance(s, uid))]


def busy_box(window):
    box = window._busy_box
    return box if box is not None and box.isVisible() else None


# -- the lock -------------------------------------------------------------------------------------


def test_approve_while_another_program_holds_the_library_is_queued_and_saved_once(qtbot, make_window, library):
    window = make_window()
    uid = uid_of(library, "anna_pa.dcm")
    show_image(qtbot, window, uid)
    other = hold_write_lock(library.db_path)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    try:
        qtbot.keyClicks(window.review.comment, "clear lungs")
        qtbot.mouseClick(window.review.approve, Qt.MouseButton.LeftButton)
        # the click returned at once: the save waits for the lock in a worker, the panel says so
        assert window.review.note.isVisible() and "Saving" in window.review.note.text()
        assert "waiting to be saved" in window.review.history.item(0).text()
        assert len(window.review_queue) == 1
        queued = json.loads(window.review_queue.path.read_text())["pending_reviews"]
        assert [(q["uid"], q["status"], q["comment"]) for q in queued] == [(uid, "approved", "clear lungs")]
        qtbot.waitUntil(lambda: busy_box(window) is not None, timeout=30000)
        assert ticks, "the GUI thread did not run its event loop while the review waited for the lock"
        box = busy_box(window)
        assert "Another program is using the library" in box.text() and "kept" in box.text()
        assert box.retry_button.text() == "Retry now"
        note = window.review.note.text()
        assert "another program is using the library" in note and window.review.retry.isVisible()
        assert saved_reviews(library, uid) == []
        window.review.setMinimumWidth(360)
        shoot(box, "library_busy_message")
        shoot(window.review, "library_busy_review_panel")
        # Retry while the lock is still held: still queued, no second message box
        window.review.retry.click()
        qtbot.waitUntil(lambda: window._review_flush is not None and window._review_flush.done, timeout=30000)
        assert busy_box(window) is box and len(window.review_queue) == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
        timer.stop()
    with qtbot.waitSignal(window.review_saved, timeout=30000):
        box.retry_button.click()
    assert saved_reviews(library, uid) == [("approved", "clear lungs")]
    assert len(window.review_queue) == 0 and not window.review_queue.path.exists()
    assert "approved" in window.review.current.text() and "waiting" not in window.review.history.item(0).text()
    assert not window.review.note.isVisible() and busy_box(window) is None
    window.flush_reviews()  # nothing left: nothing written twice
    qtbot.wait(50)
    assert saved_reviews(library, uid) == [("approved", "clear lungs")]


def test_queued_review_is_saved_automatically_when_the_lock_goes(qtbot, make_window, library, monkeypatch):
    import app.gui.review_controller as mw

    monkeypatch.setattr(mw, "REVIEW_RETRY_MS", 100)
    window = make_window()
    uid = uid_of(library, "cara_pa.dcm")
    show_image(qtbot, window, uid)
    other = hold_write_lock(library.db_path)
    try:
        qtbot.mouseClick(window.review.approve, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: busy_box(window) is not None, timeout=30000)
    finally:
        other.execute("ROLLBACK")
        other.close()
    with qtbot.waitSignal(window.review_saved, timeout=30000):
        pass  # the retry timer saves it
    assert saved_reviews(library, uid) == [("approved", "")]


def test_queue_survives_closing_the_app_and_is_saved_at_the_next_start(qtbot, make_window, library):
    window = make_window()
    uid = uid_of(library, "ben_cr.dcm")
    show_image(qtbot, window, uid)
    other = hold_write_lock(library.db_path)
    try:
        qtbot.keyClicks(window.review.comment, "check the apex")
        qtbot.mouseClick(window.review.flag, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: busy_box(window) is not None, timeout=30000)
        close_window(qtbot, window)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert saved_reviews(library, uid) == []
    from app.gui.main_window import MainWindow

    again = MainWindow(library)
    try:
        with qtbot.waitSignal(again.review_saved, timeout=30000):
            again.show()
        assert saved_reviews(library, uid) == [("flagged", "check the apex")]
        assert len(again.review_queue) == 0
    finally:
        close_window(qtbot, again)


# -- read-only ------------------------------------------------------------------------------------


def test_read_only_library_opens_for_browsing_and_says_reviews_cannot_be_saved(qtbot, make_window, library):
    from app.library import open_library

    db = library.db_path
    library.close()
    os.chmod(db, 0o444)
    try:
        ro = open_library(db)
        files_before = sorted(p for p in ro.data_dir.rglob("*") if p.is_file())
        try:
            assert ro.read_only
            window = make_window(lib=ro)
            qtbot.waitUntil(lambda: len(window.browser.model.thumbs) >= len(window.browser.model.rows), timeout=30000)
            assert "read-only" in window.windowTitle() and "research use only" in window.windowTitle()
            uid = uid_of(ro, "anna_pa.dcm")
            show_image(qtbot, window, uid)  # browsing works
            assert not window.review.approve.isEnabled() and not window.review.flag.isEnabled()
            assert "read-only" in window.review.note.text() and "cannot be saved" in window.review.note.text()
            assert not window.act_import_files.isEnabled() and not window.act_import_folder.isEnabled()
            window.save_review("approved", "")  # e.g. from a shortcut: refused with a clear message
            assert "read-only" in window.last_error
            assert saved_reviews(ro, uid) == []
            # the model's analysis is shown, and not stored (nothing can be)
            from app.logic.bundles import gui_threads, open_bundle
            from app.logic.demo import demo_assets

            bundle = open_bundle(demo_assets().bundle, threads=gui_threads())
            with qtbot.waitSignal(window.analysis_shown, timeout=60000):
                window._bundle_loaded((str(bundle.folder), bundle))
            assert window.current_result is not None and window.analysis_error is None
            assert analysis_rows(ro) == []
            # nothing was written into the library: no thumbnails, masks or heatmaps kept
            assert sorted(p for p in ro.data_dir.rglob("*") if p.is_file()) == files_before
            close_window(qtbot, window)
        finally:
            ro.close()
    finally:
        os.chmod(db, 0o644)


# -- start-up -------------------------------------------------------------------------------------


def _drive_startup_dialog(qtbot, new_db: Path, seen: dict) -> None:
    """Poll for the modal start-up dialog, record what it says, choose ``new_db``; then close
    the main window once it is shown."""
    from app.gui.dialogs import LibraryProblemDialog
    from app.gui.main_window import MainWindow

    def step() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, LibraryProblemDialog) and "reason" not in seen:
            seen["reason"] = dialog.reason.text()
            seen["button"] = dialog.open_button.text()
            seen["shot"] = shoot(dialog, seen.get("shot_name", "startup_library_dialog"))
            dialog.path.setText("")
            dialog.open_button.click()  # nothing given: said, the dialog stays
            seen["empty"] = dialog.reason.text()
            dialog.path.setText(str(new_db))
            dialog.open_button.click()
            return
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.isVisible() and "reason" in seen:
                seen["title"] = widget.windowTitle()
                seen["db"] = str(widget.library.db_path)
                timer.stop()
                widget.close()
                return

    timer = QTimer()
    timer.timeout.connect(step)
    timer.start(50)
    seen["timer"] = timer


@pytest.mark.parametrize("kind", ["not_sqlite", "folder"])
def test_startup_failure_shows_a_dialog_with_the_reason_and_choose_another_library(qtbot, tmp_path, kind, monkeypatch):
    from app.gui.app import GuiOptions, run_app

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_app installs its own
    if kind == "not_sqlite":
        bad = tmp_path / "notes.db"
        bad.write_text("these are my notes, not a database\n" * 20)
        expected = "not a library database"
    else:
        bad = tmp_path / "a-folder"
        bad.mkdir()
        expected = "is a folder"
    before = bad.read_bytes() if bad.is_file() else None
    new_db = tmp_path / "chosen" / "library.db"
    seen: dict = {"shot_name": f"startup_library_dialog_{kind}"}
    _drive_startup_dialog(qtbot, new_db, seen)
    code = run_app(GuiOptions(db=str(bad)))
    seen["timer"].stop()
    assert code == 0
    assert expected in seen["reason"] and str(bad) in seen["reason"]
    assert seen["button"] == "Choose another library"
    assert "Give the library file" in seen["empty"]
    assert seen["db"] == str(new_db.resolve()) and new_db.exists()
    assert "library.db" in seen["title"]
    if before is not None:
        assert bad.read_bytes() == before  # the bad file was not touched


def test_quitting_the_startup_dialog_exits_2_with_one_line(qtbot, tmp_path, capsys, monkeypatch):
    from app.gui.app import GuiOptions, run_app
    from app.gui.dialogs import LibraryProblemDialog

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 100)

    def quit_dialog() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, LibraryProblemDialog):
            timer.stop()
            dialog.quit_button.click()

    timer = QTimer()
    timer.timeout.connect(quit_dialog)
    timer.start(50)
    code = run_app(GuiOptions(db=str(bad)))
    timer.stop()
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_screenshot_mode_keeps_the_one_line_error_for_a_bad_library(tmp_path, capsys):
    from app.main import main

    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite\n" * 50)
    code = main(["--db", str(bad), "--screenshot", str(tmp_path / "shot.png")])
    err = capsys.readouterr().err
    assert code == 2 and "not a library database" in err and err.count("\n") == 1


# -- Qt's xcb platform plugin and its system libraries -------------------------------------------


def test_missing_xcb_cursor_is_named_with_the_package_to_install():
    from app.gui.app import platform_problem

    env = {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}
    msg = platform_problem(env, "linux", loader=lambda so: so != "libxcb-cursor.so.0")
    assert "libxcb-cursor.so.0 (package libxcb-cursor0)" in msg
    assert "sudo apt install libxcb-cursor0" in msg and "xcb-util-cursor" in msg
    assert "\n" not in msg
    # the default platform on Linux outside a Wayland session is xcb: checked too
    assert "libxcb-cursor0" in platform_problem({"DISPLAY": ":0"}, "linux", loader=lambda so: "cursor" not in so)
    # everything there: nothing to say
    assert platform_problem(env, "linux", loader=lambda so: True) is None
    # other platforms are not checked
    assert platform_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux", loader=lambda so: False) is None
    assert platform_problem({"QT_QPA_PLATFORM": "wayland"}, "linux", loader=lambda so: False) is None
    assert (
        platform_problem({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "w"}, "linux", loader=lambda so: False)
        is None
    )
    assert platform_problem({}, "darwin", loader=lambda so: False) is None
    # no X display at all: said plainly
    assert "no X display" in platform_problem({"QT_QPA_PLATFORM": "xcb"}, "linux", loader=lambda so: True)


def test_qt_platform_plugin_reasons_are_not_hidden_at_debug_level():
    import logging

    from app.gui.app import qt_message_level

    cause = "From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin."
    assert qt_message_level("QtWarningMsg", "qt.qpa.plugin", cause) == logging.WARNING
    assert (
        qt_message_level(
            "QtFatalMsg",
            "default",
            "This application failed to start because no Qt platform plugin could be initialized.",
        )
        == logging.ERROR
    )
    assert qt_message_level("QtWarningMsg", "qt.pointer.dispatch", "skipping QEventPoint") == logging.DEBUG


def _run_app_process(env_extra: dict, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    env.update(env_extra)
    cmd = [sys.executable, "-m", "app.main", "--db", "/nonexistent-dir-h6/library.db"]
    return subprocess.run((wrap or []) + cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_real_start_without_xcb_libraries_names_them_instead_of_aborting():
    """On this machine for real: if any xcb plugin library is missing here, the app must name it
    (exit 2, one line) where Qt would abort. With libxcb-cursor hidden for real (a private mount
    namespace with /dev/null bound over the library, root only) it must name libxcb-cursor0."""
    from app.gui.app import XCB_LIBRARIES, can_load

    missing_here = [deb for so, deb, _ in XCB_LIBRARIES if not can_load(so)]
    ran = False
    if missing_here:
        done = _run_app_process({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":99"})
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert all(deb in done.stderr for deb in missing_here)
        ran = True
    cursor = "/usr/lib/x86_64-linux-gnu/libxcb-cursor.so.0"
    if os.geteuid() == 0 and shutil.which("unshare") and os.path.exists(cursor):
        real = os.path.realpath(cursor)
        script = f'mount --bind /dev/null {real} && exec "$@"'
        wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]
        probe = subprocess.run(
            wrap + [sys.executable, "-c", "import ctypes; ctypes.CDLL('libxcb-cursor.so.0')"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode != 0 and "OSError" in probe.stderr:  # the library is hidden in there
            done = _run_app_process({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":99"}, wrap)
            assert done.returncode == 2, done.stderr
            assert "libxcb-cursor.so.0 (package libxcb-cursor0)" in done.stderr
            assert "sudo apt install" in done.stderr and done.stderr.count("\n") == 1
            ran = True
    if not ran:
        pytest.skip("every xcb library is installed here and hiding one needs root and unshare")


def test_startup_dialog_try_again_opens_the_library_once_the_other_program_let_go(qtbot, tmp_path):
    """A library that needs its schema upgraded while another program holds the lock: the
    dialog says so; "Try this one again" opens it once the lock is gone."""
    from alembic import command
    from alembic.config import Config

    from app.gui.dialogs import LibraryProblemDialog
    from app.library import LibraryError, open_library
    from app.library.db import MIGRATIONS_DIR, make_engine

    db = tmp_path / "old" / "library.db"
    db.parent.mkdir()
    engine = make_engine(db)  # a library as the first version of the app left it
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001_initial")
    engine.dispose()
    other = hold_write_lock(db)
    try:
        with pytest.raises(LibraryError) as caught:
            open_library(db, lock_timeout=0.3)
        dialog = LibraryProblemDialog(db, str(caught.value), lambda p: open_library(p, lock_timeout=0.3))
        qtbot.addWidget(dialog)
        dialog.show()
        assert "another program is using the library" in dialog.reason.text()
        assert not dialog.try_again() and "another program" in dialog.reason.text()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert dialog.try_again() and dialog.library is not None
    assert str(dialog.library.db_path) == str(db.resolve())
    dialog.library.close()
