"""Fixtures for the DICOMweb tests: a real Orthanc with its DICOMweb plugin (skipped, with the
reason, when it is not installed), phantom studies written here with pydicom, real libraries."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from app.library import open_library
from tests.imaging.builders import gradient, write
from tests.pacs.orthanc import OrthancServer, missing_reason


def _orthanc(folder: Path, users: dict[str, str] | None = None):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = OrthancServer(folder, users=users)
    server.start()
    return server


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """One Orthanc for the session (no authentication); tests tell their studies apart by
    unique patient IDs."""
    server = _orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orthanc_auth(tmp_path_factory):
    """An Orthanc that requires HTTP basic authentication (user ``reader``, password ``s3cret-pw``)."""
    server = _orthanc(tmp_path_factory.mktemp("orthanc-auth"), users={"reader": "s3cret-pw"})
    yield server
    server.stop()


@pytest.fixture
def lib(tmp_path):
    library = open_library(tmp_path / "db" / "library.db")
    yield library
    library.close()


def write_study(
    folder: Path, *, patient_id: str, images: int = 1, modality: str = "DX", **spec
) -> tuple[str, list[Path]]:
    """A phantom study of ``images`` instances (one series); returns (study UID, files)."""
    study = generate_uid()
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    spec.setdefault("patient_name", f"PACS^TEST{patient_id[-4:]}")
    spec.setdefault("study_date", "20240105")
    files = [
        write(
            folder / f"{patient_id}-{i}.dcm",
            gradient(32, 40),
            patient_id=patient_id,
            study_uid=study,
            series_uid=series,
            instance_number=i + 1,
            modality=modality,
            **spec,
        )
        for i in range(images)
    ]
    return study, files


@pytest.fixture
def patient_id() -> str:
    return "PACS-" + uuid.uuid4().hex[:10].upper()
