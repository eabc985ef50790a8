"""Hostile and broken image files, written here: each is refused *before* anything is decoded
(decompression bombs), or refused with its specific reason, or shown honestly - never an
internal error, a traceback or a silently wrong (e.g. constant black) image. Every case goes
through the readers users reach: the importer, ``render`` / the viewer (``display_file``,
``load_image``) and the model input (``load_display`` -> ``predict``)."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from app.library import open_library
from app.library.importer import Importer
from app.logic.image import display_file, load_image
from core_model.imaging.dicom import check_header, read_dataset, render_file, scan_header
from core_model.imaging.errors import ImageReadError
from core_model.imaging.limits import MAX_PIXELS, check_sequence_depth, sequence_depth
from core_model.imaging.preprocess import load_display, prepare_input
from core_model.imaging.sniff import J2K_MAGIC, image_kind
from tests.imaging.builders import REAL_PNG, gradient, write

ROOT = Path(__file__).resolve().parents[2]


# --- builders for hostile files ---------------------------------------------------------------


def refused_in_a_child(imports: str, call: str, path: Path, timeout: float = 180) -> tuple[str, int, object]:
    """Run ``call`` on ``path`` in a fresh Python process: (the refusal's reason, the child's own
    peak resident memory in MB, the CompletedProcess). The peak is VmHWM, which belongs to the
    child's address space (exec starts it afresh); getrusage's ru_maxrss would not do, since Linux
    carries it across exec and a child of a large pytest process would report the parent's peak."""
    code = (
        f"import sys\n{imports}\nfrom core_model.imaging.errors import ImageReadError\n"
        f"try:\n    {call}\nexcept ImageReadError as e:\n    print(e.reason)\n"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    reason, peak_mb = out.stdout.split()
    return reason, int(peak_mb), out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, width: int, height: int, depth: int = 8) -> Path:
    """A valid-looking PNG whose IHDR declares ``width x height``; the IDAT holds a few rows
    (a decoder still allocates the whole image before finding out)."""
    row = b"\x00" + b"\x00" * (width * depth // 8)
    idat = zlib.compress(row * 4, 9)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0))
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def _patch_sof(jpeg: bytes, rows: int, cols: int) -> bytes:
    at = jpeg.find(b"\xff\xc0")
    assert at > 0
    return jpeg[: at + 5] + struct.pack(">HH", rows, cols) + jpeg[at + 9 :]


def jpeg_bomb(path: Path, rows: int = 60000, cols: int = 60000) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buf, format="JPEG")
    path.write_bytes(_patch_sof(buf.getvalue(), rows, cols))
    return path


def dicom_with_patched_stream(tmp_path: Path, ts: str, patch) -> Path:
    bits = 8 if ts == uid.JPEGBaseline8Bit else 12
    src = write(tmp_path / "src.dcm", gradient(48, 40, bits=bits), ts, bits_stored=bits)
    out = tmp_path / "bomb.dcm"
    out.write_bytes(patch(src.read_bytes()))
    return out


def _patch_siz(data: bytes, rows: int, cols: int) -> bytes:
    at = data.find(J2K_MAGIC)
    assert at > 0
    siz = at + 4  # FF51 Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz
    return data[: siz + 4] + struct.pack(">II", cols, rows) + data[siz + 12 :]


