"""Import: every source kind, every rejection reason, de-duplication, copy vs link, progress,
cancel, crash safety, and no patient data in logs."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from sqlalchemy import func, select

from app.library.importer import Importer, import_paths
from app.library.models import ImportRun, Instance, Patient, RejectedFile, Report, Series, Study
from core_model.imaging.dicom_write import build_dataset, save_atomic
from tests.imaging.builders import REAL_PNG, gradient, write
from tests.library.conftest import (
    MIXED_IMPORTED,
    MIXED_REJECTED,
    SECRET_BIRTH,
    SECRET_ID,
    SECRET_NAME,
    make_good,
    make_mixed,
)

ROOT = Path(__file__).resolve().parents[2]


def count(lib, model) -> int:
    with lib.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()


def instances(lib) -> list[Instance]:
    with lib.session() as s:
        return list(s.execute(select(Instance)).scalars())


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_mixed_folder_imports_good_files_and_names_each_bad_one(lib, tmp_path):
    files = make_mixed(tmp_path / "export")
    summary = import_paths(lib, [tmp_path / "export"], mode="copy")
    assert summary.imported == len(MIXED_IMPORTED)
    got = {Path(r.path).name: r.reason for r in summary.rejected}
    assert got == {files[k].name: reason for k, reason in MIXED_REJECTED.items()}
    assert summary.ignored == 2  # .DS_Store and the report .txt
    assert summary.reports == 1 and not summary.cancelled
    # the rejections are stored with the run, with a message naming the file
    with lib.session() as s:
        rows = s.execute(select(RejectedFile)).scalars().all()
        assert {(Path(r.path).name, r.reason) for r in rows} == set(got.items())
        assert all(Path(r.path).name in r.message for r in rows)
        run = s.get(ImportRun, summary.run_id)
        assert (run.status, run.imported, run.rejected) == ("completed", len(MIXED_IMPORTED), len(MIXED_REJECTED))


def test_metadata_recorded_per_instance(lib, tmp_path):
    files = make_mixed(tmp_path / "export")
    import_paths(lib, [tmp_path / "export"], mode="link")
    by_name = {Path(i.file_path).name: i for i in instances(lib)}
    pa, cr, lat = by_name["pa.dcm"], by_name["cr.dcm"], by_name["lat.dcm"]
    assert (pa.view_position, pa.modality, pa.photometric, pa.rows, pa.columns) == ("PA", "DX", "MONOCHROME2", 32, 32)
    assert (pa.pixel_spacing_kind, pa.pixel_spacing_row) == ("ImagerPixelSpacing", 0.2)
    assert (cr.pixel_spacing_kind, cr.pixel_spacing_row, cr.pixel_spacing_col) == ("PixelSpacing", 0.143, 0.144)
    assert (cr.photometric, cr.modality, cr.view_position) == ("MONOCHROME1", "CR", "AP")
    assert lat.transfer_syntax_uid == uid.JPEG2000Lossless and lat.bits_stored == 12 and lat.bits_allocated == 16
    assert by_name["sv1.dcm"].transfer_syntax_uid == uid.JPEGLosslessSV1
    assert by_name["baseline.dcm"].bits_stored == 8
    assert all(i.storage == "linked" and Path(i.file_path).is_absolute() for i in instances(lib))
    assert Path(pa.file_path) == files["pa"].resolve()
    with lib.session() as s:
        # pa and lat share the study; their patient is stored once with the searchable name
        study = s.execute(select(Study).where(Study.study_uid == "1.2.826.0.1.3680043.8.498.1000")).scalar_one()
        assert study.study_date == "20240105"
        assert s.execute(select(func.count()).select_from(Series).where(Series.study_pk == study.id)).scalar_one() == 2
        patient = s.execute(select(Patient).where(Patient.patient_id == SECRET_ID)).scalar_one()
        assert patient.name == SECRET_NAME and patient.name_search == "zzsecretname john"
        assert patient.birth_date == SECRET_BIRTH


def test_reimport_adds_nothing(lib, tmp_path):
    make_mixed(tmp_path / "export")
    first = import_paths(lib, [tmp_path / "export"])
    n = count(lib, Instance)
    again = import_paths(lib, [tmp_path / "export"], mode="link")
    assert again.imported == 0 and again.duplicates == first.imported
    assert count(lib, Instance) == n
    assert count(lib, Report) == 1  # the sidecar report is not attached twice


def test_copy_mode_stores_complete_managed_copies(lib, tmp_path):
    files = make_mixed(tmp_path / "export")
    import_paths(lib, [tmp_path / "export"], mode="copy")
    for inst in instances(lib):
        assert inst.storage == "managed" and not Path(inst.file_path).is_absolute()
        path = lib.resolve(inst.file_path, inst.storage)
        assert path.is_file() and path.stat().st_size == inst.file_size
        assert sha(path) == sha(inst.original_path)
    # the copies survive the originals
    shutil.rmtree(tmp_path / "export")
    real = next(i for i in instances(lib) if i.sop_instance_uid.startswith("1.2.276.0.7230010"))
    assert pydicom.dcmread(lib.resolve(real.file_path, real.storage)).Rows == 1024
    assert not list(lib.staging_dir.rglob("*.part"))
    del files


def test_duplicate_within_one_run(lib, tmp_path):
    src = make_good(tmp_path / "a", 1)[0]
    (tmp_path / "a" / "copy_of_same.dcm").write_bytes(src.read_bytes())
    summary = import_paths(lib, [tmp_path / "a"])
    assert (summary.imported, summary.duplicates) == (1, 1)


def test_missing_decoder_is_a_rejection_naming_the_package(lib, tmp_path, without_gdcm_plugin):
    write(tmp_path / "in" / "sv1.dcm", gradient(16, 16), uid.JPEGLosslessSV1)
    write(tmp_path / "in" / "ok.dcm", gradient(16, 16))
    summary = import_paths(lib, [tmp_path / "in"])
    assert summary.imported == 1
    (rej,) = summary.rejected
    assert rej.reason == "missing_decoder" and "python-gdcm" in rej.message


def test_verify_decodes_and_catches_corrupt_compressed_data(lib, tmp_path):
    path = write(tmp_path / "in" / "j2k.dcm", gradient(64, 64), uid.JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    frame = bytearray(ds.PixelData)
    frame[40:200] = bytes(160)  # corrupt the codestream, keep the encapsulation intact
    ds.PixelData = bytes(frame)
    save_atomic(ds, path)
    quick = import_paths(lib, [path], mode="link")
    assert quick.imported == 1  # header-only checks cannot see inside the codestream
    from app.library.queries import remove_instances

    remove_instances(lib, [ds.SOPInstanceUID])
    verified = import_paths(lib, [path], mode="link", verify=True)
    assert verified.imported == 0 and verified.rejected[0].reason == "decode_failed"


def test_broken_symlink_and_missing_path_do_not_stop_the_run(lib, tmp_path):
    make_good(tmp_path / "in", 3)
    os.symlink(tmp_path / "nowhere.dcm", tmp_path / "in" / "dangling.dcm")
    summary = import_paths(lib, [tmp_path / "in", tmp_path / "does-not-exist"])
    assert summary.imported == 3
    assert sorted(r.reason for r in summary.rejected) == ["missing", "unreadable"]


def test_unexpected_error_on_one_file_is_recorded_and_the_rest_imported(lib, tmp_path, monkeypatch):
    make_good(tmp_path / "in", 4)
    import app.library.importer as importer_mod

    real = importer_mod.Importer._dicom_fields
    calls = {"n": 0}

    def flaky(self, ds, sop, scan):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated bug")
        return real(self, ds, sop, scan)

    monkeypatch.setattr(importer_mod.Importer, "_dicom_fields", flaky)
    summary = import_paths(lib, [tmp_path / "in"])
    assert summary.imported == 3 and [r.reason for r in summary.rejected] == ["internal_error"]


# --- DICOMDIR and zip -------------------------------------------------------------------------


def _fileset(folder: Path, n: int = 3) -> Path:
    from pydicom.fileset import FileSet

    fs = FileSet()
    for i in range(n):
        fs.add(build_dataset(gradient(16, 16), _spec(instance_number=i + 1)))
    fs.write(folder)
    return folder / "DICOMDIR"


def _spec(**kw):
    from core_model.imaging.dicom_write import DicomSpec

    return DicomSpec(
        patient_id="CD-1", study_uid="1.2.826.0.1.3680043.8.498.77", series_uid="1.2.826.0.1.3680043.8.498.77.1", **kw
    )


def test_dicomdir_imports_the_files_it_lists(lib, tmp_path):
    dicomdir = _fileset(tmp_path / "cd")
    files = sorted(p for p in (tmp_path / "cd").rglob("IM*"))
    files[0].unlink()  # listed but gone: a specific rejection
    summary = import_paths(lib, [dicomdir])
    assert summary.imported == 2
    assert [r.reason for r in summary.rejected] == ["missing"]


def test_folder_with_a_dicomdir_does_not_reject_the_dicomdir(lib, tmp_path):
    _fileset(tmp_path / "cd")
    summary = import_paths(lib, [tmp_path / "cd"])
    assert summary.imported == 3 and summary.rejected == [] and summary.ignored == 1


def _zip_with_attacks(path: Path, good: list[Path]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for g in good:
            zf.write(g, f"study/{g.name}")
        zf.writestr("../escape.dcm", good[0].read_bytes())
        zf.writestr("/abs/evil.dcm", good[0].read_bytes())
        zf.writestr("a/../../up.dcm", good[0].read_bytes())
        link = zipfile.ZipInfo("study/link.dcm")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("study/readme.txt", "not an image")


def test_zip_imports_members_and_rejects_traversal_absolute_and_symlinks(lib, tmp_path):
    good = make_good(tmp_path / "src", 3)
    archive = tmp_path / "upload" / "studies.zip"
    archive.parent.mkdir()
    _zip_with_attacks(archive, good)
    summary = import_paths(lib, [archive], mode="link")
    assert summary.imported == 3
    reasons = {r.path.split("!", 1)[1]: r for r in summary.rejected}
    assert set(reasons) == {"../escape.dcm", "/abs/evil.dcm", "a/../../up.dcm", "study/link.dcm"}
    assert all(r.reason == "unsafe_archive_member" for r in reasons.values())
    assert "symbolic link" in reasons["study/link.dcm"].message and "'..'" in reasons["../escape.dcm"].message
    assert "absolute" in reasons["/abs/evil.dcm"].message
    # nothing was written outside the library
    assert not (tmp_path / "escape.dcm").exists() and not (tmp_path / "upload" / "escape.dcm").exists()
    assert not Path("/abs/evil.dcm").exists()
    # zip members are always managed copies, even with --link
    assert {i.storage for i in instances(lib)} == {"managed"}
    assert all(lib.resolve(i.file_path, i.storage).is_file() for i in instances(lib))


def test_corrupt_zip_is_rejected_and_others_continue(lib, tmp_path):
    make_good(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.zip").write_bytes(b"PK\x03\x04" + os.urandom(300))
    summary = import_paths(lib, [tmp_path / "in"])
    assert summary.imported == 2 and [r.reason for r in summary.rejected] == ["bad_archive"]


def test_zip_member_bad_files_get_their_reason(lib, tmp_path):
    good = make_good(tmp_path / "src", 1)[0]
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(good, "ok.dcm")
        zf.writestr("cut.dcm", good.read_bytes()[:-100])
    summary = import_paths(lib, [archive])
    assert summary.imported == 1
    (rej,) = summary.rejected
    assert rej.reason == "truncated" and rej.path.endswith("a.zip!cut.dcm") and rej.message.startswith("cut.dcm")


# --- PNG / JPEG --------------------------------------------------------------------------------


def test_png_and_jpeg_get_stable_uids_and_sidecar_reports(lib, tmp_path):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    shutil.copy(REAL_PNG, folder / "00000001_000.png")
    (folder / "00000001_000.txt").write_text("Cardiac silhouette within normal limits.\n")
    Image.fromarray(gradient(40, 40, bits=8)).save(folder / "other.jpg", quality=90)
    summary = import_paths(lib, [folder])
    assert summary.imported == 2 and summary.reports == 1
    by_format = {i.source_format: i for i in instances(lib)}
    png, jpg = by_format["png"], by_format["jpeg"]
    assert png.sop_instance_uid.startswith("2.25.") and len(png.sop_instance_uid) <= 64
    assert (png.rows, png.columns) == (512, 512)
    with lib.session() as s:
        from app.library.queries import reports_for

        assert reports_for(s, png)[0].text == "Cardiac silhouette within normal limits."
        # NIH ChestX-ray14 naming gives the patient ID
        assert s.get(Patient, png.patient_pk).patient_id == "00000001"
    assert lib.resolve(jpg.file_path, jpg.storage).suffix == ".jpg"
    # the same bytes under another name are a duplicate
    shutil.copy(REAL_PNG, tmp_path / "renamed.png")
    again = import_paths(lib, [tmp_path / "renamed.png"])
    assert (again.imported, again.duplicates) == (0, 1)


def test_mimic_layout_groups_by_study_and_attaches_the_study_report(lib, tmp_path):
    from PIL import Image

    study_dir = tmp_path / "files" / "p10" / "p10000032" / "s50414267"
    study_dir.mkdir(parents=True)
    for k in range(2):
        Image.fromarray(gradient(40, 40, bits=8) + k).save(study_dir / f"view{k}.jpg")
    (study_dir.parent / "s50414267.txt").write_text("FINDINGS: No acute process.")
    summary = import_paths(lib, [tmp_path / "files"])
    assert summary.imported == 2
    with lib.session() as s:
        assert s.execute(select(func.count()).select_from(Study)).scalar_one() == 1
        assert s.execute(select(Patient.patient_id).where(Patient.patient_id != "")).scalar_one() == "10000032"
        reports = s.execute(select(Report)).scalars().all()
        assert len(reports) == 1 and reports[0].instance_pk is None  # one study-level report


def test_truncated_png_is_rejected(lib, tmp_path):
    data = REAL_PNG.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    summary = import_paths(lib, [tmp_path / "cut.png"])
    assert summary.imported == 0 and summary.rejected[0].reason in ("truncated", "decode_failed")


# --- progress, cancel ------------------------------------------------------------------------


def test_progress_is_throttled_to_ten_per_second(lib, tmp_path):
    make_good(tmp_path / "in", 250)
    times: list[float] = []
    seen = []

    def progress(p):
        times.append(time.monotonic())
        seen.append(p)

    start = time.monotonic()
    summary = Importer(lib, mode="copy", progress=progress).run([tmp_path / "in"])
    elapsed = time.monotonic() - start
    assert summary.imported == 250
    # at most 10 per second, plus the first and the final call
    assert len(times) <= 10 * elapsed + 2
    gaps = np.diff(times[:-1])  # all but the final call are spaced by the interval
    assert (gaps >= 0.099).all()
    assert seen[-1].done == seen[-1].total == 250 and seen[-1].imported == 250


def test_progress_with_no_throttle_sees_every_file(lib, tmp_path):
    # the same callback without throttling is called per file: proves the throttle above matters
    make_good(tmp_path / "in", 30)
    calls = []
    Importer(lib, progress=calls.append, progress_interval=0).run([tmp_path / "in"])
    assert len(calls) >= 30


@pytest.mark.parametrize("kind", ["event", "callable"])
def test_cancel_stops_commits_what_was_done_and_a_rerun_completes(lib, tmp_path, kind):
    make_good(tmp_path / "in", 60)
    checks = {"n": 0}
    event = threading.Event()

    def should_stop():
        checks["n"] += 1
        if checks["n"] > 20:
            event.set()
        return event.is_set()

    if kind == "event":
        cancel = event

        def progress(_p):
            should_stop()

        imp = Importer(lib, cancel=cancel, progress=progress, progress_interval=0)
    else:
        imp = Importer(lib, cancel=should_stop)
    summary = imp.run([tmp_path / "in"])
    assert summary.cancelled and 0 < summary.imported < 60
    assert count(lib, Instance) == summary.imported
    with lib.session() as s:
        assert s.get(ImportRun, summary.run_id).status == "cancelled"
    rest = import_paths(lib, [tmp_path / "in"])
    assert rest.imported == 60 - summary.imported and rest.duplicates == summary.imported
    assert count(lib, Instance) == 60


# --- crash safety ----------------------------------------------------------------------------

_CHILD = """
import sys
import time
from app.library import open_library
from app.library.importer import Importer
lib = open_library(sys.argv[1])
def progress(p):
    print(p.imported, flush=True)
    if p.imported >= 50:
        time.sleep(0.01)  # leave the parent time to kill us mid-run, however loaded the machine
