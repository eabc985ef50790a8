"""DICOM decoding and display rendering (numpy + pydicom only).

The display pipeline follows the grayscale standard display pipeline of DICOM PS3.4 N.2 with
the transformations of PS3.3 C.11:

    stored values  (pydicom masks to Bits Stored and sign-extends when Pixel Representation = 1)
      -> Modality LUT        PS3.3 C.11.1: Rescale Slope / Intercept (the slope may be negative,
                             common on CR) or a Modality LUT Sequence
      -> VOI                 PS3.3 C.11.2: one VOI LUT Sequence item, or one Window Center /
                             Width pair with VOI LUT Function LINEAR (default), LINEAR_EXACT or
                             SIGMOID (C.11.2.1.2 / C.11.2.1.3); every window and LUT the file
                             stores is offered as a preset with its explanation; when the file
                             has none, the full range of the image (min..max) as viewers do
      -> polarity            MONOCHROME1 (PS3.3 C.7.6.3.1.2: minimum value is white *after* the
                             VOI transformation) or Presentation LUT Shape INVERSE (C.11.6.1.2,
                             which DX/MG/IO files set together with MONOCHROME1: one inversion)
      -> 8-bit display       the VOI output range mapped linearly onto 0..255

Defaults follow the order David Clunie's dicom3tools use: the first VOI LUT, else the first
window, else the full range. The same rendering is what the viewer shows, what
``adaptor-review render`` writes and what the model preprocessing starts from.

Header-only checks (:func:`scan_header` + :func:`check_header`) read the header with
``stop_before_pixels`` and then only the pixel data element's own header (and, for compressed
data, the 8-byte header of each fragment, by seeking): enough to find a missing pixel data
element, a truncated file, pixel data whose length disagrees with Rows x Columns x Bits
Allocated x Samples x Frames, badly encapsulated fragments and a transfer syntax whose decoder
is not installed, without reading the pixels.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from core_model.imaging.decoders import ensure_gdcm_importable, missing_decoder_message

ensure_gdcm_importable()  # before pydicom: see core_model.imaging.decoders

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.errors import InvalidDicomError  # noqa: E402
from pydicom.pixels import apply_modality_lut  # noqa: E402
from pydicom.uid import UID  # noqa: E402

from core_model.imaging.errors import (  # noqa: E402
    BadHeaderError,
    DecodeError,
    ImageReadError,
    ImageTooLargeError,
    InvalidValuesError,
    MissingDecoderError,
    NoPixelDataError,
    NotDicomError,
    PixelDataMismatchError,
    SequenceTooDeepError,
    TruncatedFileError,
    UnsupportedImageError,
)
from core_model.imaging.limits import (  # noqa: E402
    MAX_PIXEL_BYTES,
    MAX_SEQUENCE_DEPTH,
    check_pixels,
    check_stored_bytes,
)
from core_model.imaging.sniff import (  # noqa: E402
    SUPPORTED,
    DeclaredSize,
    declared_size,
    describe_kind,
    kind_of_bytes,
    looks_like_raw_dataset,
    refusal,
)


class _HideQuotedValues(logging.Filter):
    """pydicom logs value-validation problems quoting the element value, which may be a
    patient's name, ID or birth date. Keep the message, hide the quoted value."""

    _QUOTED = re.compile(r"(['\"]).*?\1")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if "'" in message or '"' in message:
            record.msg, record.args = self._QUOTED.sub("'<hidden>'", message), ()
        return True


class _QuietPydicom(logging.Handler):
    """pydicom logs its decoders' failures with full tracebacks (``LOGGER.exception``) and its
    value warnings quoting the value, from child loggers (``pydicom.pixels...``) that a filter
    on the ``pydicom`` logger never sees. Every record of the ``pydicom`` tree comes here
    instead of the root handlers: the quoted values hidden, the traceback dropped, demoted to
    DEBUG and passed on only when debug logging is on (``--verbose``). Our own one-line
    :class:`ImageReadError` is what the user sees."""

    _hide = _HideQuotedValues()

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if not root.isEnabledFor(logging.DEBUG):
            return
        self._hide.filter(record)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        root.handle(record)


_pydicom_logger = logging.getLogger("pydicom")
if not any(isinstance(f, _HideQuotedValues) for f in _pydicom_logger.filters):
    _pydicom_logger.addFilter(_HideQuotedValues())
if not any(isinstance(h, _QuietPydicom) for h in _pydicom_logger.handlers):
    _pydicom_logger.addHandler(_QuietPydicom())
    _pydicom_logger.propagate = False
# Reading never warns about invalid values (the warnings quote them: they may be a patient's
# name); the readers classify problems themselves and report them in one line.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

PIXEL_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)  # Pixel Data, Double Float, Float
MEDIA_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")  # the photometric interpretations with modality values
_KNOWN_PHOTOMETRIC = MONOCHROME + (
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
    "YBR_PARTIAL_420",
    "PALETTE COLOR",
)


@dataclass(frozen=True)
class WindowPreset:
    """One way of displaying the image that the file itself offers (or the full range)."""

    index: int  # 0-based position among the file's windows / VOI LUTs
    kind: str  # "window" | "voi_lut" | "full_range"
    name: str  # the file's explanation text, or a generated description
    center: float | None = None
    width: float | None = None
    function: str = "LINEAR"

    def label(self) -> str:
        if self.kind == "window":
            return f"{self.name} (C {self.center:g} / W {self.width:g}, {self.function})"
        return self.name


