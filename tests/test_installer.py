"""The PyInstaller build of `adaptor-review` (no torch) imports, analyses and renders headless."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"

pytestmark = pytest.mark.slow


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _transfer_syntax_files(folder: Path) -> list[str]:
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        JPEGLosslessSV1,
        JPEGLSLossless,
        RLELossless,
    )

    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    rng = np.random.default_rng(0)
    names = []
    for k, ts in enumerate(
        [ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless, RLELossless]
    ):
        eight = ts == JPEGBaseline8Bit
        pixels = (rng.random((256, 200)) * (255 if eight else 4095)).astype(np.uint8 if eight else np.uint16)
        spec = DicomSpec(
            patient_name=f"TS^TEST{k}",
            patient_id=f"TS{k}",
            bits_stored=8 if eight else 12,
            photometric="MONOCHROME1" if k % 2 else "MONOCHROME2",
        )
        write_dicom(folder / f"ts{k}.dcm", pixels, spec, transfer_syntax=ts)
        names.append(ts.name)
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if not (DEMO / "bundle").exists() or not (DEMO / "studies").exists():
        pytest.fail(
            "assets/demo is missing its bundle/ or studies/ (build them with `adaptor-train demo --assets assets/demo`)"
        )
    work = tmp_path_factory.mktemp("pyinstaller")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--distpath",
            str(work / "dist"),
            "--workpath",
            str(work / "build"),
            str(ROOT / "build_installer.spec"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (work / "build.log").write_text(proc.stdout + proc.stderr)
    exe = work / "dist" / "adaptor-review" / "adaptor-review"
    assert exe.exists()
    return exe


def test_bundle_is_torch_free_and_small(built):
    root = built.parent
    names = {p.name.lower() for p in root.rglob("*")}
    assert not any(n.startswith(("torch", "libtorch", "transformers")) for n in names)
    assert not any("pyqt5" in n or "pyqt6" in n for n in names)
    size = _dir_size(root)
    log = (root.parents[1] / "build.log").read_text()
    trimmed = "ICU data trimmed" in log
    if all(shutil.which(t) for t in ("icupkg", "objcopy", "as", "ld")):
        assert trimmed, [line for line in log.splitlines() if "ICU" in line]  # its tools are here: it must work
    # without icupkg the spec ships Qt's full ICU data (29 MB more) and says so
    limit = 250 if trimmed else 280
    print(f"onedir build: {size / 2**20:.1f} MiB (limit {limit} MiB; ICU data trimmed: {trimmed})")
    assert size <= limit * 2**20


def test_built_app_imports_analyses_and_renders(built, tmp_path):
    ts_dir = tmp_path / "ts"
    ts_dir.mkdir()
    syntaxes = _transfer_syntax_files(ts_dir)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "CXR_ADAPTOR_DB": str(tmp_path / "unused.db")}
    db = tmp_path / "lib.db"
    imp = subprocess.run(
        [str(built), "import", str(DEMO / "studies"), str(ts_dir), "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert imp.returncode == 0, imp.stderr[-3000:]
    summary = json.loads(imp.stdout)
    n_demo = len(list((DEMO / "studies").glob("*.dcm")))
    assert summary["imported"] == n_demo + len(syntaxes), summary
    assert not summary["rejected"], summary["rejected"]
    out_csv = tmp_path / "pred.csv"
    out_dicom = tmp_path / "results"
    ana = subprocess.run(
        [str(built), "analyze", "--all", "--bundle", str(DEMO / "bundle"), "--csv", str(out_csv), "--db", str(db)]
        + ["--out-dicom", str(out_dicom)],  # highdicom and its standard tables are in the build
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert ana.returncode == 0, ana.stderr[-3000:]
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    assert len(rows) == n_demo + len(syntaxes)
    assert not any(r.get("error") for r in rows), [r["error"] for r in rows if r.get("error")]
    index = json.loads((out_dicom / "index.json").read_text())
    assert len(index["images"]) == len(rows) and not index["failed"], index["failed"]
    assert all({"seg", "sr"} <= set(e["dicom"]) for e in index["images"])
    shot = tmp_path / "shot.png"
    gui = subprocess.run(
        [str(built), "--db", str(db), "--bundle", str(DEMO / "bundle"), "--screenshot", str(shot)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert gui.returncode == 0, gui.stderr[-3000:]
    assert shot.stat().st_size > 20_000
    # the build speaks https (a PACS is usually behind TLS): a closed port is "cannot reach", not
    # "this installation has no TLS"
    tls = subprocess.run(
        [str(built), "pacs", "search", "--url", "https://127.0.0.1:9/dicom-web", "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert tls.returncode == 2 and "cannot reach the PACS" in tls.stderr and "no TLS" not in tls.stderr, tls.stderr
