"""Fixtures for the review app tests: Qt offscreen, settings in a temporary folder, a real
SQLite library with DICOM / PNG studies written here, the main window, and a real model bundle
(exported by ``adaptor-train export`` from the tiny phantom pipeline of tests/conftest.py, run by
the real torch-free runtime): no stand-in model anywhere in these tests."""

from __future__ import annotations

import os
import threading

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt
os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")

from pathlib import Path

import numpy as np
import pytest

SHOTS = Path(__file__).resolve().parents[2] / "runs" / "gui_screenshots"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """QSettings (INI, user scope) under tmp_path: tests never touch the user's settings."""
    from PySide6.QtCore import QSettings

    folder = tmp_path / "qsettings"
    folder.mkdir()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    monkeypatch.setenv("CXR_ADAPTOR_DB", str(tmp_path / "default-library.db"))
    yield folder


def chest(rows: int, cols: int, seed: int, bright: float = 0.0) -> np.ndarray:
    """A 12-bit image with some structure (two 'lungs', a spine, noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols] / np.array([rows, cols])[:, None, None]
    lungs = np.exp(-(((xx - 0.3) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + np.exp(
        -(((xx - 0.7) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2)
    )
    img = (
        2600
        - 1500 * lungs
        + 900 * np.exp(-(((xx - 0.5) / 0.05) ** 2))
        + 600 * bright * np.exp(-(((xx - 0.3) / 0.08) ** 2 + ((yy - 0.65) / 0.08) ** 2))
    )
    img += rng.normal(0, 40, img.shape)
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_studies(folder: Path) -> dict[str, Path]:
    """Six DICOMs (two patients; MONOCHROME1 with negative slope; Pixel Spacing vs Imager Pixel
    Spacing; windows with explanations; a VOI LUT function) and a PNG, with reports."""
    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["a_pa"] = write_dicom(
        folder / "anna_pa.dcm",
        chest(320, 256, 1),
        DicomSpec(
            patient_name="NOVAK^ANNA",
            patient_id="PAT-A",
            study_date="20240301",
            study_uid="1.2.826.0.1.3680043.8.498.1",
            view_position="PA",
            windows=[(1600, 1800), (2200, 600)],
            window_explanations=["LUNG", "MEDIASTINUM"],
            pixel_spacing=(0.5, 0.5),
            imager_pixel_spacing=(0.55, 0.55),
        ),
    )
    files["a_lat"] = write_dicom(
        folder / "anna_lat.dcm",
        chest(320, 256, 2),
        DicomSpec(
            patient_name="NOVAK^ANNA",
            patient_id="PAT-A",
            study_date="20240301",
            study_uid="1.2.826.0.1.3680043.8.498.1",
            view_position="LL",
            windows=[(1800, 2000)],
            window_explanations=["DEFAULT"],
            series_number=2,
        ),
    )
    files["b_cr"] = write_dicom(
        folder / "ben_cr.dcm",
        chest(300, 280, 3, bright=1.0),
        DicomSpec(
            patient_name="OKAFOR^BEN",
            patient_id="PAT-B",
            study_date="20240415",
            modality="CR",
            view_position="AP",
            photometric="MONOCHROME1",
            rescale_slope=-1.0,
            rescale_intercept=4095.0,
            imager_pixel_spacing=None,
            pixel_spacing=None,
            extra={"RescaleType": "OD"},
        ),
    )
    files["b_sig"] = write_dicom(
        folder / "ben_sigmoid.dcm",
        chest(256, 256, 4, bright=0.5),
        DicomSpec(
            patient_name="OKAFOR^BEN",
            patient_id="PAT-B",
            study_date="20230102",
            view_position="PA",
            windows=[(1700, 1500)],
            voi_lut_function="SIGMOID",
            extra={"EstimatedRadiographicMagnificationFactor": 1.1},
        ),
    )
    files["c_pa"] = write_dicom(
        folder / "cara_pa.dcm",
        chest(288, 240, 5, bright=0.8),
        DicomSpec(patient_name="SILVA^CARA", patient_id="PAT-C", study_date="20220910", view_position="PA"),
    )
    files["c_ap"] = write_dicom(
        folder / "cara_ap.dcm",
        chest(288, 240, 6),
        DicomSpec(
            patient_name="SILVA^CARA",
            patient_id="PAT-C",
            study_date="20220911",
            view_position="AP",
            windows=[(2000, 2500)],
        ),
    )
    from PIL import Image

    png = (chest(200, 200, 7).astype(np.float32) / 16).astype(np.uint8)
    files["png"] = folder / "00000042_000.png"
    Image.fromarray(png).save(files["png"])
    (folder / "anna_pa.txt").write_text(
        "FINDINGS: Focal consolidation in the left lower lobe. No pneumothorax.\nIMPRESSION: Left lower lobe pneumonia."
    )
    (folder / "ben_cr.txt").write_text("The lungs are clear. No pleural effusion.")
    return files


@pytest.fixture
def study_files(tmp_path) -> dict[str, Path]:
    return write_studies(tmp_path / "studies")


@pytest.fixture
def library(tmp_path, study_files):
    from app.library import open_library
    from app.library.importer import Importer

    lib = open_library(tmp_path / "lib" / "library.db")
    summary = Importer(lib, mode="copy", fsync=False).run([study_files["a_pa"].parent])
    assert summary.imported == 7, summary.rejected
    yield lib
    lib.close()


@pytest.fixture
def empty_library(tmp_path):
    from app.library import open_library

    lib = open_library(tmp_path / "empty" / "library.db")
    yield lib
    lib.close()


def uid_of(library, name: str) -> str:
    """The SOP Instance UID of the imported file ``name``."""
    from sqlalchemy import select

    from app.library.models import Instance

    with library.session() as s:
        for uid, original in s.execute(select(Instance.sop_instance_uid, Instance.original_path)):
            if original.endswith(name):
                return uid
    raise KeyError(name)


def close_window(qtbot, window) -> None:
    from shiboken6 import isValid

    if not isValid(window):
        return
    window.close()
    window.runner.wait(15000)
    window.deleteLater()
    qtbot.wait(10)


@pytest.fixture
def make_window(qtbot, library):
    """``make_window(lib=None, bundle=None, **kwargs)`` -> a shown MainWindow (closed after the
    test). ``bundle``: a bundle path, loaded the way the user loads one (``load_bundle``: the
    worker, app.logic.bundles.open_bundle, the AI panel); or an already loaded bundle object,
    handed to the slot that loader calls (for :class:`GatedBundle`)."""
    from app.gui.main_window import MainWindow

    made = []

    def make(lib=None, bundle=None, **kwargs):
        window = MainWindow(lib or library, **kwargs)
        window.show()
        qtbot.waitExposed(window)
        window.activateWindow()
        made.append(window)
        if isinstance(bundle, (str, os.PathLike)):
            with qtbot.waitSignal(window.bundle_changed, timeout=60000):
                window.load_bundle(str(bundle))
            assert window.bundle is not None, window.bundle_error
        elif bundle is not None:
            window._bundle_loaded((str(bundle.folder), bundle))
        return window

    yield make
    for window in made:
        close_window(qtbot, window)


def shoot(widget, name: str) -> Path:
    """Save a screenshot of a widget for people to look at (runs/gui_screenshots/)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    assert widget.grab().save(str(path), "PNG")
    return path


