"""Phantom studies for the app's tests and documentation screenshots: SYNTHETIC chest X-ray
phantoms (core_model.data.phantoms, not medical data) as DICOM files with their reports beside
them (``<name>.txt``, which the importer attaches)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path


def phantom_studies(out: Path, n: int = 12, seed: int = 3, size: int = 384) -> Path:
    """``out/studies/`` with ``n`` phantom DICOMs (all encodings the generator cycles through)
    and their reports; returns that folder."""
    from core_model.data.phantoms import PhantomOptions, generate_phantoms

    raw = out / "phantoms"
    generate_phantoms(raw, PhantomOptions(n=n, seed=seed, size=size, dicom="all", workers=1))
    studies = out / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    with open(raw / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            src = raw / row["dicom"]
            dst = studies / src.name
            shutil.copy(src, dst)
            dst.with_suffix(".txt").write_text(row["report"])
    return studies


def reading_room_studies(out: Path, seed: int = 11, size: int = 320) -> Path:
    """``out/reading_room/``: one SYNTHETIC patient with a current study (frontal PA + lateral
    LL, two series) and a prior study a year earlier (PA), another patient with one AP, and a
    folder of two PNG exports; every DICOM is a phantom written with ``write_dicom``. (The
    generator renders frontal phantoms only: the "lateral" is a phantom labelled LL.)"""
    import numpy as np
    from PIL import Image

    from core_model.data.phantoms import PhantomOptions, generate_phantoms
    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    raw = out / "rr-phantoms"
    generate_phantoms(raw, PhantomOptions(n=6, seed=seed, size=size, dicom="none", workers=1))
    with open(raw / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pixels = [np.asarray(Image.open(raw / r["image"]).convert("L")) for r in rows]
    folder = out / "reading_room"
    (folder / "exports").mkdir(parents=True, exist_ok=True)
    current, prior = "1.2.826.0.1.3680043.8.498.7001", "1.2.826.0.1.3680043.8.498.7000"
    specs = [
        (
            "doe_current_pa.dcm",
            DicomSpec(
                patient_name="DOE^JANE",
                patient_id="MRN-447",
                patient_birth_date="19610203",
                patient_sex="F",
                study_uid=current,
                study_date="20240315",
                accession_number="ACC-2",
                view_position="PA",
                series_number=1,
                series_description="CHEST PA",
                extra={"PatientOrientation": ["L", "F"]},
            ),
            0,
        ),
        (
            "doe_current_lat.dcm",
            DicomSpec(
                patient_name="DOE^JANE",
                patient_id="MRN-447",
                patient_birth_date="19610203",
                patient_sex="F",
                study_uid=current,
                study_date="20240315",
                accession_number="ACC-2",
                view_position="LL",
                series_number=2,
                series_description="CHEST LAT",
            ),
            1,
        ),
        (
            "doe_prior_pa.dcm",
            DicomSpec(
                patient_name="DOE^JANE",
                patient_id="MRN-447",
                patient_birth_date="19610203",
                patient_sex="F",
                study_uid=prior,
                study_date="20230310",
                accession_number="ACC-1",
                view_position="PA",
                series_number=1,
                series_description="CHEST PA",
            ),
            2,
        ),
        (
            "roe_ap.dcm",
            DicomSpec(
                patient_name="ROE^RICHARD",
                patient_id="MRN-900",
                study_date="20240101",
                view_position="AP",
                series_description="CHEST AP PORTABLE",
            ),
            3,
        ),
    ]
    for name, spec, k in specs:
        write_dicom(folder / name, pixels[k], spec)
    for name, k in (("export_0001.png", 4), ("export_0002.jpg", 5)):
        Image.fromarray(pixels[k]).save(folder / "exports" / name)
    return folder
