"""The fast paths of decoding and resizing (issue 15) give what the plain paths give.

- Display of integer DICOMs through a lookup table: pixel-identical to the whole float64
  pipeline (forced by passing the modality values) for every VOI kind, signedness, depth,
  inversion and rescale; files the table cannot serve (padding, a Modality LUT) still render.
- Mask / heatmap upsampling to the original grid: Pillow's BILINEAR within float32 rounding.
- Reduced-resolution decoding of JPEG Baseline DICOMs for the model: only where the file
  gives a window (a pixelwise mapping), within a grey level of the full decode, with the
  full-resolution shape; the display (viewer) stays full resolution.
All on real pydicom files written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.sequence import Sequence
from pydicom.uid import JPEGBaseline8Bit

from core_model.imaging.dicom import (
    _render_by_lut,
    decode_pixels,
    modality_values,
    read_dataset,
    render_dataset,
    render_file,
    window_presets,
)
from core_model.imaging.preprocess import (
    PreprocessSpec,
    from_square,
    normalize,
    prepare_input_with_shape,
    to_square,
    upsample_bilinear,
)
from tests.imaging.builders import make_voi_lut_item, write


def _noisy(rows: int, cols: int, lo: int, hi: int, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    smooth = (np.sin(xx / 9.0) * np.cos(yy / 7.0) + 1) / 2 * (hi - lo) + lo
    return (smooth + rng.normal(0, (hi - lo) / 40, (rows, cols))).clip(lo, hi).round().astype(dtype)


def _both(path: Path, table: bool = True, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(the table path, the whole float64 pipeline) for one file and display setting;
    ``table``: whether the file is one the table serves (checked)."""
    ds = read_dataset(path)
    stored = decode_pixels(ds)
    assert (_render_by_lut(ds, stored, lambda d: d.astype(np.uint8)) is not None) == table
    fast = render_dataset(ds, **kw)
    return fast, render_dataset(ds, values=modality_values(ds, stored), **kw)


