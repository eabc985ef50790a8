"""The study library: a local SQLite database of patients, studies, series and instances with
their reports, model analyses and reviews; importer, queries and anonymised export.

Qt-free and torch-free, so the desktop app, the headless commands and batch tools share it.
"""

from app.library.db import Library, LibraryError, default_db_path, open_library

__all__ = ["Library", "LibraryError", "default_db_path", "open_library"]
