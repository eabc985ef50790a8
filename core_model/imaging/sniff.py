"""The one file-kind sniffer: what a file *is*, from its first bytes, never from its name.

Every reader of image files (``preprocess.load_display`` and so the model input, the DICOM
reader, the viewer, ``adaptor-review render`` / ``predict`` and the importer) asks
:func:`image_kind`, so a file is accepted or refused the same way everywhere: a GIF named
``.png`` is refused by all of them with the same message, a PNG named ``.dcm`` is read as the
PNG it is by all of them.

Supported kinds: ``dicom`` (the ``DICM`` marker after the 128-byte preamble, or a preamble-less
dataset that starts with a group 0002 / 0008 element), ``png`` and ``jpeg``. Other image or
document formats are recognised by name, so the refusal says what the file is.

The module also reads the *declared* size of a PNG (IHDR), a JPEG / JPEG-LS frame header (SOFn)
and a JPEG 2000 codestream (SIZ) or JP2 file (ihdr) from the first bytes, without decoding, so
size budgets (:mod:`core_model.imaging.limits`) are checked before any decoder allocates memory.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from core_model.imaging.errors import ImageReadError, NotDicomError, UnsupportedImageError

HEAD_BYTES = 132
SUPPORTED = ("dicom", "png", "jpeg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
J2K_MAGIC = b"\xff\x4f\xff\x51"
JP2_MAGIC = b"\x00\x00\x00\x0cjP  \r\n\x87\n"

# (magic at offset 0, kind, how the refusal names it)
_OTHER_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"GIF87a", "gif", "a GIF image"),
    (b"GIF89a", "gif", "a GIF image"),
    (b"II*\x00", "tiff", "a TIFF image"),
    (b"MM\x00*", "tiff", "a TIFF image"),
    (b"BM", "bmp", "a BMP image"),
    (JP2_MAGIC, "jpeg2000", "a JPEG 2000 file (not inside a DICOM)"),
    (J2K_MAGIC, "jpeg2000", "a JPEG 2000 codestream (not inside a DICOM)"),
    (b"PK\x03\x04", "zip", "a zip archive"),
    (b"PK\x05\x06", "zip", "a zip archive"),
    (b"\x1f\x8b", "gzip", "a gzip-compressed file"),
    (b"%PDF", "pdf", "a PDF document"),
)
_NAMES = {kind: name for _magic, kind, name in _OTHER_SIGNATURES}
_NAMES.update(
    webp="a WebP image",
    dicom="a DICOM file",
    png="a PNG image",
    jpeg="a JPEG image",
    unknown="not a DICOM, PNG or JPEG file",
    empty="an empty file",
)


def looks_like_raw_dataset(head: bytes) -> bool:
    """A DICOM dataset written without the 128-byte preamble (old CDs, ACR-NEMA style): it
    starts with a group 0x0002 or 0x0008 element, little endian."""
    if len(head) < 8:
        return False
    group, _elem = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():  # explicit VR
        return True
    return struct.unpack("<I", head[4:8])[0] < 1024  # implicit VR: a short first value


def kind_of_bytes(head: bytes) -> str:
    """The kind of a file from its first :data:`HEAD_BYTES` bytes (see the module docstring)."""
    if not head:
        return "empty"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"  # first: a DICOM preamble may hold any bytes, even a TIFF or JPEG header
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, kind, _name in _OTHER_SIGNATURES:
        if head.startswith(magic):
            return kind
    if looks_like_raw_dataset(head):
        return "dicom"
    return "unknown"


def sniff(path: str | os.PathLike) -> str:
    """The kind of the file at ``path``; :class:`ImageReadError` (``unreadable``/``missing``)
    when it cannot be opened."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path.name}: file not found", reason="missing") from exc
    except OSError as exc:
        raise ImageReadError(f"{path.name}: cannot be opened ({exc.strerror or exc})", reason="unreadable") from exc
    return kind_of_bytes(head)


def describe_kind(kind: str) -> str:
    return _NAMES.get(kind, _NAMES["unknown"])


