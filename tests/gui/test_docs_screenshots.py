"""Screenshots of each feature on the demo's SYNTHETIC phantom studies (assets/demo/studies), for
people to look at (runs/gui_screenshots/docs/; the chosen ones are copied to docs/screenshots/).
The states with a model use the real demo bundle (assets/demo/bundle), the one a user meets
first with ``adaptor-review --demo``; the domain screens add the real radiographs of
../shared/data/real (out of the demo model's domain)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PySide6.QtCore import Qt

from core_model.imaging.dicom_write import DicomSpec, write_dicom
from tests.gui.conftest import SHOTS, close_window, drag, view_to_widget

pytestmark = pytest.mark.qt
DOCS = SHOTS / "docs"


@pytest.fixture(scope="module")
def demo():
    from app.logic.demo import demo_assets

    return demo_assets()


@pytest.fixture
def phantom_window(qtbot, tmp_path, demo):
    from app.gui.main_window import MainWindow
    from app.library import open_library
    from app.library.importer import Importer

    lib = open_library(tmp_path / "lib" / "library.db")
    Importer(lib, mode="copy", fsync=False).run([demo.studies])
    window = MainWindow(lib, restore_layout=False)
    window.show()
    qtbot.waitExposed(window)
    qtbot.waitUntil(lambda: window.viewer.image is not None, timeout=20000)
    thumbs = window.browser.model.thumbs  # every row on screen has its thumbnail
    qtbot.waitUntil(lambda: all(r.sop_instance_uid in thumbs for r in window.browser.visible_rows()), timeout=30000)
    yield window
    close_window(qtbot, window)
    lib.close()


def save(widget, name: str) -> None:
    from PySide6.QtWidgets import QApplication

    for _ in range(3):  # let pending layout requests run before grabbing
        QApplication.processEvents()
    DOCS.mkdir(parents=True, exist_ok=True)
    assert widget.grab().save(str(DOCS / f"{name}.png"), "PNG")


def test_viewer_review_and_import_screens(qtbot, phantom_window, tmp_path):
    w = phantom_window
    v = w.viewer
    w.browser.table.setFocus()
    qtbot.keyClick(w.browser.table, Qt.Key.Key_2)
    qtbot.keyClick(w.browser.table, Qt.Key.Key_M)
    h, wd = v.image.shape
    drag(qtbot, v.graphics.viewport(), view_to_widget(v, wd * 0.2, h * 0.55), view_to_widget(v, wd * 0.8, h * 0.55))
    hover_at = view_to_widget(v, wd * 0.3, h * 0.4)
    from tests.gui.conftest import hover

    hover(qtbot, v.graphics.viewport(), hover_at)
    save(w, "viewer_preset_measure")
    qtbot.keyClick(w.browser.table, Qt.Key.Key_M)
    # review: flag one image with a comment, filter the browser on flagged images
    w.dock_review.raise_()
    qtbot.keyClicks(w.review.comment, "Pleural line at the left apex? Ask for an expiratory view.")
    with qtbot.waitSignal(w.review_saved, timeout=10000):
        qtbot.mouseClick(w.review.flag, Qt.MouseButton.LeftButton)
    w.browser.select_row(2)
    qtbot.waitUntil(lambda: w.current_uid == w.browser.model.rows[2].sop_instance_uid and w.viewer.image is not None)
    with qtbot.waitSignal(w.review_saved, timeout=10000):
        qtbot.mouseClick(w.review.approve, Qt.MouseButton.LeftButton)
    save(w, "review")
    w.browser.status.setCurrentIndex(3)
    save(w, "browser_flagged_filter")
    w.browser.status.setCurrentIndex(0)
    # an import in progress (progress bar and cancel in the status bar)
    many = tmp_path / "many"
    for i in range(1500):
        write_dicom(many / f"f{i:04d}.dcm", np.full((8, 8), i % 4000, np.uint16), DicomSpec(patient_id=f"P{i % 50}"))
    task = w.import_paths([str(many)])
    row = w.jobs.rows[task.id]
    qtbot.waitUntil(lambda: row.bar.maximum() > 0 and row.bar.value() > 50, timeout=60000)
    save(w, "import_progress")
    with qtbot.waitSignal(w.import_finished, timeout=60000):
        qtbot.mouseClick(row.cancel, Qt.MouseButton.LeftButton)


def _positive(sentence: str, word: str) -> bool:
    """The sentence mentions ``word`` and is not a negation ("No pneumothorax", "no ... or ...")."""
    import re

    s = sentence.lower()
    return word in s and not re.search(r"\b(no|without|absent)\b", s)


def _screen_score(w, row):
    from app.library.queries import get_instance, reports_for
    from app.logic.analysis import analyze_instance

    r = analyze_instance(w.library, w.bundle, row.sop_instance_uid)
    with w.library.session() as s:
        report = " ".join(x.text for x in reports_for(s, get_instance(s, row.sop_instance_uid)))
    says_ptx = any(_positive(sent, "pneumothorax") for sent in report.replace("\n", ".").split("."))
    has_mask = r.mask_area_fraction is not None and r.mask_area_fraction > 0.005
    return (r.domain.status == "in_domain", has_mask == says_ptx, says_ptx, r.mask_area_fraction or 0.0)


def test_model_screens(qtbot, phantom_window, demo, tmp_path):
    exported_bundle = demo.bundle
    w = phantom_window
    w.load_bundle(str(exported_bundle))
    qtbot.waitUntil(lambda: bool(w.bundle is not None or w.bundle_error), timeout=120000)
    assert w.bundle is not None, w.bundle_error
    with qtbot.waitSignal(w.batch_finished, timeout=600000):
        w.analyze_all()
    # a phantom in the model's domain whose report describes a pneumothorax, with the model's mask
    # of it (no classification finding reaches its threshold there, so no default heatmap)
    rows = w.browser.model.rows
    pick = max(rows, key=lambda row: _screen_score(w, row))
    w.browser.select_uid(pick.sop_instance_uid)
    qtbot.waitUntil(
        lambda: w.current_result is not None and w.current_result.uid == pick.sop_instance_uid and w.is_idle(),
        timeout=60000,
    )
    save(w, "main_window_analysis")
    # a sentence of the study's report -> its heatmap
    own = [i for i, (_, src) in enumerate(w.reports.sentences()) if src == "this study's report"]
    phrases = [p for p, _ in w.reports.sentences()]
    finding = next(
        (i for i in own if _positive(phrases[i], "pneumothorax")),
        next((i for i in own if any(k in phrases[i].lower() for k in ("consolidation", "opacit"))), own[-1]),
    )
    with qtbot.waitSignal(w.heatmap_shown, timeout=60000):
        qtbot.mouseClick(w.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=w.reports.link_position(finding))
    w.ai.mask_mode.setCurrentIndex(1)
    qtbot.waitUntil(w.is_idle, timeout=30000)
    save(w, "report_sentence_heatmap")
    w.show_model_card()
    qtbot.waitExposed(w.model_card_dialog)
    save(w.model_card_dialog, "model_card")
    w.model_card_dialog.close()
    out = tmp_path / "export.png"
    w.export_png(str(out))
    qtbot.waitUntil(out.exists, timeout=20000)
    shutil.copy(out, DOCS / "exported_view.png")
    # a broken bundle: the library stays usable and the panel says what is wrong
    from app.gui.main_window import MainWindow

    broken = tmp_path / "broken"
    shutil.copytree(exported_bundle, broken)
    victim = max((p for p in broken.rglob("*.onnx")), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    other = MainWindow(w.library, restore_layout=False)
    other.show()
    with qtbot.waitSignal(other.bundle_changed, timeout=120000):
        other.load_bundle(str(broken))
    qtbot.waitUntil(lambda: other.viewer.image is not None, timeout=20000)
    qtbot.waitUntil(
        lambda: all(r.sop_instance_uid in other.browser.model.thumbs for r in other.browser.visible_rows()),
        timeout=30000,
    )
    for box in other._boxes:
        box.close()
    save(other, "broken_bundle")
    close_window(qtbot, other)


def test_domain_screens(qtbot, tmp_path, demo):
    """The demo model on a real radiograph (out of its domain) and on one of its phantoms (in)."""
    from app.gui.main_window import MainWindow
    from app.library import open_library
    from app.library.importer import Importer
    from tests.real_data import real_file

    folder = tmp_path / "mixed"
    folder.mkdir()
    real = real_file("00000001_000.png")
    shutil.copy(real, folder / real.name)
    for p in sorted(demo.studies.glob("phantom-*")):
        shutil.copy(p, folder / p.name)
    lib = open_library(tmp_path / "lib" / "library.db")
    Importer(lib, mode="copy", fsync=False).run([folder])
    w = MainWindow(lib, restore_layout=False, select_first=False)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.bundle_changed, timeout=120000):
        w.load_bundle(str(demo.bundle))
    assert w.bundle is not None, w.bundle_error
    with qtbot.waitSignal(w.batch_finished, timeout=600000):
        w.analyze_all()
    rows = w.browser.model.rows
    qtbot.waitUntil(
        lambda: all(r.sop_instance_uid in w.browser.model.thumbs for r in w.browser.visible_rows()), timeout=30000
    )

    def show(row) -> None:
        w.browser.select_uid(row.sop_instance_uid)
        qtbot.waitUntil(
            lambda: w.current_result is not None and w.current_result.uid == row.sop_instance_uid and w.is_idle(),
            timeout=60000,
        )

    show(next(r for r in rows if r.source_format == "png"))
    save(w, "domain_out")
    # in domain: a phantom with a finding above its threshold, so its heatmap is drawn by default
    inside = [r for r in rows if r.top_domain == "in_domain" and r.top_finding == "pneumonia"]
    show(max(inside or [r for r in rows if r.source_format != "png"], key=lambda r: r.top_probability or 0))
    save(w, "domain_in")
    close_window(qtbot, w)
    lib.close()


def test_reader_study_screens(qtbot, phantom_window, demo):
    """Blinded labelling of a phantom, then the reveal (docs/screenshots/reader_study_*.png)."""
    w = phantom_window
    with qtbot.waitSignal(w.bundle_changed, timeout=120000):
        w.load_bundle(str(demo.bundle))
    panel = w.reader
    w.dock_reader.raise_()
    panel.reviewer.setText("Reader One")
    panel.reviewer.editingFinished.emit()
    panel.blinded.setChecked(True)
    panel.shuffle.setChecked(True)
    panel.seed.setValue(42)
    with qtbot.waitSignal(w.analysis_shown, timeout=60000):
        qtbot.mouseClick(panel.start, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(w.is_idle, timeout=60000)
    panel.row("pneumonia").buttons["agree"].click()
    panel.row("pneumonia").confidence.setCurrentIndex(3)
    panel.row("normal").buttons["disagree"].click()
    panel.row("covid19").buttons["uncertain"].click()
    qtbot.keyClicks(panel.comment, "Patchy opacity, right lower zone")
    save(w, "reader_study_blinded")
    with qtbot.waitSignal(w.reader_study.labels_saved, timeout=10000):
        qtbot.mouseClick(panel.save, Qt.MouseButton.LeftButton)
    assert w.ai_stack.currentIndex() == 0
    qtbot.waitUntil(w.is_idle, timeout=60000)
    save(w, "reader_study_revealed")
