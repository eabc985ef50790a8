"""SIIM relative RLE: exact decoding, round trips, bad strings, and the real masks' orientation."""

import numpy as np
import pytest

from core_model.data.rle import RLEError, rle_area, rle_decode, rle_decode_union, rle_density, rle_encode


def test_decode_uses_running_position_and_column_major_order():
    # 4 x 4 image; runs: start 1 len 2 -> flat 1,2 ; running position 3, next start +3 -> flat 6
    mask = rle_decode("1 2 3 1", 4, 4)
    expected = np.zeros((4, 4), bool)
    expected[1, 0] = expected[2, 0] = True  # flat 1, 2 = rows 1, 2 of column 0
    expected[2, 1] = True  # flat 6 = row 2 of column 1
    assert np.array_equal(mask, expected)
    assert rle_encode(expected) == "1 2 3 1"


def test_non_square_grid_is_column_major():
    mask = rle_decode("3 1", height=2, width=3)  # flat 3 = col 1, row 1
    assert mask.shape == (2, 3)
    assert mask[1, 1] and mask.sum() == 1


def test_round_trip_random_masks():
    rng = np.random.default_rng(1234)
    for trial in range(150):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        density = rng.choice([0.0, 0.02, 0.3, 0.9, 1.0])
        mask = rng.random((h, w)) < density
        if trial % 10 == 0:  # blobs that touch the bottom edge and wrap into the next column
            mask[:] = False
            mask[h // 2 :, : max(1, w // 2)] = True
        rle = rle_encode(mask)
        assert np.array_equal(rle_decode(rle, h, w), mask), (h, w, rle)
        assert rle_encode(rle_decode(rle, h, w)) == rle
        assert rle_area(rle, h, w) == int(mask.sum())


def test_empty_and_full():
    assert rle_encode(np.zeros((5, 5))) == "-1"
    assert not rle_decode("-1", 5, 5).any()
    assert not rle_decode(" -1 ", 5, 5).any()
    assert rle_decode(rle_encode(np.ones((5, 5))), 5, 5).all()


@pytest.mark.parametrize("bad", ["0 26", "20 3 2 2", "1 2 3", "a b", "-3 2", "1 0"])
def test_bad_strings_raise(bad):
    with pytest.raises(RLEError):
        rle_decode(bad, 5, 5)


def test_last_pixel_is_inside():
    assert rle_decode("24 1", 5, 5)[4, 4]


def test_union_of_rows():
    a = np.zeros((6, 6), bool)
    a[0:2, 0] = True
    b = np.zeros((6, 6), bool)
    b[4, 5] = True
    u = rle_decode_union([rle_encode(a), "-1", rle_encode(b)], 6, 6)
    assert np.array_equal(u, a | b)


# ---------------------------------------------------------------- the real SIIM file


def test_real_rows_round_trip(siim_table):
    rng = np.random.default_rng(0)
    rles = [r for i in siim_table.positives() for r in siim_table.rles[i]]
    for k in rng.choice(len(rles), size=200, replace=False):
        assert rle_encode(rle_decode(rles[k])) == rles[k]


def test_real_positive_mask_area_and_place(siim_table):
    image_id = "1.2.276.0.7230010.3.1.4.8323329.13666.1517875247.117800"  # first positive row of the file
    mask = siim_table.mask(image_id)
    assert mask.shape == (1024, 1024)
    lengths = [int(v) for r in siim_table.rles[image_id] for v in r.split()[1::2]]
    assert mask.sum() == sum(lengths) == 30859  # about 3 % of the image: a plausible pneumothorax
    rows, cols = np.nonzero(mask)
    # an apical pneumothorax on the image's right side (the patient's left), not a band across
    assert rows.mean() < 400 and rows.min() > 50
    assert 500 < cols.mean() < 900


def test_real_masks_are_not_transposed(siim_table):
    """Pneumothoraces sit mostly at the apices, on either side of the mediastinum: over all the
    positives, most mass is in the upper half and the central *columns* form a valley. Decoding
    without the transpose swaps rows and columns and fails both checks."""
    rles = [r for i in siim_table.positives() for r in siim_table.rles[i]]
    density = rle_density(rles).astype(float)

    def upper_share(d):
        return d[:512].sum() / d.sum()

    def central_column_valley(d):
        col = d.sum(axis=0)
        return col[480:544].mean() / (0.5 * (col[300:450].mean() + col[600:750].mean()))

    assert upper_share(density) > 0.68
    assert central_column_valley(density) < 0.45
    assert not (upper_share(density.T) > 0.68 and central_column_valley(density.T) < 0.45)
