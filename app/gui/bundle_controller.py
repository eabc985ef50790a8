"""The model bundle from the window: choosing a folder or zip, loading it in a worker,
remembering it (never a synthetic one), forgetting one that fails, and the model card.

:class:`BundleController` sets the window's ``bundle`` / ``bundle_path`` / ``bundle_error`` /
``bundle_loading``, updates the AI panel, the browser's findings and the synthetic banner, and
emits the window's ``bundle_changed``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QFileDialog

from app.gui.dialogs import ModelCardDialog
from app.logic import jobs


class BundleController(QObject):
    """Choose, load and remember the model bundle of ``window`` (the main window)."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window

    def choose_bundle_folder(self) -> None:
        start = str(Path(self.window.bundle_path).parent) if self.window.bundle_path else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self.window, "Choose a model bundle folder", start)
        if folder:
            self.load_bundle(folder)

    def choose_bundle_zip(self) -> None:
        start = str(Path(self.window.bundle_path).parent) if self.window.bundle_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self.window, "Choose a model bundle", start, "Model bundles (*.zip)")
        if path:
            self.load_bundle(path)

    def load_bundle(self, path: str, *, quiet: bool = False, remembered: bool = False) -> None:
        """Load in a worker; a failure keeps the library usable and says what is wrong.
        ``remembered``: the bundle comes from the settings, not from the user's choice now (a
        synthetic one is then refused unless this is the library it was chosen for)."""
        self.window.bundle_loading = True
        self.window.ai.set_busy(f"Loading the model {Path(path).name}…")
        self.window.runner.start(
            "Load model",
            jobs.open_bundle_job,
            str(path),
            on_result=lambda payload: self._bundle_loaded(payload, remembered=remembered),
            on_failed=lambda msg, p=str(path): self._bundle_failed(p, msg, quiet),
        )

    # The remembered bundle ("model/last_bundle", loaded when the app starts without --bundle)
    # is the last bundle that loaded and is not synthetic. A synthetic (demo) bundle is never
    # remembered: `--demo` loads it for the demo's own library, and a real library never opens
    # with it; one remembered by an older version is refused when it turns out synthetic. A
    # bundle that fails to load is forgotten.
    def remembered_bundle(self) -> str | None:
        """The bundle to load when a library opens (None: none, or its path is gone)."""
        last = self.window.settings.get("model/last_bundle")
        return str(last) if last and Path(last).exists() else None

    def load_remembered_bundle(self) -> bool:
        path = self.remembered_bundle()
        if path:
            self.load_bundle(path, quiet=True, remembered=True)
        return bool(path)

    def _forget_bundle(self, path: str) -> None:
        if self.window.settings.get("model/last_bundle") and str(self.window.settings.get("model/last_bundle")) == str(
            path
        ):
            self.window.settings.set("model/last_bundle", "")

    def _bundle_failed(self, path: str, msg: str, quiet: bool) -> None:
        self.window.bundle_loading = False
        self.window.bundle_error = msg
        self._forget_bundle(path)  # a bundle that cannot run never stays the default
        self.window.ai.set_busy(None)
        if self.window.bundle is None:
            self.window.ai.set_model(None, error=msg)
        if quiet:
            self.window.status_message(f"Model not loaded: {msg}", 15000)
        else:
            keep = (
                f" Still using {self.window.bundle.id} {self.window.bundle.version}."
                if self.window.bundle is not None
                else ""
            )
            self.window.show_error("Model not loaded", msg + keep)
        self.window.bundle_changed.emit()

    def _bundle_loaded(self, payload, remembered: bool = False) -> None:
        from app.logic.bundles import describe

        path, bundle = payload
        self.window.bundle_loading = False
        if bundle.synthetic and remembered:
            # the demo model remembered by an older version: never the default for a library
            self._forget_bundle(path)
            self.window.bundle_error = (
                f"the remembered model {bundle.id} {bundle.version} is a demo model trained on "
                "synthetic phantoms; it is not loaded for this library (choose it again if you "
                "mean to)"
            )
            self.window.ai.set_busy(None)
            if self.window.bundle is None:
                self.window.ai.set_model(None, error=self.window.bundle_error)
            self.window.status_message(f"Model not loaded: {self.window.bundle_error}", 15000)
            self.window.bundle_changed.emit()
            return
        self.window.bundle, self.window.bundle_path, self.window.bundle_error = bundle, path, None
        if bundle.synthetic:
            self._forget_bundle(path)  # shown with a banner, never remembered
        else:
            self.window.settings.set("model/last_bundle", path)
        self.window.synthetic_banner.setVisible(bundle.synthetic)
        self.window.ai.set_busy(None)
        self.window.ai.set_model(describe(bundle), mask_label=bundle.mask_label, synthetic=bundle.synthetic)
        self.window.browser.set_findings(list(bundle.classes), dict(bundle.thresholds))
        self.window.reader_study.show(self.window.current_uid)
        self.window.status_message(f"Model loaded: {describe(bundle)}")
        self.window.update_actions()
        self.window.bundle_changed.emit()
        if self.window.current_uid is not None and self.window.viewer.image is not None:
            self.window.reports.set_similar(None, "Analysing…")
            self.window.analyze_current()

    def show_model_card(self) -> None:
        if self.window.bundle is None:
            self.window.status_message("No model loaded")
            return
        dlg = ModelCardDialog(
            f"{self.window.bundle.id} {self.window.bundle.version}", self.window.bundle.card_markdown, self.window
        )
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.show()
        self.window.model_card_dialog = dlg