CASES = {
    "uint16 12-bit window": ({"bits_stored": 12, "windows": [(2048.0, 1200.0)]}, (0, 4095, np.uint16)),
    "uint16 16-bit full range": ({"bits_stored": 16}, (1000, 60000, np.uint16)),
    "int16 rescaled window": (
        {"bits_stored": 16, "rescale_slope": 0.5, "rescale_intercept": -1024.0, "windows": [(40.0, 400.0)]},
        (-3000, 3000, np.int16),
    ),
    "int16 full range": ({"bits_stored": 16}, (-32768, 32767, np.int16)),
    "uint8 MONOCHROME1": ({"bits_stored": 8, "photometric": "MONOCHROME1"}, (3, 250, np.uint8)),
    "sigmoid window": (
        {"bits_stored": 12, "windows": [(1500.0, 900.0)], "voi_lut_function": "SIGMOID"},
        (0, 4095, np.uint16),
    ),
    "linear exact, inverse shape": (
        {
            "bits_stored": 12,
            "windows": [(1000.0, 0.5)],
            "voi_lut_function": "LINEAR_EXACT",
            "presentation_lut_shape": "INVERSE",
        },
        (900, 1100, np.uint16),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lookup_table_display_is_identical_to_the_whole_pipeline(tmp_path, case):
    spec, (lo, hi, dtype) = CASES[case]
    path = write(tmp_path / "a.dcm", _noisy(520, 512, lo, hi, dtype), **spec)  # the table is cheaper
    last = len(window_presets(read_dataset(path))) - 1  # the full-range preset
    for kw in ({}, {"preset": last}, {"user_invert": True}, {"center": (lo + hi) / 2, "width": (hi - lo) / 3}):
        fast, whole = _both(path, **kw)
        assert fast.shape == whole.shape == (520, 512) and fast.dtype == np.uint8
        np.testing.assert_array_equal(fast, whole, err_msg=f"{case} {kw}")


def test_lookup_table_display_of_a_voi_lut_sequence_is_identical(tmp_path):
    pixels = _noisy(128, 128, 0, 1023, np.uint16)
    entries = [int(round(4095 * (i / 1023) ** 0.5)) for i in range(1024)]
    item = make_voi_lut_item(0, entries, bits=12, explanation="sqrt")
    path = write(tmp_path / "lut.dcm", pixels, bits_stored=10, extra={"VOILUTSequence": Sequence([item])})
    fast, whole = _both(path)
    np.testing.assert_array_equal(fast, whole)
    assert len(np.unique(fast)) > 50  # the table was applied, not a flat image


def test_files_the_table_cannot_serve_still_render_exactly(tmp_path):
    pixels = _noisy(256, 200, 100, 4095, np.uint16)
    pixels[:4] = 0  # padding rows
    path = write(tmp_path / "pad.dcm", pixels, bits_stored=12, extra={"PixelPaddingValue": 0})
    fast, whole = _both(path, table=False)
    np.testing.assert_array_equal(fast, whole)
    assert fast[10:].min() == 0 and fast[10:].max() == 255  # the padding stayed out of the range


@pytest.mark.parametrize(
    ("h", "w", "height", "width"), [(224, 179, 2500, 2000), (7, 5, 33, 31), (3, 3, 3000, 5), (8, 8, 8, 8)]
)
def test_upsampling_matches_pillow_bilinear(h, w, height, width):
    a = np.random.default_rng(h * w).random((h, w)).astype(np.float32)
    ours = upsample_bilinear(a, height, width)
    pil = np.asarray(Image.fromarray(a, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    assert ours.shape == (height, width) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, pil, atol=1e-6)
    with pytest.raises(ValueError, match="enlarges only"):
        upsample_bilinear(a, h - 1, w)


def test_a_mask_maps_back_onto_the_original_grid_as_before():
    spec = PreprocessSpec(size=224)
    sq = np.zeros((224, 224), np.float32)
    sq[100:140, 60:120] = 1.0
    for height, width in ((2500, 2000), (120, 90)):  # enlarged (numpy) and reduced (Pillow)
        m = from_square(sq, height, width, spec)
        assert m.shape == (height, width) and m.dtype == np.float32 and m.flags.writeable
        # the square's blob lands where the letterbox geometry puts it
        scale = 224 / max(height, width)
        cy, cx = 120 / scale - (224 - height * scale) / 2 / scale, 90 / scale - (224 - width * scale) / 2 / scale
        assert m[int(cy), int(cx)] > 0.9 and m[0, 0] < 1e-6


def _jpeg_dicom(path: Path, window: bool) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:1200, 0:1000]
    img = (128 + 90 * np.sin(xx / 150.0) * np.cos(yy / 200.0) + rng.normal(0, 6, (1200, 1000))).clip(0, 255)
    spec = {"bits_stored": 8, "windows": [(128.0, 256.0)]} if window else {"bits_stored": 8}
    return write(path, img.astype(np.uint8), JPEGBaseline8Bit, **spec)


def test_jpeg_baseline_dicom_with_a_window_is_decoded_reduced_for_the_model(tmp_path):
    spec = PreprocessSpec(size=224)
    path = _jpeg_dicom(tmp_path / "jb.dcm", window=True)
    x, shape = prepare_input_with_shape(path, spec)
    assert shape == (1200, 1000) and x.shape == (3, 224, 224)
    full = normalize(to_square(render_file(path), spec), spec)
    diff = np.abs(x - full) * 127.5  # grey levels
    assert diff.max() <= 2.0 and diff.mean() < 0.5
    assert render_file(path).shape == (1200, 1000)  # the viewer's display stays full resolution


def test_jpeg_baseline_dicom_without_a_window_is_decoded_in_full(tmp_path):
    # the full-range default stretches between the image's extremes, which a reduced decode
    # would smooth away: the model sees exactly the full decode
    spec = PreprocessSpec(size=224)
    path = _jpeg_dicom(tmp_path / "jb.dcm", window=False)
    x, shape = prepare_input_with_shape(path, spec)
    np.testing.assert_array_equal(x, normalize(to_square(render_file(path), spec), spec))
    assert shape == (1200, 1000)
