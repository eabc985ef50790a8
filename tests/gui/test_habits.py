"""Habits and screens through the real window: the tag browser (search, sequences, nothing
logged), the wheel through images and Ctrl+wheel zoom, Help -> Keyboard shortcuts listing every
key, the 1366 x 768 fit, layout / theme remembered, the dark theme, drag-and-drop of a zip, and
removing (managed copies deleted, linked files left, after a confirmation) and relocating moved
linked files, on real library files."""

from __future__ import annotations

import logging
import shutil
import zipfile

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QRect, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QMessageBox
from sqlalchemy import select

from app.library import open_library
from app.library.importer import Importer
from app.library.models import Instance
from app.library.queries import get_instance
from tests.gui.conftest import close_window, shoot, show_image, uid_of, write_studies

pytestmark = pytest.mark.qt


def wheel(viewer, dy: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    vp = viewer.graphics.viewport()
    pos = QPointF(vp.rect().center())
    event = QWheelEvent(
        pos,
        QPointF(vp.mapToGlobal(pos.toPoint())),
        QPoint(0, 0),
        QPoint(0, dy),
        Qt.MouseButton.NoButton,
        modifiers,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(vp, event)


def test_tag_browser_search_and_sequences_without_logging(qtbot, make_window, library, tmp_path, caplog):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from core_model.imaging.dicom_write import DicomSpec, write_dicom
    from tests.gui.conftest import chest

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "RPID2451", "RADLEX", "XR CHEST PA AND LATERAL"
    path = write_dicom(
        tmp_path / "seq" / "with_sequence.dcm",
        chest(128, 128, 9),
        DicomSpec(patient_name="TAGGED^TOM", patient_id="TAG-77", extra={"ProcedureCodeSequence": Sequence([code])}),
    )
    Importer(library, mode="link", fsync=False).run([path])
    window = make_window()
    uid = uid_of(library, "with_sequence.dcm")
    caplog.set_level(logging.DEBUG)
    show_image(qtbot, window, uid)
    window.act_tags.trigger()
    tags = window.tags
    assert window.dock_tags.isVisible() and tags.tree.topLevelItemCount() > 20
    assert "with_sequence.dcm" in tags.note.text() and "pixel data not shown" in tags.note.text()
    assert tags.item_named("PatientName").text(3) == "TAGGED^TOM"  # the user's own data, shown
    assert tags.item_named("PixelData") is None
    # a search keeps the matches and opens the sequences they are in
    qtbot.keyClicks(tags.search, "codemeaning")
    assert tags.apply_search() == 1
    assert tags.visible_names() == ["ProcedureCodeSequence", "Item 1", "CodeMeaning"]
    seq = tags.item_named("ProcedureCodeSequence")
    assert seq.isExpanded() and seq.text(3) == "1 item(s)"
    assert tags.item_named("CodeMeaning").text(3) == "XR CHEST PA AND LATERAL"
    tags.search.setText("0018,5101")  # by tag number, as written in the standard
    assert tags.apply_search() == 1 and "ViewPosition" in tags.visible_names()
    shoot(window, "tag_browser")
    tags.search.clear()
    assert tags.apply_search() == 0 and len(tags.visible_names()) > 20
    assert "TAGGED" not in caplog.text and "TAG-77" not in caplog.text  # never logged


def test_wheel_moves_through_images_and_ctrl_wheel_zooms(qtbot, make_window, library):
    window = make_window()
    rows = window.browser.model.rows
    show_image(qtbot, window, rows[0].sop_instance_uid)
    v = window.viewer
    with qtbot.waitSignal(window.image_shown, timeout=10000):
        wheel(v, -120)  # towards the user: the next image
    assert window.current_uid == rows[1].sop_instance_uid
    with qtbot.waitSignal(window.image_shown, timeout=10000):
        wheel(v, 120)
    assert window.current_uid == rows[0].sop_instance_uid
    width = v.view.viewRange()[0][1] - v.view.viewRange()[0][0]
    wheel(v, 240, Qt.KeyboardModifier.ControlModifier)
    assert window.current_uid == rows[0].sop_instance_uid
    assert v.view.viewRange()[0][1] - v.view.viewRange()[0][0] < width * 0.95


def test_keyboard_shortcuts_lists_every_key(qtbot, make_window):
    window = make_window()
    window.act_shortcuts.trigger()
    dlg = window.shortcuts_dialog
    text = dlg.text.toPlainText()
    keyed = [a for a in window.findChildren(type(window.act_next)) if any(not k.isEmpty() for k in a.shortcuts())]
    assert len(keyed) >= 30
    menus = {t for _m, t, _k in window.shortcut_rows()}
    for action in keyed:
        assert action.text() in menus, f"{action.text()} has a key but is in no menu"
    for row in window.shortcut_rows():
        assert row[1] in text and row[2] in text
    for expected in ("Next unreviewed", "Approve and next", "Layout 2 x 2", "Compare with prior", "DICOM tags"):
        assert expected in text
    dlg.close()


def test_window_fits_1366_by_768_and_remembers_layout_and_theme(qtbot, make_window, library):
    window = make_window()
    window.resize(1900, 1200)
    window.fit_to_screen(QRect(0, 0, 1366, 768))
    qtbot.wait(50)
    frame = window.frameGeometry()
    assert frame.width() <= 1366 and frame.height() <= 768
    assert window.width() >= window.minimumSizeHint().width() and window.height() >= window.minimumSizeHint().height()
    inside = window.rect()
    for dock, widgets in (
        (window.dock_reader, (window.reader.save, window.reader.start, window.reader.blinded)),
        (window.dock_review, (window.review.approve, window.review.flag)),
        (window.dock_tags, (window.tags.search,)),
    ):
        dock.raise_()
        qtbot.wait(20)
        for w in (*widgets, window.browser.search, window.ai.choose_button):
            assert w.isVisible(), w.accessibleName()
            rect = QRect(w.mapTo(window, QPoint(0, 0)), w.size())
            assert inside.contains(rect), f"{w.accessibleName()} is cut off at 1366 x 768"
    for w in (window.browser.search, window.hanging, window.notice, window.toolbar):
        assert w.isVisible() and not w.visibleRegion().isEmpty(), w.accessibleName()
    shoot(window, "fit_1366x768")
    # the layout and the theme are remembered
    window.act_layouts["1x2"].setChecked(True)
    window.act_dark.setChecked(True)
    try:
        from app.gui.theme import is_dark

        assert is_dark(QApplication.instance())
        shoot(window, "dark_theme")
        close_window(qtbot, window)
        again = make_window()
        assert again.hanging.layout_name == "1x2" and again.act_layouts["1x2"].isChecked()
        assert again.act_dark.isChecked() and is_dark(QApplication.instance())
        again.act_dark.setChecked(False)
        again.act_layouts["1x1"].setChecked(True)
        assert not is_dark(QApplication.instance())
    finally:
        from app.gui.theme import apply_theme

        apply_theme(QApplication.instance(), dark=False)  # other tests see the usual palette


def test_drop_a_zip_imports_it(qtbot, make_window, empty_library, tmp_path):
    window = make_window(lib=empty_library)
    files = write_studies(tmp_path / "zipped")
    archive = tmp_path / "studies.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for key in ("a_pa", "a_lat"):
            z.write(files[key], files[key].name)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(archive))])
    enter = QDragEnterEvent(
        window.rect().center(),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(
        QPointF(window.rect().center()),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(window.import_finished, timeout=30000) as blocker:
        QApplication.sendEvent(window, drop)
    assert blocker.args[0].imported == 2 and window.browser.model.total == 2


def test_remove_deletes_managed_copies_keeps_linked_files_after_confirmation(qtbot, make_window, library, tmp_path):
    linked = write_studies(tmp_path / "linked")
    Importer(library, mode="link", fsync=False).run([linked["c_pa"]])
    window = make_window()
    managed_uid = uid_of(library, "anna_pa.dcm")
    with library.session() as s:
        linked_uid = s.execute(select(Instance.sop_instance_uid).where(Instance.storage == "linked")).scalar_one()
        managed_file = library.resolve(get_instance(s, managed_uid).file_path, "managed")
    assert managed_file.exists() and linked["c_pa"].exists()
    total = window.browser.model.total
    box = window.remove_selected([managed_uid, linked_uid])
    assert "1 managed copy" in box.text() and "1 linked file is left where it is" in box.text()
    box.button(QMessageBox.StandardButton.Cancel).click()
    qtbot.wait(50)
    assert window.browser.model.total == total  # cancelled: nothing removed
    box = window.remove_selected([managed_uid, linked_uid])
    with qtbot.waitSignal(window.library_changed, timeout=10000):
        box.confirm_button.click()
    assert window.browser.model.total == total - 2
    assert not managed_file.exists() and linked["c_pa"].exists()
    with library.session() as s:
        assert get_instance(s, managed_uid) is None and get_instance(s, linked_uid) is None


def test_relocate_finds_moved_linked_files(qtbot, make_window, tmp_path):
    src = tmp_path / "old"
    write_studies(src)
    lib = open_library(tmp_path / "reloc" / "library.db")
    try:
        Importer(lib, mode="link", fsync=False).run([src])
        shutil.move(str(src), str(tmp_path / "new" / "moved"))
        window = make_window(lib=lib)
        uid = uid_of(lib, "anna_pa.dcm")
        window.browser.select_uid(uid)
        qtbot.waitUntil(lambda: window.image_error is not None, timeout=10000)  # missing: said
        with qtbot.waitSignal(window.library_changed, timeout=10000):
            window.relocate(str(tmp_path / "new"))
        assert any("Found 7 of 7 missing linked file(s)" in m for m in window.messages)
        qtbot.waitUntil(lambda: window.viewer.image is not None and window.current_uid == uid, timeout=10000)
        with lib.session() as s:
            assert get_instance(s, uid).file_path.startswith(str((tmp_path / "new" / "moved").resolve()))
        with qtbot.waitSignal(window.library_changed, timeout=10000):
            window.relocate(str(tmp_path / "new"))
        assert any("No linked file is missing" in m for m in window.messages)
        close_window(qtbot, window)
    finally:
        lib.close()


def test_anonymised_export_of_the_selection(qtbot, make_window, library, tmp_path):
    window = make_window()
    uids = [uid_of(library, "anna_pa.dcm"), uid_of(library, "anna_lat.dcm")]
    out = tmp_path / "shared"
    with qtbot.waitSignal(window.anonymized, timeout=60000) as blocker:
        window.export_anonymized(uids, str(out))
    assert blocker.args[0].exported == 2
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 2
    for f in files:
        data = f.read_bytes()
        assert b"NOVAK" not in data and b"PAT-A" not in data
    assert any("Exported 2 anonymised instance(s)" in m for m in window.messages)
