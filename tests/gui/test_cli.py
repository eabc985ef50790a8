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
from tests.gui.conftest import SHOTS, uid_of
from tests.gui.fakes import FakeBundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_runtime(monkeypatch):
    bundles = {}

    def open_bundle(path):
        if "broken" in str(path):
            from app.logic.bundles import BundleOpenError

            raise BundleOpenError(f"{Path(path).name}: checksum mismatch in model.onnx")
        return bundles.setdefault(str(path), FakeBundle())

    monkeypatch.setattr("app.logic.bundles.open_bundle", open_bundle)
    return bundles


def test_analyze_all_writes_csv_and_reuses_the_library(library, tmp_path, fake_runtime, capsys):
    db = str(library.db_path)
    out = tmp_path / "out" / "pred.csv"
    assert main(["analyze", "--all", "--bundle", "bundle.zip", "--csv", str(out), "--db", db]) == 0
    text = capsys.readouterr().out
    assert "Research use only" in text and "7 analysed, 0 reused" in text
    rows = read_predictions_csv(out)
    assert len(rows) == 7 and all(r["bundle_id"] == "fake-bundle" and not r["error"] for r in rows)
    assert main(["analyze", "--all", "--bundle", "bundle.zip", "--csv", str(out), "--db", db]) == 0
    assert "0 analysed, 7 reused from the library" in capsys.readouterr().out
    assert fake_runtime["bundle.zip"].calls["analyze"] == 7
    # by UID (instance or study), and the top-level --db works for subcommands too
    uid = uid_of(library, "anna_pa.dcm")
    assert main(["--db", db, "analyze", uid, "--bundle", "bundle.zip", "--csv", str(out), "--force", "--json"]) == 0
    assert '"analysed": 1' in capsys.readouterr().out
    study = "1.2.826.0.1.3680043.8.498.1"
    assert main(["analyze", study, "--bundle", "bundle.zip", "--csv", str(out), "--db", db]) == 0
    assert len(read_predictions_csv(out)) == 2


def test_analyze_errors_are_one_line(library, tmp_path, fake_runtime, capsys):
    db = str(library.db_path)
    csv = str(tmp_path / "p.csv")
    assert main(["analyze", "--bundle", "b", "--csv", csv, "--db", db]) == 2
    assert "give the instance UIDs to analyse or --all" in capsys.readouterr().err
    assert main(["analyze", "9.9.9", "--bundle", "b", "--csv", csv, "--db", db]) == 2
    assert "not in the library: 9.9.9" in capsys.readouterr().err
    assert main(["analyze", "--all", "--bundle", "broken.zip", "--csv", csv, "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "adaptor-review analyze: error: broken.zip: checksum mismatch in model.onnx"
    assert main(["analyze", "--all", "--bundle", "b", "--csv", str(tmp_path / "p.txt"), "--db", db]) == 2
    assert main(["analyze", "--all", "--bundle", "b", "--csv", csv, "--db", str(tmp_path / "none.db")]) == 2
    assert "no library database" in capsys.readouterr().err


def test_headless_commands_import_neither_qt_nor_torch(library, tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import app.logic.bundles
from tests.gui.fakes import FakeBundle
app.logic.bundles.open_bundle = lambda path: FakeBundle()
from app.main import main
rc = main(["analyze", "--all", "--bundle", "x", "--csv", {str(tmp_path / 'p.csv')!r}, "--db", {str(library.db_path)!r}])
rc2 = main(["list", "--db", {str(library.db_path)!r}])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "pyqtgraph", "torch", "transformers"))
print("RC", rc, rc2, "HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RC 0 0 HEAVY []" in proc.stdout


def _gui(args, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "app.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


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
    proc = _gui(["--demo", "--screenshot", str(tmp_path / "x.png")],
                {"CXR_ADAPTOR_DEMO": str(tmp_path / "no-demo")})
    assert proc.returncode == 2 and "demo assets are not there" in proc.stderr


def test_screenshot_at_200_percent_scaling(library, tmp_path, isolated_settings):
    out = tmp_path / "hidpi.png"
    proc = _gui(["--db", str(library.db_path), "--screenshot", str(out)],
                {"XDG_CONFIG_HOME": str(isolated_settings), "QT_SCALE_FACTOR": "2"})
    assert proc.returncode == 0, proc.stderr
    img = Image.open(out)
    assert img.width >= 2 * 1200  # device pixels: twice the logical size, nothing clipped
    img.resize((img.width // 2, img.height // 2)).save(SHOTS / "cli_screenshot_hidpi_downscaled.png")
    Image.open(out).crop((0, 0, 1400, 900)).save(SHOTS / "cli_screenshot_hidpi_crop.png")
