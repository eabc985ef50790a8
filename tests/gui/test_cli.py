"""The command line: ``adaptor-review analyze`` (headless: no Qt, no torch), the top-level GUI
options (``--db``, ``--bundle``, ``--screenshot``, ``--demo``) and the existing subcommands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.logic.predictions_csv import read_predictions_csv
from app.main import main
from tests.gui.conftest import SHOTS, analysis_rows, direct_analysis, uid_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broken_bundle(exported_bundle, tmp_path_factory) -> Path:
    """A copy of the real bundle with one byte of its image graph changed."""
    import shutil

    broken = tmp_path_factory.mktemp("cli-bundles") / "broken"
    shutil.copytree(exported_bundle, broken)
    graph = broken / "image.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    return broken


def test_analyze_all_writes_csv_and_reuses_the_library(library, tmp_path, exported_bundle, loaded_bundle, capsys):
    db, bundle = str(library.db_path), str(exported_bundle)
    out = tmp_path / "out" / "pred.csv"
    assert main(["analyze", "--all", "--bundle", bundle, "--csv", str(out), "--db", db]) == 0
    text = capsys.readouterr().out
    assert "Research use only" in text and "7 analysed, 0 reused" in text
    rows = read_predictions_csv(out)
    assert len(rows) == 7 and all(r["bundle_id"] == loaded_bundle.id and not r["error"] for r in rows)
    # the CSV holds the runtime's own numbers for each file, with the bundle's thresholds
    for r in rows:
        direct = direct_analysis(loaded_bundle, library, r["sop_instance_uid"])
        for c in loaded_bundle.classes:
            assert float(r[f"p_{c}"]) == pytest.approx(direct.probabilities[c], abs=1e-5), (r["sop_instance_uid"], c)
            assert float(r[f"threshold_{c}"]) == pytest.approx(loaded_bundle.thresholds[c], rel=1e-5)
            assert r[f"above_{c}"] == str(int(float(r[f"p_{c}"]) >= float(r[f"threshold_{c}"])))
        assert float(r["mask_area_fraction"]) == pytest.approx(direct.mask_area_fraction, abs=1e-5)
    stored = analysis_rows(library)
    assert len(stored) == 7
    # again: everything comes from the library (no new analysis rows, the same ones)
    assert main(["analyze", "--all", "--bundle", bundle, "--csv", str(out), "--db", db]) == 0
    assert "0 analysed, 7 reused from the library" in capsys.readouterr().out
    assert analysis_rows(library) == stored
    assert [r["p_normal"] for r in read_predictions_csv(out)] == [r["p_normal"] for r in rows]
    # by UID (instance or study), and the top-level --db works for subcommands too; --force runs again
    uid = uid_of(library, "anna_pa.dcm")
    assert main(["--db", db, "analyze", uid, "--bundle", bundle, "--csv", str(out), "--force", "--json"]) == 0
    assert '"analysed": 1' in capsys.readouterr().out
    assert len(analysis_rows(library, uid)) == 2 and len(analysis_rows(library)) == 8
    study = "1.2.826.0.1.3680043.8.498.1"
    assert main(["analyze", study, "--bundle", bundle, "--csv", str(out), "--db", db]) == 0
    assert "0 analysed, 2 reused from the library" in capsys.readouterr().out
    assert len(read_predictions_csv(out)) == 2 and len(analysis_rows(library)) == 8


def test_analyze_errors_are_one_line(library, tmp_path, exported_bundle, broken_bundle, capsys):
    db, bundle = str(library.db_path), str(exported_bundle)
    csv = str(tmp_path / "p.csv")
    assert main(["analyze", "--bundle", bundle, "--csv", csv, "--db", db]) == 2
    assert "give the instance UIDs to analyse or --all" in capsys.readouterr().err
    assert main(["analyze", "9.9.9", "--bundle", bundle, "--csv", csv, "--db", db]) == 2
    assert "not in the library: 9.9.9" in capsys.readouterr().err
    # a damaged bundle: the runtime's checksum check, in one line naming the file
    assert main(["analyze", "--all", "--bundle", str(broken_bundle), "--csv", csv, "--db", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptor-review analyze: error: ") and "\n" not in err, err
    assert str(broken_bundle) in err and "image.onnx does not match its SHA-256" in err, err
    assert main(["analyze", "--all", "--bundle", str(tmp_path / "nowhere"), "--csv", csv, "--db", db]) == 2
    assert "no model bundle at" in capsys.readouterr().err
    assert analysis_rows(library) == []  # nothing stored by any of these
    assert main(["analyze", "--all", "--bundle", bundle, "--csv", str(tmp_path / "p.txt"), "--db", db]) == 2
    assert main(["analyze", "--all", "--bundle", bundle, "--csv", csv, "--db", str(tmp_path / "none.db")]) == 2
    assert "no library database" in capsys.readouterr().err


def test_headless_commands_import_neither_qt_nor_torch(library, tmp_path, exported_bundle):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from app.main import main
rc = main(["analyze", "--all", "--bundle", {str(exported_bundle)!r}, "--csv", {str(tmp_path / "p.csv")!r},
           "--db", {str(library.db_path)!r}])
rc2 = main(["list", "--db", {str(library.db_path)!r}])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "pyqtgraph", "torch", "transformers"))
print("RC", rc, rc2, "ORT", "onnxruntime" in sys.modules, "HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "7 analysed" in proc.stdout
    assert "RC 0 0 ORT True HEAVY []" in proc.stdout  # the real runtime ran, without Qt or torch


def _gui(args, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "app.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_screenshot_without_a_display(library, tmp_path, isolated_settings):
    out = tmp_path / "shot.png"
    env = {"XDG_CONFIG_HOME": str(isolated_settings)}
    proc = _gui(["--db", str(library.db_path), "--screenshot", str(out)], env)
    assert proc.returncode == 0, proc.stderr
    assert "Research use only" in proc.stdout and f"Wrote {out}" in proc.stdout
    assert "Traceback" not in proc.stderr and "propagateSizeHints" not in proc.stderr
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[0] > 400 and img.shape[1] > 800 and img.std() > 20
    SHOTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(SHOTS / "cli_screenshot_no_model.png")
    # a bad bundle: the window still opens, the screenshot says it, and so does the output
    bad = tmp_path / "broken_bundle"
    bad.mkdir()
    out2 = tmp_path / "shot2.png"
    proc = _gui(["--db", str(library.db_path), "--bundle", str(bad), "--screenshot", str(out2)], env)
    assert proc.returncode == 0, proc.stderr
    assert "Model not loaded: " in proc.stdout and "broken_bundle is not a model bundle" in proc.stdout
    assert out2.exists()
    Image.open(out2).save(SHOTS / "cli_screenshot_bad_bundle.png")


def test_cli_errors_for_the_gui(tmp_path):
    (tmp_path / "folder.db").mkdir()
    proc = _gui(["--db", str(tmp_path / "folder.db"), "--screenshot", str(tmp_path / "x.png")])
    assert proc.returncode == 2 and "is a folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = _gui(["--demo", "--screenshot", str(tmp_path / "x.png")], {"CXR_ADAPTOR_DEMO": str(tmp_path / "no-demo")})
    assert proc.returncode == 2 and "demo assets are not there" in proc.stderr


def test_screenshot_at_200_percent_scaling(library, tmp_path, isolated_settings):
    out = tmp_path / "hidpi.png"
    proc = _gui(
        ["--db", str(library.db_path), "--screenshot", str(out)],
        {"XDG_CONFIG_HOME": str(isolated_settings), "QT_SCALE_FACTOR": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    img = Image.open(out)
    assert img.width >= 2 * 1200  # device pixels: twice the logical size, nothing clipped
    img.resize((img.width // 2, img.height // 2)).save(SHOTS / "cli_screenshot_hidpi_downscaled.png")
    Image.open(out).crop((0, 0, 1400, 900)).save(SHOTS / "cli_screenshot_hidpi_crop.png")
