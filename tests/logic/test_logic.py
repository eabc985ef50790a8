"""The Qt-free logic under the widgets: rendering and window/level, readout, distances, overlays
and compositing, report sentences, the analysis cache policy, the predictions CSV."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from app.logic.image import Spacing, WindowState, drag_window, load_image, measure, spacing_of
from app.logic.overlay import (
    Layer,
    Legend,
    composite,
    export_view_png,
    heatmap_rgba,
    mask_rgba,
    outline,
    threshold_lut,
    visible_box,
)
from app.logic.report_text import split_sentences
from core_model.imaging.dicom import read_dataset, render_dataset
from core_model.imaging.dicom_write import DicomSpec, write_dicom
from tests.gui.conftest import analysis_rows, chest, direct_analysis, uid_of

# -- rendering ---------------------------------------------------------------------------------


def _write(tmp_path, name, pixels, **spec):
    return write_dicom(tmp_path / name, pixels, DicomSpec(**spec))


def test_fast_windowing_equals_the_library_pipeline(tmp_path, study_files):
    from tests.imaging.builders import make_voi_lut_item

    files = dict(study_files)
    files["signed"] = _write(
        tmp_path,
        "signed.dcm",
        (chest(64, 80, 3).astype(np.int16) - 2048),
        rescale_slope=2.0,
        rescale_intercept=-1000.0,
        windows=[(-800, 1500), (0, 400)],
        voi_lut_function="LINEAR_EXACT",
    )
    lut = write_dicom(tmp_path / "lut.dcm", chest(50, 60, 4), DicomSpec())
    ds = read_dataset(lut)
    from pydicom.sequence import Sequence

    ds.VOILUTSequence = Sequence(
        [make_voi_lut_item(0, [int(v) for v in np.linspace(0, 65535, 4096)], explanation="CURVE")]
    )
    ds.save_as(lut)
    files["voi_lut"] = lut
    padded = chest(40, 50, 5)
    padded[:5] = 0
    files["padding"] = _write(tmp_path, "pad.dcm", padded, extra={"PixelPaddingValue": 0})
    for name, path in files.items():
        if path.suffix == ".png":
            continue
        img = load_image(path)
        ds = read_dataset(path)
        assert img._lut_base is not None, name
        for i in range(len(img.presets)):
            for inv in (False, True):
                assert np.array_equal(
                    img.render(WindowState(preset=i, invert=inv)), render_dataset(ds, i, user_invert=inv)
                ), (name, i, inv)
        for c, w in ((1500.0, 800.0), (-100.5, 1.0), (3000.0, 10000.0), (2047.5, 2.5)):
            assert np.array_equal(
                img.render(WindowState(preset=None, center=c, width=w)), render_dataset(ds, center=c, width=w)
            ), (name, c, w)
        assert img.presets[-1].kind == "full_range"
    assert load_image(files["voi_lut"]).preset_label(0) == "CURVE"


def test_non_integer_modality_values_take_the_exact_slow_path(tmp_path):
    path = _write(
        tmp_path, "frac.dcm", chest(40, 30, 1), rescale_slope=0.37, rescale_intercept=1.5, windows=[(700, 900)]
    )
    img = load_image(path)
    ds = read_dataset(path)
    assert img._lut_base is None and img.values.dtype == np.float64
    assert np.array_equal(img.render(), render_dataset(ds))
    assert np.array_equal(
        img.render(WindowState(None, 600.0, 300.0, True)),
        render_dataset(ds, center=600.0, width=300.0, user_invert=True),
    )


def test_png_window_and_invert(study_files):
    img = load_image(study_files["png"])
    from core_model.imaging.preprocess import load_display

    base = load_display(study_files["png"])
    assert not img.is_dicom and img.presets == []
    assert np.array_equal(img.render(), base)
    assert np.array_equal(img.render(WindowState(invert=True)), 255 - base)
    narrow = img.render(WindowState(None, 128.0, 20.0))
    assert set(np.unique(narrow[base < 110])) == {0} and set(np.unique(narrow[base > 146])) == {255}
    assert img.readout(3.2, 4.9).startswith("x 3, y 4   8-bit value")


def test_drag_window_direction_and_scale():
    c, w = drag_window(1000, 500, dx=100, dy=-50, span=4095)
    assert w > 500 and c < 1000
    assert drag_window(1000, 500, 512, 0, 4095)[1] == pytest.approx(500 + 4095)  # 512 px = the value range
    assert drag_window(10, 5, -1000, 0, 255)[1] == 1.0  # never below 1
    c8, w8 = drag_window(128, 256, 100, 0, 255)
    assert w8 - 256 == pytest.approx(100 * 255 / 512)


def test_spacing_and_distances_are_honest(tmp_path):
    both = read_dataset(
        _write(tmp_path, "a.dcm", chest(8, 8, 1), pixel_spacing=(0.1, 0.2), imager_pixel_spacing=(0.15, 0.15))
    )
    assert spacing_of(both) == Spacing(0.1, 0.2, "PixelSpacing")
    d = measure(0, 0, 30, 40, spacing_of(both))  # x = columns (0.2 mm), y = rows (0.1 mm)
    assert d.pixels == 50 and d.mm == pytest.approx(math.hypot(30 * 0.2, 40 * 0.1)) and d.text == "7.2 mm"
    det = read_dataset(
        _write(
            tmp_path,
            "b.dcm",
            chest(8, 8, 1),
            imager_pixel_spacing=(0.2, 0.2),
            extra={"EstimatedRadiographicMagnificationFactor": 1.25},
        )
    )
    s = spacing_of(det)
    assert s.kind == "ImagerPixelSpacing" and s.magnification == 1.25
    d = measure(0, 0, 100, 0, s)
    assert d.text == "20.0 mm at the detector (~16.0 mm at the patient, est. magnification 1.25)"
    assert "at the detector, not corrected for magnification" in s.describe()
    none = read_dataset(_write(tmp_path, "c.dcm", chest(8, 8, 1), imager_pixel_spacing=None))
    assert spacing_of(none) is None and measure(0, 0, 3, 4, None).text == "5.0 px (no pixel spacing in the file)"
    bad = read_dataset(_write(tmp_path, "d.dcm", chest(8, 8, 1), imager_pixel_spacing=None, pixel_spacing=(0, 0.2)))
    assert spacing_of(bad) is None


def test_units(tmp_path):
    ct = load_image(
        _write(
            tmp_path,
            "ct.dcm",
            chest(8, 8, 1),
            rescale_intercept=-1024.0,
            rescale_slope=1.0,
            extra={"RescaleType": "HU"},
        )
    )
    assert ct.units == "HU" and ct.readout(1, 1).endswith(" HU")
    plain = load_image(_write(tmp_path, "dx.dcm", chest(8, 8, 1), rescale_slope=1.0, rescale_intercept=0.0))
    assert plain.units == "" and plain.readout(1, 1).endswith("(no unit in the file)")  # RescaleType US
    assert plain.readout(-1, 0) == "" and plain.readout(8, 0) == ""


# -- overlays -----------------------------------------------------------------------------------


def test_threshold_lut_and_heatmap_rgba():
    table = np.stack([np.arange(256)] * 3, axis=1).astype(np.uint8)
    lut = threshold_lut(table, 0.5)
    assert lut.shape == (256, 4) and lut[127, 3] == 0 and lut[128, 3] == 255
    heat = np.array([[0.0, 0.49], [0.51, 1.0]], np.float32)
    rgba = heatmap_rgba(heat, table, 0.5)
    assert rgba[..., 3].tolist() == [[0, 0], [255, 255]]
    assert rgba[1, 1, :3].tolist() == [255, 255, 255] and rgba[1, 0, 0] == 130
    with pytest.raises(ValueError):
        threshold_lut(np.zeros((10, 3), np.uint8), 0.1)
    float_table = threshold_lut(table.astype(np.float64) / 255.0, 0.0)
    assert np.array_equal(float_table[:, :3], table)


def test_mask_filled_and_outline():
    mask = np.zeros((20, 20), np.float32)
    mask[5:15, 4:12] = 0.9
    filled = mask_rgba(mask, 0.5, "filled")
    assert filled[..., 3].astype(bool).sum() == 80 and filled[10, 8].tolist() == [40, 200, 255, 255]
    ring = mask_rgba(mask, 0.5, "outline", thickness=1)
    assert ring[..., 3].astype(bool).sum() == 2 * 10 + 2 * 8 - 4
    assert ring[10, 8, 3] == 0 and ring[5, 8, 3] == 255
    assert mask_rgba((mask * 255).astype(np.uint8), 0.5)[..., 3].astype(bool).sum() == 80  # library PNG masks
    edge = np.ones((6, 6), bool)
    assert outline(edge, 1).sum() == 20  # the image border counts as outside
    with pytest.raises(ValueError):
        mask_rgba(mask, 0.5, "dotted")


def test_composite_matches_alpha_blending_with_opacity():
    base = np.full((2, 2), 100, np.uint8)
    red = np.zeros((2, 2, 4), np.uint8)
    red[..., 0] = 255
    red[0, 0, 3] = 255
    blue = np.zeros((2, 2, 4), np.uint8)
    blue[..., 2] = 200
    blue[..., 3] = 128
    out = composite(base, [Layer(red, 0.5), Layer(blue, 0.25)])
    a1 = 0.5
    first = np.array([100 * (1 - a1) + 255 * a1, 100 * (1 - a1), 100 * (1 - a1)])
    a2 = 0.25 * 128 / 255
    expected = first * (1 - a2) + np.array([0, 0, 200]) * a2
    assert out[0, 0].tolist() == np.rint(expected).astype(int).tolist()
    a2only = np.array([100, 100, 100]) * (1 - a2) + np.array([0, 0, 200]) * a2
    assert out[1, 1].tolist() == np.rint(a2only).astype(int).tolist()
    assert composite(base, [Layer(red, 0.5, visible=False)])[0, 0].tolist() == [100, 100, 100]
    with pytest.raises(ValueError):
        composite(base, [Layer(np.zeros((3, 3, 4), np.uint8))])


def test_visible_box_and_export(tmp_path):
    assert visible_box((-10, -10, 500, 500), (100, 80)) == (0, 100, 0, 80)
    assert visible_box((10.5, 20.2, 30.1, 40.9), (100, 80)) == (20, 41, 10, 31)
    assert visible_box((200, 200, 300, 300), (100, 80)) == (0, 100, 0, 80)  # nothing visible: all
    base = (np.arange(100 * 80) % 256).astype(np.uint8).reshape(100, 80)
    heat = np.linspace(0, 1, 100 * 80, dtype=np.float32).reshape(100, 80)
    table = np.stack([np.arange(256), np.zeros(256), 255 - np.arange(256)], axis=1).astype(np.uint8)
    layers = [Layer(heatmap_rgba(heat, table, 0.3), 0.4)]
    path = export_view_png(
        tmp_path / "out" / "view",
        base,
        layers,
        view=(10, 20, 50, 70),
        legend=Legend(
            ("Model x 1", 'Heatmap of "a very long phrase ' + "word " * 30 + '"'),
            threshold_lut(table, 0.3),
            "heatmap value",
        ),
    )
    assert path.name == "view.png" and not list(path.parent.glob("*.part"))
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[1] == 40 and img.shape[0] > 50
    assert np.array_equal(img[:50], composite(base, layers)[20:70, 10:50])
    plain = export_view_png(tmp_path / "plain.png", base, [], footer=False)
    assert np.array_equal(np.asarray(Image.open(plain).convert("L")), base)


def test_report_sentences():
    s = split_sentences(
        "FINDINGS: Focal consolidation in the left lower lobe. No pneumothorax.\n"
        "Heart size 12.5 cm, normal.\nIMPRESSION:\nPneumonia.\n\n"
    )
    assert [(x.text, x.heading) for x in s] == [
        ("FINDINGS", True),
        ("Focal consolidation in the left lower lobe.", False),
        ("No pneumothorax.", False),
        ("Heart size 12.5 cm, normal.", False),
        ("IMPRESSION", True),
        ("Pneumonia.", False),
    ]
    assert s[1].phrase == "Focal consolidation in the left lower lobe"
    assert split_sentences(None) == [] and split_sentences("  \n ") == []
    assert [x.text for x in split_sentences("Impression: clear lungs.")] == ["IMPRESSION", "clear lungs."]


# -- analysis cache policy and CSV ---------------------------------------------------------------


def test_analysis_is_stored_and_reused_only_for_the_same_bundle_version(library, loaded_bundle, other_version_bundle):
    from app.logic import analysis as A

    uid = uid_of(library, "anna_pa.dcm")
    b1, b2 = loaded_bundle, other_version_bundle
    direct = direct_analysis(b1, library, uid)
    first = A.analyze_instance(library, b1, uid)
    assert not first.from_cache and first.analysis_id
    assert [r[:3] for r in analysis_rows(library, uid)] == [(first.analysis_id, b1.id, b1.version)]
    # the runtime's own results
    assert first.probabilities == pytest.approx(direct.probabilities, abs=1e-5)
    assert first.thresholds == b1.thresholds and first.classes == b1.classes
    assert first.mask_threshold == b1.mask_threshold and first.mask_label == b1.mask_label
    assert first.mask_area_fraction == pytest.approx(direct.mask_area_fraction, abs=1e-6)
    np.testing.assert_allclose(first.mask, direct.mask, atol=1e-5)
    phrase = A.default_heatmap_phrase(direct.probabilities)
    assert first.heatmap_phrase == phrase and first.heatmap.shape == (320, 256)
    np.testing.assert_allclose(first.heatmap, b1.heatmap(direct, phrase), atol=1e-5)
    assert [h.id for h in first.similar] == [h.id for h in b1.similar_reports(direct, k=A.SIMILAR_K)]
    np.testing.assert_allclose(first.embedding, direct.embedding, atol=1e-5)
    # again: from the library, the same row, nothing new stored
    stored = analysis_rows(library)
    again = A.analyze_instance(library, b1, uid)
    assert again.from_cache and again.analysis_id == first.analysis_id and analysis_rows(library) == stored
    assert again.created_at == stored[0][3]
    assert again.probabilities == pytest.approx(first.probabilities)
    assert again.thresholds == b1.thresholds and again.classes == b1.classes
    assert again.mask_threshold == b1.mask_threshold and again.mask_label == b1.mask_label
    assert np.abs(again.mask - first.mask).max() <= 0.5 / 255 + 1e-6  # stored as 8-bit PNG
    assert np.array_equal(again.heatmap, first.heatmap)
    assert [h.text for h in again.similar] == [h.text for h in first.similar]
    assert np.allclose(again.embedding, first.embedding)
    # another version of the bundle: analysed again, both kept
    assert b2.id == b1.id and b2.version != b1.version
    assert not A.analyze_instance(library, b2, uid).from_cache
    assert [r[1:3] for r in analysis_rows(library, uid)] == [(b1.id, b1.version), (b2.id, b2.version)]
    assert A.analyze_instance(library, b1, uid).from_cache and len(analysis_rows(library)) == 2
    assert A.cached_analysis(library, uid, b1.id, "no-such-version") is None
    assert not A.analyze_instance(library, b1, uid, force=True).from_cache
    assert len(analysis_rows(library, uid)) == 3
    # the extras are stored with the row (analyses.extras, revision 0003), no longer in a file
    # beside the mask; without them the analysis is still usable
    assert not list((library.data_dir / "derived").rglob("analysis-*.json"))
    with library.engine.connect() as conn:
        extras = [r[0] for r in conn.exec_driver_sql("SELECT extras FROM analyses ORDER BY id")]
    assert len(extras) == 3 and "mask_threshold" in json.loads(extras[0])
    assert json.loads(extras[0])["mask_threshold"] == first.mask_threshold
    assert [h["id"] for h in json.loads(extras[0])["similar"]] == [h.id for h in first.similar]
    with library.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE analyses SET extras = NULL")
    bare = A.analyze_instance(library, b1, uid)
    assert bare.from_cache and bare.similar is None and bare.thresholds == b1.thresholds
    hits = A.similar_reports(library, b1, bare, uid, k=3)  # recomputed on demand, from the file
    assert [h.id for h in hits] == [h.id for h in b1.similar_reports(direct, k=3)]
    assert len(analysis_rows(library)) == 3
    # the browser's top finding comes from the latest analysis
    from app.library.queries import get_instance

    with library.session() as s:
        assert get_instance(s, uid).top_finding == max(direct.probabilities, key=direct.probabilities.get)


def test_analyze_many_progress_failures_and_cancel(library, loaded_bundle):
    from app.logic import analysis as A

    bundle = loaded_bundle
    uids = A.all_instance_uids(library)
    missing = uid_of(library, "cara_ap.dcm")
    from app.library.queries import get_instance

    with library.session() as s:
        library.resolve(get_instance(s, missing).file_path, "managed").unlink()
    seen = []
    summary = A.analyze_many(
        library, bundle, uids, progress=lambda d, t, u: seen.append((d, t)), keep_results=True, progress_interval=0
    )
    assert summary.analysed == 6 and [u for u, _ in summary.failed] == [missing]
    assert "missing" in summary.failed[0][1]
    assert seen[0] == (0, 7) and seen[-1] == (7, 7)
    for r in summary.results:
        assert r.probabilities == pytest.approx(direct_analysis(bundle, library, r.uid).probabilities, abs=1e-5)
    stored = analysis_rows(library)
    assert len(stored) == 6
    again = A.analyze_many(library, bundle, uids)
    assert again.cached == 6 and again.analysed == 0 and analysis_rows(library) == stored
    assert A.unanalysed_uids(library, bundle.id, bundle.version) == [missing]
    calls = []
    stop = A.analyze_many(library, bundle, uids, force=True, cancelled=lambda: len(calls) >= 2, on_result=calls.append)
    assert stop.cancelled and stop.analysed == 2 and len(analysis_rows(library)) == 6 + 2


def test_one_image_is_analysed_once_when_two_threads_ask_at_the_same_time(library, loaded_bundle):
    """The app analyses the shown image and "analyze all" in different threads: a second request
    for an image in flight waits for the first and reuses what it stored."""
    import threading
    import time

    from app.logic import analysis as A
    from tests.gui.conftest import make_gated

    bundle = make_gated(loaded_bundle)  # the real bundle, held at the start of analyze()
    uid = uid_of(library, "anna_pa.dcm")
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", A.analyze_instance(library, bundle, uid)))
    first.start()
    assert bundle.entered.wait(10)
    second = threading.Thread(target=lambda: results.setdefault("second", A.analyze_instance(library, bundle, uid)))
    second.start()
    deadline = time.monotonic() + 0.5  # time enough for the second to reach the model if it were let through
    while time.monotonic() < deadline and len(bundle.images) < 2:
        time.sleep(0.01)
    bundle.release.set()
    first.join(30)
    second.join(30)
    assert len(bundle.images) == 1  # the model ran once
    assert not results["first"].from_cache and results["second"].from_cache
    assert results["second"].analysis_id == results["first"].analysis_id
    assert [r[0] for r in analysis_rows(library, uid)] == [results["first"].analysis_id]
    assert A._IN_FLIGHT._locks == {}  # nothing left behind


def test_predictions_csv(library, tmp_path, loaded_bundle):
    from app.logic import analysis as A
    from app.logic.predictions_csv import columns_for, prediction_rows, read_predictions_csv, write_predictions_csv

    b = loaded_bundle
    a = uid_of(library, "anna_pa.dcm")
    c = uid_of(library, "cara_pa.dcm")
    A.analyze_instance(library, b, a)
    direct = direct_analysis(b, library, a)
    from app.library.queries import add_review

    add_review(library, a, "flagged", 'look again, "quoted", comma')
    rows, classes = prediction_rows(library, [a, c, "1.2.3.unknown"])
    assert classes == b.classes
    out = write_predictions_csv(tmp_path / "p.csv", rows, classes)
    got = read_predictions_csv(out)
    assert [g["sop_instance_uid"] for g in got] == [a, c, "1.2.3.unknown"]
    assert list(got[0]) == columns_for(classes)
    for name in b.classes:
        assert float(got[0][f"p_{name}"]) == pytest.approx(direct.probabilities[name], abs=1e-5)
        assert got[0][f"threshold_{name}"] == f"{b.thresholds[name]:.6g}"
        assert got[0][f"above_{name}"] == str(int(direct.probabilities[name] >= b.thresholds[name]))
    assert got[0]["bundle_id"] == b.id and got[0]["bundle_version"] == b.version
    assert got[0]["review_status"] == "flagged" and got[0]["review_comment"] == 'look again, "quoted", comma'
    assert got[0]["study_date"] == "20240301" and got[0]["view"] == "PA"
    assert got[1]["error"] == "not analysed" and got[2]["error"] == "not in the library"
    assert "NOVAK" not in out.read_text() and "PAT-A" not in out.read_text()
