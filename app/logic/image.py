"""An image as the viewer holds it (Qt-free).

:func:`load_image` reads a DICOM, PNG or JPEG file once and keeps what the viewer needs:

- ``values``: the *modality values* (DICOM PS3.3 C.11.1: stored values through Rescale Slope /
  Intercept or the Modality LUT); the pixel readout and every re-windowing start from them, never
  from the 8-bit display;
- ``presets``: every window / VOI LUT the file offers, with its explanation
  (:func:`core_model.imaging.dicom.window_presets`), the viewer's keys 1-5;
- :meth:`ViewImage.render`: the app's display pipeline (VOI, then MONOCHROME1 / INVERSE
  inversion, then 8-bit), identical to :func:`core_model.imaging.dicom.render_dataset` (tested
  pixel for pixel), but fast enough for a mouse drag: for integer modality values the VOI is
  evaluated once per distinct value (a lookup table over ``min..max``) and the image is one
  gather through it;
- :func:`display_file`: one file's default display or a preset, through the same
  :meth:`ViewImage.render` (what ``adaptor-review render`` and the thumbnails write);
- :func:`drag_window`: window/level from a mouse drag (horizontal = width, vertical = centre);
- :class:`Spacing` and :func:`measure`: distances in mm, saying honestly which spacing the file
  gives (PS3.3 10.7.1.3: Pixel Spacing is in the patient plane when present; Imager Pixel Spacing
  is at the detector and includes the geometric magnification).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_MAX_LUT = 1 << 20  # integer value ranges up to this size use the lookup-table path


@dataclass(frozen=True)
class Spacing:
    """Millimetres per pixel along rows (vertical) and columns (horizontal), and where they come
    from (``PixelSpacing`` or ``ImagerPixelSpacing``)."""

    row_mm: float
    col_mm: float
    kind: str
    magnification: float | None = None  # Estimated Radiographic Magnification Factor

    def describe(self) -> str:
        size = f"{self.row_mm:g} x {self.col_mm:g} mm"
        if self.kind == "PixelSpacing":
            return f"Pixel Spacing {size} (patient plane)"
        text = f"Imager Pixel Spacing {size} (at the detector, not corrected for magnification"
        if self.magnification:
            text += f"; estimated magnification {self.magnification:g}"
        return text + ")"


@dataclass(frozen=True)
class Distance:
    pixels: float
    mm: float | None  # in the plane the spacing refers to
    text: str  # the full statement (which plane, magnification)
    short: str = ""  # what fits beside the ruler on the image


@dataclass
class WindowState:
    """What the viewer shows: a preset (0-based) or a manual centre/width, plus the user's
    inversion (on top of the file's own MONOCHROME1 / INVERSE handling)."""

    preset: int | None = 0
    center: float | None = None
    width: float | None = None
    invert: bool = False

    @property
    def manual(self) -> bool:
        return self.center is not None and self.width is not None


@dataclass
class ViewImage:
    source: str  # file name shown to the user (never a patient attribute)
    values: np.ndarray  # modality values (float32 when integral, else float64)
    presets: list = field(default_factory=list)  # WindowPreset; empty for PNG/JPEG
    units: str = ""
    spacing: Spacing | None = None
    is_dicom: bool = True
    file_invert: bool = False
    value_kind: str = "modality value"
    header: object = None  # pydicom Dataset without pixel data (VOI LUTs, padding), or None
    _lut_base: tuple | None = None  # (vmin, index array, range of values as float64)
    _cache: dict = field(default_factory=dict)
    vmin: float = 0.0
    vmax: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    @property
    def span(self) -> float:
        return max(self.vmax - self.vmin, 1.0)

    # -- rendering ----------------------------------------------------------------------------
    def render(self, state: WindowState | None = None) -> np.ndarray:
        """uint8 display for ``state`` (default: preset 0, the library's default display)."""
        state = state or WindowState()
        if state.manual:
            return self._render(state)
        key = (state.preset or 0, bool(state.invert))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._render(state)
            if len(self._cache) >= 4:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _render(self, state: WindowState) -> np.ndarray:
        from core_model.imaging.dicom import apply_voi, to_display, voi_window

        invert = self.file_invert != bool(state.invert)
        if not self.is_dicom:  # PNG/JPEG: the 8-bit display values themselves
            if not state.manual:
                unit_range = np.arange(256, dtype=np.float64) / 255.0
            else:
                unit_range = voi_window(np.arange(256, dtype=np.float64), state.center, state.width, "LINEAR")
            lut = to_display(unit_range, invert)
            return lut[self.values.astype(np.uint8)]
        preset = None
        if not state.manual:
            preset = self.presets[state.preset or 0] if self.presets else None
        kwargs = dict(center=state.center, width=state.width) if state.manual else {}
        # Full range over the lookup table equals the whole-array min..max unless padding values
        # are excluded from the range (PixelPaddingValue): then the whole array is used.
        lut_ok = preset is None or preset.kind != "full_range" or "PixelPaddingValue" not in self.header
        if self._lut_base is not None and lut_ok:
            vmin, index, range_values = self._lut_base
            lut = to_display(apply_voi(range_values, self.header, preset, **kwargs), invert)
            return lut[index]
        # Full range excluding padding values, and non-integer values: the whole array.
        return to_display(apply_voi(self.values, self.header, preset, **kwargs), invert)

    def preset_label(self, index: int) -> str:
        return self.presets[index].label() if 0 <= index < len(self.presets) else ""

    def preset_window(self, index: int | None) -> tuple[float, float]:
        """A centre/width that looks like preset ``index``: where a mouse drag starts from."""
        preset = self.presets[index] if self.presets and index is not None and 0 <= index < len(self.presets) else None
        if preset is not None and preset.kind == "window":
            return float(preset.center), float(preset.width)
        if preset is not None and preset.kind == "voi_lut":
            from core_model.imaging.dicom import voi_lut_window

            return voi_lut_window(self.header.VOILUTSequence[preset.index], self.vmin)
        # full range (and PNG/JPEG): the linear window that maps min..max onto the display
        lo, hi = (self.vmin, self.vmax) if self.is_dicom else (0.0, 255.0)
        return (lo + hi) / 2.0 + 0.5, max(hi - lo + 1.0, 2.0)

    # -- readout ------------------------------------------------------------------------------
    def value_at(self, row: int, col: int) -> float | None:
        h, w = self.shape
        if 0 <= row < h and 0 <= col < w:
            return float(self.values[row, col])
        return None

    def readout(self, x: float, y: float) -> str:
        """Position and value under image coordinates (x = column, y = row, pixel corners at
        integers, as the viewer's scene); empty outside the image."""
        col, row = int(math.floor(x)), int(math.floor(y))
        value = self.value_at(row, col)
        if value is None:
            return ""
        shown = f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"
        if self.is_dicom:
            unit = f" {self.units}" if self.units else " (no unit in the file)"
            return f"x {col}, y {row}   {self.value_kind} {shown}{unit}"
        return f"x {col}, y {row}   8-bit value {shown}"


# -- window / level from a mouse drag ---------------------------------------------------------


def drag_window(
    center: float, width: float, dx: float, dy: float, span: float, pixels_for_span: float = 512.0
) -> tuple[float, float]:
    """New (centre, width) after a drag of (dx, dy) screen pixels: right widens the window
    (less contrast), down raises the centre (darker). Dragging ``pixels_for_span`` pixels moves
    by the image's whole value range, so 8-bit and 16-bit images feel the same."""
    step = max(float(span), 1.0) / float(pixels_for_span)
    width = max(1.0, float(width) + float(dx) * step)
    center = float(center) + float(dy) * step
    return center, width


# -- spacing and distance ---------------------------------------------------------------------


def spacing_of(ds) -> Spacing | None:
    """Pixel Spacing (patient plane) when the file has it, else Imager Pixel Spacing."""
    magnification = None
    try:
        m = ds.get("EstimatedRadiographicMagnificationFactor")
        magnification = float(m) if m not in (None, "") and float(m) > 0 else None
    except (TypeError, ValueError):
        magnification = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2:
                row, col = float(value[0]), float(value[1])
                if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
                    return Spacing(row, col, keyword, magnification if keyword == "ImagerPixelSpacing" else None)
        except (TypeError, ValueError):
            continue
    return None


def measure(x0: float, y0: float, x1: float, y1: float, spacing: Spacing | None) -> Distance:
    """Distance between two points in image coordinates (x = column, y = row)."""
    dx, dy = float(x1) - float(x0), float(y1) - float(y0)
    pixels = math.hypot(dx, dy)
    if spacing is None:
        return Distance(pixels, None, f"{pixels:.1f} px (no pixel spacing in the file)", f"{pixels:.1f} px")
    mm = math.hypot(dx * spacing.col_mm, dy * spacing.row_mm)
    if spacing.kind == "PixelSpacing":
        return Distance(pixels, mm, f"{mm:.1f} mm", f"{mm:.1f} mm")
    text = f"{mm:.1f} mm at the detector"
    if spacing.magnification:
        text += f" (~{mm / spacing.magnification:.1f} mm at the patient, est. magnification {spacing.magnification:g})"
    else:
        text += " (not corrected for magnification)"
    return Distance(pixels, mm, text, f"{mm:.1f} mm (detector)")


# -- loading ----------------------------------------------------------------------------------


def modality_units(ds) -> str:
    """Units of the modality values when the file says (Rescale Type; CT is always HU)."""
    rescale_type = str(ds.get("RescaleType", "") or "").strip()
    if rescale_type and rescale_type.upper() != "US":  # "US" = unspecified
        return rescale_type
    if str(ds.get("Modality", "")).upper() == "CT":
        return "HU"
    return ""


def _is_plain_image(path: Path) -> bool:
    """PNG / JPEG (True), DICOM (False), or the one sniffer's refusal for anything else."""
    from core_model.imaging.sniff import image_kind

    return image_kind(path) != "dicom"


def _lut_base(values: np.ndarray) -> tuple | None:
    if values.size == 0 or not np.all(np.isfinite(values)):
        return None
    vmin, vmax = float(values.min()), float(values.max())
    if vmax - vmin + 1 > _MAX_LUT or not np.array_equal(values, np.floor(values)):
        return None
    lo = int(vmin)
    n = int(vmax) - lo + 1
    index = (values - lo).astype(np.uint16 if n <= 65536 else np.uint32)
    return lo, index, np.arange(lo, lo + n, dtype=np.float64)


def load_image(path: str | os.PathLike) -> ViewImage:
    """Read a DICOM, PNG or JPEG file for viewing. Raises the imaging layer's
    :class:`~core_model.imaging.errors.ImageReadError` (a UserError) with a one-line message."""
    from core_model.imaging.errors import ImageReadError

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path.name}: the file is missing ({path})", reason="missing")
    plain = _is_plain_image(path)
    if plain:
        from core_model.imaging.preprocess import load_display

        display = load_display(path)
        values = display.astype(np.float32)
        return ViewImage(
            source=path.name,
            values=values,
            presets=[],
            is_dicom=False,
            value_kind="8-bit value",
            vmin=0.0,
            vmax=255.0,
            _lut_base=None,
        )
    from core_model.imaging.dicom import (
        decode_pixels,
        file_inversion,
        is_monochrome,
        modality_values,
        read_dataset,
        window_presets,
    )

    ds = read_dataset(path)
    values = modality_values(ds, decode_pixels(ds, source=path.name), source=path.name)
    for tag in (0x7FE00010, 0x7FE00009, 0x7FE00008):  # keep the header, drop the pixel bytes
        if tag in ds:
            del ds[tag]
    base = _lut_base(values)
    if base is not None and float(values.max()) < 2**24 and float(values.min()) > -(2**24):
        values = values.astype(np.float32)  # exact for these integers, half the memory
    mono = is_monochrome(ds)
    return ViewImage(
        source=path.name,
        values=values,
        presets=window_presets(ds),
        units=modality_units(ds),
        spacing=spacing_of(ds),
        is_dicom=True,
        file_invert=file_inversion(ds),
        value_kind="modality value" if mono else "luminance",
        header=ds,
        _lut_base=base,
        vmin=float(values.min()) if values.size else 0.0,
        vmax=float(values.max()) if values.size else 0.0,
    )