# --------------------------------------------------------------------------------------------
# Reading


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICM preamble marker (cheap check, reads 132 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


_looks_like_raw_dataset = looks_like_raw_dataset  # the sniffer's rule (core_model.imaging.sniff)


def _read(fp, *, header_only: bool, force: bool, source: str) -> Dataset:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=header_only, force=force)
        except InvalidDicomError as exc:
            raise NotDicomError(f"{source}: not a DICOM file") from exc
        except (EOFError, struct.error) as exc:
            raise TruncatedFileError(f"{source}: the file ends in the middle of its header") from exc
        except MemoryError as exc:
            raise NotDicomError(f"{source}: not a readable DICOM file (absurd element length)") from exc
        except RecursionError as exc:
            raise SequenceTooDeepError(f"{source}: the header nests sequences too deeply to read; refused") from exc
        except Exception as exc:  # pydicom raises assorted errors on garbage input
            raise NotDicomError(f"{source}: not a readable DICOM file ({type(exc).__name__})") from exc
    for w in caught:  # messages may quote element values: classify, never repeat them
        text = str(w.message)
        if "End of file reached" in text or "truncated" in text.lower():
            raise TruncatedFileError(f"{source}: the file ends before its data does")
    if force and len(ds) == 0:
        raise NotDicomError(f"{source}: not a DICOM file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parse_header(ds, source)
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # No file meta (no preamble): record the encoding pydicom found, so decoders know it.
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = getattr(ds, "original_encoding", (True, True))
        if meta is None:
            ds.file_meta = meta = FileMetaDataset()
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian
            if implicit is not False
            else ExplicitVRLittleEndian
            if little is not False
            else ExplicitVRBigEndian
        )
    return ds


def parse_header(ds: Dataset, source: str = "", limit: int = MAX_SEQUENCE_DEPTH) -> None:
    """Convert every element of a freshly read dataset now (pydicom converts lazily, so a
    corrupt element would otherwise fail later, anywhere), with an explicit stack (no
    recursion) that also bounds the sequence nesting. Raises :class:`BadHeaderError` naming
    the element, or :class:`SequenceTooDeepError`. The pixel data value is left alone."""
    name = f"{source}: " if source else ""
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            raise SequenceTooDeepError(f"{name}the header nests sequences more than {limit} levels deep; refused")
        for tag in list(current.keys()):
            if tag in PIXEL_TAGS:
                continue
            try:
                elem = _converted(current, tag)
                value = elem.value
            except RecursionError:
                raise SequenceTooDeepError(f"{name}the header nests sequences too deeply to read; refused") from None
            except Exception as exc:
                raise BadHeaderError(
                    f"{name}header element {_tag_text(tag)} cannot be parsed "
                    f"({type(exc).__name__}); the file is corrupt"
                ) from None
            if elem.VR == "SQ":
                for item in value or ():
                    if isinstance(item, Dataset):
                        stack.append((item, depth + 1))


def _converted(ds: Dataset, tag):
    """The element at ``tag`` converted from its raw form *without* storing the conversion in
    ``ds`` (later checks read the raw elements' file positions)."""
    from pydicom.dataelem import RawDataElement, convert_raw_data_element

    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement):
        return raw
    encoding = (
        getattr(ds, "original_character_set", None) or getattr(ds, "_character_set", None)
        if int(tag) != 0x00080005
        else None
    )
    return convert_raw_data_element(raw, encoding=encoding or "iso8859", ds=ds)


