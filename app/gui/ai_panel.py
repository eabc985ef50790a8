"""The AI panel: the model, its probabilities with the operating thresholds marked, and the
controls of the segmentation and heatmap overlays (with a colour bar). Always says "Research use
only - not for diagnosis". Holds no model logic: it shows what it is given and emits what the
user asks for."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.gui import colormaps
from app.logic.overlay import colorbar_rgb, threshold_lut

RESEARCH_NOTICE = "Research use only — not for diagnosis"


class ProbabilityBars(QWidget):
    """One bar per class: the calibrated probability, the operating threshold as a tick, the
    bar red when the probability reaches the threshold."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAccessibleName("Probabilities")
        self.items: list[tuple[str, float, float | None]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, items: list[tuple[str, float, float | None]]) -> None:
        self.items = list(items)
        parts = []
        for name, p, t in self.items:
            text = f"{name} {p:.2f}"
            if t is not None:
                text += f", threshold {t:.2f}, {'above' if p >= t else 'below'}"
            parts.append(text)
        self.setAccessibleDescription("; ".join(parts) or "no probabilities")
        self.setToolTip("\n".join(parts) if parts else "")
        self.updateGeometry()
        self.update()

    def _row_height(self) -> int:
        return int(self.fontMetrics().height() * 1.7)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(240, max(1, len(self.items)) * self._row_height() + 4)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return self.sizeHint()

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = self.fontMetrics()
        rh = self._row_height()
        name_w = max([fm.horizontalAdvance(n) for n, _, _ in self.items] + [fm.horizontalAdvance("pneumonia")]) + 8
        value_w = fm.horizontalAdvance("0.00 ≥ 0.00") + 8
        bar_x = name_w
        bar_w = max(20, self.width() - name_w - value_w)
        if not self.items:
            p.setPen(self.palette().color(self.foregroundRole()))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, "No analysis")
            return
        for i, (name, prob, thr) in enumerate(self.items):
            y = i * rh + 2
            bar = QRectF(bar_x, y + rh * 0.2, bar_w, rh * 0.6)
            above = thr is not None and prob >= thr
            p.setPen(self.palette().color(self.foregroundRole()))
            p.drawText(QRectF(0, y, name_w - 4, rh), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, name)
            p.fillRect(bar, QColor(128, 128, 128, 60))
            fill = QRectF(bar.x(), bar.y(), bar.width() * max(0.0, min(1.0, prob)), bar.height())
            p.fillRect(fill, QColor(214, 69, 50) if above else QColor(70, 130, 180))
            if thr is not None:
                x = bar.x() + bar.width() * max(0.0, min(1.0, thr))
                p.setPen(QPen(QColor(20, 20, 20), 2))
                p.drawLine(int(x), int(bar.top() - 3), int(x), int(bar.bottom() + 3))
                p.setBrush(QColor(20, 20, 20))
                p.drawPolygon(QPolygonF([QPointF(x - 4, bar.top() - 8), QPointF(x + 4, bar.top() - 8),
                                         QPointF(x, bar.top() - 3)]))
            p.setPen(self.palette().color(self.foregroundRole()))
            label = f"{prob:.2f}" + ("" if thr is None else (f" ≥ {thr:.2f}" if above else f" < {thr:.2f}"))
            p.drawText(QRectF(bar_x + bar_w + 6, y, value_w, rh),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, label)


