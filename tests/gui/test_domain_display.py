"""The honest app: what the review app shows when the model cannot vouch for an image, with the
real demo bundle (assets/demo/bundle, trained on synthetic phantoms), the real runtime and real
images: the two real radiographs of ../shared/data/real (out of the demo model's domain), the
demo's own phantom studies (in its domain), and a phantom written as a lateral view.

Checked through the real widgets: the AI panel's domain message and greyed bars, overlays off
by default out of domain, the browser's finding column, the PNG legend and the CSV, the
synthetic-model banner, no remembered demo bundle for another library, a refused bundle never
remembered, no default heatmap below threshold (and the relative stretch labelled with the raw
map's peak-to-mean ratio), and the analysis cache keyed by the bundle's content hash."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.gui.conftest import analysis_rows, close_window, copy_bundle, direct_analysis, uid_of
from tests.real_data import real_file

pytestmark = [pytest.mark.qt, pytest.mark.real_bundle]

REAL_PNG = "00000001_000.png"
REAL_DCM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


@pytest.fixture(scope="module")
def demo():
    from app.logic.demo import demo_assets

    return demo_assets()


@pytest.fixture(scope="module")
def demo_bundle(demo):
    from app.logic.bundles import gui_threads, open_bundle

    return open_bundle(demo.bundle, threads=gui_threads())


def needs_domain(bundle) -> None:
    if not isinstance(bundle.card.get("domain"), dict):
        pytest.skip("the demo bundle's model card records no training domain yet (assets/demo not rebuilt)")


def open_lib(tmp_path, name: str, files: list[Path]):
    from app.library import open_library
    from app.library.importer import Importer

    folder = tmp_path / f"{name}-files"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder / f.name)
    lib = open_library(tmp_path / name / "library.db")
    summary = Importer(lib, mode="copy", fsync=False).run([folder])
    assert summary.imported == len(files), summary.rejected
    return lib


@pytest.fixture
def windows(qtbot):
    from app.gui.main_window import MainWindow

    made, libs = [], []

    def make(lib, bundle=None, **kwargs):
        window = MainWindow(lib, restore_layout=False, **kwargs)
        window.show()
        qtbot.waitExposed(window)
        made.append(window)
        if lib not in libs:
            libs.append(lib)
        if bundle is not None:
            with qtbot.waitSignal(window.bundle_changed, timeout=120000):
                window.load_bundle(str(bundle))
        return window

    yield make
    for window in made:
        close_window(qtbot, window)
    for lib in libs:
        lib.close()


def wait_result(qtbot, window, uid: str, timeout: int = 60000):
    assert window.browser.select_uid(uid)
    qtbot.waitUntil(
        lambda: (
            (window.current_result is not None and window.current_result.uid == uid and window.is_idle())
            or window.analysis_error is not None
        ),
        timeout=timeout,
    )
    assert window.analysis_error is None, window.analysis_error
    return window.current_result


def finding_cell(window, uid: str) -> str:
    model = window.browser.model
    return model.cell_text(model.rows[model.row_of(uid)], 6)


def red_pixels(widget) -> int:
    """How many pixels of the widget are painted in the bars' "above threshold" red."""
    img = widget.grab().toImage()
    ptr = img.convertToFormat(img.Format.Format_RGB888)
    arr = np.frombuffer(ptr.constBits(), np.uint8).reshape(ptr.height(), ptr.bytesPerLine())[:, : ptr.width() * 3]
    rgb = arr.reshape(ptr.height(), ptr.width(), 3).astype(int)
    return int((np.abs(rgb - np.array([214, 69, 50])).sum(axis=2) < 30).sum())


def phantom_dicoms(demo) -> list[Path]:
    return sorted(demo.studies.glob("*.dcm"))


# -- out of domain: real radiographs ---------------------------------------------------------------


