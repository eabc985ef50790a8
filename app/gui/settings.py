"""Settings remembered between runs (QSettings, INI format, user scope).

Out-of-domain results start with the overlays hidden without touching ``overlay/*_visible``
(the user's choice comes back with the next result in domain), see :mod:`app.gui.ai_panel`.

Tests point the user scope at a temporary folder with ``QSettings.setPath`` (tests/gui/conftest.py),
so they never read or write the real user's settings.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSettings

ORG = "cxr-adaptor"
APP = "adaptor-review"

DEFAULTS: dict[str, Any] = {
    "overlay/mask_visible": True,
    "overlay/mask_opacity": 0.5,
    "overlay/mask_mode": "filled",
    "overlay/heatmap_visible": True,
    "overlay/heatmap_opacity": 0.5,
    "overlay/heatmap_threshold": 0.3,
    "overlay/colormap": "inferno",
    "overlay/heatmap_relative": True,
    "import/copy": True,
    "import/last_folder": "",
    "model/last_bundle": "",  # never a synthetic (demo) bundle nor one that failed: MainWindow.remembered_bundle
    "browser/sort": "study_date",
    "browser/descending": True,
    "review/reviewer": "",  # the reader's name on reviews and labels ("" : the login name)
    "review/blinded": False,  # reader study: AI results hidden until the case is labelled
    "review/auto_advance": True,
    "view/layout": "1x1",  # 1x1 | 1x2 | 2x2
    "view/dark": False,  # the dark reading-room theme
    "viewer/wheel_images": True,  # the wheel moves through images, Ctrl+wheel zooms (off: the wheel zooms)
}


def qsettings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORG, APP)


class Settings:
    """Typed access with defaults (INI files store everything as text)."""

    def __init__(self, store: QSettings | None = None):
        self.store = store or qsettings()

    def get(self, key: str, default: Any = None) -> Any:
        fallback = DEFAULTS.get(key, default)
        value = self.store.value(key, fallback)
        if value is None:
            return fallback
        if isinstance(fallback, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(fallback, float):
            try:
                return float(value)
            except (TypeError, ValueError):
                return fallback
        if isinstance(fallback, int):
            try:
                return int(value)
            except (TypeError, ValueError):
                return fallback
        return value

    def set(self, key: str, value: Any) -> None:
        self.store.setValue(key, value)

    def sync(self) -> None:
        self.store.sync()