# -- mouse helpers (QTest.mouseMove cannot carry pressed buttons, so events are sent by hand) -----


def view_to_widget(viewer, x: float, y: float):
    """Image coordinates -> a point in the viewer's graphics viewport."""
    from PySide6.QtCore import QPointF

    scene = viewer.view.mapViewToScene(QPointF(x, y))
    return viewer.graphics.mapFromScene(scene)


def send_mouse(widget, kind, pos, button, buttons, modifiers=None):
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    modifiers = modifiers if modifiers is not None else Qt.KeyboardModifier.NoModifier
    types = {
        "press": QEvent.Type.MouseButtonPress,
        "move": QEvent.Type.MouseMove,
        "release": QEvent.Type.MouseButtonRelease,
    }
    local = QPointF(pos)
    event = QMouseEvent(types[kind], local, QPointF(widget.mapToGlobal(pos)), button, buttons, modifiers)
    QApplication.sendEvent(widget, event)


def drag(qtbot, widget, start, end, button=None, modifiers=None, steps: int = 6) -> None:
    from PySide6.QtCore import QPoint, Qt

    button = button or Qt.MouseButton.LeftButton
    none = Qt.MouseButton.NoButton
    send_mouse(widget, "press", start, button, button, modifiers)
    for i in range(1, steps + 1):
        p = QPoint(
            round(start.x() + (end.x() - start.x()) * i / steps), round(start.y() + (end.y() - start.y()) * i / steps)
        )
        send_mouse(widget, "move", p, none, button, modifiers)
        qtbot.wait(5)
    send_mouse(widget, "release", end, button, none, modifiers)
    qtbot.wait(20)