def refusals(path: Path, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """(reason, message) from the importer (with --verify), the viewer, render's display, and
    the model input, for one file."""
    lib = open_library(tmp_path / f"lib-{path.stem}" / "library.db")
    try:
        summary = Importer(lib, verify=True, fsync=False).run([path])
    finally:
        lib.close()
    out = {}
    assert summary.imported == 0 and len(summary.rejected) == 1, summary
    out["import"] = (summary.rejected[0].reason, summary.rejected[0].message)
    for what, fn in (("display", display_file), ("viewer", load_image), ("model", load_display)):
        with pytest.raises(ImageReadError) as err:
            fn(path)
        out[what] = (err.value.reason, str(err.value))
    return out


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.main", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


# --- decompression bombs ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [8, 16])
def test_png_declaring_20000_squared_is_refused_before_decoding(tmp_path, depth):
    path = png_bomb(tmp_path / f"bomb{depth}.png", 20000, 20000, depth)
    for where, (reason, message) in refusals(path, tmp_path).items():
        assert reason == "too_large", (where, message)
        assert "20,000 x 20,000" in message and "refused" in message, (where, message)


def test_png_bomb_costs_no_memory_to_refuse(tmp_path):
    """The 16-bit 20,000 x 20,000 PNG would need 800 MB to decode (3.2 GB as float): the
    refusal happens from the header, in a process that stays small."""
    path = png_bomb(tmp_path / "bomb.png", 20000, 20000, 16)
    reason, peak_mb, out = refused_in_a_child(
        "from core_model.imaging.preprocess import prepare_input", "prepare_input(sys.argv[1])", path
    )
    assert reason == "too_large" and peak_mb < 400, out


def test_render_of_a_30000_squared_png_is_one_line_not_pillows_traceback(tmp_path):
    path = png_bomb(tmp_path / "huge.png", 30000, 30000)
    done = run_cli("render", str(path), "--out", str(tmp_path / "out.png"))
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and "DecompressionBomb" not in done.stderr
    assert done.stderr.count("\n") == 1 and "30,000 x 30,000" in done.stderr
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.png.part").exists()


def test_jpeg_frame_header_declaring_60000_squared_is_refused(tmp_path):
    path = jpeg_bomb(tmp_path / "bomb.jpg")
    for where, (reason, message) in refusals(path, tmp_path).items():
        assert reason == "too_large", (where, message)


def test_jpeg_inside_a_dicom_declaring_a_huge_frame_is_refused_from_the_header(tmp_path):
    path = dicom_with_patched_stream(tmp_path, uid.JPEGBaseline8Bit, lambda d: _patch_sof(d, 30000, 30000))
    with pytest.raises(ImageReadError) as err:
        check_header(scan_header(path))  # what the importer runs: no pixel data read
    assert err.value.reason == "too_large" and "compressed frame" in str(err.value)
    for where, (reason, message) in refusals(path, tmp_path).items():
        assert reason == "too_large", (where, message)


def test_jpeg2000_inside_a_dicom_declaring_a_huge_frame_is_refused(tmp_path):
    path = dicom_with_patched_stream(tmp_path, uid.JPEG2000Lossless, lambda d: _patch_siz(d, 40000, 40000))
    for where, (reason, message) in refusals(path, tmp_path).items():
        assert reason == "too_large" and "40,000 x 40,000" in message, (where, message)


def test_compressed_frame_disagreeing_with_rows_and_columns_is_a_mismatch(tmp_path):
    path = dicom_with_patched_stream(tmp_path, uid.JPEGBaseline8Bit, lambda d: _patch_sof(d, 480, 400))
    with pytest.raises(ImageReadError) as err:
        check_header(scan_header(path))
    assert err.value.reason == "pixel_data_mismatch" and "400 x 480" in str(err.value)


def test_dicom_header_declaring_huge_rows_and_columns_is_refused(tmp_path):
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40)))
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(tmp_path / "big.dcm")
    for where, (reason, message) in refusals(tmp_path / "big.dcm", tmp_path).items():
        assert reason == "too_large" and "60,000 x 60,000" in message, (where, message)


def test_many_frames_beyond_the_byte_budget_are_refused(tmp_path):
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40)))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4000, 4000, 100
    ds.save_as(tmp_path / "frames.dcm")
    reason, message = refusals(tmp_path / "frames.dcm", tmp_path)["import"]
    assert reason == "too_large" and "100 frame" in message


def test_huge_float_pixel_file_is_not_imported_as_valid(tmp_path):
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40)))
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored = 32, 32
    for keyword in ("HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    ds.FloatPixelData = np.zeros(48 * 40, np.float32).tobytes()
    ds.Rows, ds.Columns = 50000, 50000
    ds.save_as(tmp_path / "float.dcm")
    reason, message = refusals(tmp_path / "float.dcm", tmp_path)["import"]
    assert reason == "too_large"
    ds.Rows, ds.Columns = 480, 400  # plausible size, but only 48 x 40 floats stored
    ds.save_as(tmp_path / "float_short.dcm")
    reason, message = refusals(tmp_path / "float_short.dcm", tmp_path)["import"]
    assert reason == "pixel_data_mismatch" and "float pixel data" in message


# --- values that would make a silently wrong image -----------------------------------------------


@pytest.mark.parametrize(
    "slope, words", [("NaN", "not a finite number"), ("inf", "not a finite number"), ("0", "same value")]
)
def test_nan_infinite_or_zero_rescale_slope_is_refused_not_rendered_black(tmp_path, slope, words):
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40), rescale_slope=1.0, rescale_intercept=0.0))
    ds["RescaleSlope"].value = slope
    ds.save_as(tmp_path / "slope.dcm")
    for where, (reason, message) in refusals(tmp_path / "slope.dcm", tmp_path).items():
        assert reason == "invalid_values" and words in message and "RescaleSlope" in message, (where, message)


