"""The study library: a local SQLite database of patients, studies, series and instances with
their reports, model analyses and reviews; importer, queries and anonymised export.

Qt-free and torch-free, so the desktop app, the headless commands and batch tools share it.
The names below load ``app.library.db`` (and SQLAlchemy) on first use, so a module of the
package that needs neither (``app.library.header_job``, which the importer's worker processes
run) starts without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.library.db import Library, LibraryError, default_db_path, open_library

__all__ = ["Library", "LibraryError", "default_db_path", "open_library"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from app.library import db

        return getattr(db, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
