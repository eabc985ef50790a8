"""Study library speed: header indexing of a folder of DICOMs against the bare pydicom header
read (one core and all cores) and a naive importer, and search over 100,000 instances against a
naive query. Research use only.

    .venv/bin/python benchmarks/library_import.py [--files 10000] [--size 64] [--instances 100000]
        [--workers N] [--quick]

Import (files/s; the same files, warm in the page cache, measured in the same run):
  bare 1 core   ``pydicom.dcmread(path, stop_before_pixels=True)`` in a loop, nothing else
  bare all      the same loop in a process pool, one process per core (pool start included)
  ours          the importer (link mode): header reads (the fast header walk, pydicom for what
                it leaves) + every header check + the library fields in worker processes,
                de-duplication, batched commits (250 files per transaction), progress throttled
                to <= 10 calls/s, worker start included
  ours, 1 proc  the same with every header read in this process (the importer before issue 15)
  naive         full ``dcmread`` with pixel data, one commit per file through the ORM, a progress
                call and a log line per file (written to /dev/null)
  copy          ours again in --copy mode (managed copies, synced per batch), for information
Targets: ours >= 80 % of bare-all on 10,000 small DICOMs; ours >= 500 files/s.

Search (ms, target <= 50 for each query, count of all matches included):
  ours   the library's search_instances on denormalised, indexed instance columns
  naive  the same filters through joins on patients/studies and a LIKE on the raw name, sorted
         on the joined study date (what a schema without the denormalised columns must do)
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from core_model.imaging.dicom_write import DicomSpec, build_dataset  # noqa: E402

VIEWS = ["PA", "AP", "LL", "RL", ""]
FINDINGS = ["normal", "pneumonia", "covid19", "pneumothorax"]
SURNAMES = [
    "SMITH",
    "MÜLLER",
    "GARCIA",
    "NGUYEN",
    "KOWALSKI",
    "ROSSI",
    "TANAKA",
    "OKAFOR",
    "SILVA",
    "NOVAK",
    "DUBOIS",
    "HANSEN",
    "IVANOV",
    "KIM",
    "PATEL",
    "COHEN",
    "MURPHY",
    "JANSEN",
    "LOPEZ",
    "BERG",
]
GIVEN = ["ANNA", "JOHN", "MARIA", "WEI", "OMAR", "EVA", "LUCA", "AIKO", "NIA", "PIOTR", "SARA", "LEE"]


def generate(folder: Path, n: int, size: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    base = (np.random.default_rng(seed).integers(0, 4096, (size, size))).astype(np.uint16)
    from pydicom.uid import generate_uid

    patients = max(1, n // 4)
    studies: dict[int, tuple[str, str]] = {}
    for i in range(n):
        p = i % patients
        study_key = (p, i // (patients * 2))
        if study_key not in studies:
            studies[study_key] = (
                generate_uid(),
                generate_uid(),
                f"20{rng.randint(10, 24):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            )
        study_uid, series_uid, date = studies[study_key]
        spec = DicomSpec(
            patient_name=f"{SURNAMES[p % len(SURNAMES)]}^{GIVEN[p % len(GIVEN)]}{p}",
            patient_id=f"PID{p:06d}",
            patient_birth_date="19600101",
            study_uid=study_uid,
            series_uid=series_uid,
            study_date=date,
            view_position=rng.choice(VIEWS[:4]),
            instance_number=i,
            windows=[(2048.0, 4096.0)],
        )
        ds = build_dataset(base, spec)
        ds.save_as(_path(folder, i), enforce_file_format=True)


def _path(folder: Path, i: int) -> Path:
    sub = folder / f"sub{i % 20:02d}"
    sub.mkdir(exist_ok=True)
    return sub / f"IM{i:06d}.dcm"


def _bare_read(path: str) -> None:
    import pydicom

    pydicom.dcmread(path, stop_before_pixels=True)


def run_bare(files: list[Path], workers: int) -> float:
    """Seconds for the bare header-read loop, in this process (workers 1) or a process pool."""
    import pydicom

    if workers <= 1:
        start = time.perf_counter()
        for p in files:
            pydicom.dcmread(p, stop_before_pixels=True)
        return time.perf_counter() - start
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from app.library.importer import HEADER_CHUNK
    from benchmarks.library_import import _bare_read  # by module name, not __main__, for the workers

    start = time.perf_counter()
    ctx = multiprocessing.get_context("forkserver")  # as the importer starts its workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:  # and with its chunks
        for _ in pool.map(_bare_read, [str(p) for p in files], chunksize=HEADER_CHUNK):
            pass
    return time.perf_counter() - start


def run_ours(folder: Path, db: Path, mode: str, workers: int | None = None) -> tuple[float, int]:
    from app.library import open_library
    from app.library.importer import Importer

    lib = open_library(db)
    calls = []
    start = time.perf_counter()
    summary = Importer(lib, mode=mode, progress=calls.append, workers=workers).run([folder])
    elapsed = time.perf_counter() - start
    lib.close()
    assert not summary.rejected, summary.rejected[:3]
    return elapsed, summary.imported


def run_naive(folder: Path, db: Path) -> tuple[float, int]:
    import pydicom
    from sqlalchemy import select

    from app.library import open_library
    from app.library.models import Instance, Patient, Series, Study

    lib = open_library(db)
    log = logging.getLogger("benchmark.naive")
    log.propagate = False
    devnull = open(os.devnull, "w")
    log.addHandler(logging.StreamHandler(devnull))
    log.setLevel(logging.INFO)
    files = sorted(p for p in folder.rglob("*.dcm"))
    start = time.perf_counter()
    imported = 0
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)  # the whole file, pixel data included
        with lib.session() as s:  # one transaction per file
            uid = str(ds.SOPInstanceUID)
            if s.execute(select(Instance.id).where(Instance.sop_instance_uid == uid)).first():
                continue
            pid = str(ds.PatientID)
            patient = s.execute(select(Patient).where(Patient.patient_key == pid)).scalar_one_or_none()
            if patient is None:
                patient = Patient(
                    patient_key=pid,
                    patient_id=pid,
                    issuer="",
                    name=str(ds.PatientName),
                    name_search=str(ds.PatientName).lower(),
                    birth_date="",
                    sex="",
                )
                s.add(patient)
                s.flush()
            study = s.execute(select(Study).where(Study.study_uid == ds.StudyInstanceUID)).scalar_one_or_none()
            if study is None:
                study = Study(
                    study_uid=str(ds.StudyInstanceUID),
                    patient_pk=patient.id,
                    study_date=str(ds.StudyDate),
                    study_time="",
                    description="",
                    accession_number="",
                )
                s.add(study)
                s.flush()
            series = s.execute(select(Series).where(Series.series_uid == ds.SeriesInstanceUID)).scalar_one_or_none()
            if series is None:
                series = Series(
                    series_uid=str(ds.SeriesInstanceUID),
                    study_pk=study.id,
                    modality=str(ds.Modality),
                    description="",
                    body_part="",
                )
                s.add(series)
                s.flush()
            s.add(
                Instance(
                    sop_instance_uid=uid,
                    series_pk=series.id,
                    patient_pk=patient.id,
                    study_date=study.study_date,
                    file_path=str(path),
                    storage="linked",
                    view_position=str(ds.get("ViewPosition", "")),
                    rows=int(ds.Rows),
                    columns=int(ds.Columns),
                )
            )
            s.commit()
            imported += 1
        devnull.write(f"\r{k + 1}/{len(files)} {path.name}")  # unthrottled progress
        devnull.flush()
        log.info("imported %s", path.name)
    elapsed = time.perf_counter() - start
    devnull.close()
    lib.close()
    return elapsed, imported


def fill_synthetic(db: Path, n: int, seed: int = 1) -> None:
    """Bulk-insert ``n`` instances (n/5 patients, n/2.5 studies) with names, dates, views,
    review statuses and analyses' top findings spread like a research library."""
    from sqlalchemy import insert

    from app.library import open_library
    from app.library.models import Instance, Patient, Series, Study, utcnow

    rng = random.Random(seed)
    lib = open_library(db)
    n_pat, n_study = max(1, n // 5), max(1, int(n / 2.5))
    now = utcnow()
    with lib.write_connection() as conn:
        conn.execute(
            insert(Patient),
            [
                dict(
                    id=i + 1,
                    patient_key=f"id:{i}",
                    patient_id=f"PID{i:07d}",
                    issuer="",
                    name=(name := f"{SURNAMES[rng.randrange(len(SURNAMES))]}^{GIVEN[rng.randrange(len(GIVEN))]}{i}"),
                    name_search=name.lower().replace("^", " "),
                    birth_date="19600101",
                    sex=rng.choice("MF"),
                )
                for i in range(n_pat)
            ],
        )
        dates = [f"20{rng.randint(5, 24):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}" for _ in range(n_study)]
        study_patient = [rng.randrange(n_pat) + 1 for _ in range(n_study)]
        conn.execute(
            insert(Study),
            [
                dict(
                    id=i + 1,
                    study_uid=f"2.25.{i}",
                    patient_pk=study_patient[i],
                    study_date=dates[i],
                    study_time="",
                    description="CHEST",
                    accession_number="",
                )
                for i in range(n_study)
            ],
        )
        conn.execute(
            insert(Series),
            [
                dict(
                    id=i + 1, series_uid=f"2.25.1{i}", study_pk=i + 1, modality="DX", description="", body_part="CHEST"
                )
                for i in range(n_study)
            ],
        )
        rows = []
        for i in range(n):
            st = rng.randrange(n_study)
            reviewed = rng.random()
            analysed = rng.random() < 0.6
            rows.append(
                dict(
                    sop_instance_uid=f"2.25.9{i}",
                    series_pk=st + 1,
                    patient_pk=study_patient[st],
                    study_date=dates[st],
                    file_path=f"/data/{i}.dcm",
                    storage="linked",
                    view_position=rng.choice(VIEWS),
                    modality="DX",
                    rows=2048,
                    columns=2048,
                    imported_at=now,
                    review_status=None if reviewed < 0.7 else ("approved" if reviewed < 0.9 else "flagged"),
                    top_finding=rng.choice(FINDINGS) if analysed else None,
                    top_probability=round(rng.random(), 3) if analysed else None,
                )
            )
            if len(rows) == 20000:
                conn.execute(insert(Instance), rows)
                rows = []
        if rows:
            conn.execute(insert(Instance), rows)
    with lib.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    lib.close()


SEARCHES = {
    "first page, newest first": dict(),
    "name contains 'müller'": dict(text="müller"),
    "patient ID prefix": dict(text="PID00123"),
    "2020-2022, view PA": dict(date_from="2020-01-01", date_to="2022-12-31", view="PA"),
    "flagged, by name": dict(review_status="flagged", sort="patient_name", descending=False),
    "top finding pneumothorax >= 0.8, by probability": dict(
        top_finding="pneumothorax", min_probability=0.8, sort="top_probability"
    ),
    "unreviewed pneumonia, name 'kim'": dict(text="kim", review_status="unreviewed", top_finding="pneumonia"),
}


def naive_search(
    session,
    text=None,
    date_from=None,
    date_to=None,
    view=None,
    review_status=None,
    top_finding=None,
    min_probability=None,
    sort="study_date",
    descending=True,
    limit=200,
):
    from sqlalchemy import func, or_, select

    from app.library.models import Instance, Patient, Series, Study

    q = (
        select(Instance.id, Patient.name, Study.study_date)
        .select_from(Instance)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .join(Patient, Patient.id == Study.patient_pk)
    )
    if text:
        q = q.where(or_(Patient.name_search.like(f"%{text.lower()}%"), Patient.patient_id.like(f"{text}%")))
    if date_from:
        q = q.where(Study.study_date >= date_from.replace("-", ""))
    if date_to:
        q = q.where(Study.study_date <= date_to.replace("-", ""))
    if view:
        q = q.where(Instance.view_position == view)
    if review_status:
        q = q.where(
            Instance.review_status.is_(None)
            if review_status == "unreviewed"
            else Instance.review_status == review_status
        )
    if top_finding:
        q = q.where(Instance.top_finding == top_finding)
    if min_probability is not None:
        q = q.where(Instance.top_probability >= min_probability)
    key = {"study_date": Study.study_date, "patient_name": Patient.name, "top_probability": Instance.top_probability}[
        sort
    ]
    rows = session.execute(q.order_by(key.desc() if descending else key.asc()).limit(limit)).all()
    total = session.execute(select(func.count()).select_from(q.order_by(None).limit(None).subquery())).scalar_one()
    return rows, total


def time_it(fn, repeat: int = 7) -> tuple[float, float]:
    fn()  # warm the page cache and the statement cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), max(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000, help="DICOM files to generate (10,000 for the claim)")
    parser.add_argument("--size", type=int, default=64, help="rows = columns of each generated image")
    parser.add_argument("--instances", type=int, default=100_000, help="synthetic instances for the search")
    parser.add_argument("--workers", type=int, default=None, help="importer header workers (default: its own)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 files, 5,000 instances")
    parser.add_argument("--workdir", default=None, help="where to generate (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.instances = 300, 5000
    logging.basicConfig(level=logging.WARNING)
    from benchmarks._targets import print_target

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    work = Path(args.workdir or tempfile.mkdtemp(prefix="cxr-lib-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "dicoms"
    print("Study library benchmark (research use only)")
    print(f"machine: {os.cpu_count()} CPU cores, python {sys.version.split()[0]}; work folder {work}")
    try:
        t = time.perf_counter()
        generate(folder, args.files, args.size)
        size_mb = sum(p.stat().st_size for p in folder.rglob("*.dcm")) / 1e6
        print(
            f"generated {args.files} DICOMs ({args.size}x{args.size} 16-bit, {size_mb:.0f} MB) in "
            f"{time.perf_counter() - t:.1f} s"
        )
        # warm the OS cache equally for both runs
        for p in folder.rglob("*.dcm"):
            p.read_bytes()

        files = sorted(folder.rglob("*.dcm"))
        bare1_s = run_bare(files, 1)
        # ours first: it starts the fork server (which the bare pool then reuses, warm: the
        # baseline at its best); ours includes that start, as a user's first import does
        ours_s, ours_n = run_ours(folder, work / "ours.db", "link", args.workers)
        bare_all_s = run_bare(files, cores)
        one_s, one_n = run_ours(folder, work / "one.db", "link", 1)
        naive_s, naive_n = run_naive(folder, work / "naive.db")
        copy_s, copy_n = run_ours(folder, work / "copy.db", "copy", args.workers)
        assert ours_n == one_n == naive_n == copy_n == args.files
        n = args.files
        ours_rate, naive_rate, copy_rate = ours_n / ours_s, naive_n / naive_s, copy_n / copy_s
        bare1_rate, bare_all_rate = n / bare1_s, n / bare_all_s
        print("\nImport, header indexing into the database")
        print(f"  {'approach':58s} {'time s':>8s} {'files/s':>9s}")
        print(f"  {'bare dcmread(stop_before_pixels) loop, 1 core':58s} {bare1_s:8.2f} {bare1_rate:9.0f}")
        label = f"bare dcmread(stop_before_pixels), {cores} processes"
        print(f"  {label:58s} {bare_all_s:8.2f} {bare_all_rate:9.0f}")
        print(f"  {'ours  (header workers, batched commits, throttled progress)':58s} {ours_s:8.2f} {ours_rate:9.0f}")
        print(f"  {'ours, headers read in this process (--workers 1)':58s} {one_s:8.2f} {n / one_s:9.0f}")
        print(f"  {'naive (full dcmread, commit per file, progress per file)':58s} {naive_s:8.2f} {naive_rate:9.0f}")
        print(f"  {'ours with --copy (managed copies, synced per batch)':58s} {copy_s:8.2f} {copy_rate:9.0f}")
        print(f"  ours / bare all cores: {ours_rate / bare_all_rate:.2f}; ours / naive: {ours_rate / naive_rate:.1f}x")
        targets = [
            dict(
                name=f"import_vs_bare_all_cores_{n}",
                ours=ours_rate,
                unit="files/s",
                baseline=bare_all_rate,
                goal=">= 0.8 x baseline",
                met=ours_rate >= 0.8 * bare_all_rate,
            ),
            dict(
                name=f"import_vs_naive_{n}",
                ours=ours_rate,
                unit="files/s",
                baseline=naive_rate,
                goal=">= 500 files/s",
                met=ours_rate >= 500,
            ),
        ]

        db = work / "search.db"
        t = time.perf_counter()
        fill_synthetic(db, args.instances)
        print(
            f"\nSearch over {args.instances:,} synthetic instances (bulk-inserted in {time.perf_counter() - t:.1f} s); "
            "page of 200 rows + total count, median / max of 7 runs"
        )
        from app.library import open_library
        from app.library.queries import search_instances

        lib = open_library(db)
        worst = worst_naive = 0.0
        print(f"  {'query':50s} {'ours ms':>15s} {'naive ms':>15s} {'matches':>8s}")
        with lib.session() as s:
            for label, kw in SEARCHES.items():
                result = search_instances(s, **kw)
                naive_rows, naive_total = naive_search(s, **kw)
                assert naive_total == result.total, (label, naive_total, result.total)
                med, mx = time_it(lambda: search_instances(s, **kw))  # noqa: B023 (called within this iteration)
                nmed, nmx = time_it(lambda: naive_search(s, **kw), repeat=3)  # noqa: B023 (called within this iteration)
                worst = max(worst, med)
                worst_naive = max(worst_naive, nmed)
                print(f"  {label:50s} {med:6.1f} / {mx:6.1f} {nmed:6.1f} / {nmx:6.1f} {result.total:8d}")
        lib.close()
        print(f"  slowest median (ours): {worst:.1f} ms")
        print()
        for t in targets:
            print_target(**t)  # type: ignore[arg-type]
        print_target(
            f"search_{args.instances}_slowest_median",
            worst,
            "ms",
            baseline=worst_naive,
            ratio=worst_naive / worst,
            goal="<= 50 ms",
            met=worst <= 50,
        )
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
