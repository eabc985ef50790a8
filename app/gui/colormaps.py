"""Heatmap colormaps: pyqtgraph's colormaps as 256-entry numpy tables for app.logic.overlay."""

from __future__ import annotations

import functools

import numpy as np

NAMES = ["inferno", "viridis", "magma", "plasma", "turbo", "CET-L3"]
LABELS = {"CET-L3": "fire (CET-L3)"}


@functools.lru_cache(maxsize=16)
def table(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a pyqtgraph colormap (value 0 first)."""
    import pyqtgraph as pg

    cmap = pg.colormap.get(name)
    lut = np.asarray(cmap.getLookupTable(0.0, 1.0, 256, alpha=False), dtype=np.uint8)
    lut.setflags(write=False)
    return lut
