"""The viewing area: 1 x 1, 1 x 2 or 2 x 2 panes (each an :class:`~app.gui.viewer.ViewerWidget`),
the active pane framed, and window / level, zoom and pan linked across the panes when asked.

Which images hang where is :func:`app.logic.hanging.hang`'s; the main window loads them. Pane 0
always holds the image selected in the browser; pressing another pane makes it the active one
(the AI panel then shows its image's results, and its overlays are drawn in it). Linking copies
the active pane's window (centre / width or preset, inversion) and its view as fractions of the
image (so images of different sizes stay aligned) to the other panes, one pass per change.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGridLayout, QWidget

from app.gui.viewer import ViewerWidget
from app.logic.hanging import LAYOUTS

MAX_PANES = 4


class HangingWidget(QWidget):
    active_changed = Signal(int)  # pane index
    layout_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Image panes")
        self.panes = [ViewerWidget() for _ in range(MAX_PANES)]
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(3)
        self.layout_name = "1x1"
        self.active = 0
        self.link_window = False
        self.link_view = False
        self._syncing = False
        for i, pane in enumerate(self.panes):
            pane.setAccessibleName("Image viewer" if i == 0 else f"Image viewer {i + 1}")
            pane.activated.connect(lambda i=i: self.set_active(i))
            pane.state_changed.connect(lambda i=i: self._state_changed(i))
            pane.view_changed.connect(lambda i=i: self._view_changed(i))
        self.set_layout("1x1")

    def visible_panes(self) -> list[ViewerWidget]:
        rows, cols = LAYOUTS[self.layout_name]
        return self.panes[: rows * cols]

    def set_layout(self, name: str) -> None:
        if name not in LAYOUTS:
            raise ValueError(f"layout is one of {', '.join(LAYOUTS)}")
        rows, cols = LAYOUTS[name]
        self.layout_name = name
        for pane in self.panes:
            self.grid.removeWidget(pane)
            pane.hide()
        for k in range(rows * cols):
            self.grid.addWidget(self.panes[k], k // cols, k % cols)
            self.panes[k].show()
        if self.active >= rows * cols:
            self.set_active(0)
        self._frame()
        self.layout_changed.emit(name)

    def set_active(self, index: int) -> None:
        if not 0 <= index < len(self.visible_panes()):
            return
        changed = index != self.active
        self.active = index
        self._frame()
        if changed:
            self.active_changed.emit(index)

    def _frame(self) -> None:
        many = len(self.visible_panes()) > 1
        for i, pane in enumerate(self.panes):
            pane.set_active(many and i == self.active)

    # -- linking ----------------------------------------------------------------------------------
    def set_linked(self, window: bool | None = None, view: bool | None = None) -> None:
        if window is not None:
            self.link_window = bool(window)
        if view is not None:
            self.link_view = bool(view)
        source = self.panes[self.active]
        if self.link_window:
            self._state_changed(self.active)
        if self.link_view and source.image is not None:
            self._view_changed(self.active)

    def _others(self, index: int) -> list[ViewerWidget]:
        return [p for i, p in enumerate(self.visible_panes()) if i != index and p.image is not None]

    def _state_changed(self, index: int) -> None:
        if self._syncing or not self.link_window or index >= len(self.visible_panes()):
            return
        state = self.panes[index].state
        self._syncing = True
        try:
            for pane in self._others(index):
                pane.set_state(state)
        finally:
            self._syncing = False

    def _view_changed(self, index: int) -> None:
        if self._syncing or not self.link_view or index >= len(self.visible_panes()):
            return
        frac = self.panes[index].view_fraction()
        if frac is None:
            return
        self._syncing = True
        try:
            for pane in self._others(index):
                pane.set_view_fraction(frac)
        finally:
            self._syncing = False
