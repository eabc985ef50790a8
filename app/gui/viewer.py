"""The image viewer: a pyqtgraph ImageItem in a ViewBox, with two overlay ImageItems above it.

Thin over :mod:`app.logic.image` (display pipeline, window/level, readout, distance) and
:mod:`app.logic.overlay` (overlay RGBA arrays). Mouse: left drag = window/level (or a ruler in
measure mode), right/middle drag or Shift+left drag = pan, wheel = zoom, double click = fit.
The keys (1-5 presets, i invert, space reset, f fit, m measure, arrows next/previous) are the
main window's actions, so they show in its menus.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.logic.hanging import corner_texts, orientation_letters, scale_bar
from app.logic.image import Distance, ViewImage, WindowState, drag_window, measure
from app.logic.overlay import Layer

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


class ScaleBar(QWidget):
    """A horizontal bar of a round length, drawn over the image (bottom right)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.length_px = 0.0
        self.text = ""
        self.setAccessibleName("Scale bar")

    def set_bar(self, length_px: float, text: str) -> None:
        self.length_px, self.text = float(length_px), text
        self.setVisible(length_px > 0)
        self.update()

    def paintEvent(self, _event) -> None:
        if self.length_px <= 0:
            return
        p = QPainter(self)
        p.setPen(QPen(QColor(255, 255, 255), 2))
        font = p.font()
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.85))
        p.setFont(font)
        y = self.height() - 4
        x1 = self.width() - 4
        x0 = x1 - self.length_px
        p.drawLine(int(x0), y, int(x1), y)
        p.drawLine(int(x0), y - 5, int(x0), y)
        p.drawLine(int(x1), y - 5, int(x1), y)
        p.drawText(
            self.rect().adjusted(0, 0, -4, -10),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
            self.text.replace(" (", "\n("),  # "2 cm" over "(detector plane)": fits a narrow pane
        )
        p.end()


class _ViewportWatcher(QObject):
    """Tells the viewer when its viewport is resized or pressed (active pane)."""

    def __init__(self, viewer):
        super().__init__(viewer)
        self.viewer = viewer

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Resize:
            self.viewer._place_overlays()
        elif kind in (QEvent.Type.MouseButtonPress, QEvent.Type.Wheel):
            self.viewer.activated.emit()
        return False


class ImageViewBox(pg.ViewBox):
    """A ViewBox whose left drag is handed to the viewer (window/level or ruler)."""

    left_drag = Signal(object)
    double_clicked = Signal()
    wheel_step = Signal(int)  # +1 next image, -1 previous (a wheel turn without Ctrl)

    def __init__(self):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.setMouseMode(pg.ViewBox.PanMode)

    def mouseDragEvent(self, ev, axis=None):
        button = ev.button()
        if button == Qt.MouseButton.LeftButton and not (ev.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            ev.accept()
            self.left_drag.emit(ev)
            return
        if button in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton, Qt.MouseButton.MiddleButton):
            ev.accept()  # pan
            dif = (ev.pos() - ev.lastPos()) * -1
            tr = pg.functions.invertQTransform(self.childGroup.transform())
            d = tr.map(dif) - tr.map(pg.Point(0, 0))
            self._resetTarget()
            self.translateBy(x=d.x(), y=d.y())
            self.sigRangeChangedManually.emit(self.state["mouseEnabled"])
            return
        super().mouseDragEvent(ev, axis)

    def wheelEvent(self, ev, axis=None):
        """Ctrl+wheel zooms; a plain wheel turn is handed to the window (next / previous image, or
        a zoom, as the settings say)."""
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        self.wheel_step.emit(-1 if ev.delta() > 0 else 1)

    def mouseClickEvent(self, ev):
        if ev.double() and ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.double_clicked.emit()
            return
        super().mouseClickEvent(ev)


