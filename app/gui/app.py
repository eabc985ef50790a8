"""Starting the desktop app: QApplication (HiDPI, names), the library, the window, the model,
and ``--screenshot`` (render offscreen once loaded, write a PNG, exit).

Without a display (no ``DISPLAY`` / ``WAYLAND_DISPLAY`` on Linux) ``--screenshot`` selects Qt's
offscreen platform itself, so servers and CI can check the app.

Start-up faults are said plainly: before the QApplication exists, on Linux with Qt's X11 (xcb)
platform, :func:`platform_problem` checks that the system libraries the xcb plugin loads are
there (Qt 6.5+ needs ``libxcb-cursor0``; without it Qt aborts with a generic message) and names
the packages to install. A library that cannot be opened (not SQLite, a folder, a broken file)
shows :class:`~app.gui.dialogs.LibraryProblemDialog` with the reason and a way out (choose
another library) instead of exiting.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass

from core_model.errors import UserError
from core_model.fileio import atomic_path

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


# The system libraries Qt's xcb platform plugin (PySide6 6.5+) loads, with the packages that
# provide them: (soname, Debian/Ubuntu package, Fedora package). README "System packages".
XCB_LIBRARIES = (
    ("libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor"),
    ("libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms"),
    ("libxcb-image.so.0", "libxcb-image0", "xcb-util-image"),
    ("libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil"),
    ("libxcb-util.so.1", "libxcb-util1", "xcb-util"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
    ("libxcb-xkb.so.1", "libxcb-xkb1", "libxcb"),
    ("libxcb-randr.so.0", "libxcb-randr0", "libxcb"),
    ("libxcb-shape.so.0", "libxcb-shape0", "libxcb"),
    ("libxcb-sync.so.1", "libxcb-sync1", "libxcb"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb"),
    ("libxcb-shm.so.0", "libxcb-shm0", "libxcb"),
    ("libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb"),
)


def can_load(soname: str) -> bool:
    """Whether the dynamic loader finds and loads ``soname`` (what Qt's plugin loader will do)."""
    import ctypes

    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def qt_platform(env=None, platform: str | None = None) -> str:
    """The platform plugin Qt will try first: ``QT_QPA_PLATFORM``'s first entry, else Qt's
    default (wayland in a Wayland session, else xcb on Linux; the native one elsewhere)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    chosen = (env.get("QT_QPA_PLATFORM") or "").split(";")[0].split(":")[0].strip().lower()
    if chosen:
        return chosen
    if not platform.startswith("linux"):
        return "native"
    if env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return "wayland"
    return "xcb"


def platform_problem(env=None, platform: str | None = None, loader=can_load) -> str | None:
    """Why Qt's platform plugin cannot start here, in words a user can act on (None: it can).
    Only the xcb platform on Linux is checked: its plugin needs system libraries that a
    minimal install lacks, and Qt itself then aborts with a generic message."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux") or qt_platform(env, platform) != "xcb":
        return None
    missing = [entry for entry in XCB_LIBRARIES if not loader(entry[0])]
    if missing:
        libs = ", ".join(f"{so} (package {deb})" for so, deb, _ in missing)
        debs = " ".join(dict.fromkeys(deb for _, deb, _ in missing))
        rpms = " ".join(dict.fromkeys(rpm for _, _, rpm in missing))
        return (
            f"the desktop app cannot start: Qt's X11 (xcb) platform plugin needs system libraries that are "
            f"missing: {libs}. Install them: sudo apt install {debs} (Debian/Ubuntu) or sudo dnf install "
            f"{rpms} (Fedora); README 'System packages' lists them all. The headless commands work without "
            "them (adaptor-review --help)"
        )
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return (
            "the desktop app cannot start: there is no X display (DISPLAY is not set). Run it in a desktop "
            "session, or use --screenshot PNG or the headless commands (adaptor-review --help)"
        )
    return None


def qt_message_level(kind_name: str, category: str, text: str) -> int:
    """The logging level of a Qt message: critical and fatal ones are errors; the platform
    plugin's warnings (the real reason a plugin did not load, e.g. "xcb-cursor0 ... is needed")
    are warnings, so they are seen; everything else is debug (visible with -v)."""
    if kind_name in ("QtCriticalMsg", "QtFatalMsg"):
        return logging.ERROR
    if category.startswith("qt.qpa.plugin") or "platform plugin" in text:
        return logging.WARNING
    return logging.DEBUG


PLATFORM_HINT = (
    "the Qt platform plugin could not start; on Linux install the system packages listed in the "
    "README ('System packages', e.g. libxcb-cursor0), or run the headless commands"
)


