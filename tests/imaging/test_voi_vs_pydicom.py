"""Our VOI (core_model.imaging.dicom.apply_voi / render_dataset) against pydicom's own
``apply_modality_lut`` / ``apply_windowing`` / ``apply_voi`` / ``apply_voi_lut`` on the cases
where both apply: LINEAR, LINEAR_EXACT and SIGMOID windows, a VOI LUT Sequence, MONOCHROME1.

pydicom's output is in the stored value range (y_min..y_max from Bits Stored, Pixel
Representation and the rescale) or in the LUT's own entries; ours is [0, 1] before the 8-bit
display. The comparison scales pydicom's output to [0, 1] by that same range. Files are written
here with pydicom and read back through our reader.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi, apply_voi_lut, apply_windowing
from pydicom.sequence import Sequence

from core_model.imaging.dicom import apply_voi as our_voi
from core_model.imaging.dicom import decode_pixels, modality_values, read_dataset, render_dataset
from tests.imaging.builders import gradient, make_voi_lut_item, write


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.BitsStored)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.PixelRepresentation) else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    return lo * slope + intercept, hi * slope + intercept


def _pydicom_window_unit(path) -> np.ndarray:
    ds = read_dataset(path)
    y_min, y_max = _stored_range(ds)
    mod = apply_modality_lut(ds.pixel_array, ds)
    return (np.asarray(apply_windowing(mod, ds), dtype=np.float64) - y_min) / (y_max - y_min)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # pydicom's SIGMOID
@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(
    "signed, slope, intercept, window",
    [
        (False, None, None, (2048.0, 1000.0)),
        (False, 0.5, -100.0, (900.0, 400.0)),
        (True, 1.0, -1024.0, (-600.0, 1500.0)),
        (False, None, None, (1000.0, 1.0)),  # the narrowest LINEAR window: a threshold
    ],
)
def test_windows_match_pydicom(tmp_path, function, signed, slope, intercept, window):
    px = gradient(8, 257, bits=12, signed=signed)
    path = write(
        tmp_path / "w.dcm",
        px,
        bits_stored=12,
        windows=[window],
        voi_lut_function=function,
        rescale_slope=slope,
        rescale_intercept=intercept,
    )
    ds = read_dataset(path)
    values = modality_values(ds, decode_pixels(ds))
    # the modality LUT is pydicom's own (we call it); the values agree exactly
    assert np.array_equal(values, apply_modality_lut(ds.pixel_array, ds))
    ours = our_voi(values, ds)
    theirs = _pydicom_window_unit(path)
    assert np.allclose(ours, theirs, atol=1e-9, rtol=0)
    # and the 8-bit display is that output rounded: the same grey level, except where pydicom's
    # value lies within float rounding of a half-way point (a tie either may round either way)
    shown = render_dataset(ds).astype(np.int64)
    scaled = theirs * 255
    differ = shown != np.rint(scaled)
    assert np.all(np.abs(shown - np.rint(scaled))[differ] == 1)
    assert np.all(np.abs(scaled[differ] - np.floor(scaled[differ]) - 0.5) < 1e-6)


def test_monochrome1_is_pydicoms_window_inverted(tmp_path):
    px = gradient(8, 129, bits=12)
    path = write(tmp_path / "m1.dcm", px, bits_stored=12, photometric="MONOCHROME1", windows=[(1500.0, 2000.0)])
    theirs = _pydicom_window_unit(path)  # pydicom's VOI does not invert; the display does (C.7.6.3.1.2)
    assert np.array_equal(render_dataset(read_dataset(path)), np.rint((1.0 - theirs) * 255).astype(np.uint8))
    assert np.array_equal(render_dataset(read_dataset(path), user_invert=True), np.rint(theirs * 255).astype(np.uint8))


# Left out, where pydicom 3.0 does not apply: 8-bit entries packed two per OW word (as many CR
# writers store them; pydicom reads OW LUT Data as 16-bit words whatever the descriptor's depth)
# and an 8-bit LUT over inputs above 255 (pydicom's index array takes the LUT's uint8 type and
# wraps). Ours reads both (tests/imaging/test_render_standard.py).
@pytest.mark.parametrize(
    "bits, first, as_ow, px_bits, n",
    [(16, 0, False, 12, 3000), (16, 500, True, 12, 3000), (8, 0, False, 8, 200), (12, 100, False, 12, 3000)],
)
def test_voi_lut_sequence_matches_pydicom(tmp_path, bits, first, as_ow, px_bits, n):
    px = gradient(4, 300, bits=px_bits)
    top = 2**bits - 1
    entries = [int(round(top * (i / (n - 1)) ** 0.7)) for i in range(n)]  # a gamma-like curve
    item = make_voi_lut_item(first, entries, bits, "CR default", as_ow=as_ow)
    path = write(tmp_path / "lut.dcm", px, bits_stored=px_bits, extra={"VOILUTSequence": Sequence([item])})
    ds = read_dataset(path)
    values = modality_values(ds, decode_pixels(ds))
    ours = our_voi(values, ds)  # the default preset: the first VOI LUT
    theirs = np.asarray(apply_voi(ds.pixel_array, ds), dtype=np.float64) / top
    assert np.allclose(ours, theirs, atol=1e-12, rtol=0)
    # apply_voi_lut (prefer_lut) takes the same LUT
    assert np.allclose(ours, np.asarray(apply_voi_lut(ds.pixel_array, ds), dtype=np.float64) / top, atol=1e-12)
