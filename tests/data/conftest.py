"""Fixtures for the dataset reader tests: the real label files (read-only, skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_data import REAL_DIR as REAL

RSNA_LABELS = REAL / "kaggle_stage_2_train_labels.csv.zip"
SIIM_LABELS = REAL / "siim-pneumothorax-train-rle.csv.gz"
SIIM_DICOM = REAL / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real file not available: {path}")
    return path


@pytest.fixture(scope="session")
def rsna_labels_path() -> Path:
    return _need(RSNA_LABELS)


@pytest.fixture(scope="session")
def siim_labels_path() -> Path:
    return _need(SIIM_LABELS)


@pytest.fixture(scope="session")
def siim_dicom_path() -> Path:
    return _need(SIIM_DICOM)


@pytest.fixture(scope="session")
def rsna_table(rsna_labels_path):
    from core_model.data.rsna import read_rsna_labels

    return read_rsna_labels(rsna_labels_path)


@pytest.fixture(scope="session")
def siim_table(siim_labels_path):
    from core_model.data.siim import read_siim_labels

    return read_siim_labels(siim_labels_path)