def install_qt_message_handler() -> None:
    """Qt's own messages go to logging (visible with -v), not as noise on the console; the
    platform plugin's reasons and fatal messages are always shown (with what to install)."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    qt_log = logging.getLogger("qt")

    def handler(kind, context, text):
        kind_name = getattr(kind, "name", str(kind)).split(".")[-1]
        category = str(getattr(context, "category", "") or "")
        level = qt_message_level(kind_name, category, text)
        qt_log.log(level, "%s", text)
        if kind == QtMsgType.QtFatalMsg and "platform plugin" in text:
            print(f"adaptor-review: {PLATFORM_HINT}", file=sys.stderr, flush=True)

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


def open_or_choose_library(db, *, interactive: bool):
    """The library at ``db``; when it cannot be opened and the user is there, the start-up
    dialog says why and lets them choose another one (None: they quit). Without a user
    (``--screenshot``) the :class:`LibraryError` goes to main(), which prints one line."""
    from app.library import LibraryError, open_library

    try:
        return open_library(db)
    except LibraryError as exc:
        if not interactive:
            raise
        log.debug("library %s not opened: %s", db, exc)
        from app.gui.dialogs import LibraryProblemDialog
        from app.library.db import default_db_path

        dialog = LibraryProblemDialog(db if db is not None else default_db_path(), str(exc), open_library)
        dialog.exec()
        return dialog.library


def run_app(options: GuiOptions) -> int:
    if options.screenshot and _no_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = platform_problem()
    if problem is not None:  # before Qt: it would abort the process with a generic message
        raise UserError(problem)

    demo = None
    db = options.db
    if options.demo:
        from app.logic.demo import demo_assets

        demo = demo_assets()
        if db is None:
            db = os.path.join(tempfile.mkdtemp(prefix="cxr-adaptor-demo-"), "library.db")
    app = make_application()
    library = open_or_choose_library(db, interactive=not options.screenshot)
    if library is None:
        print("adaptor-review: no library opened (the start-up dialog was closed)", file=sys.stderr)
        return 2
    try:
        from app.gui.main_window import MainWindow
        from app.gui.settings import Settings

        window_ref: list = []
        if not options.screenshot:
            _install_excepthook(window_ref)
        settings = Settings()
        interactive = not options.screenshot
        window = MainWindow(library, settings=settings, restore_layout=interactive, select_first=not interactive)
        window_ref.append(window)
        bundle = str(demo.bundle) if demo else options.bundle

        def start_work() -> None:
            if interactive and window.current_uid is None and window.browser.model.rows:
                window.browser.select_row(0)  # the first image (its decoder's imports: pydicom, codecs)
            if bundle:
                window.bundles.load_bundle(bundle)
            elif not options.screenshot:
                window.bundles.load_remembered_bundle()  # never a synthetic (demo) bundle (app.gui.bundle_controller)
            if demo:
                window.library_ctl.import_paths([str(demo.studies)])

        if options.screenshot:
            start_work()  # nobody waits for the window: _screenshot waits for the model and the import
        window.show()
        if not options.screenshot:
            window.fit_to_screen()  # inside the screen it opens on (e.g. a 1366 x 768 laptop)
            # the first image, the model (onnxruntime sessions, the report bank and its index) and
            # the demo import load in workers, but their imports and set-up hold the GIL: start
            # them once the window is on screen (benchmarks/app_responsiveness.py, cold start)
            after_first_paint(app, window, start_work)
        if os.environ.get("CXR_ADAPTOR_STARTUP_PROBE"):
            _startup_probe(app, window)
        if options.screenshot:
            return _screenshot(app, window, options.screenshot, wait_bundle=bool(bundle), wait_import=bool(demo))
        code = app.exec()
        window.close()  # after a quit from elsewhere: stop the workers before the library closes
        return int(code)
    finally:
        library.close()


def after_first_paint(app, window, fn, *, fallback_ms: int = 1500) -> None:
    """Call ``fn`` once, from the event loop, after ``window`` (or a widget in it) has painted for
    the first time, or after ``fallback_ms`` if it never paints (started minimised, hidden)."""
    from PySide6.QtCore import QEvent, QObject, QTimer

    state = {"done": False}

    def fire() -> None:
        if not state["done"]:
            state["done"] = True
            app.removeEventFilter(watcher)
            fn()

    class Watcher(QObject):
        def eventFilter(self, obj, event):
            if (
                not state["done"]
                and event.type() == QEvent.Type.Paint
                and (obj is window or (hasattr(obj, "window") and obj.window() is window))
            ):
                QTimer.singleShot(0, self, fire)  # after this frame is painted and shown
            return False

    watcher = Watcher(window)
    app.installEventFilter(watcher)
    QTimer.singleShot(fallback_ms, watcher, fire)  # the watcher goes with the window


def _startup_probe(app, window) -> None:
    """For benchmarks/app_responsiveness.py: print the wall-clock time of the window's first
    paint and the CPU time this process had used by then (``startup-painted <epoch seconds>
    <cpu seconds>``) and quit."""
    from PySide6.QtCore import QEvent, QObject, QTimer

    class Probe(QObject):
        def eventFilter(self, obj, event):
            if (
                event.type() == QEvent.Type.Paint
                and not self.done
                and (obj is window or (hasattr(obj, "window") and obj.window() is window))
            ):
                self.done = True
                print(f"startup-painted {time.time():.6f} {time.process_time():.4f}", flush=True)
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
        try:
            with atomic_path(out) as tmp:
                if not pixmap.save(str(tmp), "PNG"):
                    raise OSError("the image writer failed")
        except OSError:
            print(f"adaptor-review: error: could not write {out}", file=sys.stderr)
            state["code"] = 2
        else:
            note = " (timed out waiting for the analysis)" if timed_out else ""
            print(f"Research use only; not for diagnosis. Wrote {out}{note}")
            if window.bundle is not None and window.bundle.synthetic:
                print(
                    "The model shown is a demo model trained on synthetic phantoms: its output means nothing "
                    "for real images."
                )
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
