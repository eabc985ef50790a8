"""The AI panel, overlays and reports panel through the real widgets, with the real exported
bundle (tests/gui/conftest.py: ``exported_bundle`` loaded by the window as the user loads it,
``loaded_bundle`` for what the runtime itself says)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.logic.overlay import heatmap_rgba, mask_rgba, stretch
from tests.gui.conftest import analysis_rows, copy_bundle, direct_analysis, make_gated, shoot, uid_of

pytestmark = pytest.mark.qt


def wait_analysis(qtbot, window, uid=None, timeout=15000):
    uid = uid or window.current_uid
    qtbot.waitUntil(
        lambda: (
            (window.current_result is not None and window.current_result.uid == uid)
            or window.analysis_error is not None
        ),
        timeout=timeout,
    )
    assert window.analysis_error is None, window.analysis_error


def shown_heat_rgba(window, heat):
    """The heatmap layer the window should show for ``heat`` with the panel's current settings."""
    _visible, _opacity, _cmap, thr = window.ai.heatmap_settings
    return heatmap_rgba(heat, window.ai.heatmap_table(), thr, window.ai.heatmap_relative)


def test_analysis_shows_probabilities_thresholds_mask_heatmap_and_reports(
    qtbot, make_window, library, exported_bundle, loaded_bundle
):
    window = make_window(bundle=exported_bundle)
    uid = uid_of(library, "anna_pa.dcm")
    assert window.browser.select_uid(uid)
    wait_analysis(qtbot, window, uid)
    direct = direct_analysis(loaded_bundle, library, uid)
    # the runtime's probabilities with the bundle's thresholds, shown as bars with the threshold marked
    assert [n for n, _, _ in window.ai.bars.items] == loaded_bundle.classes
    for name, p, t in window.ai.bars.items:
        assert p == pytest.approx(direct.probabilities[name], abs=1e-5) and t == loaded_bundle.thresholds[name]
    assert "threshold" in window.ai.bars.accessibleDescription()
    # the runtime's domain state: these synthetic shapes are unlike the tiny bundle's phantoms
    # (when its export recorded a domain), so the overlays start hidden; the user ticks them
    assert window.current_result.domain == direct.domain
    if direct.domain.status == "out_of_domain":
        assert not window.ai.mask_visible.isChecked() and not window.viewer.mask_item.isVisible()
        assert window.ai.bars.look == "out_of_domain"
        qtbot.mouseClick(window.ai.mask_visible, Qt.MouseButton.LeftButton)
        qtbot.mouseClick(window.ai.heat_visible, Qt.MouseButton.LeftButton)
    # segmentation overlay: the runtime's mask at the bundle's mask threshold, opacity 0.5, filled
    layer = window.viewer.mask_layer
    assert layer is not None and layer.rgba.shape[:2] == window.viewer.image.shape == direct.mask.shape
    expected = direct.mask >= loaded_bundle.mask_threshold
    assert expected.any(), "the tiny bundle finds no pneumothorax here: the overlay checks need one"
    assert np.array_equal(layer.rgba[..., 3] > 0, expected)
    assert window.viewer.mask_item.opacity() == pytest.approx(0.5)
    assert window.viewer.mask_item.isVisible()
    filled = int(layer.rgba[..., 3].astype(bool).sum())
    window.ai.mask_mode.setCurrentIndex(1)  # outline: the boundary of the same region
    ring = window.viewer.mask_layer.rgba[..., 3].astype(bool)
    assert ring.sum() < filled / 2 and not (ring & ~expected).any()
    window.ai.mask_opacity.setValue(80)
    assert window.viewer.mask_item.opacity() == pytest.approx(0.8)
    qtbot.mouseClick(window.ai.mask_visible, Qt.MouseButton.LeftButton)
    assert not window.viewer.mask_item.isVisible()
    qtbot.mouseClick(window.ai.mask_visible, Qt.MouseButton.LeftButton)
    # the default heatmap: the top abnormal finding's, as the runtime computes it
    from app.logic.analysis import default_heatmap_phrase

    top = default_heatmap_phrase(direct.probabilities)
    assert window.current_heat[0] == top == window.ai.phrase.text()
    np.testing.assert_allclose(window.current_heat[1], loaded_bundle.heatmap(direct, top), atol=1e-5)
    # the study's own report, and the bundle's similar reports with their scores
    phrases = [p for p, _ in window.reports.sentences()]
    assert "Focal consolidation in the left lower lobe" in phrases
    assert "FINDINGS" in window.reports.text.toPlainText()  # headings shown, not clickable
    assert "FINDINGS" not in phrases
    qtbot.waitUntil(lambda: window.reports.hits is not None and len(window.reports.hits) >= 3)
    want = loaded_bundle.similar_reports(direct, k=len(window.reports.hits))
    assert [h.id for h in window.reports.hits] == [h.id for h in want]
    assert [h.score for h in window.reports.hits] == pytest.approx([h.score for h in want], abs=1e-5)
    shown = window.reports.text.toPlainText().replace("\xa0", " ")
    assert f"#1  score {want[0].score:.3f}" in shown and want[0].text.split(".")[0] in shown
    # click a sentence of the study's report -> the runtime's heatmap of that sentence
    sentence = "Focal consolidation in the left lower lobe"
    pos = window.reports.link_position(phrases.index(sentence))
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000) as blocker:
        qtbot.mouseClick(window.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [sentence]
    assert window.reports.current == sentence  # highlighted
    np.testing.assert_allclose(window.current_heat[1], loaded_bundle.heatmap(direct, sentence), atol=1e-5)
    # a sentence of a retrieved (similar) report
    similar = [i for i, (_, src) in enumerate(window.reports.sentences()) if src.startswith("similar report #2")]
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        qtbot.mouseClick(
            window.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=window.reports.link_position(similar[0])
        )
    # a heatmap asked for says what the model card vouches for beside its source
    caveat = "heatmaps validated for " + ", ".join(loaded_bundle.validated_heatmap_findings())
    assert window.current_heat[2] == f"similar report #2; {caveat}"
    assert window.ai.heat_label.text().endswith(f"(similar report #2; {caveat})")
    assert window.current_heat[0] in want[1].text
    np.testing.assert_allclose(window.current_heat[1], loaded_bundle.heatmap(direct, window.current_heat[0]), atol=1e-5)
    pos = window.reports.link_position(phrases.index(sentence))
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        qtbot.mouseClick(window.reports.text.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert window.viewer.heat_layer is not None and window.viewer.heat_item.isVisible()
    # low heatmap values are transparent (alpha 0 below the threshold, through the table); the
    # values shown are stretched min-max over this image when "Relative" is on (the default)
    assert window.ai.heatmap_relative
    heat = window.current_heat[1]
    values = stretch(heat)
    rgba = window.viewer.heat_layer.rgba
    thr = window.ai.heatmap_settings[3]
    assert not rgba[..., 3][values < thr - 0.01].any() and rgba[..., 3][values > thr + 0.01].all()
    assert np.array_equal(rgba, shown_heat_rgba(window, heat))
    shoot(window, "ai_sentence_heatmap")
    # typed phrase -> exactly the runtime's heatmap for it; colormap and threshold
    window.ai.phrase.clear()
    qtbot.keyClicks(window.ai.phrase, "right apical pneumothorax")
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        qtbot.keyClick(window.ai.phrase, Qt.Key.Key_Return)
    assert window.current_heat[0] == "right apical pneumothorax"
    typed = loaded_bundle.heatmap(direct, "right apical pneumothorax")
    np.testing.assert_allclose(window.current_heat[1], typed, atol=1e-5)
    assert not np.allclose(typed, loaded_bundle.heatmap(direct, sentence), atol=1e-3)  # the phrase matters
    assert np.array_equal(window.viewer.heat_layer.rgba, shown_heat_rgba(window, window.current_heat[1]))
    before = window.viewer.heat_layer.rgba.copy()
    window.ai.colormap.setCurrentIndex(window.ai.colormap.findData("viridis"))
    assert not np.array_equal(before[..., :3], window.viewer.heat_layer.rgba[..., :3])
    window.ai.heat_threshold.setValue(60)
    assert window.viewer.heat_layer.rgba[..., 3].sum() < before[..., 3].sum()
    assert np.array_equal(window.viewer.heat_layer.rgba, shown_heat_rgba(window, window.current_heat[1]))
    window.ai.heat_opacity.setValue(30)
    assert window.viewer.heat_item.opacity() == pytest.approx(0.3)
    assert window.ai.colorbar.threshold == pytest.approx(0.6)
    assert window.ai.notice.isVisible() and "Research use only" in window.ai.notice.text()
    assert "Research use only" in window.notice.text()
    shoot(window, "ai_phrase_heatmap_viridis")


def test_results_are_cached_in_the_library_so_reopening_is_instant(
    qtbot, make_window, library, exported_bundle, loaded_bundle
):
    window = make_window(bundle=exported_bundle, select_first=False)
    first, second = uid_of(library, "anna_pa.dcm"), uid_of(library, "cara_pa.dcm")
    window.browser.select_uid(first)
    wait_analysis(qtbot, window, first)
    shown_first = window.current_result
    assert not shown_first.from_cache
    stored = analysis_rows(library, first)
    assert [row[:3] for row in stored] == [(shown_first.analysis_id, loaded_bundle.id, loaded_bundle.version)]
    window.browser.select_uid(second)
    wait_analysis(qtbot, window, second)
    assert len(analysis_rows(library)) == 2
    window.browser.select_uid(first)
    wait_analysis(qtbot, window, first)
    assert window.current_result is shown_first  # the window's memory: nothing run, nothing read
    assert analysis_rows(library) == [stored[0], analysis_rows(library, second)[0]]
    # a new window (new process, same library): the analysis comes from the library, not the model
    from app.gui.main_window import MainWindow

    other = MainWindow(library, select_first=False)
    qtbot.addWidget(other)
    with qtbot.waitSignal(other.bundle_changed, timeout=60000):
        other.load_bundle(str(exported_bundle))
    other.show()
    other.browser.select_uid(first)
    wait_analysis(qtbot, other, first)
    r = other.current_result
    assert r.from_cache and (r.analysis_id, r.created_at) == (stored[0][0], stored[0][3])
    assert len(analysis_rows(library)) == 2  # no new analysis stored
    direct = direct_analysis(loaded_bundle, library, first)
    for name, p in direct.probabilities.items():
        assert r.probabilities[name] == pytest.approx(p, abs=1e-5)
    assert r.mask is not None and r.heatmap is not None
    assert np.abs(r.mask - direct.mask).max() <= 0.5 / 255 + 1e-5  # stored as an 8-bit PNG
    # the top finding is in the browser now
    row = other.browser.model.rows[other.browser.model.row_of(first)]
    assert row.top_finding == max(direct.probabilities, key=direct.probabilities.get)
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


def test_model_card_dialog(qtbot, make_window, exported_bundle):
    window = make_window(bundle=exported_bundle)
    bundle = window.bundle
    window.show_model_card()
    dlg = window.model_card_dialog
    qtbot.waitExposed(dlg)
    assert bundle.id in dlg.windowTitle() and bundle.version in dlg.windowTitle()
    text = dlg.text.toPlainText()
    headings = [line.lstrip("#").strip() for line in bundle.card_markdown.splitlines() if line.startswith("## ")]
    assert headings and all(h in text for h in headings), headings
    assert "Research use only" in text and "AUROC" in text
    for encoder in bundle.card["encoders"].values():
        assert encoder["name"] in text
    shoot(dlg, "model_card")
    dlg.close()


def test_an_inconsistent_bundle_is_refused_at_load_with_its_reason(
    qtbot, make_window, library, exported_bundle, tmp_path
):
    # a real bundle whose config does not match its image graph (input size 160, graph 224): its
    # hashes are valid, but the load-time graph checks refuse it before any analysis runs
    mismatched = copy_bundle(exported_bundle, tmp_path / "mismatched", config={"preprocess": {"size": 160}})
    window = make_window(select_first=False)
    with qtbot.waitSignal(window.bundle_changed, timeout=60000):
        window.load_bundle(str(mismatched))
    assert "image graph takes input" in window.bundle_error and "re-export" in window.bundle_error
    assert "\n" not in window.bundle_error and "Traceback" not in window.bundle_error
    assert window.bundle is None
    window.browser.select_uid(uid_of(library, "cara_pa.dcm"))
    qtbot.waitUntil(window.is_idle, timeout=10000)
    assert window.current_result is None and analysis_rows(library) == []  # nothing analysed with it


def test_a_damaged_image_reaches_the_user_as_a_message_and_is_not_analysed(qtbot, make_window, library, loaded_bundle):
    # the library's managed copy of an image is damaged after import (a disk error, another
    # program): the viewer and the status bar say so in one specific line; no result is shown or
    # stored, and analysing it on request fails with a message too
    from sqlalchemy import select

    from app.library.models import Instance

    uid = uid_of(library, "cara_pa.dcm")
    with library.session() as s:
        stored = s.execute(select(Instance.file_path).where(Instance.sop_instance_uid == uid)).scalar_one()
    path = Path(stored) if Path(stored).is_absolute() else library.data_dir / stored
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - len(data) // 3])  # pixel data cut short
    window = make_window(bundle=loaded_bundle, select_first=False)
    window.browser.select_uid(uid)
    qtbot.waitUntil(lambda: window.image_error is not None, timeout=20000)
    assert "before its pixel data" in window.image_error
    assert "\n" not in window.image_error and "Traceback" not in window.image_error
    qtbot.waitUntil(window.is_idle, timeout=10000)
    assert window.current_result is None and analysis_rows(library) == []
    window.analyze_current(force=True)
    qtbot.waitUntil(lambda: window.analysis_error is not None, timeout=20000)
    assert "before its pixel data" in window.analysis_error and "\n" not in window.analysis_error
    assert "Analysis failed" in window.ai.status.text()
    assert window.current_result is None and analysis_rows(library) == []


def test_a_slow_analysis_can_be_cancelled_and_nothing_is_stored(qtbot, make_window, library, loaded_bundle):
    bundle = make_gated(loaded_bundle)  # the real bundle, held at the start of analyze()
    window = make_window(bundle=bundle, select_first=False)
    uid = uid_of(library, "cara_pa.dcm")
    window.browser.select_uid(uid)
    qtbot.waitUntil(lambda: window.ai.cancel_button.isVisible() and bundle.entered.is_set(), timeout=10000)
    assert "Analysing" in window.ai.status.text()
    qtbot.mouseClick(window.ai.cancel_button, Qt.MouseButton.LeftButton)
    assert "cancelled" in window.ai.status.text() and not window.ai.cancel_button.isVisible()
    bundle.release.set()  # the model's step in flight finishes; its result is dropped
    qtbot.waitUntil(window.is_idle, timeout=10000)
    assert window.current_result is None and window.viewer.mask_layer is None
    assert analysis_rows(library) == []  # nothing half-stored
    # the image is still there and can be analysed again
    with qtbot.waitSignal(window.analysis_shown, timeout=10000):
        qtbot.mouseClick(window.ai.analyze_button, Qt.MouseButton.LeftButton)
    r = window.current_result
    assert r is not None and r.uid == uid and not r.from_cache
    assert [row[:3] for row in analysis_rows(library, uid)] == [(r.analysis_id, bundle.id, bundle.version)]
    direct = direct_analysis(loaded_bundle, library, uid)
    assert r.probabilities == pytest.approx(direct.probabilities, abs=1e-5)
    assert "MainThread" not in bundle.threads  # inference ran in workers


def test_large_overlays_are_coloured_in_a_worker(
    qtbot, make_window, library, exported_bundle, loaded_bundle, monkeypatch
):
    import app.gui.analysis_controller as controller

    monkeypatch.setattr(controller, "INLINE_OVERLAY_PIXELS", 0)
    window = make_window(bundle=exported_bundle)
    # an image with a finding at or above its threshold: only such an image has a default heatmap
    assert window.browser.select_uid(uid_of(library, "anna_pa.dcm"))
    qtbot.waitUntil(
        lambda: window.viewer.mask_layer is not None and window.viewer.heat_layer is not None, timeout=10000
    )
    direct = direct_analysis(loaded_bundle, library, window.current_uid)
    first = window.viewer.mask_layer.rgba
    assert np.array_equal(first, mask_rgba(direct.mask, loaded_bundle.mask_threshold, "filled"))
    window.ai.mask_mode.setCurrentIndex(1)
    window.ai.mask_mode.setCurrentIndex(0)  # superseded at once: only the last one is shown
    window.ai.mask_mode.setCurrentIndex(1)
    qtbot.waitUntil(lambda: window._mask_sig is not None and window._mask_sig[1] == "outline", timeout=10000)
    ring = window.viewer.mask_layer.rgba[..., 3].astype(bool)
    assert 0 < ring.sum() < first[..., 3].astype(bool).sum()
    window.ai.mask_opacity.setValue(20)  # opacity: immediate, no new array
    assert window.viewer.mask_item.opacity() == pytest.approx(0.2)
    with qtbot.waitSignal(window.heatmap_shown, timeout=10000):
        window.ai.heat_threshold.setValue(70)
    assert window._heat_sig[2] == pytest.approx(0.7)
    assert np.array_equal(window.viewer.heat_layer.rgba, shown_heat_rgba(window, window.current_heat[1]))
