"""Start-up: the window is on screen before the model loads (issue 15, "Start-up and size").

The real app start (app.gui.app.run_app) with the real demo bundle: the model's onnxruntime
sessions, its report bank and their imports run in a worker but hold the GIL, so they must not
start before the window's first paint; once it has painted, the model loads as before."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

pytestmark = pytest.mark.qt
ROOT = Path(__file__).resolve().parents[2]
DEMO_BUNDLE = ROOT / "assets" / "demo" / "bundle"


def _main_window(obj):
    from app.gui.main_window import MainWindow

    win = obj.window() if hasattr(obj, "window") else None
    return win if isinstance(win, MainWindow) else None


@pytest.mark.timeout(180)
def test_window_paints_before_the_model_starts_loading_then_the_model_loads(qtbot, tmp_path, monkeypatch):
    from app.gui.app import GuiOptions, run_app

    if not (DEMO_BUNDLE / "manifest.json").exists():
        pytest.fail("assets/demo/bundle is missing (adaptor-train demo --out runs/demo --assets assets/demo)")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_app installs its own
    seen: dict = {}
    app = QApplication.instance()

    class FirstPaint(QObject):
        def eventFilter(self, obj, event):
            if event.type() == QEvent.Type.Paint and "paint" not in seen:
                win = _main_window(obj)
                if win is not None:
                    seen["paint"] = {"loading": win.bundle_loading, "bundle": win.bundle}
                    seen["window"] = win
            return False

    def poll() -> None:
        win = seen.get("window")
        if win is not None and win.bundle is not None and not win.bundle_loading:
            seen["loaded"] = win.bundle.id
            timer.stop()
            win.close()  # run_app: app.exec() returns when the last window closes

    watcher = FirstPaint()
    app.installEventFilter(watcher)
    timer = QTimer()
    timer.timeout.connect(poll)
    timer.start(20)
    try:
        code = run_app(GuiOptions(db=str(tmp_path / "library.db"), bundle=str(DEMO_BUNDLE)))
    finally:
        timer.stop()
        app.removeEventFilter(watcher)
    assert code == 0
    assert seen["paint"] == {"loading": False, "bundle": None}, seen["paint"]  # nothing heavy before the paint
    assert seen["loaded"] == "cxr-adaptor-demo-phantoms"  # and the model given on the command line loads after it
