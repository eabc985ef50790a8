"""`adaptor-review`: the desktop review app and its headless commands. Research use only.

Never imports torch. Headless commands (import, list, render, export-anonymized, predict,
analyze) never import Qt either, so they run on servers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing
import sys

from core_model.errors import UserError

# Each headless command lives in app/cli/<name>.py with `add_parser(subparsers)` and `run(args)`.
COMMANDS = ["import_cmd", "list_cmd", "render", "export_anonymized", "predict", "analyze"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptor-review",
        description="Review chest X-rays with an Adaptor model bundle. Research use only; not for diagnosis.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"app.cli.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"adaptor-review {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adaptor-review {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
