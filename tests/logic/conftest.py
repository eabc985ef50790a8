"""Fixtures for the Qt-free app.logic tests: the real SQLite library with the DICOM / PNG studies
and the real model bundle of tests/gui/conftest.py (imported from there, so both suites use the
same library builder and the one tiny bundle the session exports)."""

from __future__ import annotations

from tests.gui.conftest import (  # noqa: F401  (pytest fixtures)
    exported_bundle,
    library,
    loaded_bundle,
    other_version_bundle,
    study_files,
)