def test_real_radiographs_are_shown_out_of_domain(qtbot, windows, tmp_path, demo, demo_bundle):
    needs_domain(demo_bundle)
    from app.gui.ai_panel import OUT_OF_DOMAIN_TEXT
    from app.logic.predictions_csv import read_predictions_csv

    lib = open_lib(tmp_path, "real", [real_file(REAL_PNG), real_file(REAL_DCM)])
    window = windows(lib, bundle=demo.bundle, select_first=False)
    assert window.bundle is not None, window.bundle_error
    for name in (REAL_PNG, REAL_DCM):
        uid = uid_of(lib, name)
        r = wait_result(qtbot, window, uid)
        direct = direct_analysis(demo_bundle, lib, uid)
        assert direct.domain.status == "out_of_domain", (name, direct.domain)
        # the panel: the runtime's state, prominent, with its reasons; bars grey, nothing marked above
        assert r.domain == direct.domain
        ai = window.ai
        assert ai.domain_label.isVisible() and OUT_OF_DOMAIN_TEXT in ai.domain_label.text()
        for reason in direct.domain.reasons:
            assert reason.split(":")[0] in ai.domain_label.text().replace("&quot;", '"').replace("&#x27;", "'")
        assert ai.bars.look == "out_of_domain"
        assert "not meaningful" in ai.bars.accessibleDescription()
        assert not red_pixels(ai.bars), "an out-of-domain probability is painted like a finding"
        # overlays off by default: the mask and any heatmap are hidden until the user ticks them
        assert not ai.mask_visible.isChecked() and not ai.heat_visible.isChecked()
        assert window.viewer.mask_layer is None or not window.viewer.mask_item.isVisible()
        assert window.viewer.heat_layer is None or not window.viewer.heat_item.isVisible()
        # the browser's finding column and its colour
        assert finding_cell(window, uid).startswith("⚠ out of domain")
        # the PNG legend
        legend = window.export_legend()
        assert any(line.startswith("OUT OF DOMAIN") for line in legend.lines)
    # ticking "Show mask" shows it for this image without changing the saved preference
    if window.current_result.mask is not None:
        window.ai.mask_visible.setChecked(True)
        assert window.viewer.mask_layer is not None and window.viewer.mask_item.isVisible()
        assert window.settings.get("overlay/mask_visible") is True  # the default, untouched
    # a heatmap the user asks for is shown
    with qtbot.waitSignal(window.heatmap_shown, timeout=60000):
        window.request_heatmap("pneumonia", "typed phrase")
    assert window.viewer.heat_item.isVisible() and window.ai.heat_visible.isChecked()
    # the CSV of both images carries the state
    out = tmp_path / "p.csv"
    uids = [uid_of(lib, REAL_PNG), uid_of(lib, REAL_DCM)]
    window.export_csv(uids, str(out))
    qtbot.waitUntil(out.exists, timeout=20000)
    rows = read_predictions_csv(out)
    assert [r["domain_status"] for r in rows] == ["out_of_domain", "out_of_domain"]
    for row in rows:
        state = direct_analysis(demo_bundle, lib, row["sop_instance_uid"]).domain
        assert float(row["domain_score"]) == pytest.approx(state.score, rel=1e-5)
        assert float(row["domain_threshold"]) == pytest.approx(state.threshold, rel=1e-5)  # 6 digits
        assert row["domain_reasons"] == "; ".join(state.reasons)
    assert "not meaningful" in out.read_text().splitlines()[0]


# -- in domain: the demo's own phantoms --------------------------------------------------------------


def test_demo_phantom_is_shown_in_domain_with_its_overlays(qtbot, windows, tmp_path, demo, demo_bundle):
    needs_domain(demo_bundle)
    files = phantom_dicoms(demo)[:4]
    lib = open_lib(tmp_path, "phantoms", files)
    window = windows(lib, bundle=demo.bundle, select_first=False)
    states = {f.name: direct_analysis(demo_bundle, lib, uid_of(lib, f.name)).domain for f in files}
    inside = [n for n, s in states.items() if s.ok]
    assert len(inside) >= 3, states  # the demo's phantoms are what it was trained on
    r = wait_result(qtbot, window, uid_of(lib, inside[0]))
    assert r.domain.ok and window.ai.bars.look == "in_domain"
    above = [c for c in r.probabilities if r.above_threshold(c)]
    assert bool(red_pixels(window.ai.bars)) == bool(above)  # in domain: a finding is painted red
    assert "In the model's training domain" in window.ai.domain_label.text()
    assert window.ai.mask_visible.isChecked() and window.ai.heat_visible.isChecked()
    if r.mask is not None and (r.mask >= r.mask_threshold).any():
        assert window.viewer.mask_item.isVisible()
    assert not finding_cell(window, r.uid).startswith("⚠")
    assert "(domain unknown)" not in finding_cell(window, r.uid)


# -- the view check ------------------------------------------------------------------------------