def test_nan_float_pixels_are_refused_not_shown(tmp_path):
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40)))
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored = 32, 32
    for keyword in ("HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    px = np.linspace(0, 1, 48 * 40, dtype=np.float32)
    px[::7] = np.nan
    ds.FloatPixelData = px.tobytes()
    ds.save_as(tmp_path / "nanfloat.dcm")
    for what in (display_file, load_image, load_display):
        with pytest.raises(ImageReadError) as err:
            what(tmp_path / "nanfloat.dcm")
        assert err.value.reason == "invalid_values" and "not finite" in str(err.value)


# --- specific reasons instead of internal errors --------------------------------------------------


def test_unknown_private_transfer_syntax_is_named_and_unsupported(tmp_path):
    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40)))
    ds.file_meta.TransferSyntaxUID = "1.3.6.1.4.1.99999.1.2.3"
    ds.save_as(tmp_path / "private.dcm")
    for where, (reason, message) in refusals(tmp_path / "private.dcm", tmp_path).items():
        assert reason == "unsupported", (where, message)
        assert "1.3.6.1.4.1.99999.1.2.3" in message and "unsupported" in message, (where, message)


def test_byte_flipped_native_pixel_data_is_an_image_and_a_flipped_header_a_reason(tmp_path):
    src = write(tmp_path / "a.dcm", gradient(48, 40))
    data = bytearray(src.read_bytes())
    ds = pydicom.dcmread(src)
    start = len(data) - len(ds.PixelData)
    flipped = bytes(data[:start]) + bytes(b ^ 0xFF for b in data[start:])
    (tmp_path / "pixels.dcm").write_bytes(flipped)
    # every stored value is still a valid 12-bit value: a (different) image, shown as it is
    shown = display_file(tmp_path / "pixels.dcm").pixels
    assert shown.shape == (48, 40) and shown.min() < shown.max()
    expected = np.frombuffer(flipped[start:], "<u2").reshape(48, 40) & 0x0FFF
    assert np.array_equal(read_dataset(tmp_path / "pixels.dcm").pixel_array, expected)
    # the VR of Bits Allocated flipped to garbage: the element is named
    at = bytes(data).find(b"\x28\x00\x00\x01US")
    data[at + 4 : at + 6] = b"U\x00"
    (tmp_path / "vr.dcm").write_bytes(bytes(data))
    for where, (reason, message) in refusals(tmp_path / "vr.dcm", tmp_path).items():
        assert reason == "bad_header" and "(0028,0100)" in message, (where, message)


def _deep_bytes(depth: int, defined: bool) -> bytes:
    if not defined:
        head = (
            struct.pack("<HH", 0x0008, 0x1140)
            + b"SQ\0\0"
            + struct.pack("<I", 0xFFFFFFFF)
            + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        ) * depth
        return head + (struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)) * depth
    body = b""
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body
        body = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\0\0" + struct.pack("<I", len(item)) + item
    return body


