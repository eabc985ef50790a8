"""The AI panel, overlays and reports panel through the real widgets, with the numpy stand-in
bundle (tests/gui/fakes.py); test_real_bundle.py repeats the essentials with an exported bundle."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from tests.gui.conftest import shoot, uid_of
from tests.gui.fakes import FakeBundle

pytestmark = pytest.mark.qt


def wait_analysis(qtbot, window, uid=None, timeout=15000):
    uid = uid or window.current_uid
    qtbot.waitUntil(lambda: (window.current_result is not None and window.current_result.uid == uid)
                    or window.analysis_error is not None, timeout=timeout)
    assert window.analysis_error is None, window.analysis_error


def test_analysis_shows_probabilities_thresholds_mask_heatmap_and_reports(qtbot, make_window, library, fake_bundle):
    window = make_window(bundle=fake_bundle)
    uid = uid_of(library, "anna_pa.dcm")
    assert window.browser.select_uid(uid)
    wait_analysis(qtbot, window, uid)
    r = window.current_result
    # probabilities with the bundle's thresholds, shown as bars with the threshold marked
    names = [n for n, _, _ in window.ai.bars.items]
    assert names == fake_bundle.classes
    for name, p, t in window.ai.bars.items:
        assert p == pytest.approx(r.probabilities[name]) and t == fake_bundle.thresholds[name]
    assert "threshold" in window.ai.bars.accessibleDescription()
    # segmentation overlay: a second ImageItem, default opacity 0.5, filled
    layer = window.viewer.mask_layer
    assert layer is not None and layer.rgba.shape[:2] == window.viewer.image.shape
    assert window.viewer.mask_item.opacity() == pytest.approx(0.5)
    assert window.viewer.mask_item.isVisible()
    filled = int(layer.rgba[..., 3].astype(bool).sum())
    window.ai.mask_mode.setCurrentIndex(1)  # outline
    assert int(window.viewer.mask_layer.rgba[..., 3].astype(bool).sum()) < filled / 2
    window.ai.mask_opacity.setValue(80)
    assert window.viewer.mask_item.opacity() == pytest.approx(0.8)
    qtbot.mouseClick(window.ai.mask_visible, Qt.MouseButton.LeftButton)
    assert not window.viewer.mask_item.isVisible()
    qtbot.mouseClick(window.ai.mask_visible, Qt.MouseButton.LeftButton)
    # the study's own report, and similar reports with scores; click a sentence -> its heatmap
    phrases = [p for p, _ in window.reports.sentences()]
    assert "Focal consolidation in the left lower lobe" in phrases
    assert "FINDINGS" in window.reports.text.toPlainText()  # headings shown, not clickable
    assert "FINDINGS" not in phrases
    qtbot.waitUntil(lambda: window.reports.hits is not None and len(window.reports.hits) >= 3)
    assert "#1  score 0.900" in window.reports.text.toPlainText().replace("\xa0", " ")
    pos = window.reports.link_position(phrases.index("Focal consolidation in the left lower lobe"))
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000) as blocker:
        qtbot.mouseClick(window.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == ["Focal consolidation in the left lower lobe"]
    assert window.reports.current == "Focal consolidation in the left lower lobe"  # highlighted
    # a sentence of a retrieved (similar) report
    similar = [i for i, (_, src) in enumerate(window.reports.sentences()) if src.startswith("similar report #2")]
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000) as blocker2:
        qtbot.mouseClick(window.reports.text.viewport(), Qt.MouseButton.LeftButton,
                         pos=window.reports.link_position(similar[0]))
    assert window.current_heat[2] == "similar report #2"
    assert window.ai.heat_label.text().endswith("(similar report #2)")
    pos = window.reports.link_position(phrases.index("Focal consolidation in the left lower lobe"))
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        qtbot.mouseClick(window.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert window.viewer.heat_layer is not None and window.viewer.heat_item.isVisible()
    # low heatmap values are transparent (alpha 0 below the threshold, through the table)
    heat = window.current_heat[1]
    rgba = window.viewer.heat_layer.rgba
    thr = window.ai.heatmap_settings[3]
    assert not rgba[..., 3][heat < thr - 0.01].any() and rgba[..., 3][heat > thr + 0.01].all()
    shoot(window, "ai_sentence_heatmap")
    # typed phrase, colormap and threshold
    window.ai.phrase.clear()
    qtbot.keyClicks(window.ai.phrase, "right apical pneumothorax")
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        qtbot.keyClick(window.ai.phrase, Qt.Key.Key_Return)
    assert window.current_heat[0] == "right apical pneumothorax"
    before = window.viewer.heat_layer.rgba.copy()
    window.ai.colormap.setCurrentIndex(window.ai.colormap.findData("viridis"))
    assert not np.array_equal(before[..., :3], window.viewer.heat_layer.rgba[..., :3])
    window.ai.heat_threshold.setValue(60)
    assert window.viewer.heat_layer.rgba[..., 3].sum() < before[..., 3].sum()
    window.ai.heat_opacity.setValue(30)
    assert window.viewer.heat_item.opacity() == pytest.approx(0.3)
    assert window.ai.colorbar.threshold == pytest.approx(0.6)
    assert window.ai.notice.isVisible() and "Research use only" in window.ai.notice.text()
    assert "Research use only" in window.notice.text()
    shoot(window, "ai_phrase_heatmap_viridis")


def test_results_are_cached_in_the_library_so_reopening_is_instant(qtbot, make_window, library, tmp_path):
    bundle = FakeBundle()
    window = make_window(bundle=bundle)
    first, second = uid_of(library, "anna_pa.dcm"), uid_of(library, "cara_pa.dcm")
    window.browser.select_uid(first)
    wait_analysis(qtbot, window, first)
    assert not window.current_result.from_cache
    window.browser.select_uid(second)
    wait_analysis(qtbot, window, second)
    calls = bundle.calls["analyze"]
    window.browser.select_uid(first)
    wait_analysis(qtbot, window, first)
    assert bundle.calls["analyze"] == calls  # memory cache
    # a new window (new process, same library): the analysis comes from the library
    from app.gui.main_window import MainWindow

    other = MainWindow(library, select_first=False)
    qtbot.addWidget(other)
    other._bundle_loaded(("fake", bundle))
    other.show()
    other.browser.select_uid(first)
    wait_analysis(qtbot, other, first)
    assert other.current_result.from_cache and bundle.calls["analyze"] == calls
    assert other.current_result.mask is not None and other.current_result.heatmap is not None
    # the top finding is in the browser now
    row = other.browser.model.rows[other.browser.model.row_of(first)]
    assert row.top_finding is not None
    other.close()
    other.runner.wait()


def test_no_bundle_and_bad_bundle_leave_the_library_usable(qtbot, make_window, library, tmp_path):
    window = make_window()
    assert "No model loaded" in window.ai.model_label.text()
    assert not window.ai.analyze_button.isEnabled() and not window.act_analyze_all.isEnabled()
    uid = uid_of(library, "anna_pa.dcm")
    window.browser.select_uid(uid)
    qtbot.waitUntil(lambda: window.viewer.image is not None)
    bad = tmp_path / "broken_bundle"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with qtbot.waitSignal(window.bundle_changed, timeout=10000):
        window.load_bundle(str(bad))
    assert window.bundle is None and window.bundle_error
    assert "could not be loaded" in window.ai.model_label.text()
    assert window.last_error and "broken_bundle" in window.last_error
    # the library still works: select another image, review it
    window.browser.select_uid(uid_of(library, "cara_pa.dcm"))
    qtbot.waitUntil(lambda: window.viewer.image is not None and window.viewer.image.source.endswith(".dcm"))
    shoot(window, "bad_bundle_message")
    missing = tmp_path / "nowhere.zip"
    with qtbot.waitSignal(window.bundle_changed, timeout=10000):
        window.load_bundle(str(missing))
    assert "no model bundle at" in window.bundle_error


def test_model_card_dialog(qtbot, make_window, fake_bundle):
    window = make_window(bundle=fake_bundle)
    window.show_model_card()
    dlg = window.model_card_dialog
    qtbot.waitExposed(dlg)
    text = dlg.text.toPlainText()
    assert "Intended use" in text and "tiny-vit" in text and "AUROC" in text
    shoot(dlg, "model_card")
    dlg.close()


def test_analysis_error_reaches_the_user_as_a_message(qtbot, make_window, library):
    class Broken(FakeBundle):
        def analyze(self, image):
            raise RuntimeError("onnxruntime exploded\nlong traceback text")

    window = make_window(bundle=Broken())
    window.browser.select_uid(uid_of(library, "cara_pa.dcm"))
    qtbot.waitUntil(lambda: window.analysis_error is not None, timeout=10000)
    assert window.analysis_error.startswith("unexpected error (RuntimeError: onnxruntime exploded)")
    assert "Analysis failed" in window.ai.status.text()
    assert "\n" not in window.analysis_error


def test_a_slow_analysis_can_be_cancelled_and_nothing_is_stored(qtbot, make_window, library):
    bundle = FakeBundle(delay=0.6)
    window = make_window(bundle=bundle, select_first=False)
    uid = uid_of(library, "cara_pa.dcm")
    window.browser.select_uid(uid)
    qtbot.waitUntil(lambda: window.ai.cancel_button.isVisible() and bundle.calls["analyze"] == 1, timeout=10000)
    assert "Analysing" in window.ai.status.text()
    qtbot.mouseClick(window.ai.cancel_button, Qt.MouseButton.LeftButton)
    assert "cancelled" in window.ai.status.text() and not window.ai.cancel_button.isVisible()
    qtbot.waitUntil(window.is_idle, timeout=10000)
    assert window.current_result is None and window.viewer.mask_layer is None
    from app.logic.analysis import cached_analysis

    assert cached_analysis(library, uid, bundle.id, bundle.version) is None  # nothing half-stored
    # the image is still there and can be analysed again
    with qtbot.waitSignal(window.analysis_shown, timeout=10000):
        qtbot.mouseClick(window.ai.analyze_button, Qt.MouseButton.LeftButton)
    assert window.current_result is not None and window.current_result.uid == uid


def test_large_overlays_are_coloured_in_a_worker(qtbot, make_window, library, fake_bundle, monkeypatch):
    import app.gui.main_window as mw

    monkeypatch.setattr(mw, "INLINE_OVERLAY_PIXELS", 0)
    window = make_window(bundle=fake_bundle)
    qtbot.waitUntil(lambda: window.viewer.mask_layer is not None and window.viewer.heat_layer is not None,
                    timeout=10000)
    first = window.viewer.mask_layer.rgba
    window.ai.mask_mode.setCurrentIndex(1)
    window.ai.mask_mode.setCurrentIndex(0)  # superseded at once: only the last one is shown
    window.ai.mask_mode.setCurrentIndex(1)
    qtbot.waitUntil(lambda: window._mask_sig is not None and window._mask_sig[1] == "outline", timeout=10000)
    assert window.viewer.mask_layer.rgba[..., 3].astype(bool).sum() < first[..., 3].astype(bool).sum()
    window.ai.mask_opacity.setValue(20)  # opacity: immediate, no new array
    assert window.viewer.mask_item.opacity() == pytest.approx(0.2)
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        window.ai.heat_threshold.setValue(70)
    assert window._heat_sig[2] == pytest.approx(0.7)
