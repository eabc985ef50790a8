"""The one preprocessing function: DICOM / PNG / JPEG (or an array) -> model input.

Training (precompute, fine-tuning) and the app's runtime both call :func:`prepare_input` with the
:class:`PreprocessSpec` stored in the feature cache and the model bundle, so a model sees exactly
the same pixels in both places. Pure numpy + Pillow + pydicom: no torch.

Steps: 8-bit grayscale display (DICOMs through the full display pipeline of
:mod:`core_model.imaging.dicom`; large JPEGs, plain or JPEG Baseline DICOMs with a window, decoded
at a reduced scale, never below twice the model size) -> geometry (``letterbox``: pad to a square with black, keeping
the whole image, then resize; ``center_crop``: the paper's resize of the shorter side then a
centre crop) -> scale to [0, 1] -> ``(x - mean) / std`` -> channels repeated.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, UnidentifiedImageError

from core_model.imaging.errors import ImageReadError, ImageTooLargeError
from core_model.imaging.limits import MAX_PIXELS, check_pixels
from core_model.imaging.sniff import file_declared_size, image_kind

ImageSource = str | os.PathLike | np.ndarray

# Pillow's own guard (a warning above, an error above twice this) backs up the budget that
# open_plain_image checks from the header before decoding.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


@dataclass(frozen=True)
class PreprocessSpec:
    size: int = 224
    mean: float = 0.5
    std: float = 0.5
    channels: int = 3
    resize: str = "letterbox"  # "letterbox" | "center_crop"
    resize_to: int | None = None  # center_crop only: shorter side before cropping (paper: 256)

    def __post_init__(self):
        if self.resize not in ("letterbox", "center_crop"):
            raise ValueError(f"unknown resize mode {self.resize!r} (letterbox or center_crop)")
        if self.size < 8:
            raise ValueError("input size must be at least 8 pixels")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _is_dicom(path: Path) -> bool:
    """What the file is, from its bytes (the one sniffer), never from its name."""
    return image_kind(path) == "dicom"


class open_plain_image:
    """``with open_plain_image(path) as img``: a PNG / JPEG opened with Pillow (header only)
    after its declared size passed the budget; Pillow's errors become :class:`ImageReadError`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.img: Image.Image | None = None

    def __enter__(self) -> Image.Image:
        name = self.path.name
        try:
            declared = file_declared_size(self.path)  # IHDR / SOFn read by us, before Pillow
        except OSError as exc:
            raise ImageReadError(f"{name}: cannot be opened ({exc.strerror or exc})", reason="unreadable") from exc
        if declared is not None:
            check_pixels(
                declared.rows,
                declared.columns,
                samples=declared.components,
                bytes_per_sample=2 if declared.bits > 8 else 1,
                source=name,
            )
        try:
            img = Image.open(self.path)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(
                f"{name}: the image declares more than {MAX_PIXELS:,} pixels; refused before decoding"
            ) from exc
        except UnidentifiedImageError:
            raise ImageReadError(f"{name}: not a readable PNG or JPEG image", reason="not_dicom") from None
        except (OSError, SyntaxError, ValueError, struct_error) as exc:
            raise ImageReadError(
                f"{name}: image could not be decoded ({_first_line(exc)})", reason="truncated"
            ) from exc
        self.img = img
        bands = len(img.getbands())
        depth = 2 if img.mode.startswith("I;16") else 4 if img.mode in ("I", "F") else 1
        try:
            check_pixels(img.height, img.width, samples=bands, bytes_per_sample=depth, source=name)
        except ImageReadError:
            img.close()
            raise
        return img

    def __exit__(self, *exc) -> None:
        if self.img is not None:
            self.img.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def decode_plain(img: Image.Image, name: str, draft_size: int | None = None) -> np.ndarray:
    """Decode an opened PNG / JPEG (see :class:`open_plain_image`) to the 8-bit display."""
    try:
        if draft_size and img.format == "JPEG":
            img.draft("L", (draft_size, draft_size))
        return _pil_to_gray8(img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: the image declares more than {MAX_PIXELS:,} pixels") from exc
    except (OSError, SyntaxError, ValueError, struct_error, EOFError) as exc:
        raise ImageReadError(f"{name}: image could not be decoded ({_first_line(exc)})", reason="truncated") from exc


def load_display(source: ImageSource, *, draft_size: int | None = None) -> np.ndarray:
    """Any supported image -> 8-bit grayscale display array (H, W), as the viewer shows it.

    ``draft_size`` lets Pillow decode a large JPEG at a reduced scale (never below that size).
    """
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 3:
            arr = arr[..., :3].mean(axis=-1) if arr.shape[-1] in (3, 4) else arr[0]
        if arr.dtype == np.uint8:
            return arr
        arr = arr.astype(np.float64)
        if arr.max() <= 1.0 and arr.min() >= 0.0:
            return np.rint(arr * 255).astype(np.uint8)
        lo, hi = float(arr.min()), float(arr.max())
        return np.rint((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)

    return _display(source, draft_size)[0]


def _display(source: ImageSource, draft_size: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_display` -> (display, the full-resolution (height, width) of the image)."""
    if isinstance(source, np.ndarray):
        gray = load_display(source)
        return gray, (int(gray.shape[0]), int(gray.shape[1]))
    path = Path(source)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found", reason="missing")
    if image_kind(path) == "dicom":
        from core_model.imaging.dicom import modality_values, read_dataset, render_dataset

        ds = read_dataset(path)
        small = _reduced_dicom_jpeg(ds, draft_size) if draft_size else None
        if small is not None:  # (Rows and Columns checked there)
            shown = render_dataset(ds, values=modality_values(ds, small, source=path.name), source=path.name)
            return shown, (int(ds.Rows), int(ds.Columns))
        shown = render_dataset(ds, source=path.name)
        return shown, (int(shown.shape[0]), int(shown.shape[1]))
    with open_plain_image(path) as img:
        shape = (int(img.height), int(img.width))
        return decode_plain(img, path.name, draft_size), shape


def _reduced_dicom_jpeg(ds, draft_size: int) -> np.ndarray | None:
    """The stored values of a single-frame grayscale JPEG Baseline DICOM decoded at a reduced
    scale (Pillow's draft mode: the JPEG's own DCT scaling by 1/2, 1/4 or 1/8, never below
    ``draft_size``), as plain JPEGs are for the model. None for anything else, or where that
    decode fails (the full decode then gives the specific error). JPEG Lossless, JPEG-LS and
    RLE have no reduced decode (every pixel is predicted from its neighbours); JPEG 2000 has
    (resolution levels) but is rare in chest radiography and is decoded in full."""
    import io

    from pydicom.uid import JPEGBaseline8Bit

    from core_model.imaging.dicom import window_presets

    meta = getattr(ds, "file_meta", None)
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        plain = (
            meta is not None
            and meta.get("TransferSyntaxUID") == JPEGBaseline8Bit
            and int(ds.get("SamplesPerPixel", 1) or 1) == 1
            and int(ds.get("NumberOfFrames", 1) or 1) == 1
            and int(ds.get("BitsAllocated", 8)) == 8
            and int(ds.get("BitsStored", 8)) == 8
            and int(ds.get("PixelRepresentation", 0) or 0) == 0
            and str(ds.get("PhotometricInterpretation", "")).strip().upper() in ("MONOCHROME1", "MONOCHROME2")
            and min(rows, cols) >= 2 * draft_size
            and "PixelData" in ds
        )
        # a window maps each pixel alone; the full-range default stretches between the image's
        # extremes, which a reduced decode smooths away (SIIM's files: 6 grey levels on average)
        plain = plain and window_presets(ds)[0].kind == "window"
    except (TypeError, ValueError, AttributeError):
        return None
    if not plain:
        return None
    try:
        from pydicom.encaps import generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        with Image.open(io.BytesIO(frame)) as img:
            if img.format != "JPEG" or img.mode != "L" or img.size != (cols, rows):
                return None
            img.draft("L", (draft_size, draft_size))
            arr = np.asarray(img, dtype=np.uint8)
    except Exception:  # a stream Pillow cannot read: leave it to the full decode and its errors
        return None
    return arr if arr.ndim == 2 else None


def _pil_to_gray8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        return np.rint((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
    if img.mode == "F":
        return load_display(np.asarray(img))
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8).copy()


@dataclass(frozen=True)
class Geometry:
    """Where the original image lands inside the square model input."""

    height: int  # original
    width: int
    scale: float  # model pixels per original pixel
    top: float  # offset of the scaled image inside the square (negative when cropped)
    left: float
    size: int


def geometry(height: int, width: int, spec: PreprocessSpec) -> Geometry:
    if spec.resize == "letterbox":
        scale = spec.size / max(height, width)
        new_h, new_w = height * scale, width * scale
        return Geometry(height, width, scale, (spec.size - new_h) / 2.0, (spec.size - new_w) / 2.0, spec.size)
    short = spec.resize_to or spec.size
    scale = short / min(height, width)
    new_h, new_w = height * scale, width * scale
    return Geometry(height, width, scale, (spec.size - new_h) / 2.0, (spec.size - new_w) / 2.0, spec.size)


_REDUCING_GAP = 3.0


def to_square(gray: np.ndarray, spec: PreprocessSpec, *, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """Place a 2-D array into the model's square frame (same geometry for images and masks)."""
    h, w = gray.shape
    g = geometry(h, w, spec)
    new_h, new_w = max(1, round(h * g.scale)), max(1, round(w * g.scale))
    if gray.dtype == np.uint8:
        # A large image is first box-reduced by a whole factor to within 3x of the target, then
        # resampled (Pillow's reducing_gap): 1.7 ms instead of 8.8 ms for 2,500 x 2,000 -> 224,
        # within one grey level of the direct resample (mean 0.15); images up to 1,344 px
        # (factor < 6) are resampled directly, unchanged. Masks (NEAREST) are never reduced.
        gap = _REDUCING_GAP if resample == Image.Resampling.BILINEAR else None
        resized = np.asarray(Image.fromarray(gray).resize((new_w, new_h), resample, reducing_gap=gap))
    else:
        resized = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize((new_w, new_h), resample))
    out = np.zeros((spec.size, spec.size), dtype=resized.dtype)
    top, left = int(round(g.top)), int(round(g.left))
    # Paste with clipping (letterbox pads, centre crop cuts).
    src_y0, src_x0 = max(0, -top), max(0, -left)
    dst_y0, dst_x0 = max(0, top), max(0, left)
    hh = min(new_h - src_y0, spec.size - dst_y0)
    ww = min(new_w - src_x0, spec.size - dst_x0)
    out[dst_y0 : dst_y0 + hh, dst_x0 : dst_x0 + ww] = resized[src_y0 : src_y0 + hh, src_x0 : src_x0 + ww]
    return out


def from_square(arr: np.ndarray, height: int, width: int, spec: PreprocessSpec) -> np.ndarray:
    """Map a map in model-input space (S x S, e.g. mask probabilities or a heatmap) back onto the
    original image grid (H x W), bilinear, as a new writable float32 array. Regions cropped away
    by ``center_crop`` get 0."""
    g = geometry(height, width, spec)
    new_h, new_w = max(1, round(height * g.scale)), max(1, round(width * g.scale))
    top, left = int(round(g.top)), int(round(g.left))
    canvas = np.zeros((new_h, new_w), dtype=np.float32)
    src_y0, src_x0 = max(0, top), max(0, left)
    dst_y0, dst_x0 = max(0, -top), max(0, -left)
    hh = min(spec.size - src_y0, new_h - dst_y0)
    ww = min(spec.size - src_x0, new_w - dst_x0)
    a = arr.astype(np.float32)
    if a.shape != (spec.size, spec.size):
        a = np.asarray(Image.fromarray(a, mode="F").resize((spec.size, spec.size), Image.Resampling.BILINEAR))
    canvas[dst_y0 : dst_y0 + hh, dst_x0 : dst_x0 + ww] = a[src_y0 : src_y0 + hh, src_x0 : src_x0 + ww]
    if height >= new_h and width >= new_w:
        return upsample_bilinear(canvas, height, width)
    return np.array(Image.fromarray(canvas, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def _taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel: the input pixel at or left of its centre, and the weight of the next."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    np.clip(x, 0, n_in - 1, out=x)
    i0 = x.astype(np.intp)
    return i0, (x - i0).astype(np.float32)


def upsample_bilinear(a: np.ndarray, height: int, width: int) -> np.ndarray:
    """Enlarge a float32 map to (height, width) as Pillow's BILINEAR does (pixel centres
    aligned, edge pixels extended; equal to it within float32 rounding, 2e-7), in about a
    quarter of its time: columns interpolated on the small map, then each band of output rows
    between two input rows written in one pass. For enlarging only (both sides >= the input's)."""
    h, w = a.shape
    if height < h or width < w:
        raise ValueError(f"upsample_bilinear enlarges only ({h} x {w} -> {height} x {width})")
    a = np.ascontiguousarray(a, dtype=np.float32)
    j0, g = _taps(width, w)
    left = a[:, j0]
    cols = left + (a[:, np.minimum(j0 + 1, w - 1)] - left) * g  # (h, width)
    diff = np.zeros_like(cols)
    np.subtract(cols[1:], cols[:-1], out=diff[:-1])
    i0, f = _taps(height, h)
    starts = np.searchsorted(i0, np.arange(h + 1))
    out = np.empty((height, width), dtype=np.float32)
    for r in range(h):
        s, e = int(starts[r]), int(starts[r + 1])
        if s < e:
            band = out[s:e]
            np.multiply(f[s:e, None], diff[r], out=band)
            band += cols[r]
    return out


def normalize(square_u8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    x = square_u8.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.float32(spec.mean)) / np.float32(spec.std)
    return np.repeat(x[None], spec.channels, axis=0)


def prepare_input(source: ImageSource, spec: PreprocessSpec | None = None) -> np.ndarray:
    """DICOM / PNG / JPEG path or array -> float32 model input of shape (channels, size, size)."""
    spec = spec or PreprocessSpec()
    gray = load_display(source, draft_size=2 * spec.size)
    return normalize(to_square(gray, spec), spec)


def original_shape(source: ImageSource) -> tuple[int, int]:
    """(height, width) of an image at full resolution, read from its header where possible."""
    if isinstance(source, np.ndarray):
        return int(source.shape[0]), int(source.shape[1])
    path = Path(source)
    if not _is_dicom(path):
        with open_plain_image(path) as img:
            return int(img.height), int(img.width)
    from core_model.imaging.dicom import read_dataset

    ds = read_dataset(path, header_only=True)
    return int(ds.Rows), int(ds.Columns)


def prepare_input_with_shape(
    source: ImageSource, spec: PreprocessSpec | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`prepare_input` plus the full-resolution (height, width) its outputs map back onto."""
    spec = spec or PreprocessSpec()
    gray, shape = _display(source, 2 * spec.size)
    # (reduced-size JPEG decoding keeps the aspect ratio up to rounding, so outputs mapped back
    # with from_square land on the full-resolution grid)
    return normalize(to_square(gray, spec), spec), shape


def prepare_batch(sources: list[ImageSource], spec: PreprocessSpec | None = None) -> np.ndarray:
    spec = spec or PreprocessSpec()
    return np.stack([prepare_input(s, spec) for s in sources]).astype(np.float32)