def write_deep(tmp_path: Path, depth: int, defined: bool) -> Path:
    """A real image whose header holds ``depth`` nested Referenced Image Sequences."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(write(tmp_path / "a.dcm", gradient(48, 40)))
    before, after = Dataset(), Dataset()
    for elem in ds:
        (before if elem.tag < 0x00081140 else after).add(elem)
    before.file_meta = ds.file_meta
    head = io.BytesIO()
    pydicom.dcmwrite(head, before, enforce_file_format=True)
    tail = DicomBytesIO()
    tail.is_little_endian, tail.is_implicit_VR = True, False
    write_dataset(tail, after)
    path = tmp_path / f"deep-{depth}-{'defined' if defined else 'undefined'}.dcm"
    path.write_bytes(head.getvalue() + _deep_bytes(depth, defined) + tail.getvalue())
    return path


@pytest.mark.parametrize("defined", [True, False], ids=["defined-length", "undefined-length"])
def test_3000_deep_nested_sequences_are_refused_at_read_and_import(tmp_path, defined):
    path = write_deep(tmp_path, 3000, defined)
    for where, (reason, message) in refusals(path, tmp_path).items():
        assert reason == "too_deep" and "nests sequences" in message, (where, message)


def test_ordinary_nesting_is_accepted_and_check_sequence_depth_is_reusable(tmp_path):
    path = write_deep(tmp_path, 5, defined=True)
    assert display_file(path).pixels.shape == (48, 40)
    ds = pydicom.dcmread(path)
    assert sequence_depth(ds) == 5
    check_sequence_depth(ds)  # within the default limit
    with pytest.raises(ImageReadError) as err:
        check_sequence_depth(ds, limit=4, source="x.dcm")
    assert err.value.reason == "too_deep" and str(err.value).startswith("x.dcm: ")
    built = Dataset()
    cur = built
    for _ in range(40):  # built in memory, as an anonymiser would walk it
        child = Dataset()
        cur.ReferencedImageSequence = Sequence([child])
        cur = child
    assert sequence_depth(built) == 33  # stops counting past the limit (32)


# --- one sniffer ---------------------------------------------------------------------------------


def gif_named_png(tmp_path: Path) -> Path:
    path = tmp_path / "chest.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(path, format="GIF")
    return path


def test_gif_named_png_is_refused_identically_everywhere(tmp_path):
    path = gif_named_png(tmp_path)
    results = refusals(path, tmp_path)
    messages = {message for _reason, message in results.values()}
    assert messages == {"chest.png: a GIF image; only DICOM, PNG and JPEG files are supported"}, results
    assert {reason for reason, _ in results.values()} == {"unsupported"}


def test_gif_named_png_gives_the_same_line_from_import_render_and_predict(tmp_path):
    path = gif_named_png(tmp_path)
    expected = "chest.png: a GIF image; only DICOM, PNG and JPEG files are supported"
    imported = run_cli("import", str(path), "--db", str(tmp_path / "l.db"), "--json")
    assert imported.returncode == 0
    assert [r["message"] for r in json.loads(imported.stdout)["rejected"]] == [expected]
    rendered = run_cli("render", str(path), "--out", str(tmp_path / "o.png"))
    assert rendered.returncode == 2 and expected in rendered.stderr and rendered.stderr.count("\n") == 1
    predicted = run_cli("predict", str(path), "--bundle", str(ROOT / "assets" / "demo" / "bundle"), "--json")
    assert predicted.returncode == 1 and "Traceback" not in predicted.stderr
    assert json.loads(predicted.stdout)["results"][0]["error"] == expected


def test_png_named_dcm_is_read_as_the_png_it_is_everywhere(tmp_path):
    path = tmp_path / "image.dcm"
    path.write_bytes(REAL_PNG.read_bytes())
    assert image_kind(path) == "png"
    expected = load_display(REAL_PNG)
    assert np.array_equal(display_file(path).pixels, expected)
    assert np.array_equal(load_image(path).render(), expected)
    assert np.array_equal(prepare_input(path), prepare_input(REAL_PNG))
    lib = open_library(tmp_path / "lib" / "library.db")
    try:
        summary = Importer(lib, fsync=False).run([path])
    finally:
        lib.close()
    assert summary.imported == 1 and summary.rejected == []
    done = run_cli("render", str(path), "--out", str(tmp_path / "o.png"))
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), expected)


def test_corrupt_compressed_data_is_one_line_without_pydicoms_traceback(tmp_path):
    src = write(tmp_path / "r.dcm", gradient(48, 40), uid.RLELossless)
    data = bytearray(src.read_bytes())
    for i in range(len(data) - 200, len(data) - 100):
        data[i] = 0x80  # RLE "no-op" bytes: the segments come out short
    (tmp_path / "bad_rle.dcm").write_bytes(bytes(data))
    with pytest.raises(ImageReadError) as err:
        render_file(tmp_path / "bad_rle.dcm")
    assert err.value.reason == "decode_failed"
    done = run_cli("render", str(tmp_path / "bad_rle.dcm"), "--out", str(tmp_path / "o.png"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "could not be decoded" in done.stderr


def test_budget_is_stated_in_the_security_document():
    text = (ROOT / "docs" / "SECURITY.md").read_text()
    assert f"{MAX_PIXELS:,}" in text


def deflate_bomb(tmp_path: Path, inflated: int = (1 << 30) + (100 << 20)) -> Path:
    """A Deflated Explicit VR Little Endian DICOM (a few MB on disk) whose dataset inflates to
    more than the pixel budget: a real header, then pixel data declaring ``inflated`` bytes."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    src = write(tmp_path / "plain.dcm", gradient(48, 40))
    data = src.read_bytes()
    (meta_len,) = struct.unpack_from("<I", data, 132 + 8)
    body = data[132 + 12 + meta_len : scan_header(src).pixel.offset]
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    path = tmp_path / "deflate_bomb.dcm"
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + meta.getvalue())
        f.write(deflater.compress(body + struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", inflated)))
        block = b"\0" * (4 << 20)
        for _ in range(inflated // len(block)):
            f.write(deflater.compress(block))
        f.write(deflater.flush())
    return path


def test_deflated_dicom_bomb_is_refused_while_inflating_in_bounded_memory(tmp_path):
    path = deflate_bomb(tmp_path)
    assert path.stat().st_size < 16 << 20
    reason, peak_mb, out = refused_in_a_child(
        "from core_model.imaging.dicom import check_header, scan_header", "check_header(scan_header(sys.argv[1]))", path
    )
    assert reason == "too_large" and peak_mb < 400, out
    with pytest.raises(ImageReadError) as err:
        render_file(path)
    assert err.value.reason == "too_large" and "deflated" in str(err.value)


def test_an_ordinary_deflated_dicom_still_reads(tmp_path):
    src = write(tmp_path / "plain.dcm", gradient(48, 40))
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    check_header(scan_header(tmp_path / "deflated.dcm"))
    assert np.array_equal(render_file(tmp_path / "deflated.dcm"), render_file(src))
