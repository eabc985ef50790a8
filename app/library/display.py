"""What the viewer shows for an instance or a file, shared by the viewer and ``render``.

DICOM files go through :func:`core_model.imaging.dicom.render_dataset` (modality LUT, VOI,
MONOCHROME1 / INVERSE, 8-bit) at native resolution; PNG/JPEG through
:func:`core_model.imaging.preprocess.load_display`. ``preset`` is 0-based here; the viewer's
keys 1-5 and ``render --preset N`` are 1-based.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core_model.imaging.dicom import WindowPreset, read_dataset, render_dataset, window_presets
from core_model.imaging.errors import ImageReadError, UnsupportedImageError
from core_model.imaging.preprocess import load_display
from core_model.imaging.sniff import image_kind


@dataclass(frozen=True)
class Display:
    pixels: np.ndarray  # uint8 (rows, columns)
    presets: list[WindowPreset]  # empty for PNG/JPEG
    preset_index: int | None  # the preset used (0-based), None for PNG/JPEG


def _is_plain_image(path: Path) -> bool:
    """PNG / JPEG (True), DICOM (False), or the sniffer's refusal for anything else."""
    return image_kind(path) != "dicom"


def display_file(path: str | os.PathLike, preset: int | None = None) -> Display:
    """The default display (``preset`` None) or a 0-based preset of a DICOM/PNG/JPEG file."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found", reason="missing")
    if _is_plain_image(path):
        if preset not in (None, 0):
            raise UnsupportedImageError(f"{path.name}: PNG/JPEG images have no window presets", reason="bad_preset")
        return Display(load_display(path), [], None)
    ds = read_dataset(path)
    presets = window_presets(ds)
    index = 0 if preset is None else preset
    if not 0 <= index < len(presets):
        names = ", ".join(f"{i + 1}: {p.label()}" for i, p in enumerate(presets))
        raise UnsupportedImageError(f"{path.name}: preset {index + 1} does not exist; the file offers {names}",
                                    reason="bad_preset")
    return Display(render_dataset(ds, index, source=path.name), presets, index)
