"""`export-anonymized`: identifiers gone, UIDs remapped and dates shifted consistently, burned-in
annotation respected, pixels untouched, files written atomically."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.library.importer import import_paths
from app.main import main
from tests.imaging.builders import REAL_PNG, gradient, write
from tests.library.conftest import SECRET_BIRTH, SECRET_ID, SECRET_NAME

STUDY_A, STUDY_B = "1.2.826.0.1.3680043.8.498.9001", "1.2.826.0.1.3680043.8.498.9002"


def _write_patient(folder: Path) -> list[Path]:
    common = dict(
        patient_name=SECRET_NAME,
        patient_id=SECRET_ID,
        patient_birth_date=SECRET_BIRTH,
        patient_sex="M",
        accession_number="ACC-SECRET-1",
    )
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.9001.99"
    extra = dict(
        InstitutionName="St. Example Hospital",
        ReferringPhysicianName="DR^WHO",
        OtherPatientIDs="OLD-" + SECRET_ID,
        ImageComments=f"{SECRET_NAME} PA erect",
        PatientAge="093Y",
        AcquisitionDateTime="20240105101500",
        ReferencedImageSequence=Sequence([ref]),
    )
    a1 = write(
        folder / "a1.dcm",
        gradient(16, 16),
        study_uid=STUDY_A,
        series_uid=STUDY_A + ".1",
        study_date="20240105",
        instance_number=1,
        extra=dict(extra),
        **common,
    )
    a2 = write(
        folder / "a2.dcm",
        gradient(16, 16),
        study_uid=STUDY_A,
        series_uid=STUDY_A + ".1",
        study_date="20240105",
        instance_number=2,
        **common,
    )
    b1 = write(
        folder / "b1.dcm",
        gradient(16, 16),
        study_uid=STUDY_B,
        series_uid=STUDY_B + ".1",
        study_date="20240215",
        **common,
    )
    ds = pydicom.dcmread(a1)
    ds.add_new(0x00091010, "LO", "private vendor note " + SECRET_ID)
    ds.add_new(0x00090010, "LO", "VENDOR")
    ds.save_as(a1)
    return [a1, a2, b1]


@pytest.fixture
def exported(lib, tmp_path):
    sources = _write_patient(tmp_path / "in")
    write(
        tmp_path / "in" / "burned.dcm",
        gradient(16, 16),
        patient_name="OTHER^PERSON",
        patient_id="OTHER-1",
        extra={"BurnedInAnnotation": "YES"},
    )
    import_paths(lib, [tmp_path / "in", REAL_PNG])
    out = tmp_path / "share"
    from app.library.anonymize import export_anonymized

    summary = export_anonymized(lib, None, out)
    return lib, sources, out, summary


def test_identifiers_are_gone_from_every_byte(exported):
    _lib, _src, out, summary = exported
    assert summary.exported == 4 and summary.skipped_burned_in == 1  # 3 DICOM + the PNG
    blobs = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in (
        SECRET_NAME,
        "ZZSECRETNAME",
        SECRET_ID,
        SECRET_BIRTH,
        "ACC-SECRET-1",
        "St. Example",
        "DR^WHO",
        "VENDOR",
    ):
        assert secret.encode() not in blobs, secret
    assert not list(out.rglob("*.part"))


def test_profile_attributes_and_pseudonyms(exported):
    _lib, _src, out, _ = exported
    datasets = [pydicom.dcmread(p) for p in out.rglob("*.dcm")]
    assert len(datasets) == 3
    for ds in datasets:
        assert ds.PatientIdentityRemoved == "YES"
        assert "PS3.15" in " ".join(ds.DeidentificationMethod)
        assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} == {"113100", "113107", "113108"}
        assert ds.PatientBirthDate == "" and "OtherPatientIDs" not in ds and "InstitutionName" not in ds
        assert ds.PatientName == ds.PatientID and str(ds.PatientID).startswith("ANON-")
        assert ds.AccessionNumber == "" and ds.PatientSex == "M"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert not any(e.tag.is_private for e in ds)
    assert len({str(ds.PatientID) for ds in datasets}) == 1  # one patient -> one pseudonym
    with_extra = next(ds for ds in datasets if "PatientAge" in ds)
    assert with_extra.PatientAge == "090Y"  # ages over 89 aggregated
    assert "ImageComments" not in with_extra and "ReferringPhysicianName" not in with_extra


def test_uids_remapped_consistently_and_dates_shifted_per_patient(exported, tmp_path):
    lib, sources, out, _ = exported
    originals = {str(pydicom.dcmread(s).SOPInstanceUID): pydicom.dcmread(s) for s in sources}
    new = [pydicom.dcmread(p) for p in out.rglob("*.dcm")]
    assert not set(originals) & {str(d.SOPInstanceUID) for d in new}
    a = [d for d in new if d.StudyDate == new[0].StudyDate]
    studies = {str(d.StudyInstanceUID) for d in new}
    assert len(studies) == 2 and STUDY_A not in studies and STUDY_B not in studies
    # the two instances of study A still share their (new) study and series UIDs
    pair = [
        d for d in new if d.get("InstanceNumber") in (1, 2) and str(d.StudyInstanceUID) == str(a[0].StudyInstanceUID)
    ]
    assert len({str(d.SeriesInstanceUID) for d in pair}) == 1
    # dates moved back by the same number of days, so the 41-day interval between studies stays
    dates = sorted({d.StudyDate for d in new})
    d0, d1 = (dt.datetime.strptime(x, "%Y%m%d").date() for x in dates)
    assert (d1 - d0).days == (dt.date(2024, 2, 15) - dt.date(2024, 1, 5)).days
    shift = (dt.date(2024, 1, 5) - d0).days
    assert 365 <= shift <= 3652
    with_dt = next(d for d in new if "AcquisitionDateTime" in d)
    assert with_dt.AcquisitionDateTime == (dt.date(2024, 1, 5) - dt.timedelta(days=shift)).strftime("%Y%m%d") + "101500"
    # references inside sequences are remapped with the same mapping; SOP classes are kept
    ref = with_dt.ReferencedImageSequence[0]
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    from app.library.anonymize import Anonymizer, library_secret

    assert ref.ReferencedSOPInstanceUID == Anonymizer(library_secret(lib)).uid("1.2.826.0.1.3680043.8.498.9001.99")
    assert with_dt.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    # a second export of the same library gives the same pseudonyms, UIDs and dates
    from app.library.anonymize import export_anonymized

    export_anonymized(lib, [STUDY_B], tmp_path / "again")
    (again,) = [pydicom.dcmread(p) for p in (tmp_path / "again").rglob("*.dcm")]
    match = next(d for d in new if d.StudyInstanceUID == again.StudyInstanceUID)
    assert (again.SOPInstanceUID, again.StudyDate, again.PatientID) == (
        match.SOPInstanceUID,
        match.StudyDate,
        match.PatientID,
    )


def test_pixels_are_untouched(exported):
    _lib, sources, out, _ = exported
    want = pydicom.dcmread(sources[1]).pixel_array
    for p in out.rglob("*.dcm"):
        assert np.array_equal(pydicom.dcmread(p).pixel_array, want)
    (png,) = list(out.rglob("*.png"))
    from PIL import Image

    img = Image.open(png)
    assert not img.info.get("text") and np.array_equal(np.asarray(img), np.asarray(Image.open(REAL_PNG).convert("L")))


def test_burned_in_annotation_exported_only_on_request(lib, tmp_path, capsys):
    write(tmp_path / "in" / "burned.dcm", gradient(16, 16), extra={"BurnedInAnnotation": "YES"})
    write(tmp_path / "in" / "clean.dcm", gradient(16, 16), extra={"BurnedInAnnotation": "NO"})
    import_paths(lib, [tmp_path / "in"])
    code = main(["export-anonymized", "--all", "--db", str(lib.db_path), "--out", str(tmp_path / "o1"), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["exported"] == 1 and result["skipped_burned_in"] == 1
    manifest = json.loads((tmp_path / "o1" / "export-manifest.json").read_text())
    assert manifest["files"][0]["burned_in_annotation"] == "NO"
    code = main(
        ["export-anonymized", "--all", "--include-burned-in", "--db", str(lib.db_path), "--out", str(tmp_path / "o2")]
    )
    out = capsys.readouterr().out
    assert code == 0 and "Exported 2 instance(s)" in out and "Research use only" in out


def test_cli_needs_uids_or_all_and_reports_unknown_uids(lib, tmp_path, capsys):
    write(tmp_path / "in" / "x.dcm", gradient(8, 8), study_uid=STUDY_A)
    import_paths(lib, [tmp_path / "in"])
    assert main(["export-anonymized", "--db", str(lib.db_path), "--out", str(tmp_path / "o")]) == 2
    assert "UIDs to export or --all" in capsys.readouterr().err
    assert main(["export-anonymized", "9.9.9", "--db", str(lib.db_path), "--out", str(tmp_path / "o")]) == 2
    assert "none of the given UIDs" in capsys.readouterr().err
    assert main(["export-anonymized", STUDY_A, "9.9.9", "--db", str(lib.db_path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "Exported 1 instance(s)" in out and "9.9.9" in out