def hover(qtbot, widget, pos) -> None:
    from PySide6.QtCore import Qt

    send_mouse(widget, "move", pos, Qt.MouseButton.NoButton, Qt.MouseButton.NoButton)
    qtbot.wait(10)


def show_image(qtbot, window, uid: str, timeout: int = 10000) -> None:
    assert window.browser.select_uid(uid)
    qtbot.waitUntil(
        lambda: window.viewer.image is not None and window.current_uid == uid and window.images.fetch(uid) is not None,
        timeout=timeout,
    )


# -- a real exported bundle (core_model.runtime + adaptor-train export) ------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "real_bundle: uses a model bundle exported by adaptor-train export")


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory) -> Path:
    from tests.gui.phantom_studies import phantom_studies

    return phantom_studies(tmp_path_factory.mktemp("phantom-studies"), n=8, seed=5, size=320)


@pytest.fixture(scope="session")
def exported_bundle(request) -> Path:
    """The real bundle's folder: ``$CXR_ADAPTOR_TEST_BUNDLE`` when set (a bundle built earlier,
    for faster local runs), else the session fixture ``tiny_bundle`` of tests/conftest.py
    (phantoms -> precompute -> pretrain -> finetune -> ``adaptor-train export``)."""
    env = os.environ.get("CXR_ADAPTOR_TEST_BUNDLE")
    if env:
        assert Path(env).exists(), f"$CXR_ADAPTOR_TEST_BUNDLE={env} does not exist"
        return Path(env)
    # the tiny bundle is exported without a grounding evaluation, so it vouches for no heatmap
    # (tests/logic/test_grounding_gate.py checks what the app does then); these suites test how
    # heatmaps are computed and shown, so their copy's card vouches for every finding's
    tiny = Path(request.getfixturevalue("tiny_bundle"))
    return copy_bundle(
        tiny, request.getfixturevalue("tmp_path_factory").mktemp("vouched") / "bundle", card=vouch_all(tiny)
    )


def vouch_all(bundle: Path) -> dict:
    """A model card ``grounding`` section that vouches for every class's heatmap (test fixture:
    no figures, the reason says so)."""
    import json

    classes = json.loads((bundle / "config.json").read_text())["classes"]
    return {
        "grounding": {
            "evaluated": True,
            "split": "val",
            "rule": "test fixture: every finding's heatmap is vouched for",
            "per_finding": {c: {"validated": True, "pointing_game": None, "positional_prior": None} for c in classes},
        }
    }


@pytest.fixture(scope="session")
def loaded_bundle(exported_bundle):
    """The real bundle, loaded once per session as the app loads it
    (app.logic.bundles.open_bundle, the app's onnxruntime thread count). The runtime is safe to
    call from several threads, so the Qt-free tests share it, and every test uses it to compute
    what the app should show."""
    from app.logic.bundles import gui_threads, open_bundle

    return open_bundle(exported_bundle, threads=gui_threads())


