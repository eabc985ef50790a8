"""Fixtures for the review app tests: Qt offscreen, settings in a temporary folder, a real
SQLite library with DICOM / PNG studies written here, and the main window."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt
os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.gui.fakes import FakeBundle  # noqa: E402

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
        -(((xx - 0.7) / 0.14) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    img = 2600 - 1500 * lungs + 900 * np.exp(-((xx - 0.5) / 0.05) ** 2) + 600 * bright * np.exp(
        -(((xx - 0.3) / 0.08) ** 2 + ((yy - 0.65) / 0.08) ** 2))
    img += rng.normal(0, 40, img.shape)
    return np.clip(img, 0, 4095).astype(np.uint16)


def write_studies(folder: Path) -> dict[str, Path]:
    """Six DICOMs (two patients; MONOCHROME1 with negative slope; Pixel Spacing vs Imager Pixel
    Spacing; windows with explanations; a VOI LUT function) and a PNG, with reports."""
    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    files["a_pa"] = write_dicom(folder / "anna_pa.dcm", chest(320, 256, 1), DicomSpec(
        patient_name="NOVAK^ANNA", patient_id="PAT-A", study_date="20240301", study_uid="1.2.826.0.1.3680043.8.498.1",
        view_position="PA", windows=[(1600, 1800), (2200, 600)], window_explanations=["LUNG", "MEDIASTINUM"],
        pixel_spacing=(0.5, 0.5), imager_pixel_spacing=(0.55, 0.55)))
    files["a_lat"] = write_dicom(folder / "anna_lat.dcm", chest(320, 256, 2), DicomSpec(
        patient_name="NOVAK^ANNA", patient_id="PAT-A", study_date="20240301", study_uid="1.2.826.0.1.3680043.8.498.1",
        view_position="LL", windows=[(1800, 2000)], window_explanations=["DEFAULT"], series_number=2))
    files["b_cr"] = write_dicom(folder / "ben_cr.dcm", chest(300, 280, 3, bright=1.0),
                                DicomSpec(patient_name="OKAFOR^BEN", patient_id="PAT-B", study_date="20240415",
                                          modality="CR", view_position="AP", photometric="MONOCHROME1",
                                          rescale_slope=-1.0, rescale_intercept=4095.0, imager_pixel_spacing=None,
                                          pixel_spacing=None, extra={"RescaleType": "OD"}))
    files["b_sig"] = write_dicom(folder / "ben_sigmoid.dcm", chest(256, 256, 4, bright=0.5), DicomSpec(
        patient_name="OKAFOR^BEN", patient_id="PAT-B", study_date="20230102", view_position="PA",
        windows=[(1700, 1500)], voi_lut_function="SIGMOID",
        extra={"EstimatedRadiographicMagnificationFactor": 1.1}))
    files["c_pa"] = write_dicom(folder / "cara_pa.dcm", chest(288, 240, 5, bright=0.8), DicomSpec(
        patient_name="SILVA^CARA", patient_id="PAT-C", study_date="20220910", view_position="PA"))
    files["c_ap"] = write_dicom(folder / "cara_ap.dcm", chest(288, 240, 6), DicomSpec(
        patient_name="SILVA^CARA", patient_id="PAT-C", study_date="20220911", view_position="AP",
        windows=[(2000, 2500)]))
    from PIL import Image

    png = (chest(200, 200, 7).astype(np.float32) / 16).astype(np.uint8)
    files["png"] = folder / "00000042_000.png"
    Image.fromarray(png).save(files["png"])
    (folder / "anna_pa.txt").write_text(
        "FINDINGS: Focal consolidation in the left lower lobe. No pneumothorax.\nIMPRESSION: Left lower lobe pneumonia.")
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


@pytest.fixture
def fake_bundle():
    return FakeBundle()


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
    """``make_window(library=None, bundle=None)`` -> a shown MainWindow (closed after the test)."""
    from app.gui.main_window import MainWindow

    made = []

    def make(lib=None, bundle=None, **kwargs):
        window = MainWindow(lib or library, **kwargs)
        window.show()
        qtbot.waitExposed(window)
        window.activateWindow()
        made.append(window)
        if bundle is not None:
            window._bundle_loaded(("fake", bundle))
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
    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    local = QPointF(pos)
    event = QMouseEvent(types[kind], local, QPointF(widget.mapToGlobal(pos)), button, buttons, modifiers)
    QApplication.sendEvent(widget, event)


def drag(qtbot, widget, start, end, button=None, modifiers=None, steps: int = 6) -> None:
    from PySide6.QtCore import QPoint, Qt

    button = button or Qt.MouseButton.LeftButton
    none = Qt.MouseButton.NoButton
    send_mouse(widget, "press", start, button, button, modifiers)
    for i in range(1, steps + 1):
        p = QPoint(round(start.x() + (end.x() - start.x()) * i / steps),
                   round(start.y() + (end.y() - start.y()) * i / steps))
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
    qtbot.waitUntil(lambda: window.viewer.image is not None and window.current_uid == uid
                    and window.images.fetch(uid) is not None, timeout=timeout)


# -- a real exported bundle (core_model.runtime + adaptor-train export) ------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", "real_bundle: uses a model bundle exported by adaptor-train export")


@pytest.fixture(scope="session")
def phantom_folder(tmp_path_factory) -> Path:
    from tests.gui.phantom_studies import phantom_studies

    return phantom_studies(tmp_path_factory.mktemp("phantom-studies"), n=8, seed=5, size=320)


@pytest.fixture(scope="session")
def exported_bundle(request, tmp_path_factory) -> Path:
    """A small real bundle: ``$CXR_ADAPTOR_TEST_BUNDLE`` when set, else the session fixture
    ``tiny_bundle`` of tests/conftest.py (phantoms -> ... -> ``adaptor-train export``)."""
    try:
        from core_model.runtime import load_bundle  # noqa: F401
    except ImportError:
        pytest.skip("core_model.runtime.load_bundle is not there yet")
    env = os.environ.get("CXR_ADAPTOR_TEST_BUNDLE")  # a bundle built earlier (faster local runs)
    if env and Path(env).exists():
        return Path(env)
    try:
        return Path(request.getfixturevalue("tiny_bundle"))  # tests/conftest.py: built by adaptor-train export
    except pytest.FixtureLookupError:
        pass
    pytest.skip("no exported bundle fixture (tiny_bundle) and no $CXR_ADAPTOR_TEST_BUNDLE")
