"""Where the real sample files for tests live (never shipped): ``$CXR_ADAPTOR_REAL_DATA``, else
``../shared/data/real`` beside the checkout, else the workplace's ``/work/shared/data/real``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CANDIDATES = [
    os.environ.get("CXR_ADAPTOR_REAL_DATA"),
    Path(__file__).resolve().parents[2] / "shared" / "data" / "real",
    Path("/work/shared/data/real"),
]
REAL_DIR = next(
    (Path(c) for c in _CANDIDATES if c and Path(c).is_dir()),
    Path(__file__).resolve().parents[2] / "shared" / "data" / "real",
)


def real_file(name: str) -> Path:
    """The path of a real sample file, or skip the test (with where we looked) when absent."""
    path = REAL_DIR / name
    if not path.exists():
        pytest.skip(f"real sample file {name} not available (looked in {REAL_DIR}; set CXR_ADAPTOR_REAL_DATA)")
    return path
