"""Shared bits of the headless library commands in app/cli (import, list, render, export-anonymized)."""

from __future__ import annotations

import argparse

NOTICE = "Research use only; not for diagnosis."


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    from app.library.db import default_db_path

    try:
        default = str(default_db_path())
    except Exception:  # platformdirs failure must not break --help
        default = "the user data folder"
    parser.add_argument("--db", metavar="FILE", default=None, help=f"library database file (default: {default})")
