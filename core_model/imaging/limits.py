"""Budgets for untrusted image files, checked *before* anything is decoded.

A file's header says how big its image is; a hostile (or broken) file can claim 20,000 x 20,000
pixels in a few hundred bytes and drive a decoder to gigabytes of memory. Every reader checks the
declared size against these budgets first and refuses with :class:`ImageTooLargeError`
(reason ``too_large``) naming the numbers. docs/SECURITY.md lists them.

- :data:`MAX_PIXELS`: rows x columns of one frame (40 million: a 6,300 x 6,300 image; the
  largest digital radiographs are about 4,300 x 4,300 = 18.5 million).
- :data:`MAX_PIXEL_BYTES`: decoded pixel data of one file, all frames and samples (1 GiB), and
  also the most stored (native or compressed) pixel data a file may hold.
- :data:`MAX_SEQUENCE_DEPTH`: nesting of DICOM sequences (32; real files nest a few levels,
  structured reports a dozen at most). :func:`check_sequence_depth` walks a dataset without
  recursion.
"""

from __future__ import annotations

from core_model.imaging.errors import ImageTooLargeError, SequenceTooDeepError

__all__ = [
    "MAX_PIXELS",
    "MAX_PIXEL_BYTES",
    "MAX_SEQUENCE_DEPTH",
    "ImageTooLargeError",
    "SequenceTooDeepError",
    "check_pixels",
    "check_stored_bytes",
    "check_sequence_depth",
    "sequence_depth",
]

MAX_PIXELS = 40_000_000
MAX_PIXEL_BYTES = 1 << 30
MAX_SEQUENCE_DEPTH = 32


def check_pixels(
    rows: int,
    columns: int,
    *,
    frames: int = 1,
    samples: int = 1,
    bytes_per_sample: float = 1,
    source: str = "",
    what: str = "the image",
) -> None:
    """Raise :class:`ImageTooLargeError` when ``rows x columns`` (one frame) exceeds
    :data:`MAX_PIXELS` or the decoded size of all frames exceeds :data:`MAX_PIXEL_BYTES`."""
    name = f"{source}: " if source else ""
    rows, columns, frames, samples = int(rows), int(columns), max(int(frames), 1), max(int(samples), 1)
    pixels = rows * columns
    if pixels > MAX_PIXELS:
        raise ImageTooLargeError(
            f"{name}{what} declares {columns:,} x {rows:,} = {pixels:,} pixels, more than the "
            f"{MAX_PIXELS:,} this app decodes; refused before decoding"
        )
    decoded = pixels * frames * samples * max(bytes_per_sample, 1)
    if decoded > MAX_PIXEL_BYTES:
        raise ImageTooLargeError(
            f"{name}{what} declares {frames:,} frame(s) of {columns:,} x {rows:,} x {samples} samples "
            f"({decoded / 2**20:,.0f} MiB decoded), more than the {MAX_PIXEL_BYTES // 2**20:,} MiB budget; "
            "refused before decoding"
        )


def check_stored_bytes(length: int, *, source: str = "") -> None:
    """Stored pixel data (native or compressed) larger than :data:`MAX_PIXEL_BYTES`."""
    if length > MAX_PIXEL_BYTES:
        name = f"{source}: " if source else ""
        raise ImageTooLargeError(
            f"{name}the pixel data holds {length / 2**20:,.0f} MiB, more than the "
            f"{MAX_PIXEL_BYTES // 2**20:,} MiB budget; refused before reading it"
        )


def sequence_depth(ds, limit: int = MAX_SEQUENCE_DEPTH) -> int:
    """Deepest sequence nesting in a pydicom ``Dataset`` (0: no sequence), walking with an
    explicit stack (no recursion) and stopping as soon as ``limit`` is exceeded (then it
    returns ``limit + 1``). Only sequence elements are converted, one level at a time."""
    from pydicom.datadict import dictionary_VR

    deepest = 0
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            return limit + 1
        for tag in list(current.keys()):
            raw = current.get_item(tag)
            vr = getattr(raw, "VR", None)
            if vr is None or vr == "UN":
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    continue
            if vr != "SQ":
                continue
            try:
                items = current[tag].value
            except RecursionError:
                return limit + 1
            except Exception:  # an unparseable sequence: not a depth problem; readers report it
                continue
            for item in items or ():
                if hasattr(item, "keys"):
                    stack.append((item, depth + 1))
    return deepest


def check_sequence_depth(ds, limit: int = MAX_SEQUENCE_DEPTH, *, source: str = "") -> None:
    """Raise :class:`SequenceTooDeepError` when ``ds`` nests sequences deeper than ``limit``.

    Cheap on ordinary files; call it before anything walks a dataset recursively (pydicom's
    ``walk``, ``str(ds)``, an anonymiser)."""
    if sequence_depth(ds, limit) > limit:
        name = f"{source}: " if source else ""
        raise SequenceTooDeepError(f"{name}the header nests sequences more than {limit} levels deep; refused")
