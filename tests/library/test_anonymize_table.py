"""`export-anonymized` against PS3.15 Table E.1-1, all of it: a distinct marker in every attribute
of the table (and of the export's extra rows), at the top level and inside nested sequence
items, through the real importer, library and CLI; then no marker may survive in any byte of
the export. Also: UIDs consistent across a study with references resolving, files without a
File Meta header, burned-in images refused and listed, a manifest free of source names, and a
crafted file of thousands of nested sequences refused promptly while the rest exports."""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

from app.library.anonymize import Anonymizer, RefusedInstance, export_anonymized, library_secret
from app.library.deid_profile import EXTRA, RULES, STRICTEST, TABLE, TABLE_E1_1
from app.library.importer import import_paths
from app.library.models import Instance
from app.main import main
from tests.imaging.builders import gradient, write, write_without_preamble

MARK = "QZMK"  # appears in no DICOM dictionary, UID or pixel pattern
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
RETAINED = {0x00100040, 0x00101010, 0x00101020, 0x00101030}  # Retain Patient Characteristics: kept
TOP_DATES, NESTED_DATES = dt.date(1950, 3, 1), dt.date(1990, 3, 1)  # marker dates, one per row and level
NESTED = 1000  # marker number offset inside the nested item


def _rows() -> list[tuple[int, str]]:
    """(tag, VR) of every row with a concrete tag, the table's and the extra ones; the file meta
    (group 0002, rebuilt on export) and command elements (group 0000, planted as raw bytes) aside."""
    rows = []
    for tag, rule in sorted(RULES.items()):
        if "xx" in rule.tag or tag >> 16 in (0x0000, 0x0002):
            continue
        rows.append((tag, dictionary_VR(tag).split(" or ")[0]))
    return rows


def _marker(vr: str, n: int, nested: bool):
    """A value of ``vr`` that is marker number ``n`` (distinct for every row and level)."""
    s = f"{MARK}{n:04d}"
    day = (NESTED_DATES if nested else TOP_DATES) + dt.timedelta(days=n % NESTED)
    return {
        "AE": s,
        "CS": s,
        "SH": s,
        "LO": s + " TEXT",
        "LT": s + " TEXT",
        "ST": s + " TEXT",
        "UT": s + " TEXT",
        "UC": s + " TEXT",
        "PN": s + "^PERSON",
        "UR": f"http://{s}.example/x",
        "UI": f"1.2.826.0.1.3680043.8.498.77.{n}.9",
        "DA": day.strftime("%Y%m%d"),
        "DT": day.strftime("%Y%m%d") + "101010",
        "TM": f"10{n % 60:02d}{(n // 60) % 60:02d}",
        "DS": f"{n}.125",
        "IS": str(900000 + n),
        "AS": "095Y",
        "US": 4242,
        "SS": 4242,
        "UL": 4242,
        "SL": 4242,
        "FL": 42.5,
        "FD": 42.5,
    }.get(vr, s.encode() * 2)  # OB, OW, UN and the other binary VRs


def _item(n: int) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = f"{MARK}{n:04d}", "99QZ", f"{MARK}{n:04d} code"
    return item


def _plant(ds: Dataset, *, nested: bool, skip: tuple[int, ...] = ()) -> dict[int, object]:
    """Put a marker in every row's attribute of ``ds``; returns tag -> planted value."""
    planted = {}
    for n, (tag, vr) in enumerate(_rows(), start=NESTED if nested else 0):
        if tag in skip:
            continue
        if tag in RETAINED:  # plausible values: these are kept
            ds.add_new(tag, vr, {0x00100040: "M", 0x00101010: "095Y", 0x00101020: "1.75", 0x00101030: "80"}[tag])
        elif vr == "SQ":
            ds.add_new(tag, "SQ", Sequence([_item(n)]))
        else:
            ds.add_new(tag, vr, _marker(vr, n, nested))
        planted[tag] = ds[tag].value
    return planted


