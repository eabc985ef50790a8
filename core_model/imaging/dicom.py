"""DICOM decoding and display rendering (numpy + pydicom only).

The display pipeline follows DICOM PS3.3 C.11 / PS3.4 N.2 for grayscale images:

    stored values -> Modality LUT (rescale slope/intercept, may be negative, or LUT sequence)
                  -> VOI (VOI LUT sequence, or window centre/width with VOILUTFunction
                     LINEAR / LINEAR_EXACT / SIGMOID; full value range when the file has none)
                  -> inversion for MONOCHROME1 or Presentation LUT Shape INVERSE (after VOI)
                  -> 8-bit display

The same rendering is what the viewer shows, what ``adaptor-review render`` writes and what the
model preprocessing starts from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from core_model.imaging.errors import (
    ImageReadError,
    MissingDecoderError,
    NoPixelDataError,
    NotDicomError,
    PixelDataMismatchError,
    TruncatedFileError,
    UnsupportedImageError,
)

# pydicom plugin name -> the pip package(s) that provide it.
_PLUGIN_PACKAGES = {
    "gdcm": "python-gdcm",
    "pylibjpeg": "pylibjpeg with pylibjpeg-openjpeg / pylibjpeg-libjpeg / pylibjpeg-rle",
    "pyjpegls": "pyjpegls",
    "pillow": "pillow",
    "pydicom": "pydicom",
}


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


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when the file carries the DICM preamble marker (cheap check, reads 132 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dataset(path: str | os.PathLike, *, header_only: bool = False) -> Dataset:
    """Read a DICOM file. ``header_only`` stops before the pixel data (fast folder scans)."""
    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError as exc:
        raise NotDicomError(f"{path.name}: not a DICOM file ({exc})") from exc
    except (EOFError, OSError) as exc:
        raise TruncatedFileError(f"{path.name}: the file ends before its data does ({exc})") from exc
    except Exception as exc:  # pydicom raises assorted errors on garbage input
        raise NotDicomError(f"{path.name}: not a readable DICOM file ({exc})") from exc
    return ds


def _missing_decoder_message(ds: Dataset) -> str | None:
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if uid is None or not uid.is_compressed:
        return None
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(uid)
    except Exception:
        return f"no decoder exists in pydicom for transfer syntax {uid.name} ({uid})"
    if decoder.is_available:
        return None
    wanted = sorted(
        {_PLUGIN_PACKAGES.get(name, name) for name in decoder.missing_dependencies}
    )
    return (
        f"transfer syntax {uid.name} ({uid}) needs a decoder that is not installed; "
        f"install one of: {', '.join(wanted) or 'a pydicom pixel plugin'}"
    )


def decode_pixels(ds: Dataset, *, source: str = "") -> np.ndarray:
    """Decoded stored values of the first frame (2-D; colour images are converted to luminance)."""
    name = f"{source}: " if source else ""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = str(ds.get("SOPClassUID", "")) and getattr(ds.SOPClassUID, "name", "")
        what = f" ({sop})" if sop else ""
        raise NoPixelDataError(f"{name}the file holds no image pixel data{what}")
    missing = _missing_decoder_message(ds)
    if missing:
        raise MissingDecoderError(name + missing)
    try:
        arr = ds.pixel_array
    except ValueError as exc:
        msg = str(exc)
        if "length" in msg.lower() or "expected" in msg.lower():
            raise PixelDataMismatchError(
                f"{name}pixel data inconsistent with its header ({msg})"
            ) from exc
        raise ImageReadError(f"{name}pixel data could not be decoded ({msg})") from exc
    except (EOFError, OSError) as exc:
        raise TruncatedFileError(f"{name}pixel data ends early ({exc})") from exc
    except (RuntimeError, NotImplementedError) as exc:
        raise MissingDecoderError(f"{name}pixel data could not be decoded ({exc})") from exc
    except AttributeError as exc:
        raise PixelDataMismatchError(f"{name}image header incomplete ({exc})") from exc
    except Exception as exc:
        raise ImageReadError(f"{name}pixel data could not be decoded ({exc})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if arr.ndim == 3:  # colour: PS3.3 luminance
        if arr.shape[-1] != 3:
            raise UnsupportedImageError(f"{name}unsupported pixel layout {arr.shape}")
        arr = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise UnsupportedImageError(f"{name}unsupported pixel array shape {arr.shape}")
    return arr


def modality_values(ds: Dataset, stored: np.ndarray | None = None) -> np.ndarray:
    """Stored values -> modality values (rescale slope/intercept or Modality LUT Sequence)."""
    if stored is None:
        stored = decode_pixels(ds)
    if stored.dtype.kind == "f":  # already luminance from colour, or float pixel data
        return stored.astype(np.float64)
    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return list(value)
    return [value]


def window_presets(ds: Dataset) -> list[WindowPreset]:
    """Every VOI the file offers, in file order: VOI LUTs first (pydicom's ``prefer_lut``
    order), then each window centre/width pair, with the file's explanation when present.
    Always ends with a full-range preset."""
    presets: list[WindowPreset] = []
    for i, item in enumerate(ds.get("VOILUTSequence", []) or []):
        name = str(item.get("LUTExplanation", "") or f"VOI LUT {i + 1}")
        presets.append(WindowPreset(index=i, kind="voi_lut", name=name))
    centers = _as_list(ds.get("WindowCenter"))
    widths = _as_list(ds.get("WindowWidth"))
    explanations = _as_list(ds.get("WindowCenterWidthExplanation"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    for i, (c, w) in enumerate(zip(centers, widths)):
        name = str(explanations[i]) if i < len(explanations) and explanations[i] else f"Window {i + 1}"
        presets.append(
            WindowPreset(index=i, kind="window", name=name, center=float(c), width=float(w), function=function)
        )
    presets.append(WindowPreset(index=0, kind="full_range", name="Full range (min-max)"))
    return presets


def _windowing_output_range(ds: Dataset) -> tuple[float, float]:
    """The output range pydicom's apply_windowing maps into (PS3.3 C.11.2.1.2)."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        y_min, y_max = 0.0, float(2**bits - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_min, y_max = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        y_min, y_max = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min, y_max = y_min * float(slope) + float(intercept), y_max * float(slope) + float(intercept)
    return y_min, y_max