def _tag_text(tag) -> str:
    tag = int(tag)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _open_kind(path: Path) -> bool:
    """Return ``force`` for dcmread, or raise NotDicomError for files that are plainly not DICOM."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise ImageReadError(f"{path.name}: cannot be opened ({exc.strerror or exc})", reason="unreadable") from exc
    kind = kind_of_bytes(head)
    if kind == "dicom":
        preamble = len(head) == 132 and head[128:132] == b"DICM"
        if preamble:
            _refuse_deflate_bomb(path)
        return not preamble
    if kind in SUPPORTED:  # a PNG or JPEG handed to the DICOM reader
        raise NotDicomError(f"{path.name}: {describe_kind(kind)}, not a DICOM file")
    raise refusal(path.name, kind)


def read_dataset(path: str | os.PathLike, *, header_only: bool = False) -> Dataset:
    """Read a DICOM file. ``header_only`` stops before the pixel data (fast folder scans).

    Raises :class:`NotDicomError` or :class:`TruncatedFileError` (with a one-line message that
    names the file, never a patient attribute)."""
    path = Path(path)
    if not header_only:  # budgets from the header before the pixel data is read into memory
        check_budget(scan_header(path))
    force = _open_kind(path)
    ds = _read(str(path), header_only=header_only, force=force, source=path.name)
    if not header_only:
        try:
            raw = _raw_pixel_element(ds)
        except (NotImplementedError, ValueError, KeyError) as exc:  # e.g. an unknown VR on the pixel data
            raise NotDicomError(
                f"{path.name}: its pixel data element is malformed ({str(exc).splitlines()[0][:200]})"
            ) from None
        if raw is None and _pixel_tag_in_file(path):
            # pydicom drops an encapsulated element whose delimiter is missing
            raise TruncatedFileError(f"{path.name}: the file ends before its pixel data does")
        if raw is not None and _raw_is_short(raw):
            raise TruncatedFileError(
                f"{path.name}: the file ends {raw.length - len(raw.value)} bytes before its pixel data does"
            )
    return ds


def _raw_pixel_element(ds: Dataset):
    for tag in PIXEL_TAGS:
        if tag in ds:
            return ds.get_item(tag)
    return None


def _raw_is_short(raw) -> bool:
    length = getattr(raw, "length", None)
    value = getattr(raw, "value", None)
    return length is not None and length != 0xFFFFFFFF and isinstance(value, (bytes, bytearray)) and len(value) < length


def _pixel_tag_in_file(path: Path) -> bool:
    """Whether the file has a pixel data element pydicom did not return; raises
    TruncatedFileError when the header scan finds the file cut short."""
    try:
        return scan_header(path).pixel is not None
    except TruncatedFileError:
        raise
    except ImageReadError:
        return False


@dataclass(frozen=True)
class PixelElement:
    """Where the pixel data element sits in the file, read without reading its value."""

    tag: int
    offset: int  # start of the element (its tag)
    value_offset: int
    length: int | None  # None: undefined length (encapsulated)
    vr: str | None
    end: int  # first byte after the element (as far as it could be walked)
    truncated: bool
    fragments: int = 0  # encapsulated: number of fragments after the basic offset table
    malformed: str = ""  # encapsulated: what is wrong with the item structure
    first_fragment: int | None = None  # encapsulated: file offset of the first fragment's value


@dataclass(frozen=True)
class HeaderScan:
    """A header-only read of one file."""

    path: Path
    dataset: Dataset  # without pixel data
    file_size: int
    pixel: PixelElement | None  # None: the file holds no pixel data element
    positional: bool = True  # False when the layout could not be checked (deflated syntax)
    codec_size: DeclaredSize | None = None  # the first compressed frame's own header (JPEG/J2K)

    @property
    def transfer_syntax(self) -> UID | None:
        meta = getattr(self.dataset, "file_meta", None)
        uid = meta.get("TransferSyntaxUID") if meta is not None else None
        return UID(str(uid)) if uid else None


def scan_header(path: str | os.PathLike) -> HeaderScan:
    """Header-only read plus the position, length and completeness of the pixel data element.

    Costs one header parse and a few small reads/seeks, independent of the pixel data size."""
    path = Path(path)
    force = _open_kind(path)
    size = path.stat().st_size
    with open(path, "rb") as fp:
        ds = _read(fp, header_only=True, force=force, source=path.name)
        position = fp.tell()
        meta = getattr(ds, "file_meta", None)
        ts = UID(str(meta.get("TransferSyntaxUID"))) if meta is not None and meta.get("TransferSyntaxUID") else None
        if ts == "1.2.840.10008.1.2.1.99":  # deflated: positions refer to the inflated stream
            return HeaderScan(path, ds, size, _deflated_pixel_guess(path), positional=False)
        implicit = ts == "1.2.840.10008.1.2" if ts is not None else bool(getattr(ds, "is_implicit_VR", False))
        little = ts != "1.2.840.10008.1.2.2"
        pixel = _locate_pixel_element(fp, position, size, implicit=implicit, little=little)
        codec = None
        if pixel is not None and pixel.first_fragment is not None:
            fp.seek(pixel.first_fragment)
            codec = declared_size(fp.read(1 << 16))
    if pixel is None:
        _check_last_element_complete(ds, size, path.name)
    return HeaderScan(path, ds, size, pixel, codec_size=codec)


@dataclass(frozen=True)
class QuickScan:
    """A header-only read by the fast walk (:mod:`core_model.imaging.quick_header`): what
    :class:`HeaderScan` holds, with ``dataset`` a keyword -> value mapping of the top-level and
    file meta elements asked for instead of a whole pydicom dataset."""

    path: Path
    dataset: dict[str, Any]
    file_size: int
    pixel: PixelElement
    positional: bool = True
    codec_size: DeclaredSize | None = None

    @property
    def transfer_syntax(self) -> UID | None:
        uid = self.dataset.get("TransferSyntaxUID")
        return UID(str(uid)) if uid else None


QUICK_READ = 1 << 16  # bytes read at once by quick_scan (a header rarely needs more)
QUICK_MAX_HEADER = 4 << 20  # headers longer than this are read by pydicom
_QUICK_ALWAYS = (
    "TransferSyntaxUID",
    "MediaStorageSOPClassUID",
    "SOPClassUID",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
)
_QUICK_TAGS: dict[tuple[str, ...], dict[int, str]] = {}


def quick_scan(
    path: str | os.PathLike, keywords: tuple[str, ...] = (), head: bytes = b"", fp: BinaryIO | None = None
) -> QuickScan | None:
    """The fast header read of :mod:`core_model.imaging.quick_header`, for the import of many
    files: the values of ``keywords`` (plus what :func:`check_header` reads) and the pixel
    data element, from one open and one read of a typical file. ``head``: the file's first
    bytes where the caller has read them already (``fp``: the file, open, where it has).
    Returns None where the fast walk leaves the file to pydicom (then use :func:`scan_header`,
    which gives every specific refusal); raises OSError when the file cannot be read. Pass
    the result to :func:`check_header`."""
    if fp is None:
        with open(path, "rb") as f:
            return quick_scan(path, keywords, head, f)
    from core_model.imaging.quick_header import ShortHeader, walk_header

    wanted = _QUICK_TAGS.get(keywords)
    if wanted is None:
        from pydicom.datadict import tag_for_keyword

        wanted = {}
        for keyword in _QUICK_ALWAYS + keywords:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"not a DICOM keyword: {keyword}")
            wanted[int(tag)] = keyword
        _QUICK_TAGS[keywords] = wanted
    path = Path(path)
    size = os.fstat(fp.fileno()).st_size
    buf = head
    if len(buf) < QUICK_READ and len(buf) < size:
        fp.seek(len(buf))
        buf += fp.read(QUICK_READ - len(buf))
    while True:
        try:
            walked = walk_header(buf, wanted)
            break
        except ShortHeader:
            if len(buf) >= size or len(buf) >= QUICK_MAX_HEADER:
                return None
            fp.seek(len(buf))
            buf += fp.read(min(len(buf), QUICK_MAX_HEADER - len(buf)))
    if walked is None:
        return None
    values, position, implicit = walked
    pixel = _locate_pixel_element(fp, position, size, implicit=implicit, little=True)
    if pixel is None or pixel.value_offset > size:  # cut inside the element's own header
        return None
    codec = None
    if pixel.first_fragment is not None:
        fp.seek(pixel.first_fragment)
        codec = declared_size(fp.read(1 << 16))
    return QuickScan(path, values, size, pixel, codec_size=codec)


def _refuse_deflate_bomb(path: Path) -> None:
    """pydicom inflates a deflated dataset whole as soon as it reads the file, even header
    only: for the Deflated Explicit VR Little Endian syntax, inflate it here first (in
    chunks, nothing kept) and refuse it when it exceeds the budget."""
    with open(path, "rb") as fp:
        fp.seek(132)
        head = fp.read(12)
        if len(head) < 12 or head[:4] != b"\x02\x00\x00\x00":  # (0002,0000) File Meta Group Length
            return
        (meta_len,) = struct.unpack("<I", head[8:12])
        meta = fp.read(min(meta_len, 1 << 16))
        if b"1.2.840.10008.1.2.1.99" not in meta:
            return
        fp.seek(132 + 12 + meta_len)
        _check_inflated_size(fp, 0, path.name)


def _check_inflated_size(fp, size: int, source: str) -> None:
    """A deflated dataset (1.2.840.10008.1.2.1.99) is inflated whole by pydicom: inflate it
    here first, in chunks and without keeping the output, and refuse a deflate bomb."""
    import zlib

    budget = MAX_PIXEL_BYTES + (64 << 20)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        while True:
            chunk = fp.read(1 << 16)
            if not chunk:
                break
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 20))
                chunk = inflater.unconsumed_tail
                if total > budget:
                    raise ImageTooLargeError(
                        f"{source}: the deflated dataset inflates to more than {budget // 2**20:,} MiB; "
                        "refused before reading it"
                    )
            if inflater.eof:
                break
    except zlib.error:
        pass  # pydicom reports the corrupt stream when it reads it


def _deflated_pixel_guess(path: Path) -> PixelElement | None:
    ds = _read(str(path), header_only=False, force=False, source=path.name)
    raw = _raw_pixel_element(ds)
    if raw is None:
        return None
    length = None if raw.length == 0xFFFFFFFF else raw.length
    return PixelElement(int(raw.tag), 0, 0, length, raw.VR, 0, _raw_is_short(raw), 1)


def _check_last_element_complete(ds: Dataset, size: int, source: str) -> None:
    """Without pixel data the file must end exactly where its last element does: shorter means
    the last value is cut, longer means the file stops inside the next element's header."""
    if not len(ds):
        return
    last = ds.get_item(max(ds.keys()))
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length in (None, 0xFFFFFFFF):
        return
    if tell + length != size:
        raise TruncatedFileError(f"{source}: the file ends before its data does")


