"""Review app responsiveness: the longest event-loop stall while importing 2,000 files and while
analysing 50 images, and the cold start to a painted main window. Research use only.

    .venv/bin/python benchmarks/app_responsiveness.py [--bundle PATH] [--files 2000] [--analyze 50]
                                                      [--size 128] [--starts 5] [--repeats 3]
                                                      [--start-only]

Stall: a 10 ms QTimer heartbeat runs on the GUI thread; the longest gap between two beats is
the longest time the user could not interact (target <= 100 ms). Ours is measured ``--repeats``
times (median, worst in brackets: other people's jobs on the shared cores add noise), beside:

  ours      the app's own path: MainWindow.import_paths / analyze_all, which run the library's
            importer and the model in worker threads (QThreadPool) and send throttled progress
            to the GUI thread (browser refreshed at most every 1.5 s, progress bar, thumbnails)
  baseline  the same library calls made directly on the GUI thread (what an app without workers
            does), with the same progress callback
  floor     the importer in a plain thread with no window work at all: what the GIL and the
            machine's load alone cost the heartbeat

Cold start (target ``cold_start_painted``: median <= 1.0 s, issue 15): wall clock from spawning
``python -m app.main --db LIB --bundle BUNDLE`` (the library holding the imported files, the
model given as when the app reopens with the last one) to the main window's first paint
(offscreen), best and median of ``--starts`` runs, beside the floor measured in the same run: a
bare PySide6 QApplication + QMainWindow painted by a ``python -c`` process. The start without a
model is printed too. Nothing heavy runs before that paint: the model (onnxruntime sessions, the
report bank and its index) starts loading once the window has painted (app.gui.app.
after_first_paint; tests/gui/test_startup.py). ``--start-only`` measures only the cold start
(an empty library; about 20 s).

The model is a real exported bundle run by the torch-free runtime: ``--bundle PATH`` (a folder
or .zip from ``adaptor-train export``), by default the demo bundle ``assets/demo/bundle`` when it
is there (``adaptor-train demo --out runs/demo --assets assets/demo`` makes it). The window loads
it as the user does (File menu path: a worker, onnxruntime threads = cores - 1, see
app.logic.bundles.gui_threads); the baseline uses the same bundle loaded the same way. The output
names the bundle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_BUNDLE = ROOT / "assets" / "demo" / "bundle"
NO_BUNDLE = (
    "no model bundle: give --bundle PATH (any bundle exported by adaptor-train export), or make the demo "
    "bundle with `adaptor-train demo --out runs/demo --assets assets/demo`"
)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

TARGET_STALL_MS = 100.0
TARGET_START_S = 1.0


# -- data ---------------------------------------------------------------------------------------


def generate(folder: Path, n: int, size: int, seed: int = 0) -> None:
    from pydicom.uid import generate_uid

    from core_model.imaging.dicom_write import DicomSpec, build_dataset

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    lungs = np.exp(-(((xx - 0.3) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + np.exp(
        -(((xx - 0.7) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)
    )
    base = 2600 - 1500 * lungs
    patients = max(1, n // 4)
    studies: dict[tuple, tuple[str, str]] = {}
    for i in range(n):
        p = i % patients
        key = (p, i // (patients * 2))
        if key not in studies:
            studies[key] = (generate_uid(), f"20{10 + (i % 14):02d}{1 + i % 12:02d}{1 + i % 28:02d}")
        study_uid, date = studies[key]
        img = np.clip(base + rng.normal(0, 40, base.shape), 0, 4095).astype(np.uint16)
        ds = build_dataset(
            img,
            DicomSpec(
                patient_name=f"BENCH^PATIENT{p}",
                patient_id=f"B{p:06d}",
                study_uid=study_uid,
                study_date=date,
                instance_number=i,
                view_position=("PA", "AP", "LL")[i % 3],
                windows=[(1800.0, 2400.0)],
            ),
        )
        sub = folder / f"sub{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        ds.save_as(sub / f"IM{i:06d}.dcm", enforce_file_format=True)


# -- measuring ----------------------------------------------------------------------------------


class Heartbeat:
    def __init__(self, interval_ms: int = 10):
        from PySide6.QtCore import Qt, QTimer

        self.interval = interval_ms
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._beat)
        self.max_gap = 0.0
        self.last = 0.0
        self.beats = 0

    def _beat(self) -> None:
        now = time.perf_counter()
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        self.beats += 1

    def start(self) -> None:
        self.max_gap, self.beats = 0.0, 0
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> float:
        self._beat()
        self.timer.stop()
        return self.max_gap * 1000.0


def wait_for(app, condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark step did not finish in time")
        app.processEvents()
        time.sleep(0.001)


def run_in_loop(app, fn) -> float:
    """Run ``fn`` on the GUI thread from inside the event loop; returns its duration."""
    from PySide6.QtCore import QTimer

    box = {}

    def go():
        t = time.perf_counter()
        box["value"] = fn()
        box["elapsed"] = time.perf_counter() - t

    QTimer.singleShot(0, go)
    wait_for(app, lambda: "elapsed" in box, 3600)
    return box["elapsed"]


def measure_stalls(args, work: Path, source: Path, bundle_path: Path, bundle) -> dict:
    from PySide6.QtCore import QSettings

    from app.gui.app import make_application
    from app.gui.main_window import MainWindow
    from app.library import open_library
    from app.library.importer import Importer
    from app.logic.analysis import all_instance_uids, analyze_many

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(work / "settings"))
    app = make_application()
    out: dict = {}

    # -- ours: the window's own import and batch analysis (workers), repeated --
    hb = Heartbeat()
    out["import_ours_ms"], out["import_ours_s"] = [], []
    for r in range(args.repeats):
        lib = open_library(work / f"ours{r}" / "library.db")
        window = MainWindow(lib, restore_layout=False)
        window.show()
        app.processEvents()
        done = {}
        window.import_finished.connect(lambda s: done.setdefault("import", s))  # noqa: B023 (called within this iteration)
        window.batch_finished.connect(lambda s: done.setdefault("batch", s))  # noqa: B023 (called within this iteration)
        hb.start()
        t = time.perf_counter()
        window.import_paths([str(source)])
        wait_for(app, lambda: "import" in done, 3600)  # noqa: B023 (called within this iteration)
        out["import_ours_s"].append(time.perf_counter() - t)
        out["import_ours_ms"].append(hb.stop())
        assert done["import"].imported == args.files, done["import"]
        wait_for(app, window.is_idle, 600)  # thumbnails of the first rows, the first image
        if r < args.repeats - 1:
            window.close()
            lib.close()
    window.load_bundle(str(bundle_path))  # as the user loads it (a worker, the app's threads)
    wait_for(app, window.is_idle, 600)  # the bundle, then the shown image's own analysis
    if window.bundle is None:
        raise RuntimeError(f"the window could not load the bundle: {window.bundle_error}")
    todo = [u for u in all_instance_uids(lib) if u != window.current_uid]
    out["analyze_ours_ms"], out["analyze_ours_s"] = [], []
    for r in range(args.repeats):
        done.pop("batch", None)
        uids = todo[r * args.analyze : (r + 1) * args.analyze]
        hb.start()
        t = time.perf_counter()
        window.analyze_all(uids)
        wait_for(app, lambda: "batch" in done, 3600)
        out["analyze_ours_s"].append(time.perf_counter() - t)
        out["analyze_ours_ms"].append(hb.stop())
        assert done["batch"].analysed == len(uids), done["batch"]
    window.close()
    lib.close()

    # -- floor: the importer in a plain thread, no window work at all (GIL and machine noise) --
    import threading

    out["import_floor_ms"] = []
    for r in range(args.repeats):
        floor_lib = open_library(work / f"floor{r}" / "library.db")
        hb.start()
        worker = threading.Thread(target=lambda: Importer(floor_lib, mode="copy").run([str(source)]))  # noqa: B023 (called within this iteration)
        worker.start()
        wait_for(app, lambda: not worker.is_alive(), 3600)  # noqa: B023 (called within this iteration)
        out["import_floor_ms"].append(hb.stop())
        floor_lib.close()

    # -- baseline: the same library calls on the GUI thread --
    base = open_library(work / "baseline" / "library.db")
    window = MainWindow(base, restore_layout=False)
    window.show()
    app.processEvents()

    def progress(p):
        window.browser.count.setText(f"{p.done}/{p.total}")

    hb.start()
    out["import_base_s"] = run_in_loop(app, lambda: Importer(base, mode="copy", progress=progress).run([str(source)]))
    window.browser.refresh()
    out["import_base_ms"] = hb.stop()
    uids = all_instance_uids(base)[1 : args.analyze + 1]
    hb.start()
    out["analyze_base_s"] = run_in_loop(app, lambda: analyze_many(base, bundle, uids))
    window.browser.refresh()
    out["analyze_base_ms"] = hb.stop()
    window.close()
    base.close()
    return out


def _start_time(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds from spawning to the first paint, CPU seconds the process used by then)."""
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    for line in proc.stdout.splitlines():
        if line.startswith("startup-painted "):
            _, wall, cpu = line.split()
            return float(wall) - t0, float(cpu)
    raise RuntimeError(f"no paint reported: {proc.stdout[-500:]} {proc.stderr[-2000:]}")


