"""Overlays and the exported view, Qt-free.

The viewer shows two overlays above the grayscale image, each an RGBA array made here and given
to a pyqtgraph ``ImageItem`` as is, with the item's opacity set to the user's opacity:

- the segmentation mask (:func:`mask_rgba`): the model's mask probabilities thresholded at the
  bundle's mask threshold, filled or as an outline, in one colour;
- the heatmap (:func:`heatmap_rgba`): values in [0, 1] through a 256-entry colour lookup table
  (a pyqtgraph colormap's table, passed in as numpy) whose entries below the display threshold
  have alpha 0 (:func:`threshold_lut`), so low values leave the image visible.

Because the RGBA arrays and opacities on screen are exactly these, :func:`composite` reproduces
the view (Qt paints a layer with painter opacity ``o`` and pixel alpha ``a`` as
``dst * (1 - a*o) + src * a*o``); pyqtgraph's own ``ImageItem.save`` would drop the opacity.
:func:`export_view_png` writes the composite of the visible part of the image at native
resolution, with a footer (research-use notice, what the overlays are, the colour bar).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOTICE = "Research use only - not for diagnosis."
MASK_COLOR = (40, 200, 255)  # cyan: distinct from the heatmap colormaps (dark-red-yellow)
DEFAULT_MASK_OPACITY = 0.5
DEFAULT_HEATMAP_OPACITY = 0.5
DEFAULT_HEATMAP_THRESHOLD = 0.3


@dataclass(frozen=True)
class Layer:
    rgba: np.ndarray  # (H, W, 4) uint8, straight (not premultiplied) alpha
    opacity: float = 1.0
    visible: bool = True


def to_unit(mask: np.ndarray) -> np.ndarray:
    """Mask probabilities as float32 in [0, 1] (uint8 masks from the library are 0..255)."""
    arr = np.asarray(mask)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    return np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)


def quantize(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 lookup index 0..255 (what the colour table is indexed with)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def stretch(values: np.ndarray) -> np.ndarray:
    """Min-max stretch to [0, 1] ("relative" heatmap display: the least attended part of the
    image 0, the most 1). A constant map stays as it is."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32))
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-6:
        return np.clip(v, 0.0, 1.0)
    return (v - lo) / (hi - lo)


def threshold_lut(lut: np.ndarray, threshold: float) -> np.ndarray:
    """A (256, 4) uint8 RGBA table from a (256, 3|4) colour table: entry i stands for the value
    i/255; entries below ``threshold`` get alpha 0, the others full alpha."""
    table = np.asarray(lut)
    if table.ndim != 2 or table.shape[0] != 256 or table.shape[1] not in (3, 4):
        raise ValueError("a colour table has 256 entries of RGB or RGBA")
    if table.dtype != np.uint8:
        table = np.clip(np.rint(table.astype(np.float64) * (255.0 if table.max() <= 1.0 else 1.0)), 0, 255)
        table = table.astype(np.uint8)
    out = np.empty((256, 4), dtype=np.uint8)
    out[:, :3] = table[:, :3]
    levels = np.arange(256) / 255.0
    out[:, 3] = np.where(levels >= float(threshold) - 1e-9, 255, 0)
    return out


def heatmap_rgba(heatmap: np.ndarray, lut: np.ndarray, threshold: float, relative: bool = False) -> np.ndarray:
    """(H, W) heatmap in [0, 1] -> (H, W, 4) RGBA through the thresholded table (``relative``:
    min-max stretched first)."""
    return threshold_lut(lut, threshold)[quantize(stretch(heatmap) if relative else heatmap)]