class ViewerWidget(QWidget):
    window_changed = Signal(str)  # the window/preset description
    readout_changed = Signal(str)
    measured = Signal(object)  # Distance
    message = Signal(str)  # a short note for the status bar ("this image has 2 presets")
    state_changed = Signal()  # window / preset / inversion rendered (linked panes follow)
    view_changed = Signal()  # zoom or pan (linked panes follow)
    activated = Signal()  # pressed: the pane becomes the active one
    wheel_step = Signal(int)  # a plain wheel turn: +1 next, -1 previous

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Image viewer")
        self.info = QLabel("No image selected")
        self.info.setAccessibleName("Image information")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("k")
        self.graphics.setAccessibleName("Image display")
        self.graphics.setObjectName("pane_graphics")
        self.graphics.setAccessibleDescription(
            "Left drag: window/level (or ruler in measure mode); right drag: pan; wheel: zoom; double click: fit"
        )
        self.graphics.setAcceptDrops(False)  # file drops go to the main window (import)
        self.graphics.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.readout = QLabel(" ")
        self.readout.setAccessibleName("Pixel value")
        self.distance = QLabel(" ")
        self.distance.setAccessibleName("Measurement")
        self.spacing = QLabel(" ")
        self.spacing.setAccessibleName("Pixel spacing")
        self.spacing.setWordWrap(True)
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.9))
        for label in (self.readout, self.distance, self.spacing):
            label.setFont(small)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.info)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.readout)
        layout.addWidget(self.distance)
        layout.addWidget(self.spacing)

        self.view = ImageViewBox()
        self.graphics.addItem(self.view)
        self.image_item = pg.ImageItem()
        self.mask_item = pg.ImageItem()
        self.heat_item = pg.ImageItem()
        self.mask_item.setZValue(10)
        self.heat_item.setZValue(20)
        for item in (self.image_item, self.mask_item, self.heat_item):
            self.view.addItem(item)
        self.ruler = pg.PlotCurveItem(pen=pg.mkPen(QColor(255, 220, 0), width=2))
        self.ruler.setZValue(30)
        self.ruler_text = pg.TextItem(color=QColor(255, 220, 0), anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 160))
        self.ruler_text.setZValue(31)
        self.view.addItem(self.ruler)
        self.view.addItem(self.ruler_text)
        self._clear_ruler()

        self.image: ViewImage | None = None
        self.title = ""
        self.state = WindowState()
        self.display: np.ndarray | None = None  # the grayscale currently shown
        self.measure_mode = False
        self.last_distance: Distance | None = None
        self._drag_start: tuple[float, float] | None = None
        self._ruler_start: QPointF | None = None
        self._render_pending = False
        self.mask_layer: Layer | None = None
        self.heat_layer: Layer | None = None
        self.blinded = False  # a blinded reader study: the AI overlays stay hidden

        self.view.left_drag.connect(self._on_left_drag)
        self.view.double_clicked.connect(self.fit)
        self.view.wheel_step.connect(self.wheel_step)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)

        # corner annotations, orientation letters and the scale bar, over the image
        vp = self.graphics.viewport()
        self.corners: dict[str, QLabel] = {}
        for key in ("top_left", "top_right", "bottom_left", "bottom_right"):
            label = QLabel("", vp)
            label.setAccessibleName(f"Annotation {key.replace('_', ' ')}")
            label.setStyleSheet("color: #f0f0f0; background: rgba(0, 0, 0, 120); font-size: 8pt; padding: 1px 3px;")
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            right = key.endswith("right")
            label.setAlignment(
                (Qt.AlignmentFlag.AlignRight if right else Qt.AlignmentFlag.AlignLeft) | Qt.AlignmentFlag.AlignTop
            )
            self.corners[key] = label
        self.letters: dict[str, QLabel] = {}
        for key in ("top", "bottom", "left", "right"):
            label = QLabel("", vp)
            label.setAccessibleName(f"Orientation {key}")
            label.setStyleSheet("color: #ffd34d; background: transparent; font-weight: bold;")
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self.letters[key] = label
        self.scale = ScaleBar(vp)
        self.annotations_on = True
        self.index: tuple[int, int] | None = None  # (n, of): the image's place in its list
        self.orientation_source = ""
        self._watcher = _ViewportWatcher(self)
        vp.installEventFilter(self._watcher)
        self.view.sigRangeChanged.connect(self._range_changed)

    # -- image ----------------------------------------------------------------------------------
    def set_image(self, image: ViewImage | None, title: str = "") -> None:
        self.image = image
        self.title = title or (image.source if image else "")
        self.state = WindowState()
        self._clear_ruler()
        self.set_mask(None)
        self.set_heatmap(None)
        if image is None:
            self.display = None
            self.image_item.clear()
            self.info.setText(title or "No image selected")
            self.spacing.setText(" ")
            self.readout.setText(" ")
            self._update_annotations()
            return
        self._render_now()
        self.fit()
        if image.is_dicom:
            self.spacing.setText(
                image.spacing.describe() if image.spacing else "No pixel spacing in the file: distances are in pixels"
            )
        else:
            self.spacing.setText("PNG/JPEG: no pixel spacing, distances are in pixels")

    # -- annotations, linking -------------------------------------------------------------------
    def zoom_factor(self) -> float:
        """Screen pixels per image pixel."""
        (x0, x1), _ = self.view.viewRange()
        width = self.view.sceneBoundingRect().width() or self.graphics.viewport().width()
        return float(width) / max(1e-6, x1 - x0)

    def view_fraction(self) -> tuple[float, float, float] | None:
        """The view's centre (as fractions of the image's width and height) and its width as a
        fraction of the image's: what linked panes share, whatever their image sizes."""
        if self.image is None:
            return None
        h, w = self.image.shape
        (x0, x1), (y0, y1) = self.view.viewRange()
        return (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w

    def set_view_fraction(self, frac) -> None:
        if self.image is None or frac is None:
            return
        h, w = self.image.shape
        cx, cy, fw = frac
        vp = self.view.sceneBoundingRect()
        aspect = (vp.height() / vp.width()) if vp.width() > 0 else 1.0
        half_w = fw * w / 2
        half_h = half_w * aspect  # square pixels: the aspect lock keeps this range as given
        self.view.setRange(
            xRange=(cx * w - half_w, cx * w + half_w), yRange=(cy * h - half_h, cy * h + half_h), padding=0.0
        )

    def set_state(self, state: WindowState) -> None:
        """Another pane's window / preset / inversion (a preset this image lacks: its first)."""
        if self.image is None:
            return
        preset = state.preset
        if preset is not None and not (0 <= preset < len(self.image.presets or [])):
            preset = 0
        self.state = WindowState(preset=preset, center=state.center, width=state.width, invert=state.invert)
        self._render_now()

    def set_active(self, on: bool) -> None:
        colour = "#3b8ad8" if on else "transparent"
        self.graphics.setStyleSheet(f"QGraphicsView#pane_graphics {{ border: 2px solid {colour}; }}")

    def set_index(self, index: tuple[int, int] | None) -> None:
        self.index = index
        self._update_annotations()

    def set_annotations_visible(self, on: bool) -> None:
        self.annotations_on = bool(on)
        self._update_annotations()

    def _range_changed(self, *_args) -> None:
        self._update_annotations(corners=False)
        self.view_changed.emit()

    def _update_annotations(self, corners: bool = True) -> None:
        img = self.image
        show = self.annotations_on and img is not None
        header = getattr(img, "header", None) if img is not None else None
        if corners:
            texts = (
                corner_texts(
                    header, title=self.title, window=self.window_text(), zoom=self.zoom_factor(), index=self.index
                )
                if show
                else {}
            )
            for key, label in self.corners.items():
                label.setText(texts.get(key, ""))
                label.adjustSize()
            letters = (
                orientation_letters(getattr(header, "PatientOrientation", None), getattr(header, "ViewPosition", None))
                if show and header is not None
                else None
            )
            self.orientation_source = letters[1] if letters else ""
            for key, label in self.letters.items():
                label.setText(letters[0][key] if letters else "")
                label.setToolTip(f"From {self.orientation_source}" if letters else "")
                label.adjustSize()
        elif show:
            bl = self.corners["bottom_left"]
            bl.setText(
                corner_texts(
                    header, title=self.title, window=self.window_text(), zoom=self.zoom_factor(), index=self.index
                )["bottom_left"]
            )
            bl.adjustSize()
        bar = None
        if show and img.spacing is not None:
            bar = scale_bar(img.spacing.col_mm, self.zoom_factor(), img.spacing.kind)
        self.scale.set_bar(bar[1] if bar else 0, bar[2] if bar else "")
        self.scale_text = bar[2] if bar else ""
        self._place_overlays()

    def _place_overlays(self) -> None:
        vp = self.graphics.viewport()
        w, h, m = vp.width(), vp.height(), 6
        c = self.corners
        c["top_left"].move(m, m)
        c["top_right"].move(w - c["top_right"].width() - m, m)
        c["bottom_left"].move(m, h - c["bottom_left"].height() - m)
        c["bottom_right"].move(w - c["bottom_right"].width() - m, h - c["bottom_right"].height() - 54)
        L = self.letters
        L["top"].move((w - L["top"].width()) // 2, m)
        L["bottom"].move((w - L["bottom"].width()) // 2, h - L["bottom"].height() - m)
        L["left"].move(m, (h - L["left"].height()) // 2)
        L["right"].move(w - L["right"].width() - m, (h - L["right"].height()) // 2)
        self.scale.setGeometry(w // 2, max(0, h - 52), max(10, w - w // 2 - m), 48)

    def show_message(self, text: str) -> None:
        """Replace the image by a message (e.g. the file cannot be read)."""
        self.set_image(None, text)

    def window_text(self) -> str:
        img = self.image
        if img is None:
            return ""
        if self.state.manual:
            text = f"window C {self.state.center:.0f} / W {self.state.width:.0f} (manual)"
        elif img.presets:
            i = self.state.preset or 0
            text = f"preset {i + 1}/{len(img.presets)}: {img.preset_label(i)}"
        else:
            text = "8-bit image (no window presets)"
        if self.state.invert:
            text += ", inverted"
        return text

    def _update_info(self) -> None:
        if self.image is None:
            return
        h, w = self.image.shape
        self.info.setText(f"{self.title}  ·  {w} x {h}  ·  {self.window_text()}")
        self.window_changed.emit(self.window_text())

    def _render_now(self) -> None:
        self._render_pending = False
        if self.image is None:
            return
        self.display = self.image.render(self.state)
        self.image_item.setImage(self.display, autoLevels=False, levels=(0, 255))
        self._update_info()
        self._update_annotations()
        self.state_changed.emit()

    def _schedule_render(self) -> None:
        if not self._render_pending:  # coalesce mouse moves: one render per event-loop pass
            self._render_pending = True
            QTimer.singleShot(0, self._render_now)

    # -- window / level, presets, invert ----------------------------------------------------------
    def set_preset(self, index: int) -> bool:
        img = self.image
        if img is None:
            return False
        if not img.presets:
            self.message.emit("PNG/JPEG images have no window presets")
            return False
        if not 0 <= index < len(img.presets):
            names = "; ".join(f"{i + 1}: {img.preset_label(i)}" for i in range(min(5, len(img.presets))))
            self.message.emit(f"This image offers {len(img.presets)} preset(s): {names}")
            return False
        self.state = WindowState(preset=index, invert=self.state.invert)
        self._render_now()
        self.message.emit(f"Preset {index + 1}: {img.preset_label(index)}")
        return True

    def set_window(self, center: float, width: float) -> None:
        self.state = WindowState(
            preset=None, center=float(center), width=max(1.0, float(width)), invert=self.state.invert
        )
        self._render_now()

    def toggle_invert(self) -> None:
        if self.image is None:
            return
        self.state.invert = not self.state.invert
        self._render_now()

    def reset(self) -> None:
        """Back to the file's default display, whole image in view, no ruler."""
        if self.image is None:
            return
        self.state = WindowState()
        self._clear_ruler()
        self._render_now()
        self.fit()

    def fit(self) -> None:
        if self.image is None:
            return
        h, w = self.image.shape
        self.view.setRange(xRange=(0, w), yRange=(0, h), padding=0.0)

    def zoom(self, factor: float) -> None:
        self.view.scaleBy((1.0 / factor, 1.0 / factor))

    def _on_left_drag(self, ev) -> None:
        if self.image is None:
            return
        if self.measure_mode:
            self._ruler_drag(ev)
            return
        if ev.isStart() or self._drag_start is None:
            if self.state.manual:
                self._drag_start = (self.state.center, self.state.width)
            else:
                self._drag_start = self.image.preset_window(self.state.preset if self.image.presets else None)
        delta = ev.screenPos() - ev.buttonDownScreenPos()
        center, width = drag_window(*self._drag_start, delta.x(), delta.y(), self.image.span)
        self.state = WindowState(preset=None, center=center, width=width, invert=self.state.invert)
        self._schedule_render()
        if ev.isFinish():
            self._drag_start = None

    # -- readout and ruler --------------------------------------------------------------------
    def _on_mouse_moved(self, scene_pos) -> None:
        if self.image is None:
            return
        p = self.view.mapSceneToView(scene_pos)
        text = self.image.readout(p.x(), p.y())
        self.readout.setText(text or " ")
        self.readout_changed.emit(text)

    def set_measure_mode(self, on: bool) -> None:
        self.measure_mode = bool(on)
        self.message.emit("Measure: drag on the image to draw a ruler" if on else "Window/level: drag on the image")

    def _ruler_drag(self, ev) -> None:
        if ev.isStart() or self._ruler_start is None:
            self._ruler_start = self.view.mapSceneToView(ev.buttonDownScenePos())
        end = self.view.mapSceneToView(ev.scenePos())
        self.measure_between(self._ruler_start, end)
        if ev.isFinish():
            self._ruler_start = None
            if self.last_distance is not None:
                self.measured.emit(self.last_distance)

    def measure_between(self, start: QPointF, end: QPointF) -> Distance | None:
        if self.image is None:
            return None
        dist = measure(start.x(), start.y(), end.x(), end.y(), self.image.spacing)
        self.last_distance = dist
        self.ruler.setData([start.x(), end.x()], [start.y(), end.y()])
        self.ruler.show()
        self.ruler_text.setText(dist.short or dist.text)
        right_half = end.x() > self.image.shape[1] / 2 and end.x() >= start.x()
        self.ruler_text.setAnchor((1, 1) if right_half else (0, 1))  # keep the label inside the image
        self.ruler_text.setPos(end)
        self.ruler_text.show()
        self.distance.setText(f"Distance: {dist.text}")
        return dist

    def _clear_ruler(self) -> None:
        self.ruler.setData([], [])
        self.ruler.hide()
        self.ruler_text.hide()
        self.last_distance = None
        if hasattr(self, "distance"):
            self.distance.setText(" ")

    # -- overlays -----------------------------------------------------------------------------
    def _apply_layer(self, item: pg.ImageItem, layer: Layer | None) -> None:
        if layer is None or self.image is None:
            item.clear()
            item.hide()
            return
        item.setImage(layer.rgba, autoLevels=False, levels=(0, 255))
        item.setOpacity(float(layer.opacity))
        item.setVisible(bool(layer.visible) and not self.blinded)

    def set_blinded(self, on: bool) -> None:
        """Hide (or show again, as they were) the AI overlays."""
        self.blinded = bool(on)
        for item, layer in ((self.mask_item, self.mask_layer), (self.heat_item, self.heat_layer)):
            item.setVisible(layer is not None and bool(layer.visible) and not self.blinded)

    def overlays_visible(self) -> bool:
        return self.mask_item.isVisible() or self.heat_item.isVisible()

    def set_mask(self, layer: Layer | None) -> None:
        self.mask_layer = layer
        self._apply_layer(self.mask_item, layer)

    def set_heatmap(self, layer: Layer | None) -> None:
        self.heat_layer = layer
        self._apply_layer(self.heat_item, layer)

    def update_layer(self, which: str, *, opacity: float | None = None, visible: bool | None = None) -> None:
        """Opacity or visibility only: no new RGBA array."""
        layer = self.mask_layer if which == "mask" else self.heat_layer
        item = self.mask_item if which == "mask" else self.heat_item
        if layer is None:
            return
        layer = Layer(
            layer.rgba,
            layer.opacity if opacity is None else float(opacity),
            layer.visible if visible is None else bool(visible),
        )
        if which == "mask":
            self.mask_layer = layer
        else:
            self.heat_layer = layer
        item.setOpacity(layer.opacity)
        item.setVisible(layer.visible and not self.blinded)

    def layers(self) -> list[Layer]:
        """The overlays as shown, bottom to top (for the export)."""
        if self.blinded:  # hidden from the reader: not exported either
            return []
        return [layer for layer in (self.mask_layer, self.heat_layer) if layer is not None]

    def view_rect(self) -> tuple[float, float, float, float]:
        (x0, x1), (y0, y1) = self.view.viewRange()
        return x0, y0, x1, y1