def _marked_file(path: Path) -> tuple[dict, dict]:
    """A CR image whose every profile attribute holds a marker, top level and nested."""
    write(path, gradient(16, 16), modality="CR", extra={"BurnedInAnnotation": "NO"})
    ds = pydicom.dcmread(path)
    top = _plant(ds, nested=False, skip=(0x00082112, 0x00081140, 0x00081110))
    # the reference sequences keep their items (X/Z/U*): the nested markers go there
    source = Dataset()
    nested = _plant(source, nested=True, skip=(0x00082112, 0x00081140, 0x00081155))
    source.ReferencedSOPClassUID = CR_STORAGE
    source.ReferencedSOPInstanceUID = _marker("UI", 990, False)
    inner = Dataset()  # a second level: names and IDs two sequences down
    inner.ReferencedSOPClassUID = CR_STORAGE
    inner.ReferencedSOPInstanceUID = _marker("UI", 991, False)
    inner.PatientName, inner.PatientID = f"{MARK}0992^DEEPER", f"{MARK}0993"
    source.ReferencedImageSequence = Sequence([inner])
    ds.SourceImageSequence = Sequence([source])
    ref = Dataset()
    ref.ReferencedSOPClassUID = CR_STORAGE
    ref.ReferencedSOPInstanceUID = _marker("UI", 994, False)
    ds.ReferencedImageSequence = Sequence([ref])
    study = Dataset()
    _plant(study, nested=True, skip=(0x00081110, 0x00082112))
    ds.ReferencedStudySequence = Sequence([study])
    # private block, overlay, curve: all removed
    ds.add_new(0x00290010, "LO", f"{MARK}PRIVATE CREATOR")
    ds.add_new(0x00291001, "LO", f"{MARK}PRIVATE VALUE")
    ds.add_new(0x00291002, "SQ", Sequence([_item(996)]))
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60003000, "OW", (MARK + "OVLY").encode() * 4)
    ds.add_new(0x60004000, "LT", f"{MARK}OVERLAY COMMENT")
    ds.add_new(0x50003000, "OB", (MARK + "CURV").encode() * 2)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.SourceApplicationEntityTitle = f"{MARK}SRCAE"
    ds.save_as(path)
    # command elements cannot be written by pydicom: insert one as raw bytes (sorted first)
    raw = path.read_bytes()
    start = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    value = _marker("UI", 997, False).encode() + b"\0"
    command = struct.pack("<HH2sH", 0x0000, 0x1000, b"UI", len(value)) + value
    path.write_bytes(raw[:start] + command + raw[start:])
    return top, nested


def _strings(value) -> list[str]:
    if isinstance(value, bytes):
        return [value.decode("latin-1")]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)]


def _check_level(ds: Dataset, planted: dict, anon: Anonymizer, shift: int, *, top: bool) -> None:
    """What became of each planted attribute in one dataset of the export."""
    for tag, value in planted.items():
        rule = RULES[tag]
        vr = dictionary_VR(tag).split(" or ")[0]
        out = ds.get(tag)
        got = out.value if out is not None else None
        name = rule.name
        if tag in RETAINED:
            assert got is not None, name
            if tag == 0x00101010:
                assert got == "090Y"  # ages over 89 aggregated
            continue
        if top and tag in (0x00100010, 0x00100020):
            assert str(got).startswith("ANON-"), name
            continue
        if rule.modified_dates == "C" and vr in ("DA", "DT"):
            day = dt.datetime.strptime(str(value)[:8], "%Y%m%d").date() - dt.timedelta(days=shift)
            assert str(got) == day.strftime("%Y%m%d") + str(value)[8:], name  # shifted by the patient's days
            continue
        if rule.modified_dates == "C" and vr == "TM":
            assert str(got) == str(value), name  # times of day are kept (their dates move by whole days)
            continue
        if vr == "UI" and got:
            assert str(got) == anon.uid(str(value)), name  # remapped with the export's one mapping
            continue
        if vr == "SQ":
            assert not got, name  # removed or emptied; no sequence of these keeps its items
            continue
        assert got in (None, "", b"") or (STRICTEST[rule.basic] == "D" and got in ("ANONYMIZED", "0")), (name, got)


def _norm(name: str) -> str:
    return name.lower().replace(" ", "").replace("\u2019", "'")