BARE = """
import sys, time
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow, QLabel
app = QApplication(sys.argv)
w = QMainWindow(); w.setCentralWidget(QLabel("hello")); w.resize(1200, 800)
class P(QObject):
    done = False
    def eventFilter(self, o, e):
        if e.type() == QEvent.Type.Paint and not self.done:
            self.done = True; print(f"startup-painted {time.time():.6f} {time.process_time():.4f}", flush=True)
            QTimer.singleShot(0, app.quit)
        return False
p = P(); app.installEventFilter(p); w.show(); app.exec()
"""


def measure_start(args, work: Path, db: Path, bundle_path: Path) -> dict:
    """Cold starts, interleaved (ours without a model, ours with the model, the bare floor) so
    that a change in the machine's load touches all three alike, after one untimed start of each
    (it creates the library when there is none and warms the file cache for all alike)."""
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        CXR_ADAPTOR_STARTUP_PROBE="1",
        XDG_CONFIG_HOME=str(work / "settings-start"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    app_cmd = [sys.executable, "-m", "app.main", "--db", str(db)]
    for cmd in (app_cmd, [*app_cmd, "--bundle", str(bundle_path)], [sys.executable, "-c", BARE]):
        _start_time(cmd, env)
    out: dict = {k: [] for k in ("start_plain", "start_ours", "start_bare", "cpu_plain", "cpu_ours", "cpu_bare")}
    for _ in range(args.starts):
        for kind, cmd in (
            ("plain", app_cmd),
            ("ours", [*app_cmd, "--bundle", str(bundle_path)]),
            ("bare", [sys.executable, "-c", BARE]),
        ):
            wall, cpu = _start_time(cmd, env)
            out[f"start_{kind}"].append(wall)
            out[f"cpu_{kind}"].append(cpu)
    return out


def print_start_rows(start: dict) -> None:
    med = statistics.median
    so, sp, sb = start["start_ours"], start["start_plain"], start["start_bare"]
    for label, xs, stat in (
        ("cold start to painted window (best)", so, min),
        ("cold start to painted window (median)", so, med),
        ("  the same without a model (median)", sp, med),
    ):
        ok = stat(xs) <= TARGET_START_S
        print(
            f"{label:40s} {stat(xs):14.2f} s {stat(sb):15.2f} s (bare) {stat(xs) / stat(sb):7.1f}x  "
            f"<= {TARGET_START_S} s {'OK' if ok else 'MISSED'}"
        )
    cpu = (med(start["cpu_ours"]), med(start["cpu_plain"]), med(start["cpu_bare"]))
    print(
        f"{'  CPU used by the first paint (median)':40s} {cpu[0]:14.2f} s {cpu[2]:15.2f} s (bare) "
        f"{cpu[0] / cpu[2]:7.1f}x  (without a model {cpu[1]:.2f} s; the machine's load does not inflate it)"
    )
    print(
        f"cold starts (s): ours {', '.join(f'{x:.2f}' for x in so)}; without a model "
        f"{', '.join(f'{x:.2f}' for x in sp)}; bare Qt window {', '.join(f'{x:.2f}' for x in sb)}"
    )


def start_target(start: dict) -> bool:
    """The ``cold_start_painted`` target line: the median start with the model, beside the floor's."""
    from benchmarks._targets import print_target

    med = statistics.median
    so, sb = start["start_ours"], start["start_bare"]
    return print_target(
        "cold_start_painted",
        med(so),
        "s",
        baseline=med(sb),
        goal=f"<={TARGET_START_S:g} s",
        met=med(so) <= TARGET_START_S,
    )


def reading_room(work: Path) -> bool:
    """The reading room's stalls, printed as target lines (benchmarks/_reading_room_stalls.py)."""
    from PySide6.QtCore import QSettings

    from app.gui.app import make_application
    from benchmarks import _reading_room_stalls as rr

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(work / "settings"))
    make_application()
    print("Research use only. Reading room stalls (Qt offscreen)", flush=True)
    return rr.report(rr.measure(work, Heartbeat(), wait_for), TARGET_STALL_MS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle",
        default=None,
        metavar="PATH",
        help="model bundle folder or .zip (default: assets/demo/bundle when it exists)",
    )
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--analyze", type=int, default=50)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--starts", type=int, default=5, help="cold starts of each kind (median and best)")
    parser.add_argument("--repeats", type=int, default=3, help="stall measurements of ours (median and worst)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--reading-room-only",
        action="store_true",
        help="only the reading room's stalls (linked 2x2 pan, tree rebuild for 10,000 images)",
    )
    parser.add_argument("--start-only", action="store_true", help="only the cold start (an empty library)")
    args = parser.parse_args(argv)
    prog = "app_responsiveness.py"

    bundle_path = Path(args.bundle).expanduser() if args.bundle else DEMO_BUNDLE
    if not args.bundle and not DEMO_BUNDLE.exists():
        print(f"{prog}: error: {NO_BUNDLE}", file=sys.stderr)
        return 2
    from app.logic.bundles import describe, gui_threads, open_bundle
    from core_model.errors import UserError

    try:
        bundle = open_bundle(bundle_path, threads=gui_threads())  # as the app loads it
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    bundle_text = f"{describe(bundle)} ({bundle_path})"

    work = Path(tempfile.mkdtemp(prefix="cxr-bench-app-"))
    if args.start_only:
        try:
            print(f"Research use only. Cold start to the painted window (Qt offscreen); model: {bundle_text}")
            start = measure_start(args, work, work / "library.db", bundle_path)
            print_start_rows(start)
            return 0 if start_target(start) else 1
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    if args.reading_room_only:  # benchmarks/_reading_room_stalls.py
        try:
            return 0 if reading_room(work) else 1
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    try:
        source = work / "source"
        t = time.perf_counter()
        generate(source, args.files, args.size)
        print(
            f"generated {args.files} DICOM files ({args.size} x {args.size}) in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        args.analyze = min(args.analyze, max(1, (args.files - 1) // args.repeats))
        stalls = measure_stalls(args, work, source, bundle_path, bundle)
        start = measure_start(args, work, work / "ours0" / "library.db", bundle_path)  # 2,000 imported files
        reading_room_ok = reading_room(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    med = statistics.median
    rows = [
        (f"longest stall, import {args.files} files", stalls["import_ours_ms"], stalls["import_base_ms"]),
        (f"longest stall, analyse {args.analyze} images", stalls["analyze_ours_ms"], stalls["analyze_base_ms"]),
    ]
    print()
    print("Research use only. Review app responsiveness (Qt offscreen; 2 shared CPU cores)")
    print(f"model: {bundle_text}")
    print(f"ours: median of {args.repeats} runs (worst in brackets); baseline: one run")
    print()
    print(f"{'':40s} {'ours (workers)':>20s} {'baseline (GUI thread)':>22s} {'ratio':>8s}  target")
    for name, ours, base in rows:
        ok = med(ours) <= TARGET_STALL_MS
        print(
            f"{name:40s} {med(ours):7.0f} ms ({max(ours):4.0f} ms) {base:19.0f} ms {base / max(med(ours), 1e-9):7.0f}x"
            f"  <= {TARGET_STALL_MS:.0f} ms {verdict(ok)}"
        )
    floor = stalls["import_floor_ms"]
    print(f"{'  floor: importer thread, no window work':40s} {med(floor):7.0f} ms ({max(floor):4.0f} ms)")
    print_start_rows(start)
    print()
    print(
        f"work time: import {med(stalls['import_ours_s']):.1f} s (workers) vs {stalls['import_base_s']:.1f} s "
        f"(GUI thread); analyse {med(stalls['analyze_ours_s']):.1f} s vs {stalls['analyze_base_s']:.1f} s"
    )
    print(
        "stalls of ours (ms): import "
        + ", ".join(f"{x:.0f}" for x in stalls["import_ours_ms"])
        + "; analyse "
        + ", ".join(f"{x:.0f}" for x in stalls["analyze_ours_ms"])
    )
    from benchmarks._targets import print_target

    ok = reading_room_ok
    for name, ours, base in (
        ("gui_stall_import", stalls["import_ours_ms"], stalls["import_base_ms"]),
        ("gui_stall_analyze", stalls["analyze_ours_ms"], stalls["analyze_base_ms"]),
    ):
        ok &= print_target(
            name, med(ours), "ms", baseline=base, goal=f"<={TARGET_STALL_MS:.0f} ms", met=med(ours) <= TARGET_STALL_MS
        )
    ok &= start_target(start)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
