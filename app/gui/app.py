"""Starting the desktop app: QApplication (HiDPI, names), the library, the window, the model,
and ``--screenshot`` (render offscreen once loaded, write a PNG, exit).

Without a display (no ``DISPLAY`` / ``WAYLAND_DISPLAY`` on Linux) ``--screenshot`` selects Qt's
offscreen platform itself, so servers and CI can check the app.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass

from core_model.errors import UserError

log = logging.getLogger(__name__)

SCREENSHOT_TIMEOUT_S = 180.0


@dataclass
class GuiOptions:
    db: str | None = None
    bundle: str | None = None
    demo: bool = False
    screenshot: str | None = None
    verbose: bool = False


def _no_display() -> bool:
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def install_qt_message_handler() -> None:
    """Qt's own messages go to logging (visible with -v), not as noise on the console."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    qt_log = logging.getLogger("qt")

    def handler(kind, _context, text):
        if kind in (QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
            qt_log.warning("%s", text)
        else:
            qt_log.debug("%s", text)

    qInstallMessageHandler(handler)


def make_application(argv: list[str] | None = None):
    """The QApplication (created once), HiDPI-safe: fractional scale factors pass through."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None:
        return app
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    install_qt_message_handler()
    # Workers run Python too (importer, pydicom); each time Qt calls back into Python (paint
    # events, slots) the GUI thread waits for the GIL up to the switch interval. 1 ms instead
    # of 5 ms keeps those waits short (see benchmarks/app_responsiveness.py).
    sys.setswitchinterval(float(os.environ.get("CXR_ADAPTOR_SWITCH_INTERVAL", "0.001")))
    app = QApplication(argv or [sys.argv[0]])
    app.setOrganizationName("cxr-adaptor")
    app.setApplicationName("adaptor-review")
    app.setApplicationDisplayName("CXR Adaptor review")
    return app


def _install_excepthook(window_ref: list) -> None:
    """Unexpected exceptions in slots become a message (the traceback goes to the debug log)."""
    from app.gui.workers import user_message

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        log.debug("unhandled exception", exc_info=(exc_type, exc, tb))
        text = user_message(exc)
        window = window_ref[0] if window_ref else None
        if window is not None:
            try:
                window.show_error("Something went wrong", text)
                return
            except Exception:  # the window itself is broken: fall back to one line
                pass
        print(f"adaptor-review: {text}", file=sys.stderr)

    sys.excepthook = hook


def run_app(options: GuiOptions) -> int:
    if options.screenshot and _no_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from app.library import open_library

    demo = None
    db = options.db
    if options.demo:
        from app.logic.demo import demo_assets

        demo = demo_assets()
        if db is None:
            db = os.path.join(tempfile.mkdtemp(prefix="cxr-adaptor-demo-"), "library.db")
    library = open_library(db)  # LibraryError (a UserError): main() prints one line
    try:
        app = make_application()
        from app.gui.main_window import MainWindow
        from app.gui.settings import Settings

        window_ref: list = []
        if not options.screenshot:
            _install_excepthook(window_ref)
        settings = Settings()
        window = MainWindow(library, settings=settings, restore_layout=not options.screenshot)
        window_ref.append(window)
        bundle = str(demo.bundle) if demo else options.bundle
        if bundle:
            window.load_bundle(bundle)
        elif not options.screenshot and settings.get("model/last_bundle"):
            last = settings.get("model/last_bundle")
            if os.path.exists(last):
                window.load_bundle(last, quiet=True)
        if demo:
            window.import_paths([str(demo.studies)])
        window.show()
        if os.environ.get("CXR_ADAPTOR_STARTUP_PROBE"):
            _startup_probe(app, window)
        if options.screenshot:
            return _screenshot(app, window, options.screenshot, wait_bundle=bool(bundle), wait_import=bool(demo))
        code = app.exec()
        window.close()  # after a quit from elsewhere: stop the workers before the library closes
        return int(code)
    finally:
        library.close()


def _startup_probe(app, window) -> None:
    """For benchmarks/app_responsiveness.py: print the wall-clock time of the window's first
    paint (``startup-painted <epoch seconds>``) and quit."""
    from PySide6.QtCore import QEvent, QObject, QTimer

    class Probe(QObject):
        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.Paint and not self.done and (
                    obj is window or (hasattr(obj, "window") and obj.window() is window)):
                self.done = True
                print(f"startup-painted {time.time():.6f}", flush=True)
                QTimer.singleShot(0, app.quit)
            return False

    probe = Probe(app)
    probe.done = False
    app.installEventFilter(probe)


def _screenshot(app, window, path: str, *, wait_bundle: bool, wait_import: bool) -> int:
    """Wait until the first image is shown (and analysed when a model was asked for), then grab
    the window into ``path``."""
    from PySide6.QtCore import QTimer

    started = time.monotonic()
    state = {"code": 0}

    def ready() -> bool:
        if wait_import and window.runner.running("background"):
            return False
        if window.bundle_loading or window.runner.running("interactive") or window.runner.running("thumbnails"):
            return False
        if window.browser.model.rows:
            uid = window.current_uid
            if uid is None:
                window.browser.select_row(0)
                return False
            if window.viewer.image is None and window.image_error is None:
                return False
            if wait_bundle and window.bundle is not None and window.image_error is None:
                if window.current_result is None and window.analysis_error is None:
                    return False
        return True

    def tick() -> None:
        timed_out = time.monotonic() - started > SCREENSHOT_TIMEOUT_S
        if not ready() and not timed_out:
            return
        timer.stop()
        app.processEvents()
        pixmap = window.grab()
        out = os.path.abspath(path)
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        tmp = out + ".part.png"
        if not pixmap.save(tmp, "PNG"):
            print(f"adaptor-review: error: could not write {out}", file=sys.stderr)
            state["code"] = 2
        else:
            os.replace(tmp, out)
            note = " (timed out waiting for the analysis)" if timed_out else ""
            print(f"Research use only; not for diagnosis. Wrote {out}{note}")
            if window.bundle_error:
                print(f"Model not loaded: {window.bundle_error}")
            state["code"] = 3 if timed_out else 0
        window.close()
        app.quit()

    timer = QTimer()
    timer.setInterval(100)
    timer.timeout.connect(tick)
    timer.start()
    app.exec()
    return state["code"]


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - convenience entry
    from app.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"adaptor-review: error: {exc}", file=sys.stderr)
        sys.exit(2)