def refusal(name: str, kind: str) -> ImageReadError:
    """The one error every reader raises for a file that is not DICOM, PNG or JPEG."""
    if kind in ("unknown", "empty"):
        what = "an empty file, not a DICOM, PNG or JPEG image" if kind == "empty" else _NAMES["unknown"]
        return NotDicomError(f"{name}: {what}")
    return UnsupportedImageError(f"{name}: {describe_kind(kind)}; only DICOM, PNG and JPEG files are supported")


def image_kind(path: str | os.PathLike) -> str:
    """``"dicom"``, ``"png"`` or ``"jpeg"``, or the specific refusal (:func:`refusal`)."""
    kind = sniff(path)
    if kind not in SUPPORTED:
        raise refusal(Path(path).name, kind)
    return kind


# --------------------------------------------------------------------------------------------
# Declared sizes, read from the first bytes without decoding


@dataclass(frozen=True)
class DeclaredSize:
    """What a compressed stream's own header says it holds."""

    codec: str  # "png" | "jpeg" | "jpeg2000"
    rows: int
    columns: int
    components: int = 1
    bits: int = 8


_SOF_MARKERS = {
    0xC0,
    0xC1,
    0xC2,
    0xC3,
    0xC5,
    0xC6,
    0xC7,
    0xC9,
    0xCA,
    0xCB,
    0xCD,
    0xCE,
    0xCF,
    0xF7,
}  # JPEG SOF0-15 without DHT / JPG / DAC; 0xF7 = JPEG-LS SOF55


def png_size(data: bytes) -> DeclaredSize | None:
    if not data.startswith(PNG_MAGIC) or len(data) < 29 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    components = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour, 1)
    return DeclaredSize("png", height, width, components, depth)


def jpeg_size(data: bytes) -> DeclaredSize | None:
    """The frame header (SOFn) of a JPEG or JPEG-LS stream; None when not found in ``data``."""
    if not data.startswith(b"\xff\xd8"):
        return None
    p, n = 2, len(data)
    while p + 4 <= n:
        if data[p] != 0xFF:
            return None  # not at a marker: corrupt before the frame header
        marker = data[p + 1]
        if marker == 0xFF:  # fill byte
            p += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            p += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[p + 2 : p + 4])
        if marker in _SOF_MARKERS:
            if p + 10 > n:
                return None
            bits, height, width, comps = struct.unpack(">BHHB", data[p + 4 : p + 10])
            return DeclaredSize("jpeg", height, width, comps, bits)
        if length < 2:
            return None
        p += 2 + length
    return None


def j2k_size(data: bytes) -> DeclaredSize | None:
    """The SIZ segment of a JPEG 2000 codestream (raw, or inside a JP2 file's ``jp2c`` box)."""
    start = data.find(J2K_MAGIC) if not data.startswith(J2K_MAGIC) else 0
    if start >= 0 and start + 42 <= len(data):
        siz = data[start + 4 :]
        try:
            _l, _r, xsiz, ysiz, xo, yo, _xt, _yt, _xto, _yto, comps = struct.unpack(">HHIIIIIIIIH", siz[:38])
        except struct.error:
            return None
        bits = (siz[38] & 0x7F) + 1 if len(siz) > 38 else 8
        return DeclaredSize("jpeg2000", max(ysiz - yo, 0), max(xsiz - xo, 0), comps, bits)
    at = data.find(b"ihdr")
    if data.startswith(JP2_MAGIC) and at >= 0 and at + 14 <= len(data):
        height, width, comps = struct.unpack(">IIH", data[at + 4 : at + 14])
        return DeclaredSize("jpeg2000", height, width, comps)
    return None


def declared_size(data: bytes) -> DeclaredSize | None:
    """PNG, JPEG / JPEG-LS or JPEG 2000 size from the first bytes of a stream, else None."""
    return png_size(data) or jpeg_size(data) or j2k_size(data)


def file_declared_size(path: str | os.PathLike, limit: int = 1 << 16) -> DeclaredSize | None:
    """:func:`declared_size` of the first ``limit`` bytes of a PNG or JPEG file."""
    with open(path, "rb") as f:
        return declared_size(f.read(limit))