def test_table_data_matches_the_dictionary():
    """The transcribed rows name real attributes, once each, with valid action codes."""
    assert len(TABLE) > 400 and set(RULES) > set(TABLE)
    for text in (TABLE_E1_1, EXTRA):
        for line in text.splitlines():
            tag, basic, dates, chars, name = line.split("\t")
            assert basic in STRICTEST and dates in ("", "C") and chars in ("", "K", "C"), line
            if "xx" not in tag:
                assert _norm(DicomDictionary[int(tag, 16)][2]) == _norm(name), line
    # the values the issue found left behind are all covered
    for keyword in (
        "ConfidentialityConstraintOnPatientDataDescription",
        "DeviceDescription",
        "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequest",
        "OrderCallbackPhoneNumber",
        "OrderEntererLocation",
        "PatientBirthDateInAlternativeCalendar",
        "PatientDeathDateInAlternativeCalendar",
        "PerformedLocation",
        "PerformedStationName",
        "ReasonForTheRequestedProcedure",
        "RequestingService",
        "ScheduledProcedureStepLocation",
        "VerifyingOrganization",
    ):
        assert pydicom.datadict.tag_for_keyword(keyword) in RULES, keyword


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the odd values planted
def test_no_table_attribute_survives_anywhere(lib, tmp_path, capsys):
    src = tmp_path / "in" / f"{MARK}FILENAME_Doe_John_MRN4711.dcm"
    src.parent.mkdir(parents=True)
    top, nested = _marked_file(src)
    summary = import_paths(lib, [src.parent])
    assert summary.imported == 1
    out = tmp_path / "share"
    code = main(["export-anonymized", "--all", "--db", str(lib.db_path), "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["exported"] == 1 and not result["refused"] and not result["failed"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".dcm", ".json"}
    blob = b"".join(p.read_bytes() for p in files)
    # no string marker anywhere in the bytes: not in the file, its nested items, its meta, the manifest
    # (numeric and time markers are checked by value below)
    leftovers = sorted({blob[i : i + 12] for i in range(len(blob)) if blob.startswith(MARK.encode(), i)})
    assert leftovers == [], leftovers
    for tag, value in [*top.items(), *nested.items()]:
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr in ("UI", "DT"):  # (8-digit dates could occur by chance in a remapped UID: checked by value)
            for text in _strings(value):
                assert text.encode() not in blob, (RULES[tag].name, text)
    assert b"1.2.826.0.1.3680043.8.498.77." not in blob  # no original UID, command element included
    (dcm,) = [p for p in files if p.suffix == ".dcm"]
    ds = pydicom.dcmread(dcm)
    anon = Anonymizer(library_secret(lib))
    shift = (
        TOP_DATES
        + dt.timedelta(days=_rows().index((0x00080020, "DA")))
        - dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date()
    ).days
    assert 365 <= shift <= 3652
    _check_level(ds, top, anon, shift, top=True)
    (source,) = ds.SourceImageSequence  # kept (X/Z/U*), its item de-identified like the top level
    _check_level(source, nested, anon, shift, top=False)
    assert source.ReferencedSOPClassUID == CR_STORAGE
    assert source.ReferencedSOPInstanceUID == anon.uid(_marker("UI", 990, False))
    (inner,) = source.ReferencedImageSequence
    assert "PatientName" not in inner and not inner.get("PatientID")
    assert "ReferencedStudySequence" not in ds  # X/Z: removed with its items
    assert not any(e.tag.is_private for e in ds.iterall())
    assert not [e for e in ds if e.tag.group in (0x0000, 0x5000, 0x6000)]
    assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert {c.CodeValue for c in ds.DeidentificationMethodCodeSequence} == {"113100", "113107", "113108"}
    assert set(ds.file_meta.keys()) <= {
        0x00020000,
        0x00020001,
        0x00020002,
        0x00020003,
        0x00020010,
        0x00020012,
        0x00020013,
    }
    assert ds.preamble == b"\0" * 128


def _study_pair(folder: Path) -> tuple[Path, Path]:
    study, series, frame = (
        "1.2.826.0.1.3680043.8.498.55.1",
        "1.2.826.0.1.3680043.8.498.55.1.1",
        "1.2.826.0.1.3680043.8.498.55.9",
    )
    first = write(
        folder / "first.dcm",
        gradient(16, 16),
        study_uid=study,
        series_uid=series,
        instance_number=1,
        sop_uid="1.2.826.0.1.3680043.8.498.55.1.1.1",
        patient_name="PAIR^PATIENT",
        patient_id="PAIR-1",
        study_date="20230301",
        extra={"FrameOfReferenceUID": frame},
    )
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.55.1.1.1"
    source = Dataset()
    source.ReferencedSOPClassUID = ref.ReferencedSOPClassUID
    source.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID
    second = write(
        folder / "second.dcm",
        gradient(16, 16),
        study_uid=study,
        series_uid=series,
        instance_number=2,
        sop_uid="1.2.826.0.1.3680043.8.498.55.1.1.2",
        patient_name="PAIR^PATIENT",
        patient_id="PAIR-1",
        study_date="20230301",
        extra={
            "FrameOfReferenceUID": frame,
            "ReferencedImageSequence": Sequence([ref]),
            "SourceImageSequence": Sequence([source]),
        },
    )
    return first, second


def test_study_uids_consistent_and_references_resolve(lib, tmp_path):
    first, second = _study_pair(tmp_path / "in")
    import_paths(lib, [tmp_path / "in"])
    export_anonymized(lib, None, tmp_path / "out")
    by_number = {int(d.InstanceNumber): d for d in map(pydicom.dcmread, (tmp_path / "out").rglob("*.dcm"))}
    a, b = by_number[1], by_number[2]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert a.get(keyword) == b.get(keyword) and a.get(keyword).startswith("2.25."), keyword
        assert a.get(keyword) != pydicom.dcmread(first).get(keyword)
    assert a.SOPInstanceUID != b.SOPInstanceUID
    # the second image's references point at the first image's new UID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    for d in (a, b):
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.file_meta.MediaStorageSOPClassUID == d.SOPClassUID
    # and the files sit in one folder per (new) study
    assert len({p.parent for p in (tmp_path / "out").rglob("*.dcm")}) == 1


def test_file_without_file_meta_exports(lib, tmp_path):
    (tmp_path / "in").mkdir()
    raw = write_without_preamble(
        tmp_path / "in" / "old_cd_export", gradient(16, 16), patient_name="OLD^CD", patient_id="OLDCD-77"
    )
    assert raw.read_bytes()[128:132] != b"DICM"
    write(tmp_path / "in" / "normal.dcm", gradient(16, 16), patient_name="NEW^ONE", patient_id="NEW-1")
    assert import_paths(lib, [tmp_path / "in"]).imported == 2
    summary = export_anonymized(lib, None, tmp_path / "out")
    assert summary.exported == 2 and not summary.refused and not summary.failed
    for path in (tmp_path / "out").rglob("*.dcm"):
        assert path.read_bytes()[128:132] == b"DICM"  # a proper file now, with a new File Meta header
        ds = pydicom.dcmread(path)
        assert ds.PatientID.startswith("ANON-") and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.pixel_array.shape == (16, 16)
    assert b"OLDCD-77" not in b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())


def _instances(lib) -> list[Instance]:
    with lib.session() as s:
        return list(s.execute(select(Instance).order_by(Instance.id)).scalars())


def test_refused_and_failed_instances_are_listed_without_source_names(lib, tmp_path, capsys):
    folder = tmp_path / "Doe_John_MRN4711"
    burned = write(
        folder / "Doe_John_burned.dcm",
        gradient(16, 16),
        patient_name="DOE^JOHN",
        patient_id="MRN4711",
        extra={"BurnedInAnnotation": "YES"},
    )
    gone = write(folder / "Doe_John_moved.dcm", gradient(16, 16), patient_name="DOE^JOHN", patient_id="MRN4711")
    broken = write(folder / "Doe_John_broken.dcm", gradient(16, 16), patient_name="DOE^JOHN", patient_id="MRN4711")
    write(folder / "Doe_John_fine.dcm", gradient(16, 16), patient_name="DOE^JOHN", patient_id="MRN4711")
    uids = {p.name: str(pydicom.dcmread(p).SOPInstanceUID) for p in (burned, gone, broken)}
    assert import_paths(lib, [folder], mode="link").imported == 4  # link mode: the library keeps these names
    gone.unlink()
    broken.write_bytes(b"not a dicom file any more")
    out = tmp_path / "share"
    assert main(["export-anonymized", "--all", "--db", str(lib.db_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest_text = (out / "export-manifest.json").read_text()
    manifest = json.loads(manifest_text)
    anon = Anonymizer(library_secret(lib))
    summary = manifest["summary"]
    assert summary["exported"] == 1 and summary["skipped_burned_in"] == 1
    refused = {r["instance"]: r["reason"] for r in summary["refused"]}
    failed = {r["instance"]: r["reason"] for r in summary["failed"]}
    assert refused == {anon.uid(uids[burned.name]): "burned_in_annotation", anon.uid(uids[broken.name]): "not_dicom"}
    assert failed == {anon.uid(uids[gone.name]): "missing"}
    assert str(tmp_path) not in manifest_text  # not even the output folder (the CLI prints it, locally)
    for text in (manifest_text, printed):
        for secret in ("Doe", "John", "MRN4711", "DOE"):
            assert secret not in text, secret
        for uid in uids.values():
            assert uid not in text  # only remapped identifiers
    assert "Refused" in printed and "burned-in" in printed and "Failed" in printed
    # every identifier in the manifest is a remapped one
    (entry,) = manifest["files"]
    assert re.fullmatch(r"ANON-[0-9A-F]{12}/2\.25\.\d+/2\.25\.\d+\.dcm", entry["file"]), entry
    for record in [entry, *summary["refused"], *summary["failed"]]:
        assert re.fullmatch(r"ANON-[0-9A-F]{12}", record["patient"])
        assert re.fullmatch(r"2\.25\.\d+", record.get("instance") or record["sop_instance_uid"])


def _deep_file(path: Path, depth: int, *, undefined: bool) -> bytes:
    """A valid small image with ``depth`` sequences nested inside each other before its pixels."""
    write(path, gradient(16, 16), patient_name="DEEP^NEST", patient_id="DEEP-1")
    raw = path.read_bytes()
    body = b""
    for _ in range(depth):
        if undefined:
            body = (
                struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
                + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
                + body
                + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
                + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
            )
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
            body = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, len(item)) + item
    at = raw.find(struct.pack("<HH", 0x7FE0, 0x0010))
    return raw[:at] + body + raw[at:]


@pytest.mark.timeout(120)  # hang guard: the unbounded walk this replaces never finished
def test_deeply_nested_file_is_refused_and_the_rest_exports(lib, tmp_path):
    write(tmp_path / "in" / "a.dcm", gradient(16, 16), patient_name="DEEP^NEST", patient_id="DEEP-1")
    deep = _deep_file(tmp_path / "in" / "b.dcm", 3000, undefined=False)
    deeper = _deep_file(tmp_path / "in" / "c.dcm", 3000, undefined=True)
    write(tmp_path / "in" / "d.dcm", gradient(16, 16), patient_name="DEEP^NEST", patient_id="DEEP-1")
    assert 50_000 < len(deep) < 120_000
    assert import_paths(lib, [tmp_path / "in"]).imported == 4
    # the library already holds them (imported before the importer checked depth): swap the bytes in
    instances = _instances(lib)
    for inst, data in zip(instances[1:3], (deep, deeper)):
        lib.resolve(inst.file_path, inst.storage).write_bytes(data)
    summary = export_anonymized(lib, None, tmp_path / "out")
    anon = Anonymizer(library_secret(lib))
    assert summary.exported == 2 and not summary.failed
    assert {r["instance"]: r["reason"] for r in summary.refused} == {
        anon.uid(instances[1].sop_instance_uid): "too_deep",
        anon.uid(instances[2].sop_instance_uid): "too_deep",
    }
    assert "nested" in summary.refused[0]["message"]
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2
    # the anonymiser refuses such a dataset on its own too, whoever read it
    (tmp_path / "x.dcm").write_bytes(deep)
    with pytest.raises(RefusedInstance) as info:
        anon.anonymize(pydicom.dcmread(tmp_path / "x.dcm"), "p")
    assert info.value.reason == "too_deep"


def test_attributes_outside_the_table_are_handled_by_their_value_representation(tmp_path):
    """What the table does not name is still not copied when it can carry identity."""
    path = write(
        tmp_path / "x.dcm",
        gradient(8, 8),
        patient_name="ROE^RICHARD",
        patient_id="RR-20250",
        study_date="20240105",
        instance_number=20250,
        extra={"Manufacturer": "ACME", "ViewPosition": "PA"},
    )
    ds = pydicom.dcmread(path)
    ds.EvaluatorName = f"{MARK}^EVALUATOR"  # a person name the table does not list
    ds.add_new(0x0040A160, "UT", f"{MARK} free text")  # Text Value
    ds.add_new(0x00081190, "UR", f"http://{MARK}.example/studies/1")  # Retrieve URL
    ds.add_new(0x00089999, "LO", f"{MARK} unknown public attribute")
    ds.add_new(0x00081140, "LO", f"{MARK} a reference sequence encoded as text")
    ds.add_new(0x00181000, "UN", f"{MARK}SERIAL".encode())  # a table attribute with an undecoded value
    ds.DateOfLastDetectorCalibration = "20240101"
    ds.StationAETitle = f"{MARK}AE"
    ds.DetectorManufacturerName = "Made for ROE RICHARD"  # names the patient: the safety net empties it
    anon = Anonymizer(b"k" * 32)
    scrubbed = anon.anonymize(ds, "patient-key")
    ds.save_as(tmp_path / "out.dcm")
    blob = (tmp_path / "out.dcm").read_bytes()
    assert MARK.encode() not in blob and b"ROE" not in blob and b"RR-20250" not in blob
    assert scrubbed == 1 and ds.DetectorManufacturerName == ""
    shift = anon.day_shift("patient-key")
    assert ds.DateOfLastDetectorCalibration == (dt.date(2024, 1, 1) - dt.timedelta(days=shift)).strftime("%Y%m%d")
    # technical attributes stay, and numbers are not emptied for sharing digits with an ID
    assert ds.Manufacturer == "ACME" and ds.ViewPosition == "PA" and ds.InstanceNumber == 20250
