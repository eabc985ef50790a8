"""The shown image's analysis, overlays and heatmaps: the controller between the model and the
AI panel, the reports panel and the viewer's overlay layers.

:class:`AnalysisController` owns what the window shows about the model's view of the current
image: the result (``current_result``), the phrase heatmap (``current_heat``), the in-memory
caches (the last analyses and phrase heatmaps, keyed by the bundle's content hash) and the
worker tasks for analysis, phrase heatmaps, similar reports and large overlays. Work runs in
:class:`~app.gui.workers.TaskRunner` lanes through the Qt-free jobs of :mod:`app.logic.jobs`;
a result that arrives after the user has moved on to another image (or another model) is kept
in the cache and not shown. The window (:mod:`app.gui.main_window`) owns the bundle and the
selection and tells the controller when they change (:meth:`reset`, :meth:`analyze_current`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.gui.ai_panel import OUT_OF_DOMAIN_TEXT, SYNTHETIC_NOTICE
from app.logic import analysis as analysis_logic
from app.logic import jobs
from app.logic.overlay import Layer, Legend, heatmap_rgba, mask_rgba

log = logging.getLogger(__name__)

INLINE_OVERLAY_PIXELS = 1_500_000  # larger overlays are coloured in a worker


class LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)

    def fetch(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None


class AnalysisController(QObject):
    """Analysis, default and phrase heatmaps, similar reports and overlays of the shown image.

    ``window`` is the main window: its ``bundle``, ``current_uid``, ``library``, ``runner``,
    ``settings``, panels (``ai``, ``reports``, ``viewer``) and ``status_message`` /
    ``update_actions`` (and ``library_ctl.refresh_browser``) are what the controller reads and drives."""

    analysis_shown = Signal(str)  # uid
    heatmap_shown = Signal(str)  # phrase

    TASKS = ("analysis", "heatmap", "similar", "overlay-mask", "overlay-heat")

    @property
    def viewer(self):
        """The active pane (its image is the one analysed; its overlays are drawn there)."""
        return self.window.viewer

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.runner = window.runner
        self.library = window.library
        self.settings = window.settings
        self.ai, self.reports = window.ai, window.reports
        self.current_result = None
        # phrase, heatmap, source, peak-to-mean ratio of the raw attention (None: not known)
        self.current_heat: tuple[str, np.ndarray, str, float | None] | None = None
        self.analysis_error: str | None = None
        self.results = LRU(64)
        self.heatmaps = LRU(24)
        self._tasks: dict[str, object] = {}
        self._mask_sig = self._mask_want = None  # overlay arrays shown / asked for
        self._heat_sig = self._heat_want = None
        self.ai.analyze_requested.connect(lambda: self.analyze_current(force=True))
        self.ai.cancel_requested.connect(self.cancel_analysis)
        self.ai.phrase_requested.connect(lambda phrase: self.request_heatmap(phrase, "typed phrase"))
        self.ai.mask_changed.connect(self._update_mask_layer)
        self.ai.heatmap_changed.connect(self._update_heat_layer)
        self.reports.sentence_clicked.connect(self.request_heatmap)

    @property
    def bundle(self):
        return self.window.bundle

    @property
    def current_uid(self) -> str | None:
        return self.window.current_uid

    def bundle_key(self):
        """What cached results are keyed by: the loaded bundle's content hash."""
        return self.bundle.content_hash if self.bundle is not None else None

    def reset(self) -> None:
        """Another image (or none) is shown: nothing of the last one stays on screen or runs."""
        self.current_result = None
        self.current_heat = None
        self.analysis_error = None
        self.ai.set_result(None)
        self.ai.set_heatmap_label(None)
        for key in self.TASKS:
            self.runner.cancel(self._tasks.pop(key, None))
        self._mask_want = self._heat_want = self._mask_sig = self._heat_sig = None

    # -- analysis -------------------------------------------------------------------------------
    def analyze_current(self, force: bool = False) -> None:
        uid = self.current_uid
        if uid is None or self.bundle is None:
            return
        key = (self.bundle_key(), uid)
        cached = None if force else self.results.fetch(key)
        if cached is not None:
            self._analysis_done(cached)
            return
        self.runner.cancel(self._tasks.pop("analysis", None))
        self.analysis_error = None
        self.ai.set_busy("Analysing…", cancellable=True)
        holder: dict = {}
        holder["task"] = self._tasks["analysis"] = self.runner.start(
            "Analysis",
            jobs.analyze_job,
            self.library,
            self.bundle,
            uid,
            force,
            on_result=lambda r: None if holder["task"].cancelled else self._analysis_done(r),
            on_failed=lambda msg, uid=uid: None if holder["task"].cancelled else self._analysis_failed(uid, msg),
        )

    def cancel_analysis(self) -> None:
        """Stop the shown image's analysis (the model's current step still finishes; nothing is
        stored or shown)."""
        task = self._tasks.pop("analysis", None)
        if task is not None:
            self.runner.cancel(task)
            self.analysis_error = "cancelled"
            self.ai.set_busy("Analysis cancelled. “Analyze again” runs it.")
            self.reports.set_similar(None, "Analysis cancelled")

    def _analysis_failed(self, uid: str, msg: str) -> None:
        if uid != self.current_uid:
            return
        self.analysis_error = msg
        self.ai.set_busy(f"Analysis failed: {msg}")
        self.reports.set_similar(None, "No analysis")
        self.analysis_shown.emit(uid)

    def _analysis_done(self, result) -> None:
        if result is None:
            return
        if result.bundle_hash is None:
            return  # not keyed by a bundle's content: never shown as the loaded bundle's
        self.results.put((result.bundle_hash, result.uid), result)
        if not result.from_cache:
            self.window.library_ctl.refresh_browser(force=True)
        if result.uid != self.current_uid or result.bundle_hash != self.bundle_key():
            return
        self.current_result = result
        self.ai.set_busy(None)
        self.ai.set_result(result)
        self.window.update_actions()
        self._update_mask_layer()
        if result.heatmap is not None and result.heatmap_phrase:
            self._set_heat(
                result.heatmap_phrase,
                result.heatmap,
                "the most likely finding above its threshold",
                result.heatmap_peak_to_mean,
            )
            self.ai.phrase.setText(result.heatmap_phrase)
            self.ai.phrase.setCursorPosition(0)
        elif result.heatmap_withheld:
            self._set_heat(None, None, "", empty=result.heatmap_withheld)
        else:
            self._set_heat(None, None, "", empty="No finding reaches its threshold, so no heatmap is drawn by default.")
        if result.similar is not None:
            self.reports.set_similar(result.similar, "The model's report bank is empty")
        else:
            self._tasks["similar"] = self.runner.start(
                "Similar reports",
                jobs.similar_job,
                self.library,
                self.bundle,
                result,
                result.uid,
                on_result=self._similar_done,
                on_failed=lambda msg: self.reports.set_similar(None, f"Similar reports unavailable: {msg}"),
            )
        self.analysis_shown.emit(result.uid)

    def _similar_done(self, payload) -> None:
        uid, hits = payload
        if uid == self.current_uid:
            self.reports.set_similar(hits, "The model's report bank is empty")
            if self.current_result is not None:
                self.current_result.similar = hits

    # -- overlays -------------------------------------------------------------------------------
    def _fit(self, arr: np.ndarray | None) -> np.ndarray | None:
        """An overlay on the shown image's grid (a runtime that returned another size is resized)."""
        if arr is None or self.viewer.image is None:
            return None
        shape = self.viewer.image.shape
        if arr.shape == shape:
            return arr
        from PIL import Image

        log.warning("overlay %s resized to the image %s", arr.shape, shape)
        return np.asarray(
            Image.fromarray(np.asarray(arr, dtype=np.float32), "F").resize((shape[1], shape[0]), Image.BILINEAR)
        )

    def _update_mask_layer(self) -> None:
        visible, opacity, mode = self.ai.mask_settings
        if not self.ai.overlays_off_by_default:  # a tick on an out-of-domain image is for that image only
            self.settings.set("overlay/mask_visible", visible)
        self.settings.set("overlay/mask_opacity", opacity)
        self.settings.set("overlay/mask_mode", mode)
        r = self.current_result
        mask = self._fit(r.mask) if r is not None else None
        if mask is None:
            self._mask_sig = self._mask_want = None
            self.viewer.set_mask(None)
            return
        threshold = r.mask_threshold
        self._overlay("mask", (id(r), mode), mask.size, lambda: mask_rgba(mask, threshold, mode))

    def _set_heat(
        self, phrase: str | None, heat: np.ndarray | None, source: str, ratio: float | None = None, empty: str = ""
    ) -> None:
        heat = self._fit(heat)
        self.current_heat = (phrase, heat, source, ratio) if phrase and heat is not None else None
        self.ai.set_heatmap_label(
            phrase if self.current_heat else None, source, analysis_logic.contrast_text(ratio), empty=empty
        )
        self.reports.set_current(phrase if self.current_heat else None)
        self._update_heat_layer()

    def _update_heat_layer(self) -> None:
        visible, opacity, cmap, threshold = self.ai.heatmap_settings
        if not self.ai.overlays_off_by_default:
            self.settings.set("overlay/heatmap_visible", visible)
        self.settings.set("overlay/heatmap_opacity", opacity)
        self.settings.set("overlay/colormap", cmap)
        self.settings.set("overlay/heatmap_threshold", threshold)
        if self.current_heat is None:
            self._heat_sig = self._heat_want = None
            self.viewer.set_heatmap(None)
            return
        relative = self.ai.heatmap_relative
        self.settings.set("overlay/heatmap_relative", relative)
        phrase, heat, _source, _ratio = self.current_heat
        table = self.ai.heatmap_table()
        self._overlay(
            "heat",
            (id(heat), cmap, threshold, relative),
            heat.size,
            lambda: heatmap_rgba(heat, table, threshold, relative),
            shown=lambda: self.heatmap_shown.emit(phrase),
        )

    def _overlay(self, kind: str, sig, pixels: int, compute, shown=None) -> None:
        """Show overlay ``kind`` ("mask" / "heat") for ``sig``: opacity and visibility change
        at once; a new RGBA array is made here for small images and in a worker for large
        ones (a 3000 x 2500 outline takes ~250 ms), and dropped if superseded meanwhile."""
        layer = self.viewer.mask_layer if kind == "mask" else self.viewer.heat_layer
        applied = self._mask_sig if kind == "mask" else self._heat_sig
        if sig == applied and layer is not None:
            visible, opacity = self._overlay_look(kind)
            self.viewer.update_layer(kind, opacity=opacity, visible=visible)
            return
        setattr(self, f"_{kind}_want", sig)

        def apply(rgba) -> None:
            if getattr(self, f"_{kind}_want") != sig:
                return  # another image, mode, colormap or threshold was asked for meanwhile
            visible, opacity = self._overlay_look(kind)
            (self.viewer.set_mask if kind == "mask" else self.viewer.set_heatmap)(Layer(rgba, opacity, visible))
            setattr(self, f"_{kind}_sig", sig)
            if shown is not None:
                shown()

        self.runner.cancel(self._tasks.pop(f"overlay-{kind}", None))
        if pixels <= INLINE_OVERLAY_PIXELS:
            apply(compute())
        else:
            self._tasks[f"overlay-{kind}"] = self.runner.start(
                "Overlay",
                lambda ctx: compute(),
                on_result=apply,
                on_failed=lambda msg: self.window.status_message(f"Overlay not shown: {msg}"),
            )

    def _overlay_look(self, kind: str) -> tuple[bool, float]:
        if kind == "mask":
            visible, opacity, _mode = self.ai.mask_settings
        else:
            visible, opacity, _cmap, _thr = self.ai.heatmap_settings
        return visible, opacity

    # -- phrase heatmaps ------------------------------------------------------------------------
    def request_heatmap(self, phrase: str, source: str = "") -> None:
        uid = self.current_uid
        if uid is None:
            return
        if self.bundle is None:
            self.window.status_message("Choose a model bundle first: heatmaps come from the model")
            return
        self.ai.phrase.setText(phrase)
        self.ai.phrase.setCursorPosition(0)
        self.ai.show_heatmap_now()  # asked for: shown, also on an image out of the model's domain
        key = (self.bundle_key(), uid, phrase)
        cached = self.heatmaps.fetch(key)
        source = self._heat_source(source)
        if cached is not None:
            self._set_heat(phrase, cached[0], source, cached[1])
            return
        self.runner.cancel(self._tasks.pop("heatmap", None))
        self.ai.set_busy(f"Computing the heatmap of “{phrase}”…")
        self._tasks["heatmap"] = self.runner.start(
            "Heatmap",
            jobs.heatmap_job,
            self.library,
            self.bundle,
            self.current_result,
            uid,
            phrase,
            source,
            on_result=lambda payload, key=key: self._heatmap_done(key, payload),
            on_failed=lambda msg: self._heatmap_failed(msg),
        )

    def _heatmap_done(self, key, payload) -> None:
        uid, phrase, source, heat, ratio = payload
        self.heatmaps.put(key, (heat, ratio))
        if uid != self.current_uid:
            return
        self.ai.set_busy(None)
        self._set_heat(phrase, heat, source, ratio)

    def _heat_source(self, source: str) -> str:
        """A heatmap the user asked for, with what the model card vouches for beside it."""
        caveat = analysis_logic.grounding_caveat(self.bundle) if self.bundle is not None else ""
        return "; ".join(x for x in (source, caveat) if x)

    def _heatmap_failed(self, msg: str) -> None:
        self.ai.set_busy(f"Heatmap failed: {msg}")
        self.window.status_message(f"Heatmap failed: {msg}")

    # -- the exported view's legend -------------------------------------------------------------
    def export_legend(self) -> Legend:
        """What the exported PNG says beside the view: model, domain, mask and heatmap as shown."""
        lines = []
        if self.bundle is not None:
            lines.append(
                f"Model {self.bundle.id} {self.bundle.version}"
                + (f" - {SYNTHETIC_NOTICE}" if self.bundle.synthetic else "")
            )
        r = self.current_result
        if r is not None:
            if r.domain.status == "out_of_domain":
                lines.append(f"OUT OF DOMAIN: {OUT_OF_DOMAIN_TEXT} ({'; '.join(r.domain.reasons)})")
            else:
                lines.append(f"Domain: {r.domain.summary()}")
        if r is not None and self.viewer.mask_layer is not None and self.viewer.mask_layer.visible:
            _v, opacity, mode = self.ai.mask_settings
            lines.append(
                f"Mask ({r.mask_label or 'segmentation'}, {mode}, opacity {opacity:.2f}): "
                f"probability >= {r.mask_threshold:.2f}"
            )
        table = None
        label = ""
        if self.current_heat is not None and self.viewer.heat_layer is not None and self.viewer.heat_layer.visible:
            _v, opacity, cmap, thr = self.ai.heatmap_settings
            phrase = self.current_heat[0]
            scale = (
                f"stretched min-max, {analysis_logic.contrast_text(self.current_heat[3])}, "
                if self.ai.heatmap_relative
                else ""
            )
            lines.append(f'Heatmap of "{phrase}" ({cmap}, {scale}opacity {opacity:.2f}, hidden below {thr:.2f})')
            table = self.ai.heatmap_table()
            label = "relative heatmap value" if self.ai.heatmap_relative else "heatmap value"
        lines.append(f"Display: {self.viewer.window_text()}")
        ends = ("min", "max") if self.ai.heatmap_relative else ("0", "1")
        return Legend(tuple(lines), table, label, ends)