def _lut_output_range(item: Dataset) -> tuple[float, float]:
    bits = int(item.LUTDescriptor[2])
    data = np.asarray(item.LUTData if isinstance(item.LUTData, (list, pydicom.multival.MultiValue)) else [0])
    top = float(2**bits - 1)
    # Some writers declare 16 bits but fill 12; the standard's range is still the declared one.
    return 0.0, max(top, float(data.max()) if data.size else top)


def apply_voi(values: np.ndarray, ds: Dataset, preset: WindowPreset | None = None,
              *, center: float | None = None, width: float | None = None) -> np.ndarray:
    """Modality values -> [0, 1] (0 = darkest before any inversion).

    ``center``/``width`` override the file (manual window/level, LINEAR function).
    ``preset`` None means the default: the first VOI the file offers, else full range.
    """
    if center is not None and width is not None:
        width = max(float(width), 1e-6)
        lo = center - width / 2.0
        return np.clip((values - lo) / width, 0.0, 1.0)
    presets = window_presets(ds)
    if preset is None:
        preset = presets[0]
    if preset.kind == "full_range":
        lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            return np.zeros_like(values, dtype=np.float64)
        return (values - lo) / (hi - lo)
    if preset.kind == "voi_lut":
        out = np.asarray(apply_voi_lut(values.copy(), ds, index=preset.index, prefer_lut=True), dtype=np.float64)
        lo, hi = _lut_output_range(ds.VOILUTSequence[preset.index])
    else:
        # Apply only this window: a copy of the header with the chosen values, so the
        # multi-valued file window is honoured without touching the caller's dataset.
        tmp = Dataset()
        for key in ("PhotometricInterpretation", "BitsStored", "PixelRepresentation",
                    "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"):
            if key in ds:
                tmp[key] = ds[key]
        tmp.WindowCenter = preset.center
        tmp.WindowWidth = preset.width
        tmp.VOILUTFunction = preset.function
        if "PhotometricInterpretation" not in tmp or tmp.PhotometricInterpretation not in ("MONOCHROME1", "MONOCHROME2"):
            tmp.PhotometricInterpretation = "MONOCHROME2"
        if "BitsStored" not in tmp:
            tmp.BitsStored = 16
        if "PixelRepresentation" not in tmp:
            tmp.PixelRepresentation = 0
        from pydicom.pixels import apply_windowing

        out = np.asarray(apply_windowing(values.copy(), tmp), dtype=np.float64)
        lo, hi = _windowing_output_range(tmp)
    if hi == lo:
        return np.zeros_like(out)
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def needs_inversion(ds: Dataset) -> bool:
    """MONOCHROME1 (higher values darker) or an INVERSE presentation LUT shape."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    shape = str(ds.get("PresentationLUTShape", "") or "").upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def to_display(unit: np.ndarray, invert: bool) -> np.ndarray:
    """[0, 1] -> uint8 display values, inverting after VOI when asked."""
    if invert:
        unit = 1.0 - unit
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def render_dataset(ds: Dataset, preset: int | WindowPreset | None = None, *,
                   center: float | None = None, width: float | None = None,
                   user_invert: bool = False, values: np.ndarray | None = None,
                   source: str = "") -> np.ndarray:
    """Full display pipeline for one dataset -> uint8 image at native resolution.

    ``preset`` is an index into :func:`window_presets` (or a preset); None = the default.
    The file's own inversion (MONOCHROME1 / INVERSE) is always applied; ``user_invert``
    inverts once more on top of it (the viewer's "i" key).
    """
    if values is None:
        values = modality_values(ds, decode_pixels(ds, source=source))
    if isinstance(preset, int):
        presets = window_presets(ds)
        if not 0 <= preset < len(presets):
            raise IndexError(f"preset {preset + 1} does not exist; the file offers {len(presets)}")
        preset = presets[preset]
    unit = apply_voi(values, ds, preset, center=center, width=width)
    return to_display(unit, needs_inversion(ds) != user_invert)


def render_file(path: str | os.PathLike, preset: int | None = None) -> np.ndarray:
    """Read and render a DICOM file with its default display."""
    ds = read_dataset(path)
    return render_dataset(ds, preset, source=Path(path).name)
