"""SIIM-ACR run-length encoding (numpy only).

The SIIM-ACR pneumothorax labels (``train-rle.csv``) use a *relative* RLE on a column-major grid:

- the mask of an ``H x W`` image is flattened column by column (pixel ``(row, col)`` is at flat
  position ``col * H + row``; for the square 1024 x 1024 SIIM images this is "reshape row-major,
  then transpose");
- the string is ``start_1 length_1 start_2 length_2 ...`` where each ``start_k`` is an offset from
  the *end of the previous run* (from position 0 for the first run), so a running position is
  needed to decode;
- ``-1`` (or an empty string) means an empty mask (no pneumothorax).

:func:`rle_decode` raises :class:`RLEError` (a ``ValueError``) for malformed strings and for runs
that go past the end of the image; readers turn that into ``Skipped(id, "bad_label", ...)``.
:func:`rle_encode` is its exact inverse for canonical strings (no zero-length runs, runs separated
by at least one background pixel, which is what an encoder produces).
"""

from __future__ import annotations

import numpy as np

SIIM_SIZE = 1024
EMPTY_RLE = "-1"


class RLEError(ValueError):
    """A run-length string that cannot be decoded (malformed, or running past the image)."""


def is_empty_rle(rle: str | None) -> bool:
    """True for the SIIM 'no finding' marker (``-1``), a blank cell or None."""
    return rle is None or rle.strip() in ("", EMPTY_RLE)


def _parse(rle: str) -> np.ndarray:
    try:
        values = np.array([int(tok) for tok in rle.split()], dtype=np.int64)
    except ValueError as exc:
        raise RLEError(f"not a list of integers: {rle[:40]!r}") from exc
    if values.size % 2:
        raise RLEError(f"odd number of values ({values.size}); expected start/length pairs")
    if (values < 0).any():
        raise RLEError("negative start or length")
    return values


def rle_runs(rle: str, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (flat, column-major) run starts and lengths of a relative RLE string, validated."""
    if is_empty_rle(rle):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    values = _parse(rle)
    rel_starts, lengths = values[0::2], values[1::2]
    if (lengths == 0).any():
        raise RLEError("zero-length run")
    # running position: start_k (absolute) = sum(rel_starts[:k+1]) + sum(lengths[:k])
    ends_before = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    starts = np.cumsum(rel_starts) + ends_before
    total = height * width
    if starts.size and int(starts[-1] + lengths[-1]) > total:
        raise RLEError(
            f"run ends at pixel {int(starts[-1] + lengths[-1])}, past the {height}x{width} image ({total} pixels)"
        )
    return starts, lengths


def rle_decode(rle: str, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> np.ndarray:
    """Decode a SIIM relative RLE string to a boolean ``(height, width)`` mask."""
    starts, lengths = rle_runs(rle, height, width)
    flat = np.zeros(height * width, bool)
    for a, b in zip(starts.tolist(), (starts + lengths).tolist()):
        flat[a:b] = True
    # flat index = col * height + row  ->  reshape (width, height) then transpose (a Fortran-ordered
    # view of a fresh array: no copy needed)
    return flat.reshape(width, height).T


def rle_decode_union(rles, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> np.ndarray:
    """Union of several RLE strings of one image (SIIM lists one row per connected component)."""
    mask = np.zeros((height, width), bool)
    for rle in rles:
        if not is_empty_rle(rle):
            mask |= rle_decode(rle, height, width)
    return mask


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = positive) as a SIIM relative RLE string; ``-1`` when empty."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    flat = (mask != 0).T.ravel()  # column-major
    if not flat.any():
        return EMPTY_RLE
    padded = np.concatenate([[False], flat, [False]]).astype(np.int8)
    change = np.flatnonzero(np.diff(padded))
    starts, ends = change[0::2], change[1::2]
    lengths = ends - starts
    prev_end = np.concatenate([[0], ends[:-1]])
    rel = starts - prev_end
    out = np.empty(2 * starts.size, np.int64)
    out[0::2], out[1::2] = rel, lengths
    return " ".join(map(str, out.tolist()))


def rle_area(rle: str, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> int:
    """Number of positive pixels of an RLE string (validated, without building the mask)."""
    _, lengths = rle_runs(rle, height, width)
    return int(lengths.sum())


def rle_density(rles, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> np.ndarray:
    """Per-pixel count of how many of the given RLE strings cover each pixel (``(height, width)``
    int array), computed from the runs without decoding each mask. Invalid strings raise
    :class:`RLEError`. Useful for dataset summaries and orientation checks (SIIM pneumothoraces
    lie mostly in the upper half of the image, along the lateral chest wall)."""
    edges = np.zeros(height * width + 1, np.int64)
    for rle in rles:
        starts, lengths = rle_runs(rle, height, width)
        edges[starts] += 1  # starts (and ends) of one string are strictly increasing: unique indices
        edges[starts + lengths] -= 1
    return np.cumsum(edges[:-1]).reshape(width, height).T