@dataclass(frozen=True)
class Display:
    pixels: np.ndarray  # uint8 (rows, columns)
    presets: list  # WindowPreset; empty for PNG/JPEG
    preset_index: int | None  # the preset used (0-based), None for PNG/JPEG


def display_file(path: str | os.PathLike, preset: int | None = None) -> Display:
    """The default display (``preset`` None) or a 0-based preset of a DICOM/PNG/JPEG file, as the
    viewer shows it (:meth:`ViewImage.render`). ``preset`` is 0-based here; the viewer's keys 1-5
    and ``render --preset N`` are 1-based."""
    from core_model.imaging.errors import ImageReadError, UnsupportedImageError

    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found", reason="missing")
    if _is_plain_image(path):
        if preset not in (None, 0):
            raise UnsupportedImageError(f"{path.name}: PNG/JPEG images have no window presets", reason="bad_preset")
        return Display(load_image(path).render(), [], None)
    image = load_image(path)
    index = 0 if preset is None else preset
    if not 0 <= index < len(image.presets):
        names = ", ".join(f"{i + 1}: {p.label()}" for i, p in enumerate(image.presets))
        raise UnsupportedImageError(
            f"{path.name}: preset {index + 1} does not exist; the file offers {names}", reason="bad_preset"
        )
    return Display(image.render(WindowState(preset=index)), image.presets, index)
