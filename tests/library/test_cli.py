"""`adaptor-review import | list | render` as a user runs them (through app.main.main)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.main import main
from tests.imaging.builders import REAL_DCM, REAL_PNG, gradient, write
from tests.library.conftest import MIXED_IMPORTED, MIXED_REJECTED, make_mixed

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_import_json_summary_and_exit_zero_with_rejections(tmp_path, capsys):
    make_mixed(tmp_path / "export")
    code, out, err = run_cli(capsys, "import", tmp_path / "export", "--db", tmp_path / "l.db", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["imported"] == len(MIXED_IMPORTED) and summary["duplicates"] == 0
    assert sorted(r["reason"] for r in summary["rejected"]) == sorted(MIXED_REJECTED.values())
    assert all(r["message"] and r["path"] for r in summary["rejected"])
    assert "Research use only" in summary["notice"]
    code, out, _ = run_cli(capsys, "import", tmp_path / "export", "--db", tmp_path / "l.db", "--link", "--json")
    again = json.loads(out)
    assert code == 0 and again["imported"] == 0 and again["duplicates"] == len(MIXED_IMPORTED)


def test_import_text_summary_lists_each_rejection(tmp_path, capsys):
    files = make_mixed(tmp_path / "export")
    code, out, _ = run_cli(capsys, "import", tmp_path / "export", "--db", tmp_path / "l.db")
    assert code == 0
    assert out.startswith("Research use only")
    assert f"{len(MIXED_IMPORTED)} imported, 0 duplicates, {len(MIXED_REJECTED)} rejected" in out
    for key, reason in MIXED_REJECTED.items():
        assert str(files[key]) in out and reason in out


def test_import_that_cannot_run_exits_2_with_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "import", tmp_path / "nothing-here", "--db", tmp_path / "l.db")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "bad.db").write_text("not sqlite " * 100)
    code, _, err = run_cli(capsys, "import", REAL_DCM, "--db", tmp_path / "bad.db")
    assert code == 2 and "not a library database" in err and err.count("\n") == 1


def test_copy_and_link_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["import", str(REAL_DCM), "--copy", "--link", "--db", str(tmp_path / "l.db")])
    assert info.value.code == 2


def test_list_shows_patients_studies_instances(tmp_path, capsys):
    make_mixed(tmp_path / "export")
    run_cli(capsys, "import", tmp_path / "export", "--db", tmp_path / "l.db")
    code, out, _ = run_cli(capsys, "list", "--db", tmp_path / "l.db", "--json")
    data = json.loads(out)
    assert code == 0 and data["counts"]["instances"] == len(MIXED_IMPORTED)
    names = {p["name"] for p in data["patients"]}
    assert "ZZSECRETNAME^JOHN" in names
    n = sum(len(se["instances"]) for p in data["patients"] for st in p["studies"] for se in st["series"])
    assert n == len(MIXED_IMPORTED)
    code, out, _ = run_cli(capsys, "list", "--db", tmp_path / "l.db")
    assert code == 0 and "ZZSECRETNAME^JOHN" in out and "2024-01-05" in out
    code, _, err = run_cli(capsys, "list", "--db", tmp_path / "missing.db")
    assert code == 2 and "no library database" in err


def test_render_default_and_presets_match_the_display_pipeline(tmp_path, capsys):
    px = gradient(20, 50, bits=12)
    path = write(
        tmp_path / "w.dcm",
        px,
        windows=[(1000.0, 800.0), (3000.0, 500.0)],
        window_explanations=["SOFT", "HARD"],
        photometric="MONOCHROME1",
    )
    out_png = tmp_path / "out" / "default.png"
    code, out, _ = run_cli(capsys, "render", path, "--out", out_png)
    assert code == 0 and "SOFT" in out
    img = np.asarray(Image.open(out_png))
    assert img.shape == (20, 50) and img.dtype == np.uint8  # native resolution, 8-bit
    # the default is the first window, MONOCHROME1 inverted after it (PS3.3 C.11.2.1.2 LINEAR)
    c, w = 1000.0, 800.0
    x = px.astype(float)
    lin = np.where(
        x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5)
    )
    assert np.array_equal(img, np.rint((1.0 - lin) * 255).astype(np.uint8))
    code, _, _ = run_cli(capsys, "render", path, "--out", tmp_path / "p2.png", "--preset", "2")
    assert code == 0
    c, w = 3000.0, 500.0
    lin2 = np.where(
        x <= c - 0.5 - (w - 1) / 2, 0.0, np.where(x > c - 0.5 + (w - 1) / 2, 1.0, (x - (c - 0.5)) / (w - 1) + 0.5)
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p2.png")), np.rint((1.0 - lin2) * 255).astype(np.uint8))
    code, _, err = run_cli(capsys, "render", path, "--out", tmp_path / "p9.png", "--preset", "9")
    assert code == 2 and "preset 9 does not exist" in err and "SOFT" in err
    assert not (tmp_path / "p9.png").exists()


def test_render_by_instance_uid_from_the_library(tmp_path, capsys):
    run_cli(capsys, "import", REAL_DCM, REAL_PNG, "--db", tmp_path / "l.db")
    uid = REAL_DCM.stem
    code, _, err = run_cli(capsys, "render", uid, "--out", tmp_path / "r.png", "--db", tmp_path / "l.db")
    assert code == 0, err
    from core_model.imaging.preprocess import load_display

    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), load_display(REAL_DCM))
    code, _, _ = run_cli(capsys, "render", REAL_PNG, "--out", tmp_path / "p.png")
    assert code == 0 and np.array_equal(np.asarray(Image.open(tmp_path / "p.png")), load_display(REAL_PNG))
    code, _, err = run_cli(capsys, "render", "1.2.3.4.5", "--out", tmp_path / "x.png", "--db", tmp_path / "l.db")
    assert code == 2 and "neither a file nor an instance UID" in err


def test_render_of_a_bad_file_is_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(REAL_DCM.read_bytes()[:5000])
    code, _, err = run_cli(capsys, "render", bad, "--out", tmp_path / "x.png")
    assert code == 2 and "Traceback" not in err and "bad.dcm" in err and err.count("\n") == 1


def test_entry_point_runs_headless_without_qt_or_torch(tmp_path):
    code = (
        "import sys\nfrom app.main import main\nrc = main(sys.argv[1:])\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'transformers')]\n"
        "print(rc, bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "import", str(REAL_DCM), "--db", str(tmp_path / "l.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_database_failure_during_import_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    import app.library.importer as importer_mod

    def full(self, summary):
        raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(importer_mod.Importer, "_flush", full)
    code, out, err = run_cli(capsys, "import", REAL_DCM, "--db", tmp_path / "l.db")
    assert code == 2 and out == ""
    assert "database or disk is full" in err and err.count("\n") == 1 and "Traceback" not in err
    monkeypatch.undo()
    from app.library import open_library
    from app.library.queries import import_runs

    lib = open_library(tmp_path / "l.db")
    with lib.session() as s:
        assert [r.status for r in import_runs(s)] == ["failed"]
    lib.close()
