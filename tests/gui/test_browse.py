"""Browsing by patient, study and series: the tree of a multi-study patient (frontal + lateral +
a prior), PNG / JPEG exports grouped by folder and named by file, the file / series column and
the full patient on hover, and the selection kept (and visible) while an import refreshes the
list; through the real window on a real library file."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.logic.study_tree import build_tree
from tests.gui.conftest import shoot, uid_of, write_studies

pytestmark = pytest.mark.qt


def test_tree_groups_patient_studies_series_and_png_folders(room_library):
    tree = build_tree(room_library, {})
    nodes = tree.nodes
    assert tree.images == 6 and len(tree.by_uid) == 6
    labels = [n.label for n in nodes]
    assert labels == ["DOE, JANE · MRN-447", "ROE, RICHARD · MRN-900", "Folder exports"]
    doe = nodes[0]
    assert doe.images == 3 and "Born: 1961-02-03" in doe.tooltip and "Sex: F" in doe.tooltip
    # the current study first, the prior below it; the current one has a frontal and a lateral series
    assert [s.label for s in doe.children] == ["2024-03-15 · CHEST", "2023-03-10 · CHEST"]
    current = doe.children[0]
    assert [se.label for se in current.children] == ["Series 1 · CHEST PA", "Series 2 · CHEST LAT"]
    assert [se.children[0].label for se in current.children] == ["PA · doe_current_pa.dcm", "LL · doe_current_lat.dcm"]
    assert "ACC-2" in current.tooltip
    folder = nodes[2]
    assert [i.label for i in folder.children] == ["PNG · export_0001.png", "JPEG · export_0002.jpg"]
    # a filter narrows the tree the same way as the list
    assert [n.label for n in build_tree(room_library, {"text": "ROE"}).nodes] == ["ROE, RICHARD · MRN-900"]


def test_tree_tab_follows_and_drives_the_selection(qtbot, make_window, room_library):
    window = make_window(room_library)
    browser = window.browser
    # the list: file / series column, PNGs named by folder and file, the full patient on hover
    model = browser.model
    by_file = {r.file_name: r for r in model.rows}
    assert model.cell_text(by_file["doe_current_lat.dcm"], 7) == "doe_current_lat.dcm · CHEST LAT"
    assert model.cell_text(by_file["export_0001.png"], 1) == "Folder exports"
    assert model.cell_text(by_file["export_0001.png"], 7) == "export_0001.png"
    row = model.row_of(by_file["doe_prior_pa.dcm"].sop_instance_uid)
    tip = model.data(model.index(row, 1), Qt.ItemDataRole.ToolTipRole)
    assert "DOE, JANE" in tip and "MRN-447" in tip and "1961-02-03" in tip
    with qtbot.waitSignal(browser.tree_rebuilt, timeout=10000):
        browser.tabs.setCurrentWidget(browser.tree)
    tree = browser.tree
    model = tree.model()
    tops = [model.index(i, 0).data() for i in range(model.rowCount())]
    assert tops == tree.patient_labels() and model.index(0, 1).data() == "3"
    # the table's current image is selected in the tree, its patient / study / series expanded
    lat = uid_of(room_library, "doe_current_lat.dcm")
    browser.select_uid(lat)
    index = tree.currentIndex()
    assert tree.current_label() == "LL · doe_current_lat.dcm"
    assert tree.isExpanded(index.parent()) and tree.isExpanded(index.parent().parent().parent())
    # a click on an image in the tree shows it
    prior = uid_of(room_library, "doe_prior_pa.dcm")
    tree.select(prior)  # expanded and scrolled to (the click below is the user's)
    rect = tree.visualRect(tree.index_of(prior))
    with qtbot.waitSignal(window.image_shown, timeout=10000):
        qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.current_uid == prior and browser.current_uid() == prior
    shoot(window, "browser_tree")


def test_selection_is_kept_and_visible_while_an_import_refreshes(qtbot, make_window, room_library, tmp_path):
    window = make_window(room_library)
    browser = window.browser
    with qtbot.waitSignal(browser.tree_rebuilt, timeout=10000):
        browser.tabs.setCurrentWidget(browser.tree)
    lat = uid_of(room_library, "doe_current_lat.dcm")
    browser.tabs.setCurrentWidget(browser.table)
    browser.select_uid(lat)
    more = write_studies(tmp_path / "more")  # seven more images arrive during the import
    with qtbot.waitSignal(window.import_finished, timeout=60000):
        window.import_paths([str(more["a_pa"].parent)])
    assert browser.model.total == 13
    assert window.current_uid == lat and browser.current_uid() == lat
    assert lat in browser.selected_uids()
    row = browser.model.row_of(lat)
    rect = browser.table.visualRect(browser.model.index(row, 1))
    assert browser.table.viewport().rect().intersects(rect)  # still visible
    browser.tabs.setCurrentWidget(browser.tree)
    qtbot.waitUntil(lambda: "NOVAK, ANNA · PAT-A" in browser.tree.patient_labels(), timeout=10000)
    assert browser.tree.current_label() == "LL · doe_current_lat.dcm"