def test_a_lateral_phantom_is_flagged(qtbot, windows, tmp_path, demo, demo_bundle):
    needs_domain(demo_bundle)
    import pydicom
    from pydicom.uid import generate_uid

    src = phantom_dicoms(demo)[0]
    ds = pydicom.dcmread(src)
    ds.ViewPosition = "LL"
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    lateral = tmp_path / "lateral.dcm"
    ds.save_as(lateral)
    lib = open_lib(tmp_path, "lateral", [src, lateral])
    window = windows(lib, bundle=demo.bundle, select_first=False)
    frontal = wait_result(qtbot, window, uid_of(lib, src.name))
    r = wait_result(qtbot, window, uid_of(lib, "lateral.dcm"))
    assert frontal.domain.ok, frontal.domain  # the same pixels as a frontal view: in domain
    assert r.domain.status == "out_of_domain" and "view" in r.domain.codes, r.domain
    assert any("lateral" in reason for reason in r.domain.reasons)
    assert "lateral" in window.ai.domain_label.text()
    assert window.ai.bars.look == "out_of_domain"
    assert finding_cell(window, r.uid).startswith("⚠ out of domain")
    # the probabilities are the model's all the same (only the display is honest about them)
    assert r.probabilities == pytest.approx(frontal.probabilities, abs=1e-6)


# -- default heatmap -----------------------------------------------------------------------------


def test_no_default_heatmap_below_threshold_and_the_stretch_says_what_it_stretched(
    qtbot, windows, tmp_path, demo, demo_bundle
):
    from app.logic.analysis import LOW_CONTRAST_PEAK_TO_MEAN, default_heatmap_finding, default_heatmap_phrase

    files = phantom_dicoms(demo)
    lib = open_lib(tmp_path, "heat", files)
    by_name = {}
    for f in files:
        d = direct_analysis(demo_bundle, lib, uid_of(lib, f.name))
        by_name[f.name] = d
    below = [n for n, d in by_name.items() if default_heatmap_phrase(d.probabilities, demo_bundle.thresholds) is None]
    above = [n for n, d in by_name.items() if n not in below]
    assert below and above, "the demo studies hold both normal and abnormal phantoms"
    window = windows(lib, bundle=demo.bundle, select_first=False)
    # below threshold: no heatmap until the user asks for one
    r = wait_result(qtbot, window, uid_of(lib, below[0]))
    assert r.heatmap is None and r.heatmap_phrase is None
    assert window.current_heat is None and window.viewer.heat_layer is None
    assert "No finding reaches its threshold" in window.ai.heat_label.text()
    with qtbot.waitSignal(window.heatmap_shown, timeout=60000):
        window.request_heatmap("pneumonia", "typed phrase")
    raw = demo_bundle.patch_heatmap(by_name[below[0]], "pneumonia")
    assert raw.sum() == pytest.approx(1.0, abs=1e-4)
    ratio = float(raw.max() / raw.mean())
    assert window.current_heat[3] == pytest.approx(ratio, rel=1e-4)
    assert f"peak {ratio:.2f} times the mean" in window.ai.heat_contrast.text()
    if ratio < LOW_CONTRAST_PEAK_TO_MEAN:
        assert "low contrast" in window.ai.heat_contrast.text()
    assert any(f"peak {ratio:.2f}" in line for line in window.export_legend().lines)
    # at or above threshold: the finding's heatmap by default (the card vouches for it: the phrase
    # is the prompt its grounding was validated with), with the same label
    r = wait_result(qtbot, window, uid_of(lib, above[0]))
    d = by_name[above[0]]
    verdict = demo_bundle.grounding(default_heatmap_finding(d.probabilities, demo_bundle.thresholds))
    assert verdict.validated and verdict.prompt
    phrase = verdict.prompt
    assert r.heatmap_phrase == phrase and window.current_heat[0] == phrase
    raw = demo_bundle.patch_heatmap(d, phrase)
    assert r.heatmap_peak_to_mean == pytest.approx(float(raw.max() / raw.mean()), rel=1e-4)
    np.testing.assert_allclose(window.current_heat[1], demo_bundle.heatmap(d, phrase), atol=1e-5)
    assert "above its threshold" in window.ai.heat_label.text()


# -- the synthetic bundle ------------------------------------------------------------------------


