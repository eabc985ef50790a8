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
