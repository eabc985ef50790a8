"""Rendered pixels against values computed here from the formulas of the DICOM standard.

The reference functions below are written straight from PS3.3 C.11.1 (modality LUT),
C.11.2.1.1 (VOI LUT), C.11.2.1.2 / C.11.2.1.3 (window functions, with y_min = 0 and
y_max = 255 for an 8-bit display) and C.7.6.3.1.2 / C.11.6.1.2 (MONOCHROME1 and INVERSE
inversion after VOI). They are scalar and deliberately naive: nothing from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence

from core_model.imaging.dicom import (
    read_dataset,
    render_dataset,
    render_file,
    window_presets,
)
from core_model.imaging.preprocess import load_display
from tests.imaging.builders import gradient, make_voi_lut_item, write


def std_linear(x: float, c: float, w: float) -> float:
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0


def std_linear_exact(x: float, c: float, w: float) -> float:
    if x <= c - w / 2:
        return 0.0
    if x > c + w / 2:
        return 255.0
    return ((x - c) / w + 0.5) * 255.0


def std_sigmoid(x: float, c: float, w: float) -> float:
    return 255.0 / (1 + math.exp(-4 * (x - c) / w))


def expected(stored: np.ndarray, fn, *, slope=1.0, intercept=0.0, invert=False) -> np.ndarray:
    out = np.empty(stored.shape, dtype=np.int64)
    for idx, s in np.ndenumerate(stored):
        y = fn(float(s) * slope + intercept)  # modality LUT, then VOI
        if invert:
            y = 255.0 - y
        out[idx] = round(y)
    return out


def render(path, preset=None, **kw):
    return render_dataset(read_dataset(path), preset, **kw).astype(np.int64)


# A 12-bit ramp whose values land on both sides of, and inside, every window used below.
RAMP12 = gradient(4, 97, bits=12)


@pytest.mark.parametrize(
    "function, ref",
    [
        ("LINEAR", std_linear),
        ("LINEAR_EXACT", std_linear_exact),
        ("SIGMOID", std_sigmoid),
    ],
)
def test_window_functions_follow_ps3_3(tmp_path, function, ref):
    c, w = 1800.0, 1201.0
    path = write(tmp_path / "w.dcm", RAMP12, windows=[(c, w)], voi_lut_function=function)
    got = render(path)
    want = expected(RAMP12, lambda x: ref(x, c, w))
    assert np.array_equal(got, want)
    assert got.min() == 0 and got.max() == 255 if function != "SIGMOID" else True


def test_linear_is_not_linear_exact(tmp_path):
    # The two definitions differ by the half-pixel offset; a file saying LINEAR_EXACT must not
    # be drawn with the LINEAR formula (a classic off-by-one between viewers).
    c, w = 100.0, 11.0
    px = np.arange(90, 112, dtype=np.uint16).reshape(1, -1)
    lin = render(write(tmp_path / "a.dcm", px, windows=[(c, w)]))
    exact = render(write(tmp_path / "b.dcm", px, windows=[(c, w)], voi_lut_function="LINEAR_EXACT"))
    assert np.array_equal(lin, expected(px, lambda x: std_linear(x, c, w)))
    assert np.array_equal(exact, expected(px, lambda x: std_linear_exact(x, c, w)))
    assert not np.array_equal(lin, exact)


def test_negative_rescale_slope_is_applied_before_the_window(tmp_path):
    # CR plates often store inverted values with slope -1: modality value = 4095 - stored.
    c, w = 1000.0, 2000.0
    path = write(tmp_path / "neg.dcm", RAMP12, rescale_slope=-1.0, rescale_intercept=4095.0, windows=[(c, w)])
    got = render(path)
    want = expected(RAMP12, lambda x: std_linear(x, c, w), slope=-1.0, intercept=4095.0)
    assert np.array_equal(got, want)
    # high stored values are low modality values, so the left of the ramp is the bright side
    assert got[0, 0] == 255 and got[0, -1] == 0


def test_fractional_slope_and_intercept(tmp_path):
    c, w = -250.0, 900.0
    path = write(tmp_path / "f.dcm", RAMP12, rescale_slope=0.5, rescale_intercept=-1024.0, windows=[(c, w)])
    want = expected(RAMP12, lambda x: std_linear(x, c, w), slope=0.5, intercept=-1024.0)
    assert np.array_equal(render(path), want)


def test_monochrome1_inverts_after_voi(tmp_path):
    c, w = 2000.0, 1500.0
    path = write(tmp_path / "m1.dcm", RAMP12, photometric="MONOCHROME1", windows=[(c, w)])
    want = expected(RAMP12, lambda x: std_linear(x, c, w), invert=True)
    assert np.array_equal(render(path), want)
    # Inverting before VOI (a common bug) would mirror the window around the other end.
    wrong = expected(4095 - RAMP12.astype(np.int64), lambda x: std_linear(x, c, w))
    assert not np.array_equal(render(path), wrong)


def test_presentation_lut_shape_inverse(tmp_path):
    c, w = 2000.0, 1500.0
    want_inverted = expected(RAMP12, lambda x: std_linear(x, c, w), invert=True)
    mono2_inverse = write(tmp_path / "a.dcm", RAMP12, windows=[(c, w)], presentation_lut_shape="INVERSE")
    assert np.array_equal(render(mono2_inverse), want_inverted)
    # DX files carry MONOCHROME1 together with INVERSE: that is one inversion, not two.
    mono1_inverse = write(
        tmp_path / "b.dcm", RAMP12, photometric="MONOCHROME1", windows=[(c, w)], presentation_lut_shape="INVERSE"
    )
    assert np.array_equal(render(mono1_inverse), want_inverted)
    identity = write(tmp_path / "c.dcm", RAMP12, windows=[(c, w)], presentation_lut_shape="IDENTITY")
    assert np.array_equal(render(identity), expected(RAMP12, lambda x: std_linear(x, c, w)))


def test_user_invert_toggles_on_top_of_the_file(tmp_path):
    path = write(tmp_path / "m1.dcm", RAMP12, photometric="MONOCHROME1", windows=[(2048.0, 4096.0)])
    ds = read_dataset(path)
    assert np.array_equal(
        render_dataset(ds, user_invert=True).astype(int), expected(RAMP12, lambda x: std_linear(x, 2048.0, 4096.0))
    )


def test_several_windows_are_presets_with_their_explanations(tmp_path):
    windows = [(1500.0, 1000.0), (2500.0, 3001.0), (600.0, 300.0)]
    path = write(tmp_path / "multi.dcm", RAMP12, windows=windows, window_explanations=["LUNG", "MEDIASTINUM", "BONE"])
    presets = window_presets(read_dataset(path))
    assert [p.name for p in presets] == ["LUNG", "MEDIASTINUM", "BONE", "Full range (min-max)"]
    assert [(p.center, p.width) for p in presets[:3]] == windows
    assert "LUNG" in presets[0].label() and "1500" in presets[0].label()
    for k, (c, w) in enumerate(windows):
        assert np.array_equal(render(path, k), expected(RAMP12, lambda x: std_linear(x, c, w)))  # noqa: B023 (called within this iteration)
    # the default is the first window
    assert np.array_equal(render(path), render(path, 0))


def test_missing_explanations_get_numbered_names_and_invalid_widths_are_skipped(tmp_path):
    path = write(tmp_path / "w.dcm", RAMP12, windows=[(100.0, 0.0), (2000.0, 1000.0)])
    presets = window_presets(read_dataset(path))
    # width 0 is invalid for LINEAR (C.11.2.1.2 requires >= 1): not offered, not the default
    assert [p.kind for p in presets] == ["window", "full_range"]
    assert presets[0].name == "Window 2" and presets[0].center == 2000.0
    assert np.array_equal(render(path), expected(RAMP12, lambda x: std_linear(x, 2000.0, 1000.0)))


def std_voi_lut(x: float, first: int, data: list[int], bits: int) -> float:
    # C.11.2.1.1: below the first mapped value -> first entry; above the last -> last entry
    i = min(max(int(round(x)) - first, 0), len(data) - 1)
    return data[i] / (2**bits - 1) * 255.0


@pytest.mark.parametrize("as_ow", [False, True])
def test_voi_lut_sequence_is_the_default_and_follows_the_descriptor(tmp_path, as_ow):
    px = np.arange(90, 130, dtype=np.uint16).reshape(2, 20)
    first = 100
    data = [int(v) for v in np.linspace(0, 65535, 21) ** 1 // 1]
    data = [min(65535, int((i / 20) ** 2 * 65535)) for i in range(21)]  # a curved LUT
    item = make_voi_lut_item(first, data, 16, "CR default", as_ow=as_ow)
    path = write(tmp_path / "lut.dcm", px, windows=[(110.0, 10.0)], extra={"VOILUTSequence": Sequence([item])})
    presets = window_presets(read_dataset(path))
    assert [p.kind for p in presets] == ["voi_lut", "window", "full_range"]
    assert presets[0].name == "CR default"
    assert np.array_equal(render(path), expected(px, lambda x: std_voi_lut(x, first, data, 16)))
    # the stored window is still offered as the second preset
    assert np.array_equal(render(path, 1), expected(px, lambda x: std_linear(x, 110.0, 10.0)))


def test_8_bit_voi_lut(tmp_path):
    px = np.arange(0, 16, dtype=np.uint8).reshape(2, 8)
    data = [255 - 17 * i for i in range(16)]
    item = make_voi_lut_item(0, data, 8, as_ow=True)
    path = write(tmp_path / "lut8.dcm", px, extra={"VOILUTSequence": Sequence([item])})
    assert np.array_equal(render(path), expected(px, lambda x: std_voi_lut(x, 0, data, 8)))


def test_no_window_uses_the_full_range(tmp_path):
    px8 = np.array([[10, 20, 30], [40, 50, 250]], dtype=np.uint8)
    got = render(write(tmp_path / "8.dcm", px8, bits_stored=8))
    assert np.array_equal(got, expected(px8, lambda x: (x - 10) / 240 * 255))


def test_16_bit_stored_values(tmp_path):
    px = np.array([[0, 1000, 30000], [40000, 65000, 65535]], dtype=np.uint16)
    c, w = 32768.0, 40000.0
    got = render(write(tmp_path / "16.dcm", px, bits_stored=16, windows=[(c, w)]))
    assert np.array_equal(got, expected(px, lambda x: std_linear(x, c, w)))


def test_signed_12_bit(tmp_path):
    px = gradient(2, 41, bits=12, signed=True)
    c, w = -100.0, 1500.0
    got = render(write(tmp_path / "s.dcm", px, windows=[(c, w)]))
    assert np.array_equal(got, expected(px, lambda x: std_linear(x, c, w)))


def test_bits_above_bits_stored_are_ignored(tmp_path):
    # Overlay planes or junk in the unused high bits must not leak into the image (PS3.5 8.1.1).
    clean = np.array([[0, 100, 2048, 4095]], dtype=np.uint16)
    dirty = clean | np.uint16(0xF000)
    c, w = 2048.0, 4096.0
    got = render(write(tmp_path / "d.dcm", dirty, bits_stored=12, windows=[(c, w)]))
    assert np.array_equal(got, expected(clean, lambda x: std_linear(x, c, w)))


def test_manual_window_and_file_function(tmp_path):
    path = write(tmp_path / "m.dcm", RAMP12, windows=[(1000.0, 500.0)], voi_lut_function="LINEAR_EXACT")
    ds = read_dataset(path)
    got = render_dataset(ds, center=3000.0, width=800.0).astype(int)
    assert np.array_equal(got, expected(RAMP12, lambda x: std_linear_exact(x, 3000.0, 800.0)))


def test_real_jpeg_baseline_file_renders_like_an_independent_decode():
    from io import BytesIO

    from PIL import Image
    from pydicom.encaps import generate_fragmented_frames

    from tests.imaging.builders import REAL_DCM

    got = render_file(REAL_DCM).astype(np.float64)
    ds = pydicom.dcmread(REAL_DCM)
    assert got.shape == (ds.Rows, ds.Columns) == (1024, 1024)
    # Independent path: Pillow decodes the JPEG fragment; no window in the file -> min..max.
    frame = b"".join(next(generate_fragmented_frames(ds.PixelData)))
    ref = np.asarray(Image.open(BytesIO(frame)).convert("L"), dtype=np.float64)
    ref = (ref - ref.min()) / (ref.max() - ref.min()) * 255.0
    diff = np.abs(got - ref)
    assert diff.mean() < 1.0 and diff.max() <= 4  # two IDCT implementations differ by a level or two


def test_real_png_loads_unchanged():
    from PIL import Image

    from tests.imaging.builders import REAL_PNG

    ref = np.asarray(Image.open(REAL_PNG).convert("L"))
    assert np.array_equal(load_display(REAL_PNG), ref)
