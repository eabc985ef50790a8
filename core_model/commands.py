"""The one command loader of both command lines (stdlib only; no torch, no Qt).

``adaptor-train`` (training_cli/commands/) and ``adaptor-review`` (app/cli/) keep each command in
its own module with ``add_parser(subparsers)`` (which sets ``func``) and ``run(args)``; the entry
point lists the modules and calls :func:`add_commands`. Every listed module exists: a missing
one is an ImportError, never a silently absent command.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterable


def add_commands(subparsers: argparse._SubParsersAction, package: str, names: Iterable[str]) -> None:
    """Import ``package.<name>`` for each name, in order, and let it add its subcommand."""
    for name in names:
        importlib.import_module(f"{package}.{name}").add_parser(subparsers)
