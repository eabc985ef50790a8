"""Write chest X-ray DICOM files from arrays (phantoms, demo studies, test fixtures).

Secondary capture-style DX/CR objects with the tags the library and the renderer read, in every
transfer syntax the app decodes:

| transfer syntax | encoder |
|---|---|
| Explicit / Implicit VR Little Endian | pydicom |
| RLE Lossless | pydicom (numpy; pylibjpeg-rle / gdcm when present) |
| JPEG-LS Lossless / Near-Lossless | pydicom + pyjpegls |
| JPEG 2000 (Lossless) | pydicom + pylibjpeg-openjpeg |
| JPEG Baseline (8-bit only, lossy) | Pillow, encapsulated with ``pydicom.encaps`` |
| JPEG Lossless (Process 14) and SV1 | python-gdcm (``gdcm.ImageChangeTransferSyntax``) |
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core_model.imaging.decoders import ensure_gdcm_importable

ensure_gdcm_importable()  # before pydicom: see core_model.imaging.decoders

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    generate_uid,
)

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage


@dataclass
class DicomSpec:
    """What to write besides the pixels. Stored values are written as given."""

    patient_name: str = "PHANTOM^SYNTHETIC"
    patient_id: str = "PHANTOM-0001"
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    study_date: str = ""  # YYYYMMDD
    study_description: str = "CHEST"
    accession_number: str = ""
    modality: str = "DX"  # DX | CR
    view_position: str = "PA"
    body_part: str = "CHEST"
    photometric: str = "MONOCHROME2"
    bits_stored: int | None = None  # default: 8 for uint8 pixels, else 12
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)  # (center, width)
    window_explanations: list[str] = field(default_factory=list)
    voi_lut_function: str | None = None
    presentation_lut_shape: str | None = None
    imager_pixel_spacing: tuple[float, float] | None = (0.2, 0.2)  # mm, detector plane
    pixel_spacing: tuple[float, float] | None = None  # mm, calibrated
    series_number: int = 1
    instance_number: int = 1
    series_description: str = ""
    extra: dict = field(default_factory=dict)  # keyword -> value


def build_dataset(pixels: np.ndarray, spec: DicomSpec | None = None) -> Dataset:
    """A complete, uncompressed (explicit VR little endian) dataset for a 2-D array."""
    spec = spec or DicomSpec()
    if pixels.ndim != 2:
        raise ValueError("pixels must be a 2-D array")
    signed = pixels.dtype.kind == "i"
    if pixels.dtype == np.uint8:
        bits_alloc = 8
    elif pixels.dtype in (np.uint16, np.int16):
        bits_alloc = 16
    else:
        raise ValueError(f"unsupported pixel dtype {pixels.dtype}; use uint8, uint16 or int16")
    bits_stored = spec.bits_stored or (8 if bits_alloc == 8 else 12)

    sop_class = DX_STORAGE if spec.modality == "DX" else CR_STORAGE
    sop_uid = spec.sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = spec.study_uid or generate_uid()
    ds.SeriesInstanceUID = spec.series_uid or generate_uid()
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.patient_birth_date
    ds.PatientSex = spec.patient_sex
    today = _dt.date.today().strftime("%Y%m%d")
    ds.StudyDate = spec.study_date or today
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = "120000"
    ds.StudyDescription = spec.study_description
    ds.SeriesDescription = spec.series_description
    ds.AccessionNumber = spec.accession_number
    ds.StudyID = "1"
    ds.Modality = spec.modality
    ds.ViewPosition = spec.view_position
    ds.BodyPartExamined = spec.body_part
    ds.SeriesNumber = spec.series_number
    ds.InstanceNumber = spec.instance_number
    ds.ImageType = ["DERIVED", "SECONDARY"]
    if spec.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if spec.rescale_slope is not None or spec.rescale_intercept is not None:
        ds.RescaleSlope = spec.rescale_slope if spec.rescale_slope is not None else 1
        ds.RescaleIntercept = spec.rescale_intercept if spec.rescale_intercept is not None else 0
        ds.RescaleType = "US"
    if spec.windows:
        centers = [c for c, _ in spec.windows]
        widths = [w for _, w in spec.windows]
        ds.WindowCenter = centers if len(centers) > 1 else centers[0]
        ds.WindowWidth = widths if len(widths) > 1 else widths[0]
        if spec.window_explanations:
            ex = spec.window_explanations
            ds.WindowCenterWidthExplanation = ex if len(ex) > 1 else ex[0]
    if spec.voi_lut_function:
        ds.VOILUTFunction = spec.voi_lut_function
    if spec.presentation_lut_shape:
        ds.PresentationLUTShape = spec.presentation_lut_shape
    if spec.imager_pixel_spacing:
        ds.ImagerPixelSpacing = list(spec.imager_pixel_spacing)
    if spec.pixel_spacing:
        ds.PixelSpacing = list(spec.pixel_spacing)
    for key, value in spec.extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    spec: DicomSpec | None = None,
    transfer_syntax: str | None = None,
    *,
    jpeg_quality: int = 90,
) -> Path:
    """Write ``pixels`` as a DICOM file (atomically); ``transfer_syntax`` compresses it (see
    :func:`compress`)."""
    ds = build_dataset(pixels, spec)
    if transfer_syntax and transfer_syntax != ExplicitVRLittleEndian:
        compress(ds, pixels, transfer_syntax, jpeg_quality=jpeg_quality)
    return save_atomic(ds, path)


def save_atomic(ds: Dataset, path: str | os.PathLike) -> Path:
    """``ds.save_as`` through :func:`core_model.fileio.atomic_write`: never a half-written file."""
    from core_model.fileio import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: ds.save_as(f, enforce_file_format=True), fsync=False, mkdir=True)
    return path


def compress(ds: Dataset, pixels: np.ndarray, transfer_syntax: str, *, jpeg_quality: int = 90) -> Dataset:
    """Compress ``ds`` in place into ``transfer_syntax``.

    Implicit VR Little Endian only changes the encoding. JPEG Baseline takes 8-bit grayscale
    (lossy; sets Lossy Image Compression). JPEG Lossless (SV1 or Process 14) goes through GDCM,
    the others through pydicom's own encoders."""
    uid = UID(str(transfer_syntax))
    if uid == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = uid
        return ds
    if uid == JPEGBaseline8Bit:
        return _compress_jpeg_baseline(ds, pixels, quality=jpeg_quality)
    if uid in (JPEGLosslessSV1, JPEGLossless):
        return _compress_gdcm(ds, uid)
    ds.compress(uid, pixels, generate_instance_uid=False)
    return ds