class ColorBar(QWidget):
    """The heatmap's colour table from 0 to 1, transparent part (below the threshold) over a
    checkerboard, with the threshold marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAccessibleName("Heatmap colour bar")
        self.table: np.ndarray | None = None
        self.threshold = 0.0
        self.note = ""
        self.setMinimumHeight(self.fontMetrics().height() * 2 + 8)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_table(self, table: np.ndarray, threshold: float, note: str = "") -> None:
        self.table, self.threshold, self.note = table, float(threshold), note
        self.setAccessibleDescription(f"0 to 1{' (' + note + ')' if note else ''}, transparent below {threshold:.2f}")
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802
        if self.table is None:
            return
        p = QPainter(self)
        fm = self.fontMetrics()
        w = max(8, self.width() - 8)
        h = max(6, self.height() - fm.height() - 6)
        rgb = np.ascontiguousarray(colorbar_rgb(self.table, w, h))
        img = QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888)
        p.drawImage(4, 2, img)
        x = 4 + w * self.threshold
        p.setPen(QPen(self.palette().color(self.foregroundRole()), 1))
        p.drawLine(int(x), 0, int(x), h + 4)
        lo, hi = ("min", "max") if self.note == "relative" else ("0", "1")
        p.drawText(4, h + 4 + fm.ascent(), lo)
        p.drawText(4 + w - fm.horizontalAdvance(hi), h + 4 + fm.ascent(), hi)
        label = f"threshold {self.threshold:.2f}"
        lx = int(min(max(4.0 + fm.horizontalAdvance(lo) + 6, x - fm.horizontalAdvance(label) / 2),
                     4 + w - fm.horizontalAdvance(label) - fm.horizontalAdvance(hi) - 6))
        p.drawText(lx, h + 4 + fm.ascent(), label)


def _slider(name: str, value: float) -> QSlider:
    s = QSlider(Qt.Orientation.Horizontal)
    s.setRange(0, 100)
    s.setValue(int(round(value * 100)))
    s.setAccessibleName(name)
    s.setToolTip(name)
    return s


class AIPanel(QWidget):
    choose_model = Signal()
    show_card = Signal()
    analyze_requested = Signal()
    cancel_requested = Signal()
    phrase_requested = Signal(str)
    mask_changed = Signal()  # visibility, opacity or mode
    heatmap_changed = Signal()  # visibility, opacity, colormap or threshold

    def __init__(self, settings=None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("AI panel")
        g = (lambda k: settings.get(k)) if settings is not None else (lambda k: __import__(
            "app.gui.settings", fromlist=["DEFAULTS"]).DEFAULTS[k])
        self.notice = QLabel(RESEARCH_NOTICE)
        self.notice.setAccessibleName("Research use notice")
        bold = QFont(self.font())
        bold.setBold(True)
        self.notice.setFont(bold)
        self.notice.setStyleSheet("color: #b35900;")
        self.notice.setWordWrap(True)

        self.model_label = QLabel("No model loaded. Choose a model bundle to analyse images.")
        self.model_label.setAccessibleName("Model")
        self.model_label.setWordWrap(True)
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.choose_button = QPushButton("Choose model…")
        self.choose_button.setAccessibleName("Choose model bundle")
        self.card_button = QPushButton("Model card")
        self.card_button.setAccessibleName("Show model card")
        self.card_button.setEnabled(False)
        self.analyze_button = QPushButton("Analyze again")
        self.analyze_button.setToolTip("Run the model on this image again (Ctrl+R)")
        self.analyze_button.setAccessibleName("Analyze the image again")
        self.analyze_button.setEnabled(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setAccessibleName("Cancel the analysis")
        self.cancel_button.setVisible(False)
        self.status = QLabel("")
        self.status.setAccessibleName("Analysis status")
        self.status.setWordWrap(True)
        self.status.setVisible(False)
        self.bars = ProbabilityBars()

        # segmentation
        self.mask_box = QGroupBox("Segmentation")
        self.mask_box.setAccessibleName("Segmentation overlay")
        self.mask_visible = QCheckBox("Show mask")
        self.mask_visible.setAccessibleName("Show segmentation mask")
        self.mask_visible.setChecked(bool(g("overlay/mask_visible")))
        self.mask_opacity = _slider("Mask opacity", float(g("overlay/mask_opacity")))
        self.mask_mode = QComboBox()
        self.mask_mode.setAccessibleName("Mask display mode")
        self.mask_mode.addItem("Filled", "filled")
        self.mask_mode.addItem("Outline", "outline")
        self.mask_mode.setCurrentIndex(1 if g("overlay/mask_mode") == "outline" else 0)
        self.mask_info = QLabel("")
        self.mask_info.setAccessibleName("Mask area")
        form = QFormLayout(self.mask_box)
        mask_row = QHBoxLayout()
        mask_row.addWidget(self.mask_mode)
        mask_row.addWidget(QLabel("Opacity"))
        mask_row.addWidget(self.mask_opacity, 1)
        form.addRow(self.mask_visible, mask_row)
        form.addRow(self.mask_info)

        # heatmap
        self.heat_box = QGroupBox("Heatmap: where the model finds a phrase")
        self.heat_box.setAccessibleName("Heatmap overlay")
        self.phrase = QLineEdit()
        self.phrase.setPlaceholderText("e.g. left lower lobe consolidation")
        self.phrase.setAccessibleName("Heatmap phrase")
        self.phrase_button = QPushButton("Show")
        self.phrase_button.setAccessibleName("Show heatmap for the phrase")
        self.heat_visible = QCheckBox("Show heatmap")
        self.heat_visible.setAccessibleName("Show heatmap")
        self.heat_visible.setChecked(bool(g("overlay/heatmap_visible")))
        self.heat_opacity = _slider("Heatmap opacity", float(g("overlay/heatmap_opacity")))
        self.heat_threshold = _slider("Heatmap threshold", float(g("overlay/heatmap_threshold")))
        self.colormap = QComboBox()
        self.colormap.setAccessibleName("Heatmap colormap")
        for name in colormaps.NAMES:
            self.colormap.addItem(colormaps.LABELS.get(name, name), name)
        i = self.colormap.findData(g("overlay/colormap"))
        self.colormap.setCurrentIndex(max(0, i))
        self.heat_relative = QCheckBox("Relative (stretch min–max)")
        self.heat_relative.setAccessibleName("Stretch the heatmap to its minimum and maximum")
        self.heat_relative.setToolTip("On: 0 = where the model looks least in this image, 1 = most. "
                                      "Off: the model's values as they are.")
        self.heat_relative.setChecked(bool(g("overlay/heatmap_relative")))
        self.colorbar = ColorBar()
        self.heat_label = QLabel("")
        self.heat_label.setAccessibleName("Heatmap shown")
        self.heat_label.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.phrase, 1)
        row.addWidget(self.phrase_button)
        sliders = QHBoxLayout()
        sliders.addWidget(QLabel("Opacity"))
        sliders.addWidget(self.heat_opacity, 1)
        sliders.addWidget(QLabel("Threshold"))
        sliders.addWidget(self.heat_threshold, 1)
        form2 = QFormLayout(self.heat_box)
        form2.addRow(row)
        form2.addRow(self.heat_visible, self.colormap)
        form2.addRow(sliders)
        form2.addRow(self.heat_relative)
        form2.addRow(self.colorbar)
        form2.addRow(self.heat_label)

        buttons = QHBoxLayout()
        buttons.addWidget(self.choose_button)
        buttons.addWidget(self.card_button)
        buttons.addWidget(self.analyze_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addWidget(self.notice)
        layout.addWidget(self.model_label)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.bars)
        layout.addWidget(self.mask_box)
        layout.addWidget(self.heat_box)
        layout.addStretch(1)

        self.choose_button.clicked.connect(self.choose_model)
        self.card_button.clicked.connect(self.show_card)
        self.analyze_button.clicked.connect(self.analyze_requested)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.phrase_button.clicked.connect(self._phrase)
        self.phrase.returnPressed.connect(self._phrase)
        self.mask_visible.toggled.connect(lambda _b: self.mask_changed.emit())
        self.mask_opacity.valueChanged.connect(lambda _v: self.mask_changed.emit())
        self.mask_mode.currentIndexChanged.connect(lambda _i: self.mask_changed.emit())
        self.heat_visible.toggled.connect(lambda _b: self.heatmap_changed.emit())
        self.heat_relative.toggled.connect(lambda _b: self._update_colorbar())
        self.heat_opacity.valueChanged.connect(lambda _v: self.heatmap_changed.emit())
        self.heat_threshold.valueChanged.connect(lambda _v: self._update_colorbar())
        self.colormap.currentIndexChanged.connect(lambda _i: self._update_colorbar())
        self._update_colorbar(emit=False)
        self.set_model(None)

    # -- values the controller reads ------------------------------------------------------------
    @property
    def mask_settings(self) -> tuple[bool, float, str]:
        return self.mask_visible.isChecked(), self.mask_opacity.value() / 100.0, self.mask_mode.currentData()

    @property
    def heatmap_settings(self) -> tuple[bool, float, str, float]:
        return (self.heat_visible.isChecked(), self.heat_opacity.value() / 100.0, self.colormap.currentData(),
                self.heat_threshold.value() / 100.0)

    @property
    def heatmap_relative(self) -> bool:
        return self.heat_relative.isChecked()

    def heatmap_table(self) -> np.ndarray:
        _v, _o, cmap, thr = self.heatmap_settings
        return threshold_lut(colormaps.table(cmap), thr)

    def _update_colorbar(self, emit: bool = True) -> None:
        self.colorbar.set_table(self.heatmap_table(), self.heat_threshold.value() / 100.0,
                                "relative" if self.heat_relative.isChecked() else "")
        if emit:
            self.heatmap_changed.emit()

    def _phrase(self) -> None:
        text = " ".join(self.phrase.text().split())
        if text:
            self.phrase_requested.emit(text)

    # -- what the controller shows --------------------------------------------------------------
    def set_model(self, description: str | None, error: str | None = None, mask_label: str | None = None) -> None:
        if error:
            self.model_label.setText(f"<b>Model could not be loaded:</b> {error}<br>"
                                     "The library works without a model; choose another bundle.")
        elif description:
            self.model_label.setText(f"Model: {description}")
        else:
            self.model_label.setText("No model loaded. Choose a model bundle to analyse images.")
        loaded = bool(description) and not error
        self.card_button.setEnabled(loaded)
        self.analyze_button.setEnabled(loaded)
        self.phrase.setEnabled(loaded)
        self.phrase_button.setEnabled(loaded)
        self.mask_box.setTitle(f"Segmentation: {mask_label}" if mask_label else "Segmentation")
        self.mask_box.setEnabled(loaded and bool(mask_label))
        self.heat_box.setEnabled(loaded)
        if not loaded:
            self.bars.set_values([])
            self.mask_info.setText("")
            self.heat_label.setText("")

    def set_busy(self, text: str | None, cancellable: bool = False) -> None:
        self.status.setText(text or "")
        self.status.setVisible(bool(text))
        self.cancel_button.setVisible(bool(text) and cancellable)

    def set_result(self, result) -> None:
        """Show an :class:`app.logic.analysis.AnalysisResult` (or None to clear)."""
        if result is None:
            self.bars.set_values([])
            self.mask_info.setText("")
            return
        classes = result.classes or list(result.probabilities)
        self.bars.set_values([(c, float(result.probabilities[c]), result.thresholds.get(c))
                              for c in classes if c in result.probabilities])
        if result.mask is not None:
            area = result.mask_area_fraction
            if area is None:
                area = float(np.mean(result.mask >= result.mask_threshold))
            self.mask_info.setText(f"{result.mask_label or 'mask'}: {100 * area:.1f} % of the image "
                                   f"(probability ≥ {result.mask_threshold:.2f})")
        else:
            self.mask_info.setText("This model has no segmentation head" if not result.mask_label else "No mask")
        when = "from the library" if result.from_cache else f"in {result.elapsed_s:.1f} s"
        self.status.setText(f"Analysed {when}.")
        self.status.setVisible(True)

    def set_heatmap_label(self, phrase: str | None, source: str = "") -> None:
        if not phrase:
            self.heat_label.setText("No heatmap shown: type a phrase or click a report sentence.")
        else:
            self.heat_label.setText(f"Showing “{phrase}”" + (f" ({source})" if source else ""))
