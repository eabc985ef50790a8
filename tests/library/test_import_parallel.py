"""Parallel header reads (issue 15): worker processes read and check the DICOM headers, this
process keeps de-duplication, copies and the database. The same folder imported with workers and
without gives the same library: the same rows, the same rejections with the same reasons and
messages, the same duplicates; cancelling stops the workers. Real SQLite, real pydicom files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from app.library import open_library
from app.library.importer import PARALLEL_MIN_FILES, Importer, _default_workers
from app.library.models import Instance, Patient, Report, Series, Study
from tests.library.conftest import MIXED_IMPORTED, MIXED_REJECTED, make_good, make_mixed

pytestmark = pytest.mark.timeout(300)


def snapshot(lib) -> dict:
    with lib.session() as s:
        inst = sorted(
            (i.sop_instance_uid, i.file_path, i.rows, i.columns, i.view_position, i.transfer_syntax_uid, i.study_date)
            for i in s.execute(select(Instance)).scalars()
        )
        return {
            "instances": inst,
            "patients": sorted((p.patient_key, p.name, p.birth_date) for p in s.execute(select(Patient)).scalars()),
            "studies": sorted(x.study_uid for x in s.execute(select(Study)).scalars()),
            "series": sorted(x.series_uid for x in s.execute(select(Series)).scalars()),
            "reports": sorted(r.text for r in s.execute(select(Report)).scalars()),
        }


def run(tmp_path: Path, name: str, sources: list[Path], workers: int):
    lib = open_library(tmp_path / name / "library.db")
    try:
        summary = Importer(lib, mode="link", fsync=False, workers=workers).run(sources)
        return summary, snapshot(lib)
    finally:
        lib.close()


def test_workers_give_the_same_library_as_one_process(tmp_path):
    src = tmp_path / "src"
    make_mixed(src / "mixed")
    good = make_good(src / "good", 30)
    good[0].with_suffix(".txt").write_text("Small left pleural effusion.")  # a sidecar report
    (src / "copy").mkdir()
    (src / "copy" / "again.dcm").write_bytes(good[1].read_bytes())  # a duplicate by UID
    one, lib_one = run(tmp_path, "one", [src], workers=1)
    par, lib_par = run(tmp_path, "par", [src], workers=2)
    assert one.imported == par.imported == len(MIXED_IMPORTED) + 30
    assert one.duplicates == par.duplicates == 1
    assert lib_par == lib_one and "Small left pleural effusion." in lib_par["reports"]
    got = {(Path(r.path).name, r.reason, r.message) for r in par.rejected}
    assert got == {(Path(r.path).name, r.reason, r.message) for r in one.rejected}
    assert set(MIXED_REJECTED.values()) <= {reason for _, reason, _ in got}


def test_a_cancelled_parallel_import_stops_and_keeps_whole_batches(tmp_path):
    make_good(tmp_path / "in", 120)
    lib = open_library(tmp_path / "db" / "library.db")
    cancel = threading.Event()

    def progress(p):
        if p.done >= 20:
            cancel.set()

    summary = Importer(
        lib, mode="link", fsync=False, workers=2, progress=progress, progress_interval=0.0, batch_size=10, cancel=cancel
    ).run([tmp_path / "in"])
    with lib.session() as s:
        stored = len(list(s.execute(select(Instance.id)).scalars()))
    lib.close()
    assert summary.cancelled and 20 <= summary.files_seen < 120
    assert stored == summary.imported and summary.imported <= summary.files_seen
    for t in threading.enumerate():  # no pool threads left behind
        assert "QueueManagerThread" not in t.name, t.name


def test_small_imports_stay_in_this_process():
    assert _default_workers(PARALLEL_MIN_FILES - 1) == 1
    assert _default_workers(PARALLEL_MIN_FILES) >= 1