def test_synthetic_bundle_banner_and_never_remembered_for_another_library(qtbot, windows, tmp_path, demo, demo_bundle):
    needs_domain(demo_bundle)
    from app.gui.ai_panel import SYNTHETIC_NOTICE

    assert demo_bundle.synthetic
    lib = open_lib(tmp_path, "demo", phantom_dicoms(demo)[:1])
    window = windows(lib, bundle=demo.bundle)
    assert window.bundle is not None and window.bundle.synthetic
    assert window.synthetic_banner.isVisible() and SYNTHETIC_NOTICE in window.synthetic_banner.text()
    assert SYNTHETIC_NOTICE in window.ai.model_label.text()
    assert SYNTHETIC_NOTICE in window.export_legend().lines[0]
    # loaded on purpose, shown with the banner, never written down as the default
    assert not window.settings.get("model/last_bundle")
    assert window.remembered_bundle() is None
    # a library of real images opened next: no model is loaded by itself
    real = open_lib(tmp_path, "real", [real_file(REAL_PNG)])
    other = windows(real)
    assert not other.load_remembered_bundle() and other.bundle is None and not other.bundle_loading
    # the demo bundle remembered by an older version of the app: refused for this library, forgotten
    other.settings.set("model/last_bundle", str(demo.bundle))
    with qtbot.waitSignal(other.bundle_changed, timeout=120000):
        assert other.load_remembered_bundle()
    assert other.bundle is None and "synthetic" in other.bundle_error
    assert "synthetic" in other.ai.model_label.text()
    assert not other.synthetic_banner.isVisible()
    assert not other.settings.get("model/last_bundle")


def test_a_bundle_that_cannot_run_is_refused_and_never_remembered(qtbot, windows, tmp_path, demo, demo_bundle):
    """A truncated image graph with its hash re-computed passes the checksums; the runtime's smoke
    inference refuses it, the panel says why, and it does not become (or stay) the default."""
    broken = tmp_path / "truncated"
    shutil.copytree(demo.bundle, broken)
    graph = broken / "image.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"]["image.onnx"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest, indent=2))
    lib = open_lib(tmp_path, "lib", phantom_dicoms(demo)[:1])
    window = windows(lib)
    window.settings.set("model/last_bundle", str(broken))  # e.g. it was a working bundle last time
    assert window.remembered_bundle() == str(broken)
    with qtbot.waitSignal(window.bundle_changed, timeout=120000):
        window.load_bundle(str(broken))
    assert window.bundle is None and window.bundle_error
    assert "could not be loaded" in window.ai.model_label.text()
    assert window.bundle_error.split(":")[0] in window.ai.model_label.text()
    assert not window.settings.get("model/last_bundle") and window.remembered_bundle() is None
    assert not window.act_analyze_all.isEnabled()


# -- the cache is keyed by the bundle's content ----------------------------------------------------


def test_cached_results_are_keyed_by_the_bundles_content_hash(qtbot, windows, tmp_path, demo, demo_bundle):
    from app.logic import analysis as A

    # a second copy of the demo bundle, same id and version, another manifest (a threshold moved)
    second = copy_bundle(
        demo.bundle,
        tmp_path / "second",
        config={"thresholds": {c: round(t + 0.01, 6) for c, t in demo_bundle.thresholds.items()}},
    )
    from app.logic.bundles import open_bundle

    other = open_bundle(second)
    assert (other.id, other.version) == (demo_bundle.id, demo_bundle.version)
    assert other.content_hash != demo_bundle.content_hash
    files = phantom_dicoms(demo)[:2]
    lib = open_lib(tmp_path, "cache", files)
    uid = uid_of(lib, files[0].name)
    window = windows(lib, bundle=demo.bundle, select_first=False)
    first = wait_result(qtbot, window, uid)
    assert not first.from_cache and first.bundle_hash == demo_bundle.content_hash
    # the same library, the second bundle: never the first one's stored result
    with qtbot.waitSignal(window.bundle_changed, timeout=120000):
        window.load_bundle(str(second))
    qtbot.waitUntil(
        lambda: (
            window.current_result is not None
            and window.current_result.bundle_hash == other.content_hash
            and window.is_idle()
        ),
        timeout=60000,
    )
    r = window.current_result
    assert not r.from_cache and r.analysis_id != first.analysis_id
    assert r.thresholds == pytest.approx(other.thresholds)
    assert len(analysis_rows(lib, uid)) == 2
    # back to the first bundle (a new window: nothing in memory): its own stored row, same state
    fresh = windows(lib, bundle=demo.bundle, select_first=False)
    again = wait_result(qtbot, fresh, uid)
    assert again.from_cache and again.analysis_id == first.analysis_id and again.domain == first.domain
    assert len(analysis_rows(lib, uid)) == 2
    # a row stored before the library recorded hashes is never shown as a loaded bundle's
    from sqlalchemy import update

    from app.library.models import Analysis

    with lib.write() as s:
        s.execute(update(Analysis).values(bundle_hash=None))
    assert (
        A.cached_analysis(lib, uid, demo_bundle.id, demo_bundle.version, bundle_hash=demo_bundle.content_hash) is None
    )
    assert A.unanalysed_uids(
        lib, demo_bundle.id, demo_bundle.version, bundle_hash=demo_bundle.content_hash
    ) == A.all_instance_uids(lib)
    third = windows(lib, bundle=demo.bundle, select_first=False)
    r = wait_result(qtbot, third, uid)
    assert not r.from_cache and len(analysis_rows(lib, uid)) == 3


