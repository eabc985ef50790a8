"""The import's fast header walk (core_model.imaging.quick_header, issue 15) against pydicom.

Every file the walk accepts must give exactly what the pydicom header read gives (the library
fields, or the same refusal with the same message); every file outside its subset must be left
to pydicom. Checked on files written here (each transfer syntax the walk takes, implicit VR,
sequences, private tags, character sets, multi-valued and empty values), the real sample DICOM,
the demo studies, the benchmark's files, and a few thousand byte-flipped or truncated mutants.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from app.library.header_job import FIELD_KEYWORDS, _read_dicom_header
from app.library.importer import Importer
from core_model.imaging.dicom import quick_scan
from tests.imaging.builders import REAL_DCM, gradient, write, write_without_preamble

ROOT = Path(__file__).resolve().parents[2]
DEMO_STUDIES = ROOT / "assets" / "demo" / "studies"


def both(path: Path) -> tuple[tuple, tuple]:
    return _read_dicom_header(path, quick=True), _read_dicom_header(path, quick=False)


def accepted(path: Path) -> bool:
    try:
        return quick_scan(path, FIELD_KEYWORDS) is not None
    except OSError:
        return False


def resave(src: Path, dst: Path, change=None, ts: str | None = None) -> Path:
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # a new image
    if change is not None:
        change(ds)
    if ts is not None:
        ds.file_meta.TransferSyntaxUID = ts
    if ts == ExplicitVRBigEndian:
        pydicom.dcmwrite(dst, ds, enforce_file_format=True, little_endian=False, implicit_vr=False)
    else:
        ds.save_as(dst, enforce_file_format=True)
    return dst


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quick-seeds")
    px12 = gradient(48, 40, bits=12)
    out = {
        "native12": write(
            d / "n.dcm",
            px12,
            rescale_slope=2.0,
            rescale_intercept=-1024.0,
            windows=[(1000.0, 2000.0), (0.0, 400.0)],
            patient_name="MÜLLER^ANNA",
            patient_birth_date="19600101",
            study_date="20230725",
            pixel_spacing=(0.143, 0.143),
        ),
        "mono1": write(d / "m1.dcm", px12, photometric="MONOCHROME1", view_position="AP"),
        "rle": write(d / "r.dcm", px12, RLELossless),
        "jpeg": write(d / "j.dcm", gradient(48, 40, bits=8), JPEGBaseline8Bit, bits_stored=8),
        "j2k": write(d / "k.dcm", px12, JPEG2000Lossless),
    }
    out["implicit"] = resave(out["native12"], d / "implicit.dcm", ts=ImplicitVRLittleEndian)

    def rich(ds: Dataset) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Ñandú^José=山田^太郎"
        ds.PatientID = "ID-ü-7 "
        ds.StudyDescription = "CHEST\\PA AND LAT "
        ds.SeriesDescription = ""
        ds.IssuerOfPatientID = "HOSP"
        ds.AccessionNumber = "A1"
        item = Dataset()
        item.CodeValue = "T-D3000"
        item.CodingSchemeDesignator = "SRT"
        inner = Dataset()
        inner.ReferencedSOPInstanceUID = "1.2.3.4"
        item.ReferencedImageSequence = Sequence([inner])
        ds.AnatomicRegionSequence = Sequence([item])
        ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")
        ds.add_new(0x00091011, "DS", "1.5\\2.5")
        ds.SeriesNumber = "12"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]

    out["rich"] = resave(out["native12"], d / "rich.dcm", rich)
    out["latin1"] = resave(
        out["native12"],
        d / "latin1.dcm",
        lambda ds: (setattr(ds, "SpecificCharacterSet", "ISO_IR 100"), setattr(ds, "PatientName", "GARCÍA^ÁNGEL")),
    )
    if REAL_DCM.exists():
        out["real"] = REAL_DCM
    return out


def test_the_walk_reads_common_files_and_gives_what_pydicom_gives(seeds):
    for name, path in seeds.items():
        quick, reference = both(path)
        assert reference[0] == "ok", (name, reference)
        assert quick == reference, name
        assert accepted(path), f"{name}: left to pydicom"  # the fast path applies to ordinary files
    fields = _read_dicom_header(seeds["rich"])[2]
    assert fields["patient"]["name"] == "Ñandú^José=山田^太郎"
    assert fields["study"]["description"] == "CHEST\\PA AND LAT"
    assert fields["series"]["series_number"] == 12
    assert _read_dicom_header(seeds["native12"])[2]["instance"]["pixel_spacing_row"] == pytest.approx(0.143)


def test_the_demo_studies_read_the_same_by_the_walk_and_pydicom():
    paths = sorted(DEMO_STUDIES.glob("*.dcm"))
    assert paths
    for path in paths:
        quick, reference = both(path)
        assert quick == reference, path.name
        assert accepted(path), path.name


def test_files_outside_the_walk_are_left_to_pydicom(seeds, tmp_path):
    d = tmp_path
    left = {
        "no preamble": write_without_preamble(d / "raw.dcm", gradient(16, 16)),
        "deflated": resave(seeds["native12"], d / "deflate.dcm", ts=DeflatedExplicitVRLittleEndian),
        "big endian": resave(seeds["native12"], d / "be.dcm", ts=ExplicitVRBigEndian),
        "implicit private tag": resave(
            seeds["implicit"], d / "ip.dcm", lambda ds: ds.add_new(0x00091010, "LO", "X"), ts=ImplicitVRLittleEndian
        ),
        "UN element": resave(seeds["native12"], d / "un.dcm", lambda ds: ds.add_new(0x00091010, "UN", b"ab")),
        "other character set": resave(
            seeds["native12"], d / "cs.dcm", lambda ds: setattr(ds, "SpecificCharacterSet", "ISO_IR 144")
        ),
        "nested character set": resave(
            seeds["native12"],
            d / "ncs.dcm",
            lambda ds: (
                setattr(ds, "AnatomicRegionSequence", Sequence([Dataset()]))
                or setattr(ds.AnatomicRegionSequence[0], "SpecificCharacterSet", "ISO_IR 100")
            ),
        ),
        "a DS that is not a plain number": resave(
            seeds["native12"], d / "ds.dcm", lambda ds: setattr(ds, "WindowCenter", "nan")
        ),
    }
    for name, path in left.items():
        assert not accepted(path), name
        assert _read_dicom_header(path) == _read_dicom_header(path, quick=False), name


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    span = min(len(buf), 2048)  # the header
    for _ in range(rng.randint(1, 6)):
        buf[rng.randrange(span)] = rng.choice([0, 1, 0x20, 0x5C, 0x7F, 0xFF, rng.randrange(256)])
    if rng.random() < 0.2:  # bytes inserted or dropped: every later element shifts
        at = rng.randrange(132, span)
        if rng.random() < 0.5:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            del buf[at : at + rng.randint(1, 8)]
    if rng.random() < 0.2:
        buf = buf[: rng.randrange(len(buf))]
    return bytes(buf)


@pytest.mark.timeout(300)
def test_mutants_read_by_the_walk_give_exactly_what_pydicom_gives(seeds, tmp_path):
    """A byte-flipped or cut header either leaves the walk (pydicom reads it) or reads the
    same; the walk must never accept a file pydicom refuses, nor read other values."""
    rng = random.Random(15)
    walked = 0
    for name, src in seeds.items():
        data = src.read_bytes()
        for k in range(int(os.environ.get("CXR_QUICK_MUTANTS", "150"))):  # more: a longer campaign
            path = tmp_path / f"{name}-{k}.dcm"
            path.write_bytes(mutate(data, rng))
            try:
                reference = _read_dicom_header(path, quick=False)
            except Exception as exc:  # an importer bug pydicom's path hits: the walk must too
                reference = ("raised", type(exc).__name__)
            try:
                quick = _read_dicom_header(path)
            except Exception as exc:
                quick = ("raised", type(exc).__name__)
            assert quick == reference, (name, k)
            walked += accepted(path)
            path.unlink()
    assert walked > 300  # most mutants of ordinary files still take the fast path


def test_a_folder_imports_the_same_with_and_without_the_walk(seeds, tmp_path, monkeypatch):
    import functools

    from sqlalchemy import select

    import app.library.importer as importer_mod
    from app.library import open_library
    from app.library.models import Instance, Patient, Series, Study

    src = tmp_path / "in"
    src.mkdir()
    for name, path in seeds.items():
        (src / f"{name}.dcm").write_bytes(path.read_bytes())
    (src / "native12.txt").write_text("No acute findings.\n")
    rows = []
    for quick in (True, False):
        if not quick:  # the reference: every header read by pydicom
            monkeypatch.setattr(
                importer_mod, "_read_dicom_header", functools.partial(importer_mod._read_dicom_header, quick=False)
            )
        lib = open_library(tmp_path / f"lib-{quick}" / "library.db")
        summary = Importer(lib, mode="link", fsync=False, workers=1).run([src])
        assert summary.imported == len(seeds) and summary.reports == 1
        with lib.session() as s:
            columns = [c.key for c in Instance.__table__.columns if c.key not in ("id", "imported_at")]
            rows.append(
                {
                    "instances": sorted(tuple(getattr(i, c) for c in columns) for i in s.scalars(select(Instance))),
                    "patients": sorted((p.patient_key, p.name, p.birth_date) for p in s.scalars(select(Patient))),
                    "studies": sorted((x.study_uid, x.study_date, x.description) for x in s.scalars(select(Study))),
                    "series": sorted((x.series_uid, x.series_number) for x in s.scalars(select(Series))),
                }
            )
        lib.close()
    assert rows[0] == rows[1]


def test_every_element_the_library_reads_is_one_the_walk_converts(seeds):
    """A field read from an element the walk does not convert would silently be empty."""
    from app.library.header_job import _dicom_fields
    from core_model.imaging.dicom import _QUICK_ALWAYS

    class Recording(dict):
        asked: set[str] = set()

        def get(self, key, default=None):
            self.asked.add(key)
            return super().get(key, default)

    scan = quick_scan(seeds["rich"], FIELD_KEYWORDS)
    assert scan is not None
    values = Recording(scan.dataset)
    _dicom_fields(values, "1.2.3", scan)
    assert Recording.asked and Recording.asked <= set(FIELD_KEYWORDS) | set(_QUICK_ALWAYS)
