"""The dark reading-room theme (reading is done in dim rooms) and back to the platform's own."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette

_LIGHT: dict[int, QPalette] = {}  # the platform's palette, kept to go back to it

DARK_SHEET = """
QToolTip { color: #e6e6e6; background: #2b2b2b; border: 1px solid #555; }
QDockWidget::title { background: #262626; padding: 3px; }
"""


def dark_palette() -> QPalette:
    p = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    for r, c in (
        (role.Window, "#1e1e1e"),
        (role.WindowText, "#dcdcdc"),
        (role.Base, "#141414"),
        (role.AlternateBase, "#1f1f1f"),
        (role.Text, "#dcdcdc"),
        (role.Button, "#2a2a2a"),
        (role.ButtonText, "#dcdcdc"),
        (role.Highlight, "#2f5f8f"),
        (role.HighlightedText, "#ffffff"),
        (role.ToolTipBase, "#2b2b2b"),
        (role.ToolTipText, "#e6e6e6"),
        (role.PlaceholderText, "#8a8a8a"),
        (role.Link, "#7fb2e5"),
    ):
        p.setColor(r, QColor(c))
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(group.Disabled, r, QColor("#6a6a6a"))
    return p


def apply_theme(app, *, dark: bool) -> None:
    if app is None:
        return
    if id(app) not in _LIGHT:
        _LIGHT[id(app)] = QPalette(app.palette())
    app.setPalette(dark_palette() if dark else _LIGHT[id(app)])
    app.setStyleSheet(DARK_SHEET if dark else "")


def is_dark(app) -> bool:
    return app is not None and app.palette().color(QPalette.ColorRole.Window).lightness() < 80
