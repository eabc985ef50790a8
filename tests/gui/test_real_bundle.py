"""The app with a real exported bundle (core_model.runtime + ``adaptor-train export``) on
phantom studies: loading through the File menu, the model card, analysis, overlays, phrase and
sentence heatmaps, similar reports, the library cache, a broken bundle, the headless
``analyze`` command and ``--bundle --screenshot``, on the phantom studies the bundle was made
for. The bundle is built once per session (``exported_bundle``, tests/gui/conftest.py); the
other GUI tests use the same bundle on the synthetic studies of ``library``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from tests.gui.conftest import SHOTS, close_window, direct_analysis, shoot

pytestmark = [pytest.mark.qt, pytest.mark.real_bundle]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def phantom_library(tmp_path, phantom_folder):
    from app.library import open_library
    from app.library.importer import Importer

    lib = open_library(tmp_path / "lib" / "library.db")
    summary = Importer(lib, mode="copy", fsync=False).run([phantom_folder])
    assert summary.imported == 8 and summary.reports == 8, summary.rejected
    yield lib
    lib.close()


def wait_result(qtbot, window, timeout=60000):
    qtbot.waitUntil(
        lambda: (
            (window.current_result is not None and window.current_result.uid == window.current_uid)
            or window.analysis_error is not None
        ),
        timeout=timeout,
    )
    assert window.analysis_error is None, window.analysis_error


def test_real_bundle_in_the_app(qtbot, phantom_library, exported_bundle, loaded_bundle, monkeypatch, tmp_path):
    from app.gui.main_window import MainWindow

    window = MainWindow(phantom_library)
    window.show()
    qtbot.waitUntil(lambda: window.viewer.image is not None, timeout=20000)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(exported_bundle))
    with qtbot.waitSignal(window.bundle_changed, timeout=120000):
        window.act_bundle_dir.trigger()
    assert window.bundle is not None, window.bundle_error
    bundle = window.bundle
    assert bundle.id in window.ai.model_label.text()
    # the model card
    window.show_model_card()
    card = window.model_card_dialog.text.toPlainText().lower()
    assert "research use only" in card
    shoot(window.model_card_dialog, "real_model_card")
    window.model_card_dialog.close()
    # analysis of the shown image: the runtime's own numbers, thresholds marked
    wait_result(qtbot, window)
    r = window.current_result
    direct = direct_analysis(loaded_bundle, window.library, r.uid)
    for c in bundle.classes:
        assert r.probabilities[c] == pytest.approx(direct.probabilities[c], abs=1e-5)
    assert [n for n, _, _ in window.ai.bars.items] == list(bundle.classes)
    assert [t for _, _, t in window.ai.bars.items] == [bundle.thresholds[c] for c in bundle.classes]
    if bundle.mask_label:
        assert window.viewer.mask_layer is not None
        assert np.array_equal(window.viewer.mask_layer.rgba[..., 3] > 0, direct.mask >= bundle.mask_threshold)
    # a typed phrase -> heatmap on the image grid
    window.ai.phrase.clear()
    qtbot.keyClicks(window.ai.phrase, "left lower lobe consolidation")
    with qtbot.waitSignal(window.heatmap_shown, timeout=60000):
        qtbot.keyClick(window.ai.phrase, Qt.Key.Key_Return)
    heat = window.current_heat[1]
    assert heat.shape == window.viewer.image.shape and 0 <= heat.min() and heat.max() <= 1
    np.testing.assert_allclose(heat, loaded_bundle.heatmap(direct, "left lower lobe consolidation"), atol=1e-5)
    # similar reports from the bundle's report bank, then a sentence of one of them
    qtbot.waitUntil(lambda: window.reports.hits is not None, timeout=60000)
    scores = [h.score for h in window.reports.hits]
    assert scores == sorted(scores, reverse=True)
    similar = [i for i, (_, src) in enumerate(window.reports.sentences()) if src.startswith("similar report #1")]
    with qtbot.waitSignal(window.heatmap_shown, timeout=60000):
        qtbot.mouseClick(
            window.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=window.reports.link_position(similar[0])
        )
    shoot(window, "real_bundle_analysis")
    # analyse all, then every row has a top finding; reopening is instant (from the library)
    with qtbot.waitSignal(window.batch_finished, timeout=300000) as blocker:
        window.analyze_all()
    assert not blocker.args[0].failed
    assert all(row.top_finding for row in window.browser.model.rows)
    close_window(qtbot, window)
    again = MainWindow(phantom_library)
    again.show()
    again.load_bundle(str(exported_bundle))
    qtbot.waitUntil(lambda: again.bundle is not None, timeout=120000)
    wait_result(qtbot, again)
    assert again.current_result.from_cache
    close_window(qtbot, again)


def test_broken_bundle_says_what_is_wrong(qtbot, phantom_library, exported_bundle, tmp_path):
    from app.gui.main_window import MainWindow

    broken = tmp_path / "broken"
    shutil.copytree(exported_bundle, broken)
    victim = max((p for p in broken.rglob("*") if p.is_file() and p.suffix == ".onnx"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    window = MainWindow(phantom_library)
    window.show()
    with qtbot.waitSignal(window.bundle_changed, timeout=120000):
        window.load_bundle(str(broken))
    assert window.bundle is None
    assert (
        victim.name in window.bundle_error
        or "sha" in window.bundle_error.lower()
        or "checksum" in window.bundle_error.lower()
    ), window.bundle_error
    assert "could not be loaded" in window.ai.model_label.text()
    shoot(window, "real_broken_bundle")
    close_window(qtbot, window)


def test_headless_analyze_and_screenshot_with_the_bundle(phantom_library, exported_bundle, tmp_path, isolated_settings):
    from app.logic.predictions_csv import read_predictions_csv

    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env["XDG_CONFIG_HOME"] = str(isolated_settings)
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.main",
            "analyze",
            "--all",
            "--bundle",
            str(exported_bundle),
            "--csv",
            str(out),
            "--db",
            str(phantom_library.db_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = read_predictions_csv(out)
    assert len(rows) == 8 and all(not r["error"] for r in rows)
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.main",
            "--db",
            str(phantom_library.db_path),
            "--bundle",
            str(exported_bundle),
            "--screenshot",
            str(shot),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[1] > 1000
    Image.fromarray(img).save(SHOTS / "real_cli_screenshot_with_bundle.png")