Importer(lib, mode="copy", batch_size=15, progress=progress, progress_interval=0).run([sys.argv[2]])
print("finished", flush=True)
"""


def test_kill_9_mid_import_leaves_a_consistent_library_and_rerun_completes(tmp_path):
    from app.library import open_library

    n = 400
    src = tmp_path / "in"
    make_good(src, n)
    db = tmp_path / "crash.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db), str(src)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at = None
    deadline = time.monotonic() + 120
    for line in child.stdout:
        if line.strip() == "finished":
            break
        if int(line.split()[0]) >= 60:  # two committed batches and more in flight
            os.kill(child.pid, signal.SIGKILL)
            killed_at = int(line.split()[0])
            break
        assert time.monotonic() < deadline
    child.wait(timeout=60)
    assert killed_at is not None, "the import finished before it could be killed"
    assert child.returncode == -signal.SIGKILL

    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    raw.close()
    lib = open_library(db)
    try:
        committed = instances(lib)
        assert 0 < len(committed) < n
        # no half-registered instance: every row's managed copy is complete and identical
        for inst in committed:
            path = lib.resolve(inst.file_path, inst.storage)
            assert path.is_file() and sha(path) == sha(inst.original_path)
        assert not list(lib.managed_dir.rglob("*.part"))
        rerun = import_paths(lib, [src])
        assert rerun.imported + rerun.duplicates == n and rerun.rejected == []
        assert rerun.duplicates == len(committed)
        with lib.session() as s:
            assert s.execute(select(func.count(func.distinct(Instance.sop_instance_uid)))).scalar_one() == n
            assert count(lib, Instance) == n
            statuses = [r.status for r in s.execute(select(ImportRun).order_by(ImportRun.id)).scalars()]
        assert statuses == ["interrupted", "completed"]
        # the killed run's staging folder was cleaned up by the next import
        assert [p for p in lib.staging_dir.iterdir()] == []
    finally:
        lib.close()


# --- privacy ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*(PN component|Invalid value):UserWarning")  # the test writes bad values
def test_patient_names_and_ids_never_reach_the_logs(lib, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    make_mixed(tmp_path / "export")
    # a name longer than PN allows makes pydicom log a validation warning quoting the value
    long_name = SECRET_NAME + "^" + "X" * 70
    write(
        tmp_path / "export" / "long.dcm",
        gradient(8, 8),
        patient_name=long_name,
        patient_id=SECRET_ID,
        patient_birth_date="1944-02-29",
    )
    summary = import_paths(lib, [tmp_path / "export"])
    assert summary.imported >= len(MIXED_IMPORTED)
    from app.library.anonymize import export_anonymized
    from app.library.queries import add_review, search_instances

    with lib.session() as s:
        res = search_instances(s, text="zzsecret")
        for inst in instances(lib):
            if inst.source_format == "dicom":
                _ = pydicom.dcmread(lib.resolve(inst.file_path, inst.storage)).PatientName  # value conversion
    assert res.total >= 1
    add_review(lib, res.rows[0].sop_instance_uid, "flagged", "check")
    export_anonymized(lib, None, tmp_path / "anon")
    text = caplog.text
    assert caplog.records, "expected some log output to check"
    for secret in (SECRET_NAME, SECRET_NAME.split("^")[0], SECRET_ID, SECRET_BIRTH, "1944-02-29"):
        assert secret.lower() not in text.lower(), secret
    # and the stored rejection messages do not carry them either
    with lib.session() as s:
        for r in s.execute(select(RejectedFile)).scalars():
            assert SECRET_ID not in r.message and "ZZSECRETNAME" not in r.message


def test_zip_of_images_with_reports(lib, tmp_path):
    from io import BytesIO

    from PIL import Image

    def jpg(k: int) -> bytes:
        buf = BytesIO()
        Image.fromarray(gradient(40, 40, bits=8) + k).save(buf, format="JPEG")
        return buf.getvalue()

    archive = tmp_path / "mimic-sample.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("files/p10/p10000032/s50414267/a.jpg", jpg(0))
        zf.writestr("files/p10/p10000032/s50414267/b.jpg", jpg(1))
        zf.writestr("files/p10/p10000032/s50414267.txt", "FINDINGS: clear lungs.")
        zf.writestr("extra/x.png", REAL_PNG.read_bytes())
        zf.writestr("extra/x.txt", "Report for x.")
    summary = import_paths(lib, [archive])
    assert summary.imported == 3 and summary.reports == 2 and summary.rejected == []
    with lib.session() as s:
        texts = sorted((r.text, r.instance_pk is None) for r in s.execute(select(Report)).scalars())
    assert texts == [("FINDINGS: clear lungs.", True), ("Report for x.", False)]