def _compress_jpeg_baseline(ds: Dataset, pixels: np.ndarray, *, quality: int) -> Dataset:
    from PIL import Image
    from pydicom.encaps import encapsulate

    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError("JPEG Baseline holds 8-bit samples: pass a 2-D uint8 array")
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=quality, subsampling=0)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return ds


def _compress_gdcm(ds: Dataset, uid: UID) -> Dataset:
    """Encode with GDCM (the only JPEG Lossless encoder installed) and keep only its pixel data,
    so every other attribute stays exactly as :func:`build_dataset` wrote it."""
    try:
        import gdcm
    except ImportError as exc:  # pragma: no cover - gdcm is part of the app install
        raise RuntimeError("JPEG Lossless encoding needs python-gdcm") from exc
    target = {
        JPEGLosslessSV1: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        JPEGLossless: gdcm.TransferSyntax.JPEGLosslessProcess14,
    }[uid]
    with tempfile.TemporaryDirectory(prefix="cxr-gdcm-") as tmp:
        src, dst = os.path.join(tmp, "in.dcm"), os.path.join(tmp, "out.dcm")
        ds.save_as(src, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(src)
        if not reader.Read():
            raise RuntimeError("GDCM could not read the uncompressed dataset")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(target))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError(f"GDCM could not encode {uid.name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(dst)
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("GDCM could not write the encoded dataset")
        encoded = pydicom.dcmread(dst)
        if str(encoded.file_meta.TransferSyntaxUID) != str(uid):
            raise RuntimeError(f"GDCM wrote {encoded.file_meta.TransferSyntaxUID} instead of {uid}")
        ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = uid
    return ds