def _locate_pixel_element(fp, position: int, size: int, *, implicit: bool, little: bool) -> PixelElement | None:
    end = "<" if little else ">"
    fp.seek(position)
    head = fp.read(12)
    if len(head) < 8:
        return None
    group, elem = struct.unpack(end + "HH", head[:4])
    tag = group << 16 | elem
    if tag not in PIXEL_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack(end + "I", head[4:8])
        vr, value_offset = None, position + 8
    else:
        vr_bytes = head[4:6]
        vr = vr_bytes.decode("ascii", "replace")
        if vr_bytes in _LONG_VRS:
            if len(head) < 12:
                return PixelElement(tag, position, position + 12, 0, vr, size, True)
            (length,) = struct.unpack(end + "I", head[8:12])
            value_offset = position + 12
        else:
            (length,) = struct.unpack(end + "H", head[6:8])
            value_offset = position + 8
    if length != 0xFFFFFFFF:
        stop = value_offset + length
        return PixelElement(tag, position, value_offset, length, vr, min(stop, size), stop > size)
    # Encapsulated: walk the items (basic offset table, then fragments) by their 8-byte headers.
    p, items, malformed, truncated, first = value_offset, 0, "", False, None
    while True:
        fp.seek(p)
        item = fp.read(8)
        if len(item) < 8:
            truncated = True
            break
        g, e, n = struct.unpack(end + "HHI", item)
        if (g, e) == (0xFFFE, 0xE0DD):
            p += 8
            break
        if (g, e) != (0xFFFE, 0xE000) or n == 0xFFFFFFFF:
            malformed = f"unexpected element ({g:04X},{e:04X}) inside the encapsulated pixel data"
            break
        if items == 1 and first is None:
            first = p + 8
        if p + 8 + n > size:
            truncated = True
            p = size
            break
        items += 1
        p += 8 + n
    return PixelElement(tag, position, value_offset, None, vr, p, truncated, max(items - 1, 0), malformed, first)


Header = Dataset | Mapping[str, Any]  # a pydicom dataset, or a QuickScan's keyword -> value


