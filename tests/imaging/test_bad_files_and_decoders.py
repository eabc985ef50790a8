"""Every compressed transfer syntax decodes; every kind of bad file gets its specific reason,
both from the cheap header-only check and from a full decode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

from core_model.imaging.decoders import DECODERS
from core_model.imaging.dicom import (
    check_header,
    decode_pixels,
    read_dataset,
    render_file,
    scan_header,
)
from core_model.imaging.errors import ImageReadError
from tests.imaging.builders import (
    gradient,
    truncate,
    write,
    write_garbage,
    write_mismatch,
    write_sr,
    write_without_preamble,
)

ROOT = Path(__file__).resolve().parents[2]

LOSSLESS = [
    uid.RLELossless,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
]


@pytest.mark.parametrize("ts", LOSSLESS, ids=lambda t: t.name.split(" ")[0] + "-" + t[-4:])
@pytest.mark.parametrize("bits, signed", [(8, False), (12, False), (16, False), (12, True)])
def test_lossless_syntaxes_decode_to_the_original_values(tmp_path, ts, bits, signed):
    rng = np.random.default_rng(bits)
    if signed:
        px = rng.integers(-2048, 2048, (40, 48)).astype(np.int16)
    else:
        px = rng.integers(0, 2**bits, (40, 48)).astype(np.uint8 if bits == 8 else np.uint16)
    path = write(tmp_path / "x.dcm", px, ts, bits_stored=bits)
    assert str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) == ts
    check_header(scan_header(path))  # no complaint
    assert np.array_equal(decode_pixels(read_dataset(path)), px)


def test_jpeg_baseline_decodes_close_to_the_original(tmp_path):
    px = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    path = write(tmp_path / "j.dcm", px, uid.JPEGBaseline8Bit, bits_stored=8)
    ds = read_dataset(path)
    assert ds.file_meta.TransferSyntaxUID == uid.JPEGBaseline8Bit and ds.LossyImageCompression == "01"
    check_header(scan_header(path))
    assert np.abs(decode_pixels(ds).astype(int) - px).mean() < 2.0


def test_jpeg_2000_lossy_and_jpeg_ls_near_lossless(tmp_path):
    px = gradient(40, 64, bits=12)
    for ts in (uid.JPEG2000Lossless, uid.JPEGLSNearLossless):
        path = write(tmp_path / f"{ts}.dcm", px, ts, bits_stored=12)
        assert np.abs(decode_pixels(read_dataset(path)).astype(int) - px).max() <= 4


def test_dataset_without_preamble_is_still_read(tmp_path):
    px = gradient(8, 8)
    path = write_without_preamble(tmp_path / "old", px)
    assert not (path.read_bytes()[128:132] == b"DICM")
    assert np.array_equal(decode_pixels(read_dataset(path)), px)


# --- bad files: (builder, expected reason) ----------------------------------------------------


def _native(tmp_path):
    return write(tmp_path / "ok.dcm", gradient(64, 64))


def _truncated_native(tmp_path):
    return truncate(_native(tmp_path), tmp_path / "cut.dcm", 100)


def _truncated_encapsulated(tmp_path):
    src = write(tmp_path / "rle.dcm", gradient(64, 64), uid.RLELossless)
    return truncate(src, tmp_path / "cut.dcm", 50)


def _truncated_header(tmp_path):
    return truncate(_native(tmp_path), tmp_path / "cut.dcm", 64 * 64 * 2 + 200)


BAD = {
    "not_dicom": lambda p: write_garbage(p / "notes.dcm"),
    "png_named_dcm": lambda p: (p / "img.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)) and p / "img.dcm",
    "structured_report": lambda p: write_sr(p / "sr.dcm"),
    "truncated_native": _truncated_native,
    "truncated_encapsulated": _truncated_encapsulated,
    "truncated_header": _truncated_header,
    "pixel_mismatch": lambda p: write_mismatch(p / "mm.dcm"),
}
REASON = {
    "not_dicom": "not_dicom",
    "png_named_dcm": "not_dicom",
    "structured_report": "no_pixel_data",
    "truncated_native": "truncated",
    "truncated_encapsulated": "truncated",
    "truncated_header": "truncated",
    "pixel_mismatch": "pixel_data_mismatch",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_reason_from_header_only_check(tmp_path, kind):
    path = BAD[kind](tmp_path)
    with pytest.raises(ImageReadError) as info:
        check_header(scan_header(path))
    assert info.value.reason == REASON[kind]
    assert path.name in str(info.value)


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_reason_from_full_decode_agrees(tmp_path, kind):
    path = BAD[kind](tmp_path)
    with pytest.raises(ImageReadError) as info:
        render_file(path)
    assert info.value.reason == REASON[kind]


def test_header_check_reads_no_pixel_data(tmp_path, monkeypatch):
    # The scan must not pull the pixel data into memory: count the bytes actually read.
    big = write(tmp_path / "big.dcm", np.zeros((1024, 1024), np.uint16))
    read_total = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            data = self.f.read(n)
            read_total.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    import core_model.imaging.dicom as dicom_mod

    monkeypatch.setattr(dicom_mod, "open", lambda p, m="r", *a, **k: Counting(real_open(p, m, *a, **k)), raising=False)
    scan = scan_header(big)
    check_header(scan)
    assert scan.pixel.length == 1024 * 1024 * 2
    assert sum(read_total) < 64 * 1024  # header only; the pixel data is 2 MiB


# --- missing decoders -------------------------------------------------------------------------


@pytest.fixture
def without_gdcm_plugin():
    """Make JPEG Lossless undecodable through pydicom's plugin API (gdcm is its only decoder
    here), restoring the plugin afterwards."""
    from pydicom.pixels import get_decoder

    removed = []
    for ts in (uid.JPEGLosslessSV1, uid.JPEGLossless):
        dec = get_decoder(ts)
        if "gdcm" in dec.available_plugins:
            dec.remove_plugin("gdcm")
            removed.append(dec)
    yield
    for dec in removed:
        dec.add_plugin("gdcm", ("pydicom.pixels.decoders.gdcm", "_decode_frame"))


def test_missing_decoder_names_the_package(tmp_path, without_gdcm_plugin):
    path = write(tmp_path / "jl.dcm", gradient(8, 8), uid.JPEGLosslessSV1)
    with pytest.raises(ImageReadError) as info:
        check_header(scan_header(path))
    assert info.value.reason == "missing_decoder"
    assert "python-gdcm" in str(info.value) and "JPEG Lossless" in str(info.value)
    assert "libjpeg" not in str(info.value)  # never point users at the GPL decoder
    with pytest.raises(ImageReadError) as info:
        render_file(path)
    assert info.value.reason == "missing_decoder" and "python-gdcm" in str(info.value)


def test_missing_decoder_when_package_not_installed(tmp_path):
    """A fresh interpreter where pyjpegls and gdcm cannot be imported (as on an install
    without them): JPEG-LS must be reported with the package name, not as a black image."""
    path = write(tmp_path / "ls.dcm", gradient(8, 8), uid.JPEGLSLossless)
    code = (
        "import sys\n"
        "sys.modules['jpeg_ls'] = None; sys.modules['gdcm'] = None; sys.modules['pylibjpeg'] = None\n"
        "from core_model.imaging.dicom import render_file\n"
        "from core_model.imaging.errors import ImageReadError\n"
        f"try:\n    render_file({str(path)!r})\nexcept ImageReadError as e:\n    print(e.reason, '|', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    reason, message = out.stdout.strip().split(" | ", 1)
    assert reason == "missing_decoder" and "pyjpegls" in message


def test_pydicom_imports_even_with_a_dl_folder_in_the_working_directory(tmp_path):
    # python-gdcm runs `import dl`; a folder named dl next to the user's data used to break
    # `import pydicom` entirely.
    (tmp_path / "dl").mkdir()
    path = write(tmp_path / "jl.dcm", gradient(8, 8), uid.JPEGLosslessSV1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = f"from core_model.imaging.dicom import render_file\nprint(render_file({str(path)!r}).shape)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(8, 8)"


def test_every_shipped_decoder_is_available_here():
    from core_model.imaging.decoders import missing_decoder_message

    for info in DECODERS:
        assert missing_decoder_message(info.uid) is None, info.name


def test_decoders_doc_names_every_package_and_licence():
    text = (ROOT / "docs" / "DECODERS.md").read_text()
    packages = {p for info in DECODERS for p in info.packages}
    for package in packages:
        assert package in text, package
    assert "GPL" in text  # the document must say where GPL stands


def test_unknown_vr_on_the_pixel_data_is_a_clear_refusal(tmp_path):
    """A pixel data element whose VR bytes are not a VR (found by the fuzz test: b"O\\x00")."""
    from core_model.imaging.dicom import read_dataset
    from core_model.imaging.errors import NotDicomError
    from tests.imaging.builders import gradient, write

    path = write(tmp_path / "ok.dcm", gradient(), ts="1.2.840.10008.1.2.1")
    data = bytearray(path.read_bytes())
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    assert at > 0
    data[at + 4 : at + 6] = b"O\x00"
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(bytes(data))
    with pytest.raises(NotDicomError, match="bad.dcm: its pixel data element is malformed"):
        read_dataset(bad)