def test_cached_result_keeps_its_domain_state(qtbot, windows, tmp_path, demo, demo_bundle):
    needs_domain(demo_bundle)
    lib = open_lib(tmp_path, "real", [real_file(REAL_PNG)])
    uid = uid_of(lib, REAL_PNG)
    window = windows(lib, bundle=demo.bundle, select_first=False)
    first = wait_result(qtbot, window, uid)
    assert first.domain.status == "out_of_domain"
    text = window.ai.domain_label.text()
    fresh = windows(lib, bundle=demo.bundle, select_first=False)
    again = wait_result(qtbot, fresh, uid)
    assert again.from_cache and again.domain == first.domain
    assert fresh.ai.domain_label.text() == text and fresh.ai.bars.look == "out_of_domain"
    assert finding_cell(fresh, uid).startswith("⚠ out of domain")


def test_a_bundle_without_a_domain_record_is_shown_as_unknown(qtbot, windows, tmp_path, demo, demo_bundle):
    """Bundles exported before the domain guard: "the model cannot say", never like in domain."""
    from app.gui.ai_panel import UNKNOWN_TEXT

    old = copy_bundle(demo.bundle, tmp_path / "no-domain", config={"domain": None})
    lib = open_lib(tmp_path, "lib", phantom_dicoms(demo)[:1])
    window = windows(lib, bundle=old, select_first=False)
    assert window.bundle is not None, window.bundle_error
    assert window.bundle.domain_model is None
    r = wait_result(qtbot, window, uid_of(lib, phantom_dicoms(demo)[0].name))
    assert r.domain.status == "unknown"
    assert UNKNOWN_TEXT in window.ai.domain_label.text() and window.ai.bars.look == "unknown"
    assert "domain unknown" in window.ai.bars.accessibleDescription()
    assert window.ai.mask_visible.isChecked()  # overlays as the user set them: less alarming than out of domain
    assert finding_cell(window, r.uid).endswith("(domain unknown)")
    assert any(line.startswith("Domain: domain unknown") for line in window.export_legend().lines)


# -- heatmaps the model card does not vouch for (issue 16) -----------------------------------------


def test_heatmap_withheld_when_the_card_does_not_vouch_for_the_finding(qtbot, windows, tmp_path, demo, demo_bundle):
    """The same demo model with a card whose validation says pneumonia's grounding did not beat
    the positional prior: a pneumonia phantom gets no default heatmap, and the panel says why; a
    phrase the user types is still drawn, with the card's verdicts beside it."""
    from tests.gui.conftest import shoot

    card = json.loads((demo.bundle / "model_card.json").read_text())
    grounding = card["grounding"]
    grounding["per_finding"]["pneumonia"] = {
        **grounding["per_finding"]["pneumonia"],
        "validated": False,
        "pointing_game": 0.0,  # the recipe without weak supervision measured 0.00 vs a prior of 0.37
        "positional_prior": 0.37,
    }
    folder = copy_bundle(demo.bundle, tmp_path / "unvouched" / "bundle", card={"grounding": grounding})
    files = phantom_dicoms(demo)
    lib = open_lib(tmp_path, "withheld", files)
    pneumonia = [
        f for f in files
        if max((d := direct_analysis(demo_bundle, lib, uid_of(lib, f.name))).probabilities.items(), key=lambda kv: kv[1])[0]
        == "pneumonia" and d.probabilities["pneumonia"] >= demo_bundle.thresholds["pneumonia"]
    ]  # fmt: skip
    assert pneumonia, "the demo studies hold a pneumonia phantom above its threshold"
    window = windows(lib, bundle=folder, select_first=False)
    r = wait_result(qtbot, window, uid_of(lib, pneumonia[0].name))
    assert r.heatmap is None and r.heatmap_phrase is None and window.current_heat is None
    label = window.ai.heat_label.text()
    assert "no reliable heatmap for pneumonia" in label and "positional prior 37 %" in label
    shoot(window.ai, "heatmap_withheld_panel")
    with qtbot.waitSignal(window.heatmap_shown, timeout=60000):
        window.request_heatmap("consolidation", "typed phrase")
    assert window.current_heat is not None and "not for pneumonia" in window.current_heat[2]
    assert "not for pneumonia" in window.ai.heat_label.text()