def _int(ds: Header, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def expected_native_length(ds: Header) -> int | None:
    """Bytes of uncompressed pixel data the header describes (PS3.5 8.1.1), None if unknown."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    alloc, spp = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    if not rows or not cols or not alloc:
        return None
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "YBR_FULL_422" and spp == 3:  # two of three samples subsampled
        return rows * cols * 2 * (alloc // 8) * frames
    bits = rows * cols * spp * frames * alloc
    return (bits + 7) // 8


def check_transfer_syntax(ds: Header, source: str = "") -> UID | None:
    """The dataset's transfer syntax, or :class:`UnsupportedImageError` naming a syntax that is
    not a DICOM transfer syntax (a private or unknown UID: nobody can decode it)."""
    value = _meta_value(ds, "TransferSyntaxUID")
    if not value:
        return None
    ts = UID(str(value).strip("\x00 "))
    if not ts.is_transfer_syntax:
        name = f"{source}: " if source else ""
        shown = str(ts) if len(str(ts)) <= 64 else str(ts)[:64] + "..."
        raise UnsupportedImageError(
            f"{name}transfer syntax {shown!r} is not a standard DICOM transfer syntax (private or unknown); "
            "unsupported",
            reason="unsupported",
        )
    return ts


def _meta_value(ds: Header, keyword: str) -> Any:
    """A file meta element's value: from ``file_meta`` of a dataset, or from a QuickScan's
    mapping (which holds the file meta elements beside the others)."""
    if isinstance(ds, Dataset):
        meta = getattr(ds, "file_meta", None)
        return meta.get(keyword) if meta is not None else None
    return ds.get(keyword)


def check_budget(scan: HeaderScan | QuickScan | Dataset, source: str = "") -> None:
    """Refuse (:class:`ImageTooLargeError`) a file whose header, stored pixel data or first
    compressed frame header declares more than the budgets of :mod:`core_model.imaging.limits`.
    Takes a :class:`HeaderScan` (files) or a dataset (pixel data in memory)."""
    ds: Header
    if isinstance(scan, (HeaderScan, QuickScan)):
        ds, name, pixel, codec = scan.dataset, scan.path.name, scan.pixel, scan.codec_size
        stored = None
        if pixel is not None:
            stored = pixel.length if pixel.length is not None else max(pixel.end - pixel.value_offset, 0)
    else:
        ds, name, stored, codec = scan, source, None, None
        raw = _raw_pixel_element(ds)
        value = getattr(raw, "value", None) if raw is not None else None
        if isinstance(value, (bytes, bytearray)):
            stored = len(value)
            undefined = getattr(raw, "length", None) == 0xFFFFFFFF or getattr(raw, "is_undefined_length", False)
            if undefined or (getattr(ds, "file_meta", None) is not None and _is_compressed(ds)):
                codec = declared_size(_first_fragment(bytes(value[: 1 << 16])))
    if stored is not None:
        check_stored_bytes(stored, source=name)
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if rows and cols:
        alloc = _int(ds, "BitsAllocated") or 8
        check_pixels(
            rows,
            cols,
            frames=_int(ds, "NumberOfFrames") or 1,
            samples=_int(ds, "SamplesPerPixel") or 1,
            bytes_per_sample=max(alloc // 8, 1),
            source=name,
        )
    if codec is not None:
        check_pixels(
            codec.rows, codec.columns, samples=codec.components, source=name, what="the compressed frame's own header"
        )


def _is_compressed(ds: Dataset) -> bool:
    try:
        ts = check_transfer_syntax(ds)
    except ImageReadError:
        return False
    return bool(ts is not None and ts.is_compressed)


def _first_fragment(value: bytes) -> bytes:
    """The start of the first fragment of encapsulated pixel data (after the offset table)."""
    p = 0
    for _ in range(2):
        if len(value) < p + 8:
            return b""
        g, e, n = struct.unpack("<HHI", value[p : p + 8])
        if (g, e) != (0xFFFE, 0xE000):
            return b""
        if _ == 1:
            return value[p + 8 : p + 8 + n]
        p += 8 + n
    return b""


def check_rescale(ds: Header, source: str = "") -> None:
    """Rescale Slope / Intercept that would make every pixel NaN or constant: refused
    (:class:`InvalidValuesError`) rather than rendered as a silently black image."""
    name = f"{source}: " if source else ""
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper() not in MONOCHROME:
        return
    if "ModalityLUTSequence" in ds:
        return
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in ds:
            continue
        raw = ds.get(keyword)
        if raw in (None, ""):
            continue
        try:
            value = float(raw[0] if isinstance(raw, (list, tuple, pydicom.multival.MultiValue)) else raw)
        except (TypeError, ValueError, IndexError):
            raise InvalidValuesError(f"{name}{keyword} is not a number") from None
        if not math.isfinite(value):
            raise InvalidValuesError(f"{name}{keyword} is {value}, not a finite number; the image would be meaningless")
        if keyword == "RescaleSlope" and value == 0:
            raise InvalidValuesError(f"{name}RescaleSlope is 0; every pixel would have the same value")


def check_header(scan: HeaderScan | QuickScan) -> None:
    """Raise the specific :class:`ImageReadError` a file would hit when decoded, using only its
    header, the pixel element's position and length and the installed decoders."""
    ds: Header = scan.dataset
    name = scan.path.name
    sop_class = str(ds.get("SOPClassUID", "") or _meta_value(ds, "MediaStorageSOPClassUID") or "")
    if sop_class == MEDIA_DIRECTORY_SOP_CLASS:
        raise NoPixelDataError(f"{name}: a DICOMDIR (media directory), not an image")
    pixel = scan.pixel
    if pixel is None:
        what = UID(sop_class).name if sop_class else ""
        raise NoPixelDataError(f"{name}: no image pixel data" + (f" ({what})" if what else ""))
    if pixel.truncated:
        missing = (pixel.value_offset + pixel.length - scan.file_size) if pixel.length is not None else None
        detail = f" ({missing} bytes missing)" if missing and missing > 0 else ""
        raise TruncatedFileError(f"{name}: the file ends before its pixel data does{detail}")
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if not _int(ds, keyword):
            raise PixelDataMismatchError(f"{name}: the image header lacks a valid {keyword}")
    alloc = _int(ds, "BitsAllocated") or 0  # checked above: a positive number
    stored = _int(ds, "BitsStored") or alloc
    if stored > alloc:
        raise PixelDataMismatchError(f"{name}: Bits Stored ({stored}) exceeds Bits Allocated ({alloc})")
    spp = _int(ds, "SamplesPerPixel") or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if spp not in (1, 3) or (photometric and photometric not in _KNOWN_PHOTOMETRIC):
        raise UnsupportedImageError(
            f"{name}: unsupported image type ({spp} samples, {photometric or 'no photometric interpretation'})"
        )
    ts = check_transfer_syntax(ds, name)
    check_budget(scan)
    check_rescale(ds, name)
    compressed = bool(ts is not None and ts.is_compressed)
    if scan.positional and pixel.tag == 0x7FE00010:
        if compressed and pixel.length is not None:
            raise PixelDataMismatchError(
                f"{name}: the transfer syntax is compressed but the pixel data is not encapsulated"
            )
        if not compressed and pixel.length is None:
            raise PixelDataMismatchError(f"{name}: encapsulated pixel data in an uncompressed transfer syntax")
        if compressed:
            if pixel.malformed:
                raise PixelDataMismatchError(f"{name}: compressed pixel data is malformed ({pixel.malformed})")
            frames = _int(ds, "NumberOfFrames") or 1
            if pixel.fragments == 0:
                raise PixelDataMismatchError(f"{name}: the compressed pixel data holds no frame")
            if pixel.fragments < frames:
                raise PixelDataMismatchError(
                    f"{name}: {frames} frames announced but only {pixel.fragments} compressed fragments stored"
                )
            codec = scan.codec_size
            rows, cols = _int(ds, "Rows"), _int(ds, "Columns")  # checked above: positive
            if codec is not None and codec.rows and (codec.rows, codec.columns) != (rows, cols):
                raise PixelDataMismatchError(
                    f"{name}: the compressed frame is {codec.columns} x {codec.rows} but the header says "
                    f"{cols} x {rows}"
                )
        else:
            expected = expected_native_length(ds)
            if expected is not None and pixel.length is not None and pixel.length < expected:
                raise PixelDataMismatchError(
                    f"{name}: pixel data inconsistent with its header ({pixel.length} bytes stored, "
                    f"{expected} expected for {_int(ds, 'Rows')} x {_int(ds, 'Columns')} x {alloc} bits"
                    f"{' x ' + str(spp) + ' samples' if spp > 1 else ''})"
                )
    if scan.positional and pixel.tag in (0x7FE00008, 0x7FE00009) and pixel.length is not None:
        width = 4 if pixel.tag == 0x7FE00008 else 8
        rows, cols = _int(ds, "Rows") or 0, _int(ds, "Columns") or 0  # checked above: positive
        expected = rows * cols * spp * (_int(ds, "NumberOfFrames") or 1) * width
        if pixel.length < expected:
            raise PixelDataMismatchError(
                f"{name}: float pixel data inconsistent with its header ({pixel.length} bytes stored, "
                f"{expected} expected for {rows} x {cols} x {8 * width} bits)"
            )
    if ts is not None:
        no_decoder = missing_decoder_message(ts)
        if no_decoder:
            raise MissingDecoderError(f"{name}: {no_decoder}")


# --------------------------------------------------------------------------------------------
# Decoding


def decode_pixels(ds: Dataset, *, source: str = "") -> np.ndarray:
    """Decoded stored values of the first frame (2-D; colour images become PS3.3 luminance)."""
    name = f"{source}: " if source else ""
    raw = _raw_pixel_element(ds)
    if raw is None:
        filename = getattr(ds, "filename", None)
        if isinstance(filename, (str, os.PathLike)) and os.path.exists(filename) and _pixel_tag_in_file(Path(filename)):
            raise TruncatedFileError(f"{name}the file ends before its pixel data does")
        sop = ds.get("SOPClassUID")
        what = f" ({UID(str(sop)).name})" if sop else ""
        raise NoPixelDataError(f"{name}no image pixel data{what}")
    if _raw_is_short(raw):
        raise TruncatedFileError(f"{name}the file ends {raw.length - len(raw.value)} bytes before its pixel data does")
    ts = check_transfer_syntax(ds, source)
    if ts is not None:
        missing = missing_decoder_message(ts)
        if missing:
            raise MissingDecoderError(name + missing)
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        if not _int(ds, keyword):
            raise PixelDataMismatchError(f"{name}the image header lacks a valid {keyword}")
    check_budget(ds, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except ValueError as exc:
        msg = str(exc)
        if "length" in msg.lower() or "expected" in msg.lower() or "bytes" in msg.lower():
            raise PixelDataMismatchError(f"{name}pixel data inconsistent with its header ({msg})") from exc
        raise DecodeError(f"{name}pixel data could not be decoded ({msg})") from exc
    except (EOFError, OSError) as exc:
        raise TruncatedFileError(f"{name}pixel data ends early ({exc})") from exc
    except (AttributeError, KeyError, TypeError) as exc:
        raise PixelDataMismatchError(f"{name}image header incomplete ({exc})") from exc
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except MemoryError as exc:
        raise DecodeError(f"{name}pixel data could not be decoded (out of memory)") from exc
    except BaseException as exc:  # a decoder rejected the stream: corrupt or unsupported variant
        # (BaseException: Rust decoders such as pylibjpeg-rle panic with pyo3's PanicException)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DecodeError(f"{name}compressed pixel data could not be decoded ({first[:200]})") from None
    frames = _int(ds, "NumberOfFrames") or 1
    spp = _int(ds, "SamplesPerPixel") or 1
    if frames > 1:
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR" and arr.ndim == 2:
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:
        if arr.shape[-1] != 3 or spp not in (1, 3):
            raise UnsupportedImageError(f"{name}unsupported pixel layout {arr.shape}")
        # pydicom returns RGB (YBR converted); luminance per ITU-R BT.601 as in PS3.3 C.7.6.3.1.2
        arr = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise UnsupportedImageError(f"{name}unsupported pixel array shape {arr.shape}")
    return arr


def modality_values(ds: Dataset, stored: np.ndarray | None = None, *, source: str = "") -> np.ndarray:
    """Stored values -> modality values (PS3.3 C.11.1: rescale slope/intercept or Modality LUT
    Sequence). Colour images (already luminance) pass through. A NaN / zero slope or values
    that are not finite raise :class:`InvalidValuesError` (never a silently black image)."""
    source = source or Path(str(getattr(ds, "filename", "") or "")).name
    if stored is None:
        stored = decode_pixels(ds, source=source)
    if stored.dtype.kind == "f":
        values = stored.astype(np.float64)
    elif str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() not in MONOCHROME:
        values = stored.astype(np.float64)
    else:
        check_rescale(ds, source)
        with np.errstate(all="ignore"):
            values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    if values.size and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise InvalidValuesError(
            f"{source + ': ' if source else ''}{bad:,} of {values.size:,} pixel values are not finite numbers (NaN or "
            "infinite); refused rather than shown wrongly"
        )
    return values


# --------------------------------------------------------------------------------------------
# VOI
#
# The modality LUT above is pydicom's ``apply_modality_lut``. The VOI below is our own, not
# pydicom's ``apply_voi_lut`` / ``apply_windowing`` / ``apply_voi``, because (pydicom 3.0):
# - its window output lies in the stored value range (Bits Stored, Pixel Representation and the
#   rescale), ours in [0, 1] for any display, and it takes centre and width only from the file,
#   while the viewer also needs a manual window/level and a full-range preset that keeps
#   Pixel Padding Value out of the range;
# - it raises on a window width the standard forbids, where we leave that window out of the
#   presets (a file with one bad window still shows), and it writes converted values back into
#   the dataset (``ds.BitsStored = ...``);
# - it reads OW LUT Data as 16-bit words whatever the descriptor's depth (8-bit LUTs packed two
#   per word fail), its 8-bit LUT index wraps for inputs above 255, and it neither reads a "first
#   value mapped" written as US but meant as SS (:func:`lut_first_mapped`) nor tolerates entries
#   above the declared depth.
# Where both apply (LINEAR, LINEAR_EXACT and SIGMOID windows, VOI LUT Sequences, MONOCHROME1)
# tests/imaging/test_voi_vs_pydicom.py checks ours against pydicom's.


def _as_list(value: Any) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return list(value)
    return [value]


def voi_function(ds: Dataset) -> str:
    """The file's VOI LUT Function (C.11.2.1.3); unknown or absent values mean LINEAR."""
    value = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    return value if value in VOI_FUNCTIONS else "LINEAR"


def _valid_width(width: float, function: str) -> bool:
    # C.11.2.1.2: Window Width >= 1 for LINEAR, > 0 for LINEAR_EXACT and SIGMOID
    return math.isfinite(width) and (width >= 1 if function == "LINEAR" else width > 0)


def window_presets(ds: Dataset) -> list[WindowPreset]:
    """Every VOI the file offers, in file order: VOI LUT Sequence items first, then each Window
    Center / Width pair (with its Window Center & Width Explanation when present). Windows
    with an invalid width are left out. Always ends with a full-range preset."""
    presets: list[WindowPreset] = []
    for i, item in enumerate(ds.get("VOILUTSequence", []) or []):
        if "LUTDescriptor" not in item or "LUTData" not in item:
            continue
        name = str(item.get("LUTExplanation", "") or "").strip() or f"VOI LUT {i + 1}"
        presets.append(WindowPreset(index=i, kind="voi_lut", name=name))
    centers = _as_list(ds.get("WindowCenter"))
    widths = _as_list(ds.get("WindowWidth"))
    explanations = _as_list(ds.get("WindowCenterWidthExplanation"))
    function = voi_function(ds)
    for i, (c, w) in enumerate(zip(centers, widths)):
        try:
            center, width = float(c), float(w)
        except (TypeError, ValueError):
            continue
        if not (math.isfinite(center) and _valid_width(width, function)):
            continue
        name = str(explanations[i]).strip() if i < len(explanations) and explanations[i] else ""
        presets.append(
            WindowPreset(
                index=i, kind="window", name=name or f"Window {i + 1}", center=center, width=width, function=function
            )
        )
    presets.append(WindowPreset(index=0, kind="full_range", name="Full range (min-max)"))
    return presets


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3 with y_min = 0 and y_max = 1."""
    x = np.asarray(values, dtype=np.float64)
    c, w = float(center), float(width)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if function == "LINEAR_EXACT":
        y = (x - c) / w + 0.5
        y = np.where(x <= c - w / 2.0, 0.0, y)
        return np.where(x > c + w / 2.0, 1.0, y)
    w = max(w, 1.0)  # LINEAR needs w >= 1
    if w == 1.0:  # the formula divides by w - 1: a threshold at c - 0.5
        return np.where(x > c - 0.5, 1.0, 0.0)
    y = (x - (c - 0.5)) / (w - 1.0) + 0.5
    y = np.where(x <= c - 0.5 - (w - 1.0) / 2.0, 0.0, y)
    return np.where(x > c - 0.5 + (w - 1.0) / 2.0, 1.0, y)


def _lut_table(item: Dataset, ds: Dataset, values: np.ndarray) -> tuple[int, np.ndarray, float]:
    """(first input value mapped, entries, output maximum) of a LUT item (PS3.3 C.11.2.1.1)."""
    descriptor = [int(v) for v in _as_list(item.LUTDescriptor)]
    if len(descriptor) != 3:
        raise UnsupportedImageError("VOI LUT descriptor must hold three values")
    entries, first, bits = descriptor
    entries = entries or 65536  # 0 means 2^16
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        if bits <= 8 and len(data) in (entries, entries + 1):
            table = np.frombuffer(bytes(data), dtype=np.uint8)
        else:
            table = np.frombuffer(bytes(data)[: len(data) // 2 * 2], dtype="<u2" if little else ">u2")
    else:
        table = np.asarray(_as_list(data), dtype=np.float64)
    table = np.asarray(table[:entries], dtype=np.float64)
    if table.size == 0:
        raise UnsupportedImageError("VOI LUT holds no entries")
    first = lut_first_mapped(first, float(np.min(values)))
    top = float(2**bits - 1) if 8 <= bits <= 16 else 0.0
    if table.max() > top:  # malformed: entries exceed the declared depth; use the depth they need
        top = float(2 ** int(math.ceil(math.log2(table.max() + 1))) - 1)
    return first, table, max(top, 1.0)


def lut_first_mapped(first: int, lowest_value: float) -> int:
    """The LUT Descriptor's "first input value mapped" (its second value, C.11.2.1.1): stored as
    US, but meant as SS when the values it maps can be negative (a value >= 32768 then means
    ``first - 65536``)."""
    return first - 65536 if first >= 32768 and lowest_value < 0 else first


def voi_lut_window(item: Dataset, lowest_value: float) -> tuple[float, float]:
    """(centre, width) of the linear window spanning a VOI LUT item's input range (where a
    manual window/level drag starts from when that LUT is shown)."""
    entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    first = lut_first_mapped(first, lowest_value)
    return first + entries / 2.0, float(entries)


def voi_lut(values: np.ndarray, item: Dataset, ds: Dataset) -> np.ndarray:
    """One VOI LUT Sequence item -> [0, 1]: inputs below the first mapped value take the first
    entry, above the last take the last (C.11.2.1.1); output scaled by 2^bits - 1."""
    first, table, top = _lut_table(item, ds, values)
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, table.size - 1)
    return table[index] / top


def _full_range(values: np.ndarray, ds: Dataset) -> np.ndarray:
    data = values
    padding = ds.get("PixelPaddingValue")
    if padding is not None and str(ds.get("PhotometricInterpretation", "")).upper() in MONOCHROME:
        # C.7.5.1.1.2: padding pixels are not image; keep them out of the automatic range
        try:
            stored_pad = float(padding)
            limit = ds.get("PixelPaddingRangeLimit")
            slope = float(ds.get("RescaleSlope", 1) or 1)
            intercept = float(ds.get("RescaleIntercept", 0) or 0)
            lo_pad = stored_pad * slope + intercept
            hi_pad = (float(limit) * slope + intercept) if limit is not None else lo_pad
            lo_pad, hi_pad = min(lo_pad, hi_pad), max(lo_pad, hi_pad)
            keep = (values < lo_pad) | (values > hi_pad)
            if keep.any():
                data = values[keep]
        except (TypeError, ValueError):
            pass
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def apply_voi(
    values: np.ndarray,
    ds: Dataset,
    preset: WindowPreset | None = None,
    *,
    center: float | None = None,
    width: float | None = None,
    function: str | None = None,
) -> np.ndarray:
    """Modality values -> [0, 1] VOI output (0 = lowest output, before any inversion).

    ``center``/``width`` override the file (manual window/level in the viewer); they use
    ``function`` or else the file's VOI LUT Function. ``preset`` None means the default: the
    first VOI the file offers, else the full range."""
    values = np.asarray(values, dtype=np.float64)
    if center is not None and width is not None:
        fn = (function or voi_function(ds)).upper()
        fn = fn if fn in VOI_FUNCTIONS else "LINEAR"
        w = float(width)
        if not _valid_width(w, fn):
            w = 1.0 if fn == "LINEAR" else 1e-6
        return voi_window(values, float(center), w, fn)
    if preset is None:
        preset = window_presets(ds)[0]
    if preset.kind == "full_range":
        return _full_range(values, ds)
    if preset.kind == "voi_lut":
        return voi_lut(values, ds.VOILUTSequence[preset.index], ds)
    assert preset.center is not None and preset.width is not None  # a window preset has both
    return voi_window(values, preset.center, preset.width, preset.function)


def needs_inversion(ds: Dataset) -> bool:
    """MONOCHROME1 (higher values darker) or an INVERSE Presentation LUT Shape. DX files carry
    both together (C.8.11.3: INVERSE "shall be used if" MONOCHROME1); that is one inversion."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def is_monochrome(ds: Dataset) -> bool:
    """MONOCHROME1 / MONOCHROME2 (modality values), not a colour image shown as luminance."""
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper() in MONOCHROME


def file_inversion(ds: Dataset) -> bool:
    """Whether the display inverts the VOI output by the file's own rule: :func:`needs_inversion`
    for monochrome images, never for colour (luminance) images."""
    return needs_inversion(ds) if is_monochrome(ds) else False


def to_display(unit: np.ndarray, invert: bool) -> np.ndarray:
    """[0, 1] -> uint8 display values (round half to even), inverting after VOI when asked."""
    if invert:
        unit = 1.0 - unit
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def _render_by_lut(ds: Dataset, stored: np.ndarray, render) -> np.ndarray | None:
    """The display of integer stored values through a lookup table: ``render`` (the pipeline
    of :func:`render_dataset`) applied once to every value from the image's lowest to its
    highest (in the stored dtype), then indexed by the pixels. Every step of the pipeline is
    per pixel, and with a linear rescale the lowest / highest modality values (which the
    full-range preset and VOI LUTs read) come from the lowest / highest stored values, so the
    result is identical to rendering the whole image, at a fraction of its float64 passes.
    None where that does not hold (a Modality LUT Sequence, Pixel Padding Value, colour, wide
    or small images): the caller renders the image itself."""
    if (
        stored.ndim != 2
        or stored.dtype not in (np.uint8, np.uint16, np.int8, np.int16)
        or not is_monochrome(ds)
        or "ModalityLUTSequence" in ds
        or "PixelPaddingValue" in ds
    ):
        return None
    lo, hi = int(stored.min()), int(stored.max())
    if 4 * (hi - lo + 1) > stored.size:
        return None
    domain = np.arange(lo, hi + 1, dtype=np.int64).astype(stored.dtype)[None]
    table = render(domain)
    if table is None:
        return None
    if stored.dtype.kind == "i":  # order-preserving map of signed values onto 0 .. 2^bits - 1
        bits = 8 * stored.itemsize
        index = stored.view(f"u{stored.itemsize}") ^ np.array(1 << (bits - 1), dtype=f"u{stored.itemsize}")
        offset = lo + (1 << (bits - 1))
    else:
        index, offset = stored, lo
    full = np.zeros(offset + table.shape[1], dtype=np.uint8)
    full[offset:] = table[0]
    return full[index]


def render_dataset(
    ds: Dataset,
    preset: int | WindowPreset | None = None,
    *,
    center: float | None = None,
    width: float | None = None,
    user_invert: bool = False,
    values: np.ndarray | None = None,
    source: str = "",
) -> np.ndarray:
    """Full display pipeline for one dataset -> uint8 image at native resolution.

    ``preset`` is a 0-based index into :func:`window_presets` (or a preset); None = default.
    The file's own inversion (MONOCHROME1 / INVERSE) is always applied; ``user_invert``
    inverts once more on top of it (the viewer's "i" key)."""
    if values is None:
        stored = decode_pixels(ds, source=source)

        def render(domain: np.ndarray) -> np.ndarray | None:
            v = modality_values(ds, domain, source=source)
            if not np.isfinite(v).all():
                return None  # the whole image gives the specific error
            return render_dataset(
                ds, preset, center=center, width=width, user_invert=user_invert, values=v, source=source
            )

        shown = _render_by_lut(ds, stored, render)
        if shown is not None:
            return shown
        values = modality_values(ds, stored, source=source)
    if isinstance(preset, int) and not isinstance(preset, bool):
        presets = window_presets(ds)
        if not 0 <= preset < len(presets):
            raise UnsupportedImageError(
                f"{source + ': ' if source else ''}preset {preset + 1} does not exist; the file offers "
                f"{len(presets)} (" + ", ".join(p.label() for p in presets) + ")",
                reason="bad_preset",
            )
        preset = presets[preset]
    unit = apply_voi(values, ds, cast("WindowPreset | None", preset), center=center, width=width)
    return to_display(unit, file_inversion(ds) != user_invert)


def render_file(path: str | os.PathLike, preset: int | None = None) -> np.ndarray:
    """Read and render a DICOM file with its default display (or the 0-based ``preset``)."""
    ds = read_dataset(path)
    return render_dataset(ds, preset, source=Path(path).name)
