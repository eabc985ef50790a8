"""The viewer through the real widgets: the library's rendering, presets (keys 1-5), invert,
reset, window/level drag, zoom/pan/fit, pixel readout, distance, next/previous with arrows."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from app.logic.image import display_file
from core_model.imaging.dicom import read_dataset, render_dataset
from tests.gui.conftest import drag, hover, shoot, show_image, uid_of, view_to_widget

pytestmark = pytest.mark.qt


def focus_browser(qtbot, window):
    window.browser.table.setFocus()
    qtbot.waitUntil(lambda: window.browser.table.hasFocus() or True)


@pytest.mark.parametrize("name", ["anna_pa.dcm", "ben_cr.dcm", "ben_sigmoid.dcm", "cara_pa.dcm", "00000042_000.png"])
def test_shows_exactly_the_library_rendering(qtbot, make_window, library, study_files, name):
    window = make_window()
    show_image(qtbot, window, uid_of(library, name))
    expected = display_file(next(p for p in study_files.values() if p.name == name)).pixels
    assert np.array_equal(window.viewer.display, expected)
    # what pyqtgraph was given is that array, with fixed 0..255 levels (no auto-levels)
    assert np.array_equal(window.viewer.image_item.image, expected)
    assert tuple(window.viewer.image_item.getLevels()) == (0, 255)


def test_presets_from_the_file_with_their_explanation_invert_and_reset(qtbot, make_window, library, study_files):
    window = make_window()
    show_image(qtbot, window, uid_of(library, "anna_pa.dcm"))
    ds = read_dataset(study_files["a_pa"])
    focus_browser(qtbot, window)
    assert "preset 1/3: LUNG" in window.viewer.info.text()
    qtbot.keyClick(window.browser.table, Qt.Key.Key_2)
    assert window.viewer.state.preset == 1
    assert "preset 2/3: MEDIASTINUM (C 2200 / W 600, LINEAR)" in window.viewer.info.text()
    assert np.array_equal(window.viewer.display, render_dataset(ds, 1))
    shoot(window.viewer, "viewer_preset2_mediastinum")
    qtbot.keyClick(window.browser.table, Qt.Key.Key_3)  # the full range preset every file has
    assert "Full range" in window.viewer.info.text()
    assert np.array_equal(window.viewer.display, render_dataset(ds, 2))
    qtbot.keyClick(window.browser.table, Qt.Key.Key_5)  # not offered: says which are
    assert window.viewer.state.preset == 2
    assert "offers 3 preset(s)" in window.messages[-1] and "MEDIASTINUM" in window.messages[-1]
    qtbot.keyClick(window.browser.table, Qt.Key.Key_I)
    assert window.viewer.state.invert and "inverted" in window.viewer.info.text()
    assert np.array_equal(window.viewer.display, render_dataset(ds, 2, user_invert=True))
    qtbot.keyClick(window.browser.table, Qt.Key.Key_Space)
    assert window.viewer.state.preset == 0 and not window.viewer.state.invert
    assert np.array_equal(window.viewer.display, render_dataset(ds, 0))


def test_monochrome1_and_png_presets(qtbot, make_window, library, study_files):
    window = make_window()
    show_image(qtbot, window, uid_of(library, "ben_cr.dcm"))
    ds = read_dataset(study_files["b_cr"])
    focus_browser(qtbot, window)
    # MONOCHROME1: inverted by the file itself; 'i' inverts once more, on the modality values
    assert np.array_equal(window.viewer.display, render_dataset(ds))
    qtbot.keyClick(window.browser.table, Qt.Key.Key_I)
    assert np.array_equal(window.viewer.display, render_dataset(ds, user_invert=True))
    show_image(qtbot, window, uid_of(library, "00000042_000.png"))
    qtbot.keyClick(window.browser.table, Qt.Key.Key_1)
    assert "no window presets" in window.messages[-1]
    assert "no window presets" in window.viewer.info.text()


def test_window_level_drag_rewindows_the_modality_values(qtbot, make_window, library, study_files):
    window = make_window()
    show_image(qtbot, window, uid_of(library, "anna_pa.dcm"))
    ds = read_dataset(study_files["a_pa"])
    v = window.viewer
    start = view_to_widget(v, 100, 150)
    drag(qtbot, v.graphics.viewport(), start, start + QPoint(120, -40))
    qtbot.waitUntil(lambda: v.state.manual)
    assert v.state.width > 1800 and v.state.center < 1600  # right = wider, up = lower centre
    qtbot.wait(20)
    expected = render_dataset(ds, center=v.state.center, width=v.state.width)
    assert np.array_equal(v.display, expected)
    assert "(manual)" in v.info.text()
    # shift + left drag pans instead (window unchanged)
    state, rng = (v.state.center, v.state.width), v.view.viewRange()
    drag(qtbot, v.graphics.viewport(), start, start + QPoint(60, 30), modifiers=Qt.KeyboardModifier.ShiftModifier)
    assert (v.state.center, v.state.width) == state
    assert v.view.viewRange()[0][0] < rng[0][0] - 10
    # right drag pans too
    rng = v.view.viewRange()
    drag(qtbot, v.graphics.viewport(), start, start + QPoint(-50, 0), button=Qt.MouseButton.RightButton)
    assert v.view.viewRange()[0][0] > rng[0][0] + 10
    shoot(v, "viewer_window_level_drag")


def test_zoom_fit_and_reset(qtbot, make_window, library):
    window = make_window()
    show_image(qtbot, window, uid_of(library, "cara_pa.dcm"))
    v = window.viewer
    focus_browser(qtbot, window)
    full = v.view.viewRange()
    qtbot.keyClick(window.browser.table, Qt.Key.Key_Plus)
    zoomed = v.view.viewRange()
    assert zoomed[0][1] - zoomed[0][0] < (full[0][1] - full[0][0]) * 0.9
    # wheel zoom over the image (the wheel zooms when "Wheel moves through images" is off; by
    # default it moves through images and Ctrl+wheel zooms: tests/gui/test_habits.py)
    window.act_wheel_images.setChecked(False)
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    pos = QPointF(view_to_widget(v, 120, 140))
    wheel = QWheelEvent(
        pos,
        QPointF(v.graphics.viewport().mapToGlobal(pos.toPoint())),
        QPoint(0, 0),
        QPoint(0, 240),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(v.graphics.viewport(), wheel)
    assert v.view.viewRange()[0][1] - v.view.viewRange()[0][0] < zoomed[0][1] - zoomed[0][0]
    qtbot.keyClick(window.browser.table, Qt.Key.Key_F)
    h, w = v.image.shape
    (x0, x1), (y0, y1) = v.view.viewRange()
    assert x0 <= 0.5 and x1 >= w - 0.5 and y0 <= 0.5 and y1 >= h - 0.5


def test_pixel_readout_is_the_modality_value_with_units(qtbot, make_window, library, study_files):
    window = make_window()
    show_image(qtbot, window, uid_of(library, "ben_cr.dcm"))
    from core_model.imaging.dicom import decode_pixels, modality_values

    ds = read_dataset(study_files["b_cr"])
    values = modality_values(ds, decode_pixels(ds))
    v = window.viewer
    hover(qtbot, v.graphics.viewport(), view_to_widget(v, 40.5, 60.5))
    text = v.readout.text()
    assert text.startswith("x 40, y 60")
    assert f"modality value {values[60, 40]:.0f} OD" in text  # RescaleType OD; slope -1 applied
    # outside the image: no value
    hover(qtbot, v.graphics.viewport(), QPoint(2, 2))
    show_image(qtbot, window, uid_of(library, "anna_pa.dcm"))
    hover(qtbot, v.graphics.viewport(), view_to_widget(v, 10.5, 20.5))
    assert "(no unit in the file)" in v.readout.text()


def test_distance_measurement_says_which_spacing(qtbot, make_window, library):
    window = make_window()
    v = window.viewer
    show_image(qtbot, window, uid_of(library, "anna_pa.dcm"))  # Pixel Spacing 0.5 mm
    focus_browser(qtbot, window)
    qtbot.keyClick(window.browser.table, Qt.Key.Key_M)
    assert v.measure_mode
    with qtbot.waitSignal(v.measured) as blocker:
        drag(qtbot, v.graphics.viewport(), view_to_widget(v, 20, 40), view_to_widget(v, 220, 40), steps=4)
    dist = blocker.args[0]
    assert dist.mm == pytest.approx(100.0, abs=2.0)  # 200 px x 0.5 mm, within the mouse's rounding
    assert dist.text.endswith(" mm") and "detector" not in dist.text
    assert v.distance.text().startswith("Distance:") and v.ruler_text.isVisible()
    assert "Pixel Spacing 0.5 x 0.5 mm (patient plane)" in v.spacing.text()
    shoot(v, "viewer_measure_pixel_spacing")
    show_image(qtbot, window, uid_of(library, "cara_pa.dcm"))  # Imager Pixel Spacing only
    d = v.measure_between(*(view_to_point(x, 10) for x in (0, 100)))
    assert "mm at the detector (not corrected for magnification)" in d.text
    assert "Imager Pixel Spacing" in v.spacing.text()
    show_image(qtbot, window, uid_of(library, "ben_sigmoid.dcm"))  # with a magnification factor
    d = v.measure_between(view_to_point(0, 0), view_to_point(110, 0))
    assert "22.0 mm at the detector" in d.text and "~20.0 mm at the patient" in d.text
    show_image(qtbot, window, uid_of(library, "ben_cr.dcm"))  # no spacing at all
    d = v.measure_between(view_to_point(0, 0), view_to_point(30, 40))
    assert d.text == "50.0 px (no pixel spacing in the file)"
    qtbot.keyClick(window.browser.table, Qt.Key.Key_M)
    assert not v.measure_mode


def view_to_point(x, y):
    from PySide6.QtCore import QPointF

    return QPointF(x, y)


def test_arrow_keys_go_to_the_next_and_previous_image(qtbot, make_window, library):
    window = make_window()
    qtbot.waitUntil(lambda: window.viewer.image is not None)
    first = window.current_uid
    assert first == window.browser.model.rows[0].sop_instance_uid
    window.viewer.graphics.setFocus()
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_Right)
    assert window.current_uid == window.browser.model.rows[1].sop_instance_uid
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_Down)
    assert window.current_uid == window.browser.model.rows[2].sop_instance_uid
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_Left)
    qtbot.keyClick(window.viewer.graphics, Qt.Key.Key_Up)
    assert window.current_uid == first
    qtbot.waitUntil(lambda: window.viewer.image is not None and window.images.fetch(first) is not None)
    # typing in the search box is not taken for viewer keys
    window.browser.search.setFocus()
    qtbot.keyClicks(window.browser.search, "i2")
    assert window.browser.search.text() == "i2" and not window.viewer.state.invert
