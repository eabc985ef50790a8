"""`adaptor-review`: the desktop review app and its headless commands. Research use only.

    adaptor-review [--db FILE] [--bundle PATH] [--demo] [--screenshot PNG]   the desktop app
    adaptor-review COMMAND ...                                               headless commands

Never imports torch. Headless commands (import, list, render, export-anonymized, predict,
analyze, pacs) never import Qt either, so they run on servers; the GUI (app.gui) is imported only
when no command is given.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys

from core_model.commands import add_commands, run_command
from core_model.errors import UserError

# Each headless command lives in app/cli/<name>.py with `add_parser(subparsers)` and `run(args)`.
COMMANDS = ["import_cmd", "list_cmd", "render", "export_anonymized", "predict", "analyze", "pacs"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptor-review",
        description="Review chest X-rays with an Adaptor model bundle. Research use only; not for diagnosis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    gui = parser.add_argument_group("desktop app (when no COMMAND is given)")
    gui.add_argument(
        "--db",
        dest="gui_db",
        metavar="FILE",
        default=None,
        help="library database file (default: the user data folder, or $CXR_ADAPTOR_DB)",
    )
    gui.add_argument(
        "--bundle",
        dest="gui_bundle",
        metavar="PATH",
        default=None,
        help="model bundle folder or .zip to load (default: the last one used)",
    )
    gui.add_argument(
        "--demo", action="store_true", help="open a fresh temporary library with the demo studies and the demo model"
    )
    gui.add_argument(
        "--screenshot",
        metavar="PNG",
        default=None,
        help="render the window offscreen after loading (and analysing the first image when a "
        "model is loaded), write it as PNG and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(sub, "app.cli", COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "command", None):
        return _run_gui(args)
    if getattr(args, "db", None) is None and args.gui_db is not None:
        args.db = args.gui_db  # "adaptor-review --db FILE list" means the same as "list --db FILE"
    return run_command(parser, args)


# System libraries Qt itself (QtGui) loads on Linux, and the Debian/Ubuntu packages that have them
# (the xcb platform plugin's are checked in app.gui.app.platform_problem). README "System packages".
QT_SYSTEM_LIBRARIES = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libX11.so.6": "libx11-6",
}


def _system_package_hint(text: str) -> str:
    """ ", install the system package libegl1 (...)" when an ImportError names a missing system library."""
    for soname, package in QT_SYSTEM_LIBRARIES.items():
        if soname in text:
            return (
                f": the system library {soname} is missing; install the package {package} "
                f"(sudo apt install {package}; README 'System packages')"
            )
    return ""


def _headless() -> bool:
    import os

    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _print_demo_analysis() -> None:
    """Without a display, `--demo` prints what the demo model says about each demo study."""
    from app.cli.predict import print_analysis
    from app.logic.demo import demo_assets
    from core_model.runtime import load_bundle

    assets = demo_assets()
    bundle = load_bundle(assets.bundle)
    print(
        f"Demo model {bundle.id} on the demo studies (synthetic phantoms). Research use only: "
        "not a medical device, not for diagnosis."
    )
    for path in sorted(assets.studies.glob("*.dcm")):
        print_analysis(bundle, str(path), bundle.analyze(path), k=1)


def _run_gui(args: argparse.Namespace) -> int:
    if args.demo and not args.screenshot and _headless():
        try:
            _print_demo_analysis()
        except UserError as exc:
            print(f"adaptor-review: error: {exc}", file=sys.stderr)
            return 2
        args.screenshot = "demo-screenshot.png"
        print(f"no display: writing the app's window to {args.screenshot} instead of opening it")
    try:
        from app.gui.app import GuiOptions, run_app
    except (
        ImportError
    ) as exc:  # an installation without PySide6 / pyqtgraph (a server), or Qt without its system libraries
        print(
            f"adaptor-review: the desktop app cannot start ({exc}){_system_package_hint(str(exc))}; the headless "
            "commands work: adaptor-review --help",
            file=sys.stderr,
        )
        return 2
    options = GuiOptions(
        db=args.gui_db, bundle=args.gui_bundle, demo=args.demo, screenshot=args.screenshot, verbose=args.verbose
    )
    try:
        return run_app(options)
    except UserError as exc:
        print(f"adaptor-review: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
