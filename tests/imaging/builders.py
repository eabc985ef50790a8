"""Test DICOM builders shared by tests/imaging and tests/library (all written with pydicom here;
no file from the network). Every bad file kind the importer must recognise has a builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core_model.imaging.dicom_write import DicomSpec, build_dataset, save_atomic, write_dicom
from tests.real_data import REAL_DIR

REAL_DCM = REAL_DIR / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
REAL_PNG = REAL_DIR / "00000001_000.png"

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def gradient(rows: int = 24, cols: int = 32, bits: int = 12, signed: bool = False) -> np.ndarray:
    """Every row spans the full stored range, so windows have values on both sides."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ramp = np.linspace(lo, hi, cols).round()
    arr = np.tile(ramp, (rows, 1)) + np.arange(rows)[:, None] * 0  # rows identical
    dtype = np.uint8 if bits <= 8 and not signed else (np.int16 if signed else np.uint16)
    return arr.astype(dtype)


def write(path: Path, pixels: np.ndarray, ts: str | None = None, **spec) -> Path:
    return write_dicom(path, pixels, DicomSpec(**spec), ts)


def write_sr(path: Path, patient_name: str = "SR^PATIENT", patient_id: str = "SR-1") -> Path:
    """A Basic Text SR: a valid DICOM file without any pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "No acute cardiopulmonary process."
    ds.ContentSequence = Sequence([item])
    return save_atomic(ds, path)


def truncate(src: Path, dst: Path, drop: int) -> Path:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[:-drop])
    return Path(dst)


def write_mismatch(path: Path, **spec) -> Path:
    """Header says 64 x 64 but the pixel data holds 32 x 32 samples."""
    ds = build_dataset(gradient(32, 32), DicomSpec(**spec))
    ds.Rows, ds.Columns = 64, 64
    return save_atomic(ds, path)


def write_without_preamble(path: Path, pixels: np.ndarray, **spec) -> Path:
    """A dataset with no preamble and no file meta (old CD exports), implicit VR little endian."""
    ds = build_dataset(pixels, DicomSpec(**spec))
    del ds.file_meta
    ds.save_as(path, implicit_vr=True, little_endian=True)  # no preamble without enforce_file_format
    return Path(path)


def write_garbage(path: Path, text: str = "not an image at all\n") -> Path:
    Path(path).write_text(text)
    return Path(path)


def make_voi_lut_item(
    first: int, entries: list[int], bits: int = 16, explanation: str = "", as_ow: bool = False
) -> Dataset:
    """A VOI LUT Sequence item; ``as_ow`` stores the entries as OW bytes (16-bit words, 8-bit
    entries packed two per word), as many CR writers do, instead of US values."""
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [len(entries), first, bits])
    if as_ow:
        dtype = "<u1" if bits <= 8 else "<u2"
        data = np.asarray(entries, dtype=dtype).tobytes()
        item.add_new("LUTData", "OW", data + b"\0" * (len(data) % 2))
    else:
        item.add_new("LUTData", "US", list(entries))
    if explanation:
        item.LUTExplanation = explanation
    return item