def outline(binary: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The inner boundary of a binary mask, ``thickness`` pixels wide (4-neighbour erosion)."""
    b = np.asarray(binary, dtype=bool)
    eroded = b.copy()
    for _ in range(max(1, int(thickness))):
        e = eroded.copy()
        e[1:, :] &= eroded[:-1, :]
        e[:-1, :] &= eroded[1:, :]
        e[:, 1:] &= eroded[:, :-1]
        e[:, :-1] &= eroded[:, 1:]
        # the image border counts as outside
        e[0, :] = e[-1, :] = False
        e[:, 0] = e[:, -1] = False
        eroded = e
    return b & ~eroded


def outline_thickness(shape: tuple[int, int]) -> int:
    """About 2 screen pixels when the whole image is fitted in a ~800 px viewer."""
    return max(1, int(round(max(shape) / 400.0)))


def mask_rgba(
    mask: np.ndarray,
    threshold: float = 0.5,
    mode: str = "filled",
    color: tuple[int, int, int] = MASK_COLOR,
    thickness: int | None = None,
) -> np.ndarray:
    """Mask probabilities -> (H, W, 4) RGBA: ``color`` at full alpha where the probability is at
    least ``threshold`` (``filled``) or on the boundary of that region (``outline``)."""
    if mode not in ("filled", "outline"):
        raise ValueError("mask mode is 'filled' or 'outline'")
    binary = to_unit(mask) >= float(threshold)
    if mode == "outline":
        binary = outline(binary, thickness or outline_thickness(binary.shape))
    out = np.zeros(binary.shape + (4,), dtype=np.uint8)
    out[binary, 0], out[binary, 1], out[binary, 2] = color
    out[binary, 3] = 255
    return out


def composite(base: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    """The grayscale display with the visible layers painted on top, as the viewer shows it:
    (H, W) uint8 -> (H, W, 3) uint8."""
    out = np.repeat(np.asarray(base, dtype=np.float32)[..., None], 3, axis=2)
    for layer in layers:
        if not layer.visible or layer.opacity <= 0:
            continue
        rgba = np.asarray(layer.rgba)
        if rgba.shape[:2] != out.shape[:2]:
            raise ValueError(f"overlay {rgba.shape[:2]} does not match the image {out.shape[:2]}")
        a = rgba[..., 3:4].astype(np.float32) * (min(float(layer.opacity), 1.0) / 255.0)
        out = out * (1.0 - a) + rgba[..., :3].astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def visible_box(view: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the view in image coordinates -> (row0, row1, col0, col1) of the
    image pixels at least partly visible; the whole image when the view holds all of it."""
    h, w = shape
    x0, y0, x1, y1 = view
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    c0, c1 = max(0, int(math.floor(x0))), min(w, int(math.ceil(x1)))
    r0, r1 = max(0, int(math.floor(y0))), min(h, int(math.ceil(y1)))
    if c1 <= c0 or r1 <= r0:
        return 0, h, 0, w
    return r0, r1, c0, c1


@dataclass(frozen=True)
class Legend:
    """What the export's footer says besides the notice."""

    lines: tuple[str, ...] = ()
    colorbar: np.ndarray | None = None  # (256, 4) thresholded table of the heatmap shown
    colorbar_label: str = ""
    colorbar_ends: tuple[str, str] = ("0", "1")


def _checker(h: int, w: int, size: int = 4) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.where(((yy // size) + (xx // size)) % 2 == 0, 200, 150).astype(np.float32)


def colorbar_rgb(table: np.ndarray, width: int, height: int) -> np.ndarray:
    """A horizontal colour bar (0 left, 1 right); transparent entries over a checkerboard."""
    idx = np.clip((np.arange(width) * 256) // max(width, 1), 0, 255)
    row = np.asarray(table)[idx]  # (width, 4)
    bar = np.repeat(row[None], height, axis=0).astype(np.float32)
    a = bar[..., 3:4] / 255.0
    back = _checker(height, width)[..., None]
    return np.clip(np.rint(back * (1 - a) + bar[..., :3] * a), 0, 255).astype(np.uint8)


def _wrap(text: str, font, width: float) -> list[str]:
    """Word-wrap ``text`` to ``width`` pixels (words longer than a line are cut)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
        while font.getlength(line) > width and len(line) > 1:  # a single very long word
            cut = len(line)
            while cut > 1 and font.getlength(line[:cut]) > width:
                cut -= 1
            lines.append(line[:cut])
            line = line[cut:]
    if line:
        lines.append(line)
    return lines or [""]


def render_footer(width: int, legend: Legend, notice: str = NOTICE) -> np.ndarray:
    """The export's footer: the notice, the legend lines (wrapped to the image width) and the
    heatmap's colour bar with 0 and 1 marked."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(10, min(28, width // 40))
    font = ImageFont.load_default(size=size)
    pad = max(4, size // 2)
    line_h = size + size // 3
    text_w = max(10, width - 2 * pad)
    lines = [(text, i == 0) for i, raw in enumerate([notice, *legend.lines]) for text in _wrap(raw, font, text_w)]
    bar_h = size if legend.colorbar is not None else 0
    height = pad * 2 + line_h * len(lines) + (bar_h + line_h + 2 if bar_h else 0)
    img = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    y = pad
    for text, first in lines:
        draw.text((pad, y), text, fill=(255, 200, 80) if first else (230, 230, 230), font=font)
        y += line_h
    if legend.colorbar is not None:
        bar_w = max(16, min(text_w, 40 * size))
        bar = colorbar_rgb(legend.colorbar, bar_w, bar_h)
        img.paste(Image.fromarray(bar, "RGB"), (pad, y))
        ty = y + bar_h + 2
        lo, hi = legend.colorbar_ends
        draw.text((pad, ty), lo, fill=(230, 230, 230), font=font)
        draw.text((pad + bar_w - font.getlength(hi), ty), hi, fill=(230, 230, 230), font=font)
        if legend.colorbar_label and font.getlength(legend.colorbar_label) < bar_w - 4 * size:
            draw.text(
                (pad + (bar_w - font.getlength(legend.colorbar_label)) / 2, ty),
                legend.colorbar_label,
                fill=(230, 230, 230),
                font=font,
            )
    return np.asarray(img)


def export_view_png(
    path: str | os.PathLike,
    base: np.ndarray,
    layers: Sequence[Layer],
    view: tuple[float, float, float, float] | None = None,
    legend: Legend | None = None,
    footer: bool = True,
) -> Path:
    """Write the composited view as PNG (atomically): the visible part of the image at native
    resolution, overlays with their opacity, and below it a footer with the notice and legend.
    Returns the path written."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    rgb = composite(base, layers)
    if view is not None:
        r0, r1, c0, c1 = visible_box(view, rgb.shape[:2])
        rgb = rgb[r0:r1, c0:c1]
    if footer:
        rgb = np.concatenate([rgb, render_footer(rgb.shape[1], legend or Legend())], axis=0)
    from core_model.fileio import atomic_write

    atomic_write(
        path, lambda f: Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(f, format="PNG"), fsync=False, mkdir=True
    )
    return path
