"""The viewing area: 1 x 1, 1 x 2 or 2 x 2 panes (each an :class:`~app.gui.viewer.ViewerWidget`),
the active pane framed, and window / level, zoom and pan linked across the panes when asked.

Which images hang where is :func:`app.logic.hanging.hang`'s; :class:`HangingController` loads
them for the main window (layout, compare with prior, the wheel, pane activation). Pane 0
always holds the image selected in the browser; pressing another pane makes it the active one
(the AI panel then shows its image's results, and its overlays are drawn in it). Linking copies
the active pane's window (centre / width or preset, inversion) and its view as fractions of the
image (so images of different sizes stay aligned) to the other panes, one pass per change.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QGridLayout, QWidget

from app.gui.viewer import ViewerWidget
from app.logic import jobs
from app.logic.hanging import LAYOUTS

log = logging.getLogger(__name__)

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


class HangingController(QObject):
    """What hangs in the panes around the selected image, and which pane is the active one.

    ``window`` is the main window: its ``hanging`` widget, ``hung`` slots, ``compare_prior``,
    ``viewer`` (the active pane), ``current_uid``, ``images`` cache, ``runner`` and the layout /
    link actions are what the controller reads and drives (:func:`app.logic.hanging.hang` says
    which images hang where)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window

    def hung_index(self, uid: str | None) -> int | None:
        """The visible pane that holds ``uid`` (None: none)."""
        if uid is None:
            return None
        n = len(self.window.hanging.visible_panes())
        for k, slot in enumerate(self.window.hung[:n]):
            if slot.uid == uid:
                return k
        return None

    def set_layout(self, name: str) -> None:
        if self.window.act_layouts[name].isChecked() is False:
            self.window.act_layouts[name].setChecked(True)
            return
        if name == self.window.hanging.layout_name:
            return
        self.window.hanging.set_layout(name)
        self.window.settings.set("view/layout", name)
        self._rehang()

    def set_compare_prior(self, on: bool) -> None:
        self.window.compare_prior = bool(on)
        if on:  # current vs prior: window/level, zoom and pan linked by default
            self.window.act_link_window.setChecked(True)
            self.window.act_link_view.setChecked(True)
            if self.window.hanging.layout_name == "1x1":
                self.window.act_layouts["1x2"].setChecked(True)  # set_layout re-hangs
                return
        self._rehang()

    def _rehang(self) -> None:
        uid = self.window.hung[0].uid if self.window.hung else self.window.current_uid
        if uid is None:
            return
        if self.window.hanging.active != 0:
            self.window.browser.select_uid(uid)
            self.window.hanging.set_active(0)
        self.hang(uid)

    def hang(self, uid: str | None) -> None:
        """Fill the other visible panes around ``uid`` (pane 0) and load their images."""
        from app.logic.hanging import Slot, hang

        layout = self.window.hanging.layout_name
        try:
            self.window.hung = (
                hang(self.window.library, uid, layout, self.window.compare_prior)
                if uid is not None
                else [Slot(None, "")]
            )
        except Exception as exc:  # the library went away: one pane, and say why
            log.warning("no hanging: %s", exc)
            self.window.hung = [Slot(uid, "selected")]
        visible = self.window.hanging.visible_panes()
        visible[0].set_index((1, len(visible)) if len(visible) > 1 else None)
        for k, pane in enumerate(visible[1:], 1):
            self.window.runner.cancel(self.window._tasks.pop(f"pane{k}", None))
            slot = self.window.hung[k] if k < len(self.window.hung) else Slot(None, "")
            if slot.uid is None:
                pane.set_image(None, slot.missing.capitalize() if slot.missing else "No image")
                continue
            cached = self.window.images.fetch(slot.uid)
            if cached is not None:
                self._pane_loaded(k, (slot.uid, *cached))
                continue
            pane.set_image(None, f"Loading the {slot.role}…")
            self.window._tasks[f"pane{k}"] = self.window.runner.start(
                "Load image",
                jobs.load_image_job,
                self.window.library,
                slot.uid,
                on_result=lambda payload, k=k: self._pane_loaded(k, payload),
                on_failed=lambda msg, k=k: self.window.hanging.panes[k].show_message(
                    f"This image cannot be shown: {msg}"
                ),
            )

    def _pane_loaded(self, k: int, payload) -> None:
        uid, image, title = payload
        self.window.images.put(uid, (image, title))
        if (
            k >= len(self.window.hung)
            or self.window.hung[k].uid != uid
            or k >= len(self.window.hanging.visible_panes())
        ):
            return
        role = self.window.hung[k].role
        self.window.hanging.panes[k].set_image(image, f"{role.capitalize()}: {title}" if role else title)
        self.after_pane_image(k)
        self.window.pane_shown.emit(k)

    def after_pane_image(self, k: int) -> None:
        """A pane got its image: it follows the linked panes (window, view) and numbers itself."""
        pane = self.window.hanging.panes[k]
        n = len(self.window.hanging.visible_panes())
        pane.set_index((k + 1, n) if n > 1 else None)
        src = (
            self.window.hanging.active
            if k != self.window.hanging.active
            else next(
                (i for i, p in enumerate(self.window.hanging.visible_panes()) if i != k and p.image is not None), None
            )
        )
        if src is None or n == 1:
            return
        other = self.window.hanging.panes[src]
        if self.window.hanging.link_window and other.image is not None:
            pane.set_state(other.state)
        if self.window.hanging.link_view and other.image is not None:
            pane.set_view_fraction(other.view_fraction())

    def wheel_step(self, step: int) -> None:
        """The mouse wheel over an image: the next / previous image of the list (the
        Weasis / OHIF habit; Ctrl+wheel zooms), or a zoom when the setting says so."""
        if self.window.act_wheel_images.isChecked():
            self.window.browser.select_relative(step)
        else:
            self.window.viewer.zoom(1.25 if step < 0 else 0.8)

    def pane_activated(self, k: int) -> None:
        """The user pressed pane ``k``: its image becomes the current one (AI panel, review,
        overlays), without hanging again."""
        slot = self.window.hung[k] if k < len(self.window.hung) else None
        uid = slot.uid if slot is not None else None
        self.window.viewer = self.window.hanging.panes[k]
        self.window.current_uid = uid
        self.window.image_error = None
        self.window.analysis.reset()
        self.window.update_actions()
        self.window._show_text_panels(uid)
        if uid is not None:
            self.window.browser.select_uid(uid)  # show_uid sees it hung in the active pane: nothing more
            if self.window.viewer.image is not None:
                self.window.image_shown.emit(uid)
                self.window.analyze_current()
