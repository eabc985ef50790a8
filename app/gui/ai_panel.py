"""The AI panel: the model, its probabilities with the operating thresholds marked, and the
controls of the segmentation and heatmap overlays (with a colour bar). Always says "Research use
only - not for diagnosis". Holds no model logic: it shows what it is given and emits what the
user asks for.

The domain state of each result decides how sure the panel looks (:func:`domain_look`):
in the model's training domain the bars are as they are (red at or above the threshold); out of
domain a prominent message says the results are not meaningful, the bars are grey with nothing
highlighted, and the overlays are off until the user ticks them (for this image; the saved
preference is untouched); unknown (the bundle records no training domain) says that the model
cannot tell, and the bars above threshold are amber, not red."""

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
SYNTHETIC_NOTICE = "Demo model trained on synthetic phantoms: its results mean nothing for real images"
OUT_OF_DOMAIN_TEXT = "This image is unlike the model's training data: results are not meaningful"
UNKNOWN_TEXT = "The model cannot say whether this image is like its training data"

# bar colours: (at or above the threshold, below it)
_BAR_COLOURS = {
    "in_domain": ((214, 69, 50), (70, 130, 180)),
    "unknown": ((196, 140, 60), (110, 140, 165)),
    "out_of_domain": ((160, 160, 160), (160, 160, 160)),
}


def domain_look(domain) -> str:
    """ "in_domain", "unknown" or "out_of_domain": how a result with this
    :class:`~core_model.runtime.domain.DomainState` (or None) is shown."""
    status = getattr(domain, "status", None)
    return status if status in _BAR_COLOURS else "unknown"


def domain_html(domain) -> str:
    """The AI panel's message for a domain state (rich text)."""
    from html import escape

    look = domain_look(domain)
    reasons = [escape(r) for r in (getattr(domain, "reasons", ()) or ())]
    score, thr = getattr(domain, "score", None), getattr(domain, "threshold", None)
    numbers = (
        f"distance score {score:.2f} {'>' if look == 'out_of_domain' else '≤'} threshold {thr:.2f}"
        if score is not None and thr is not None
        else ""
    )
    if look == "in_domain":
        return "In the model's training domain" + (f" ({numbers})." if numbers else ".")
    if look == "out_of_domain":
        items = "".join(f"<li>{r}</li>" for r in reasons)
        return (
            f"<b>⚠ {OUT_OF_DOMAIN_TEXT}.</b>"
            + (f"<ul style='margin: 2px 0 0 -20px'>{items}</ul>" if items else "")
            + (f"<small>{numbers}</small><br>" if numbers and not any("score" in r for r in reasons) else "")
            + "Probabilities are greyed and the overlays are off; tick <i>Show mask</i> or "
            "<i>Show heatmap</i> to see them anyway."
        )
    why = "; ".join(reasons)
    return f"<b>{UNKNOWN_TEXT}</b>" + (f" ({why})." if why else ".") + " Treat the results with caution."


