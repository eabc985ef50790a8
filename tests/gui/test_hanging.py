"""Hanging and comparison through the real window on phantom studies with a lateral and a prior:
the chest hanging (frontal + lateral), compare with prior (linked by default), linked window /
level and zoom / pan, the 2 x 2 layout, the active pane driving the AI panel (real demo bundle)
with the overlays in their own pane, corner annotations, orientation letters and the scale bar."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from app.logic.hanging import hang, orientation_letters, scale_bar
from tests.gui.conftest import shoot, show_image, uid_of

pytestmark = pytest.mark.qt


@pytest.fixture(scope="module")
def demo_bundle():
    from app.logic.demo import demo_assets

    return demo_assets().bundle


def test_hang_chooses_companion_and_prior(room_library):
    pa = uid_of(room_library, "doe_current_pa.dcm")
    lat = uid_of(room_library, "doe_current_lat.dcm")
    prior = uid_of(room_library, "doe_prior_pa.dcm")
    assert [s.uid for s in hang(room_library, pa, "1x2")] == [pa, lat]
    assert [s.uid for s in hang(room_library, lat, "1x2")] == [lat, pa]  # a lateral gets its frontal
    assert [s.uid for s in hang(room_library, pa, "1x2", compare_prior=True)] == [pa, prior]
    grid = hang(room_library, pa, "2x2")
    assert [s.uid for s in grid[:3]] == [pa, lat, prior]
    assert grid[3].uid is None and grid[3].missing == "no lateral view in the prior study"
    # the prior study has no prior; the other patient has no lateral
    assert hang(room_library, prior, "1x2", compare_prior=True)[1].missing == "no earlier study of this patient"
    roe = uid_of(room_library, "roe_ap.dcm")
    assert hang(room_library, roe, "1x2")[1].missing == "no lateral view in this study"


def test_orientation_letters_and_scale_bar():
    assert orientation_letters(["L", "F"], "PA")[0] == {"right": "L", "left": "R", "bottom": "F", "top": "H"}
    letters, source = orientation_letters(None, "LL")
    assert letters["right"] == "P" and "ViewPosition LL" in source
    assert orientation_letters("", "") is None
    mm, px, text = scale_bar(0.2, 1.0, "ImagerPixelSpacing")
    assert mm == 20 and px == pytest.approx(100) and text == "2 cm (detector plane)"
    assert scale_bar(0.5, 2.0, "PixelSpacing")[2].endswith("(patient plane)")


def test_chest_hanging_prior_links_and_active_pane(qtbot, make_window, room_library, demo_bundle):
    window = make_window(room_library, bundle=demo_bundle)
    pa = uid_of(room_library, "doe_current_pa.dcm")
    lat = uid_of(room_library, "doe_current_lat.dcm")
    prior = uid_of(room_library, "doe_prior_pa.dcm")
    show_image(qtbot, window, pa)
    panes = window.hanging.panes
    # Ctrl+2: the frontal and the lateral of the study side by side
    window.browser.table.setFocus()
    with qtbot.waitSignal(window.pane_shown, timeout=10000):
        qtbot.keyClick(window.browser.table, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.hanging.layout_name == "1x2" and panes[1].isVisible()
    assert "doe_current_lat.dcm" in panes[1].title and panes[1].title.startswith("Lateral")
    # corner annotations, orientation letters from PatientOrientation, a scale bar at the detector
    c = panes[0].corners
    assert "DOE JANE" in c["top_left"].text() and "MRN-447" in c["top_left"].text()
    assert "2024-03-15" in c["top_right"].text() and "PA DX" in c["top_right"].text()
    assert "zoom" in c["bottom_left"].text() and c["bottom_right"].text() == "image 1 of 2"
    assert panes[0].letters["right"].text() == "L" and panes[0].letters["top"].text() == "H"
    assert panes[0].orientation_source == "PatientOrientation"
    assert panes[1].letters["right"].text() == "P"  # from ViewPosition LL
    assert "detector plane" in panes[0].scale_text and panes[0].scale.isVisible()
    qtbot.waitUntil(lambda: window.current_result is not None and window.is_idle(), timeout=30000)
    shoot(window, "hanging_frontal_lateral")

    # P: compare with prior, window/level and zoom/pan linked by default
    with qtbot.waitSignal(window.pane_shown, timeout=10000):
        qtbot.keyClick(window.browser.table, Qt.Key.Key_P)
    assert window.hung[1].uid == prior and "Prior" in panes[1].title
    assert window.act_link_window.isChecked() and window.act_link_view.isChecked()
    panes[0].set_window(130, 180)  # 8-bit phantoms
    assert panes[1].state.center == 130 and panes[1].state.width == 180
    panes[0].zoom(2.0)
    f0, f1 = panes[0].view_fraction(), panes[1].view_fraction()
    assert f1 == pytest.approx(f0, abs=2e-3) and f0[2] < 0.75  # same centre and zoom, as fractions
    # a manual pan of pane 1 moves pane 0 as well
    start = panes[0].view_fraction()
    panes[1].view.translateBy(x=20, y=0)
    assert panes[0].view_fraction()[0] > start[0]
    shoot(window, "hanging_compare_prior")
    window.act_link_window.setChecked(False)
    panes[0].set_window(110, 150)
    assert panes[1].state.center == 130  # unlinked: left alone

    # pressing pane 1 makes it active: the AI panel shows the prior's analysis, the browser follows
    with qtbot.waitSignal(window.analysis_shown, timeout=30000):
        qtbot.mouseClick(panes[1].graphics.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(30, 30))
    assert window.hanging.active == 1 and window.viewer is panes[1]
    assert window.current_uid == prior and window.current_result.uid == prior
    assert window.browser.current_uid() == prior and window.hung[0].uid == pa  # not re-hung
    # and back to pane 0 through the browser: the hanging stays
    with qtbot.waitSignal(window.analysis_shown, timeout=30000):
        window.browser.select_uid(pa)
    assert window.hanging.active == 0 and window.current_result.uid == pa and window.hung[1].uid == prior

    # Ctrl+4: current frontal + lateral above the prior's (which has no lateral: the pane says so)
    window.act_prior.setChecked(False)
    window.browser.table.setFocus()
    qtbot.keyClick(window.browser.table, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: all(p.image is not None for p in panes[:3]), timeout=10000)
    assert [s.uid for s in window.hung] == [pa, lat, prior, None]
    assert "no lateral view in the prior study" in panes[3].info.text().lower()
    assert panes[2].corners["bottom_right"].text() == "image 3 of 4"
    shoot(window, "hanging_2x2")
    # a study of one image in 1x1 again: one pane
    qtbot.keyClick(window.browser.table, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert window.hanging.layout_name == "1x1" and not panes[1].isVisible()