def copy_bundle(
    src: Path, dest: Path, *, version: str | None = None, config: dict | None = None, card: dict | None = None
) -> Path:
    """A copy of a real bundle folder, optionally as another ``version`` (the manifest's, which is
    not hashed: what a re-export would change) or with ``config.json`` / ``model_card.json`` keys
    replaced (their SHA-256 in the manifest updated, so the bundle still passes its checks)."""
    import hashlib
    import json
    import shutil

    shutil.copytree(src, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    if version is not None:
        manifest["version"] = version
    if config:
        cfg = json.loads((dest / "config.json").read_text())
        for key, value in config.items():
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
        (dest / "config.json").write_text(json.dumps(cfg, indent=2))
        manifest["files"]["config.json"] = hashlib.sha256((dest / "config.json").read_bytes()).hexdigest()
    if card:
        doc = json.loads((dest / "model_card.json").read_text())
        doc.update(card)
        (dest / "model_card.json").write_text(json.dumps(doc, indent=2))
        manifest["files"]["model_card.json"] = hashlib.sha256((dest / "model_card.json").read_bytes()).hexdigest()
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


@pytest.fixture(scope="session")
def other_version_bundle(exported_bundle, loaded_bundle, tmp_path_factory):
    """The same real bundle as another version (same graphs and results, another cache key)."""
    from app.logic.bundles import gui_threads, open_bundle

    folder = copy_bundle(
        exported_bundle, tmp_path_factory.mktemp("bundle-v2") / "bundle", version=f"{loaded_bundle.version}-v2"
    )
    return open_bundle(folder, threads=gui_threads())


def make_gated(bundle):
    """:class:`GatedBundle` over the same files as ``bundle`` (a loaded real bundle)."""
    from app.logic.bundles import gui_threads

    return _gated_class()(bundle.folder, bundle.manifest, threads=gui_threads())


def _gated_class():
    from core_model.runtime import Bundle

    class GatedBundle(Bundle):
        """The real runtime bundle (same files, real onnxruntime inference) with one addition
        around the real call: ``analyze`` records the calling thread and the image, sets
        ``entered`` and waits for ``release`` before running the model. Tests use it to act while
        an analysis is in flight (cancel, a second request) without a stand-in model or a timed
        sleep."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.entered = threading.Event()
            self.release = threading.Event()
            self.threads: set[str] = set()
            self.images: list[str] = []

        def analyze(self, image, *, view=None, modality=None):
            self.threads.add(threading.current_thread().name)
            self.images.append(str(image))
            self.entered.set()
            if not self.release.wait(60):
                raise TimeoutError("the test never released the gated analysis")
            return super().analyze(image, view=view, modality=modality)

    return GatedBundle


def analysis_rows(library, uid: str | None = None) -> list[tuple]:
    """The analyses stored in the library (of one instance): (id, bundle id, version, created)."""
    from sqlalchemy import select

    from app.library.models import Analysis, Instance

    query = select(Analysis.id, Analysis.bundle_id, Analysis.bundle_version, Analysis.created_at).order_by(Analysis.id)
    if uid is not None:
        query = query.join(Instance, Instance.id == Analysis.instance_pk).where(Instance.sop_instance_uid == uid)
    with library.session() as s:
        return [tuple(r) for r in s.execute(query)]


def direct_analysis(bundle, library, uid: str):
    """What the runtime itself says about the file of library instance ``uid``."""
    from app.logic.analysis import instance_file

    return bundle.analyze(str(instance_file(library, uid)))


@pytest.fixture(scope="session")
def room(tmp_path_factory) -> Path:
    """Phantom studies of a reading room: a patient with a current frontal + lateral and a
    prior frontal, another patient, a folder of PNG / JPEG exports (tests/gui/phantom_studies.py)."""
    from tests.gui.phantom_studies import reading_room_studies

    return reading_room_studies(tmp_path_factory.mktemp("room"))


@pytest.fixture
def room_library(tmp_path, room):
    from app.library import open_library
    from app.library.importer import Importer

    lib = open_library(tmp_path / "room-lib" / "library.db")
    summary = Importer(lib, mode="link", fsync=False).run([room])
    assert summary.imported == 6, summary.rejected
    yield lib
    lib.close()