class ProbabilityBars(QWidget):
    """One bar per class: the calibrated probability, the operating threshold as a tick, the
    bar red when the probability reaches the threshold."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAccessibleName("Probabilities")
        self.items: list[tuple[str, float, float | None]] = []
        self.look = "in_domain"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, items: list[tuple[str, float, float | None]], look: str = "in_domain") -> None:
        """``look``: "in_domain" (red at or above the threshold), "unknown" (amber instead of
        red) or "out_of_domain" (all grey, nothing marked as above)."""
        self.items = list(items)
        self.look = look if look in _BAR_COLOURS else "unknown"
        parts = []
        for name, p, t in self.items:
            text = f"{name} {p:.2f}"
            if t is not None:
                text += f", threshold {t:.2f}, {'above' if p >= t else 'below'}"
            parts.append(text)
        if parts and self.look == "out_of_domain":
            parts.insert(0, "not meaningful: the image is out of the model's training domain")
        elif parts and self.look == "unknown":
            parts.insert(0, "domain unknown")
        self.setAccessibleDescription("; ".join(parts) or "no probabilities")
        self.setToolTip("\n".join(parts) if parts else "")
        self.updateGeometry()
        self.update()

    def _row_height(self) -> int:
        return int(self.fontMetrics().height() * 1.7)

    def sizeHint(self) -> QSize:
        return QSize(240, max(1, len(self.items)) * self._row_height() + 4)

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def paintEvent(self, _event) -> None:
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
        muted = self.look == "out_of_domain"
        fg = self.palette().color(self.foregroundRole())
        text_colour = QColor(140, 140, 140) if muted else fg
        hot, cold = (QColor(*c) for c in _BAR_COLOURS[self.look])
        tick = QColor(150, 150, 150) if muted else QColor(20, 20, 20)
        for i, (name, prob, thr) in enumerate(self.items):
            y = i * rh + 2
            bar = QRectF(bar_x, y + rh * 0.2, bar_w, rh * 0.6)
            above = thr is not None and prob >= thr
            p.setPen(text_colour)
            p.drawText(QRectF(0, y, name_w - 4, rh), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, name)
            p.fillRect(bar, QColor(128, 128, 128, 60))
            fill = QRectF(bar.x(), bar.y(), bar.width() * max(0.0, min(1.0, prob)), bar.height())
            p.fillRect(fill, hot if above else cold)
            if thr is not None:
                x = bar.x() + bar.width() * max(0.0, min(1.0, thr))
                p.setPen(QPen(tick, 2))
                p.drawLine(int(x), int(bar.top() - 3), int(x), int(bar.bottom() + 3))
                p.setBrush(tick)
                p.drawPolygon(
                    QPolygonF([QPointF(x - 4, bar.top() - 8), QPointF(x + 4, bar.top() - 8), QPointF(x, bar.top() - 3)])
                )
            p.setPen(text_colour)
            if muted:  # no "above threshold" marking: the comparison means nothing here
                label = f"{prob:.2f}"
            else:
                label = f"{prob:.2f}" + ("" if thr is None else (f" ≥ {thr:.2f}" if above else f" < {thr:.2f}"))
            p.drawText(
                QRectF(bar_x + bar_w + 6, y, value_w, rh),
                Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                label,
            )


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

    def paintEvent(self, _event) -> None:
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
        lx = int(
            min(
                max(4.0 + fm.horizontalAdvance(lo) + 6, x - fm.horizontalAdvance(label) / 2),
                4 + w - fm.horizontalAdvance(label) - fm.horizontalAdvance(hi) - 6,
            )
        )
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
        g = (
            (lambda k: settings.get(k))
            if settings is not None
            else (lambda k: __import__("app.gui.settings", fromlist=["DEFAULTS"]).DEFAULTS[k])
        )
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
        self.domain_label = QLabel("")
        self.domain_label.setAccessibleName("Domain state")
        self.domain_label.setWordWrap(True)
        self.domain_label.setTextFormat(Qt.TextFormat.RichText)
        self.domain_label.setVisible(False)
        self.domain_look: str | None = None  # of the result shown
        self._heat_label_args: tuple = (None, "", "", "")
        self._user_overlays: tuple[bool, bool] | None = None  # saved ticks while the overlays are off by default
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
        self.heat_relative.setToolTip(
            "On: 0 = where the model looks least in this image, 1 = most. Off: the model's values as they are."
        )
        self.heat_relative.setChecked(bool(g("overlay/heatmap_relative")))
        self.colorbar = ColorBar()
        self.heat_label = QLabel("")
        self.heat_label.setAccessibleName("Heatmap shown")
        self.heat_label.setWordWrap(True)
        self.heat_contrast = QLabel("")
        self.heat_contrast.setAccessibleName("Heatmap contrast")
        self.heat_contrast.setWordWrap(True)
        self.heat_contrast.setVisible(False)
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
        form2.addRow(self.heat_contrast)

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
        layout.addWidget(self.domain_label)
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
        self.heat_relative.toggled.connect(lambda _b: self.set_heatmap_label(*self._heat_label_args))
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
        return (
            self.heat_visible.isChecked(),
            self.heat_opacity.value() / 100.0,
            self.colormap.currentData(),
            self.heat_threshold.value() / 100.0,
        )

    @property
    def heatmap_relative(self) -> bool:
        return self.heat_relative.isChecked()

    def heatmap_table(self) -> np.ndarray:
        _v, _o, cmap, thr = self.heatmap_settings
        return threshold_lut(colormaps.table(cmap), thr)

    def _update_colorbar(self, emit: bool = True) -> None:
        self.colorbar.set_table(
            self.heatmap_table(),
            self.heat_threshold.value() / 100.0,
            "relative" if self.heat_relative.isChecked() else "",
        )
        if emit:
            self.heatmap_changed.emit()

    def _phrase(self) -> None:
        text = " ".join(self.phrase.text().split())
        if text:
            self.phrase_requested.emit(text)

    # -- what the controller shows --------------------------------------------------------------
    def set_model(
        self, description: str | None, error: str | None = None, mask_label: str | None = None, synthetic: bool = False
    ) -> None:
        from html import escape

        if error:
            self.model_label.setText(
                f"<b>Model could not be loaded:</b> {escape(error)}<br>"
                "The library works without a model; choose another bundle."
            )
        elif description:
            self.model_label.setText(
                f"Model: {escape(description)}"
                + (f"<br><b style='color: #b35900'>{SYNTHETIC_NOTICE}.</b>" if synthetic else "")
            )
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
            self.heat_contrast.setText("")
            self.heat_contrast.setVisible(False)
            self._show_domain(None)

    def set_busy(self, text: str | None, cancellable: bool = False) -> None:
        self.status.setText(text or "")
        self.status.setVisible(bool(text))
        self.cancel_button.setVisible(bool(text) and cancellable)

    # -- the domain state ---------------------------------------------------------------------
    _DOMAIN_STYLES = {
        "in_domain": "color: #2e6b3a;",
        "unknown": "color: #6b4a00; background: #fff4d6; border: 1px solid #d9a520; padding: 4px;",
        "out_of_domain": "color: #7a1010; background: #fde4e1; border: 2px solid #c0392b; padding: 6px;",
    }

    def _show_domain(self, domain) -> None:
        if domain is None:
            self.domain_look = None
            self.domain_label.setVisible(False)
            self.domain_label.setText("")
            return
        look = domain_look(domain)
        self.domain_look = look
        self.domain_label.setStyleSheet(self._DOMAIN_STYLES[look])
        self.domain_label.setText(domain_html(domain))
        self.domain_label.setAccessibleDescription(domain.summary() if hasattr(domain, "summary") else look)
        self.domain_label.setVisible(True)
        self.set_overlays_off_by_default(look == "out_of_domain")

    @property
    def overlays_off_by_default(self) -> bool:
        """True while the shown result is out of domain and its overlays start hidden (the
        user's saved ticks are kept aside and come back with the next result in domain)."""
        return self._user_overlays is not None

    def set_overlays_off_by_default(self, off: bool) -> None:
        if off and self._user_overlays is None:
            self._user_overlays = (self.mask_visible.isChecked(), self.heat_visible.isChecked())
            ticks = (False, False)
        elif not off and self._user_overlays is not None:
            ticks, self._user_overlays = self._user_overlays, None
        elif off:
            ticks = (False, False)  # another out-of-domain image: off again
        else:
            return
        for box, on in zip((self.mask_visible, self.heat_visible), ticks):
            box.blockSignals(True)
            box.setChecked(on)
            box.blockSignals(False)

    def show_heatmap_now(self) -> None:
        """The user asked for a heatmap (a phrase, a sentence): show it even while the overlays
        are off by default (for this image only; the saved preference is untouched)."""
        if self.overlays_off_by_default and not self.heat_visible.isChecked():
            self.heat_visible.blockSignals(True)
            self.heat_visible.setChecked(True)
            self.heat_visible.blockSignals(False)

    def set_result(self, result) -> None:
        """Show an :class:`app.logic.analysis.AnalysisResult` (or None to clear)."""
        if result is None:
            self.bars.set_values([])
            self.mask_info.setText("")
            self._show_domain(None)
            return
        self._show_domain(result.domain)
        classes = result.classes or list(result.probabilities)
        self.bars.set_values(
            [
                (c, float(result.probabilities[c]), result.thresholds.get(c))
                for c in classes
                if c in result.probabilities
            ],
            look=self.domain_look,
        )
        if result.mask is not None:
            area = result.mask_area_fraction
            if area is None:
                area = float(np.mean(result.mask >= result.mask_threshold))
            self.mask_info.setText(
                f"{result.mask_label or 'mask'}: {100 * area:.1f} % of the image "
                f"(probability ≥ {result.mask_threshold:.2f})"
            )
        else:
            self.mask_info.setText("This model has no segmentation head" if not result.mask_label else "No mask")
        when = "from the library" if result.from_cache else f"in {result.elapsed_s:.1f} s"
        self.status.setText(f"Analysed {when}.")
        self.status.setVisible(True)

    def set_heatmap_label(self, phrase: str | None, source: str = "", contrast: str = "", empty: str = "") -> None:
        """``contrast``: what the relative stretch worked with (the raw map's peak-to-mean
        ratio, shown while "Relative" is on); ``empty``: why no heatmap is shown."""
        self._heat_label_args = (phrase, source, contrast, empty)
        if not phrase:
            self.heat_label.setText(
                (empty + " " if empty else "") + "No heatmap shown: type a phrase or click a report sentence."
            )
        else:
            self.heat_label.setText(f"Showing “{phrase}”" + (f" ({source})" if source else ""))
        shown = bool(phrase and contrast and self.heat_relative.isChecked())
        self.heat_contrast.setText(f"Relative stretch of the raw attention: {contrast}." if shown else "")
        self.heat_contrast.setVisible(shown)
