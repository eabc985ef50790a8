"""The one command loader of both command lines (stdlib only; no torch, no Qt).

``adaptor-train`` (training_cli/commands/) and ``adaptor-review`` (app/cli/) keep each command in
its own module with ``add_parser(subparsers)`` (which sets ``func``) and ``run(args)``; the entry
point lists the modules and calls :func:`add_commands`. Every listed module exists: a missing
one is an ImportError, never a silently absent command. :func:`run_command` runs the chosen one
the same way for both: a :class:`~core_model.errors.UserError` is one line on stderr and exit
status 2, Ctrl+C is one line and 130, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable

from core_model.errors import UserError


def add_commands(subparsers: argparse._SubParsersAction, package: str, names: Iterable[str]) -> None:
    """Import ``package.<name>`` for each name, in order, and let it add its subcommand."""
    for name in names:
        importlib.import_module(f"{package}.{name}").add_parser(subparsers)


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace, *, interrupted: str = "interrupted") -> int:
    """Run the parsed subcommand (``args.func``): its exit status, 2 with one line for a user
    error (or help when no command was chosen), 130 with ``interrupted`` on Ctrl+C."""
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: {interrupted}", file=sys.stderr)
        return 130
