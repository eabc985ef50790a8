"""``adaptor-review import PATH... [--db FILE] [--copy | --link] [--verify] [--json]``

Imports DICOM files, folders (recursively), DICOMDIRs, zip archives and PNG/JPEG images and
prints a summary: imported, duplicates, rejected with a reason per file. Exit status 0 when the
run completed (even with rejections); 2 when it could not run (no such path, unusable
database); 130 when interrupted (what was imported so far stays imported).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from app.cli.common import NOTICE, add_db_argument
from core_model.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import",
        help="import DICOM/PNG/JPEG files, folders, DICOMDIRs and zip archives into the library",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="file, folder, DICOMDIR or .zip")
    add_db_argument(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--copy",
        dest="mode",
        action="store_const",
        const="copy",
        help="copy the files into the library's folder (default)",
    )
    mode.add_argument(
        "--link",
        dest="mode",
        action="store_const",
        const="link",
        help="leave the files where they are and record their paths (zip members are always copied)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also decode every new image (slower; finds corrupt compressed pixel data)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run, mode="copy")
    return parser


class _Progress:
    """A single self-overwriting status line on stderr (only on a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.shown = False

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        total = f"/{p.total}" if p.total else ""
        sys.stderr.write(
            f"\r  {p.done}{total} files: {p.imported} imported, {p.duplicates} duplicates, {p.rejected} rejected   "
        )
        sys.stderr.flush()
        self.shown = True

    def end(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def run(args: argparse.Namespace) -> int:
    from app.library import open_library
    from app.library.importer import Importer

    paths = [Path(p).expanduser() for p in args.paths]
    if not any(p.exists() for p in paths):
        raise UserError(
            "nothing to import: "
            + ", ".join(str(p) for p in paths)
            + (" does not exist" if len(paths) == 1 else " do not exist")
        )
    library = open_library(args.db)
    cancel = threading.Event()
    progress = _Progress(enabled=not args.json and sys.stderr.isatty())

    def on_sigint(_signum, _frame):
        if cancel.is_set():  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        cancel.set()

    previous = (
        signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        summary = Importer(library, mode=args.mode, progress=progress, cancel=cancel, verify=args.verify).run(paths)
    finally:
        progress.end()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        library.close()
    if args.json:
        out = summary.to_dict()
        out.update(db=str(library.db_path), notice=NOTICE)
        print(json.dumps(out, indent=2))
    else:
        _print_text(summary, library.db_path)
    return 130 if summary.cancelled else 0


def _print_text(summary, db_path) -> None:
    print(NOTICE)
    state = "Import cancelled" if summary.cancelled else "Import finished"
    print(
        f"{state}: {summary.imported} imported, {summary.duplicates} duplicates, "
        f"{len(summary.rejected)} rejected, {summary.ignored} ignored "
        f"({summary.files_seen} files in {summary.elapsed_s:.2f} s, {summary.files_per_s:.0f} files/s)"
    )
    if summary.reports:
        print(f"Reports attached: {summary.reports}")
    print(f"Library: {db_path} ({'copied into the library' if summary.mode == 'copy' else 'linked in place'})")
    if summary.rejected:
        print("Rejected files:")
        for rej in summary.rejected:
            print(f"  {rej.path}\n      {rej.reason}: {rej.message}")
