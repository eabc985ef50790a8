"""Fixtures for the study library tests: real SQLite files under tmp_path, DICOMs written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom import uid

from app.library import open_library
from tests.imaging.builders import (
    REAL_DCM,
    REAL_PNG,
    gradient,
    truncate,
    write,
    write_garbage,
    write_mismatch,
    write_sr,
)

SECRET_NAME = "ZZSECRETNAME^JOHN"
SECRET_ID = "SECRETID4711"
SECRET_BIRTH = "19440229"


@pytest.fixture
def lib(tmp_path):
    library = open_library(tmp_path / "db" / "library.db")
    yield library
    library.close()


@pytest.fixture
def without_gdcm_plugin():
    """JPEG Lossless undecodable through pydicom's plugin API (gdcm is its only decoder here)."""
    from pydicom.pixels import get_decoder

    removed = []
    for ts in (uid.JPEGLosslessSV1, uid.JPEGLossless):
        dec = get_decoder(ts)
        if "gdcm" in dec.available_plugins:
            dec.remove_plugin("gdcm")
            removed.append(dec)
    yield
    for dec in removed:
        dec.add_plugin("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))


def make_good(folder: Path, n: int, *, prefix: str = "img", **spec) -> list[Path]:
    spec.setdefault("patient_name", SECRET_NAME)
    spec.setdefault("patient_id", SECRET_ID)
    spec.setdefault("patient_birth_date", SECRET_BIRTH)
    return [write(folder / f"{prefix}{i:04d}.dcm", gradient(16, 16), instance_number=i + 1, **spec) for i in range(n)]


def make_mixed(folder: Path) -> dict[str, Path]:
    """A folder like a real export: good images of every kind plus one file of every bad kind.
    Returns name -> path; the expected outcome is in MIXED_EXPECTED."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    study = "1.2.826.0.1.3680043.8.498.1000"
    common = dict(
        patient_name=SECRET_NAME,
        patient_id=SECRET_ID,
        patient_birth_date=SECRET_BIRTH,
        study_uid=study,
        study_date="20240105",
    )
    files["pa"] = write(folder / "pa.dcm", gradient(32, 32), view_position="PA", series_uid=study + ".1", **common)
    files["lat"] = write(
        folder / "sub" / "lat.dcm",
        gradient(32, 32),
        uid.JPEG2000Lossless,
        view_position="LL",
        series_uid=study + ".2",
        **common,
    )
    files["cr_mono1"] = write(
        folder / "sub" / "deeper" / "cr.dcm",
        gradient(32, 32),
        uid.RLELossless,
        modality="CR",
        photometric="MONOCHROME1",
        rescale_slope=-1.0,
        rescale_intercept=4095.0,
        imager_pixel_spacing=None,
        pixel_spacing=(0.143, 0.144),
        view_position="AP",
    )
    files["jpegls"] = write(folder / "ls.dcm", gradient(32, 32), uid.JPEGLSLossless)
    files["jpeg"] = write(folder / "baseline.dcm", gradient(32, 32, bits=8), uid.JPEGBaseline8Bit, bits_stored=8)
    files["jpeg_lossless"] = write(folder / "sv1.dcm", gradient(32, 32), uid.JPEGLosslessSV1)
    files["real_dcm"] = Path(shutil.copy(REAL_DCM, folder / "real.dcm"))
    files["png"] = Path(shutil.copy(REAL_PNG, folder / "00000001_000.png"))
    (folder / "00000001_000.txt").write_text("Heart size normal. Lungs clear.")
    files["not_dicom"] = write_garbage(folder / "notes.csv", "a,b\n1,2\n")
    files["sr"] = write_sr(folder / "report_sr.dcm", SECRET_NAME, SECRET_ID)
    files["truncated"] = truncate(write(folder / "tmp_full.dcm", gradient(64, 64)), folder / "cut.dcm", 500)
    (folder / "tmp_full.dcm").unlink()
    files["mismatch"] = write_mismatch(folder / "mismatch.dcm", patient_name=SECRET_NAME, patient_id=SECRET_ID)
    (folder / ".DS_Store").write_bytes(b"\0\1junk")
    return files


MIXED_IMPORTED = {"pa", "lat", "cr_mono1", "jpegls", "jpeg", "jpeg_lossless", "real_dcm", "png"}
MIXED_REJECTED = {
    "not_dicom": "not_dicom",
    "sr": "no_pixel_data",
    "truncated": "truncated",
    "mismatch": "pixel_data_mismatch",
}


def png_bytes(arr: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
