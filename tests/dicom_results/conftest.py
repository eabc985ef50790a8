"""Fixtures for the results-as-DICOM tests: the real demo bundle, phantom DICOMs written here from
the demo's pneumothorax phantom (with and without a Frame of Reference / pixel spacing, and with
hostile patient attributes), and ``dciodvfy`` when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
PNEUMOTHORAX = DEMO / "studies" / "phantom-00043.dcm"  # the demo model finds a mask on it
NORMAL = DEMO / "studies" / "phantom-00078.dcm"


@pytest.fixture(scope="session")
def bundle():
    from core_model.runtime import load_bundle

    return load_bundle(DEMO / "bundle")


@pytest.fixture(scope="session")
def phantom_pixels() -> np.ndarray:
    from core_model.imaging.dicom import decode_pixels, read_dataset

    return decode_pixels(read_dataset(PNEUMOTHORAX))


def write_phantom(path: Path, pixels: np.ndarray, **spec) -> Path:
    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    base = dict(modality="CR", view_position="PA", bits_stored=12, windows=[(1713.0, 2864.0)])
    return write_dicom(path, pixels, DicomSpec(**{**base, **spec}))


@pytest.fixture
def spatial_source(tmp_path, phantom_pixels) -> Path:
    """A DX with a Frame of Reference and calibrated PixelSpacing, and a hostile patient name."""
    from pydicom.uid import generate_uid

    return write_phantom(
        tmp_path / "src" / "spatial.dcm",
        phantom_pixels,
        modality="DX",
        patient_name="../../etc/passwd^/evil\\name",
        patient_id="../ID/1",
        pixel_spacing=(0.5, 0.25),
        extra=dict(FrameOfReferenceUID=generate_uid(), PatientOrientation=["L", "F"]),
    )


@pytest.fixture
def clean_spatial_source(tmp_path, phantom_pixels) -> Path:
    """The same DX with a valid patient name (dciodvfy checks the Patient module we copy)."""
    from pydicom.uid import generate_uid

    return write_phantom(
        tmp_path / "src" / "clean.dcm",
        phantom_pixels,
        modality="DX",
        pixel_spacing=(0.5, 0.25),
        extra=dict(FrameOfReferenceUID=generate_uid(), PatientOrientation=["L", "F"], ReferringPhysicianName=""),
    )


@pytest.fixture
def bare_source(tmp_path, phantom_pixels) -> Path:
    """A plain CR without Frame of Reference, PixelSpacing or ImagerPixelSpacing."""
    return write_phantom(tmp_path / "src" / "bare.dcm", phantom_pixels, imager_pixel_spacing=None)


def dciodvfy_errors(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of dciodvfy on ``path``; skips when dicom3tools is not installed."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]
