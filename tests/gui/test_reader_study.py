"""The reader study through the real window: blinded labelling with the real demo bundle, the
reveal, the worklist keys, the progress line, the labels committed one by one in the real
library file and their CSV read back; and a filter that hides the shown image."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app.library import open_library
from app.library.queries import get_instance, reader_labels_for, reviews_for
from app.logic.reader_study import Worklist, read_labels_csv
from tests.gui.conftest import shoot, show_image, uid_of

pytestmark = pytest.mark.qt


@pytest.fixture(scope="module")
def demo_bundle():
    from app.logic.demo import demo_assets

    return demo_assets().bundle


def test_blinded_reader_study_loop_with_keys_and_csv(qtbot, make_window, library, demo_bundle, tmp_path):
    window = make_window(bundle=demo_bundle)
    rs, panel = window.reader_study, window.reader
    window.dock_reader.raise_()
    panel.reviewer.setText("Reader One")
    panel.reviewer.editingFinished.emit()
    assert window.settings.get("review/reviewer") == "Reader One"
    panel.blinded.setChecked(True)
    panel.shuffle.setChecked(True)
    panel.seed.setValue(7)
    with qtbot.waitSignal(window.analysis_shown, timeout=30000):  # Start shows the first unreviewed case
        qtbot.mouseClick(panel.start, Qt.MouseButton.LeftButton)
    wl = rs.worklist
    assert len(wl) == 7 and "0 of 7 reviewed" in panel.progress.text() and "seed 7" in panel.progress.text()
    browser_order = [r.sop_instance_uid for r in window.browser.model.rows]
    assert sorted(wl.uids) == sorted(browser_order)
    assert wl.uids == Worklist.build(browser_order, set(), seed=7).uids  # reproducible from the seed

    # the first case of the (shuffled) worklist; blinded: no AI results anywhere
    first = wl.uids[0]
    assert window.current_uid == first
    assert window.ai_stack.currentIndex() == 1 and "hidden" in window.ai_blind.text()
    assert not window.viewer.overlays_visible() and window.viewer.layers() == []
    assert window.browser.table.isColumnHidden(6)
    assert "Hidden until you label" in window.reports.text.toPlainText()
    probabilities = dict(window.current_result.probabilities)
    classes = list(window.bundle.classes)
    assert [r.finding for r in panel.rows] == classes
    shoot(window, "reader_study_blinded")

    # label: one model finding with a confidence, another one, and a free finding
    panel.row(classes[1]).buttons["agree"].click()
    panel.row(classes[1]).confidence.setCurrentIndex(4)
    panel.row(classes[0]).buttons["disagree"].click()
    qtbot.keyClicks(panel.free_name, "nodule")
    qtbot.mouseClick(panel.add_free, Qt.MouseButton.LeftButton)
    panel.row("nodule").buttons["uncertain"].click()
    qtbot.keyClicks(panel.comment, "faint opacity right base")
    with qtbot.waitSignal(rs.labels_saved, timeout=10000):
        qtbot.keyClick(panel.comment, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    # revealed once labelled, and not moved on (the reader looks at what the AI says)
    assert window.current_uid == first and window.ai_stack.currentIndex() == 0
    assert window.browser.table.isColumnHidden(6)  # other cases' AI results stay hidden while blinded
    assert "1 of 7 reviewed" in panel.progress.text() and "revealed" in panel.note.text()
    assert panel.history.count() == 3
    # committed: another connection to the library file sees every label now
    other = open_library(library.db_path)
    try:
        with other.session() as s:
            labels = {lab.finding: lab for lab in reader_labels_for(s, first)}
    finally:
        other.close()
    assert set(labels) == {classes[0], classes[1], "nodule"}
    assert labels[classes[1]].verdict == "agree" and labels[classes[1]].confidence == 4
    assert labels["nodule"].free == 1 and labels["nodule"].ai_probability is None
    for finding in classes[:2]:
        assert labels[finding].ai_probability == pytest.approx(probabilities[finding])
        assert labels[finding].ai_shown == 0  # made blinded
    assert all(lab.reviewer == "Reader One" and lab.model_hash == window.bundle.content_hash for lab in labels.values())
    assert all(lab.time_spent_s is not None and lab.time_spent_s >= 0 for lab in labels.values())
    shoot(window, "reader_study_revealed")

    # N again: the next unreviewed; A approves it and moves on
    window.browser.table.setFocus()
    qtbot.keyClick(window.browser.table, Qt.Key.Key_N)
    second = wl.uids[1]
    assert window.current_uid == second and window.ai_stack.currentIndex() == 1
    with qtbot.waitSignal(window.review_saved, timeout=10000):
        qtbot.keyClick(window.browser.table, Qt.Key.Key_A)
    assert window.current_uid == wl.uids[2] and "2 of 7 reviewed" in panel.progress.text()
    # Shift+X flags and moves on, but only with a comment
    qtbot.keyClick(window.browser.table, Qt.Key.Key_X, Qt.KeyboardModifier.ShiftModifier)
    assert window.current_uid == wl.uids[2] and "comment" in panel.note.text()
    panel.comment.setPlainText("rotated, repeat")
    window.browser.table.setFocus()
    with qtbot.waitSignal(window.review_saved, timeout=10000):
        qtbot.keyClick(window.browser.table, Qt.Key.Key_X, Qt.KeyboardModifier.ShiftModifier)
    assert window.current_uid == wl.uids[3] and "3 of 7 reviewed" in panel.progress.text()
    with library.session() as s:
        assert [r.status for r in reviews_for(s, get_instance(s, second))] == ["approved"]
        flagged = reviews_for(s, get_instance(s, wl.uids[2]))
        assert [(r.status, r.comment, r.reviewer) for r in flagged] == [("flagged", "rotated, repeat", "Reader One")]
    # Shift+N goes back to the previous unreviewed case (wrapping round the worklist)
    qtbot.keyClick(window.browser.table, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert window.current_uid == wl.uids[-1]

    # the CSV: identifiers that map back to files, the model, the AI probabilities, the filter
    out = tmp_path / "labels"
    task = window.export_labels(str(out))
    qtbot.waitUntil(lambda: task.done, timeout=10000)
    path = tmp_path / "labels.csv"
    head = path.read_text().splitlines()[:2]
    assert head[0].startswith("# Research use only") and head[1].startswith("# exported under the browser filter: {}")
    rows = read_labels_csv(path)
    assert len(rows) == 3 and {r["finding"] for r in rows} == {classes[0], classes[1], "nodule"}
    with library.session() as s:
        inst = get_instance(s, first)
        file_name = inst.original_path.rsplit("/", 1)[-1]
        date = inst.study_date
    for r in rows:
        assert r["file_name"] == file_name and r["study_date"] == date and r["sop_instance_uid"] == first
        assert r["study_instance_uid"] and r["series_instance_uid"] and r["reviewer"] == "Reader One"
        assert r["model_id"] == str(window.bundle.id) and r["model_hash"] == window.bundle.content_hash
        assert r["ai_shown"] == "0" and r["filter"] == "{}"
    agree = next(r for r in rows if r["finding"] == classes[1])
    assert float(agree["ai_probability"]) == pytest.approx(probabilities[classes[1]], abs=1e-5)
    assert agree["confidence"] == "4" and agree["comment"] == "faint opacity right base"
    assert "NOVAK" not in path.read_text() and "PAT-A" not in path.read_text()  # no patient names or IDs


def test_filter_hiding_the_shown_image_is_said_and_nothing_acts_on_it(qtbot, make_window, library):
    window = make_window()
    uid = uid_of(library, "ben_cr.dcm")
    show_image(qtbot, window, uid)
    window.browser.status.setCurrentIndex(3)  # Flagged: none yet, so the shown image is hidden
    assert window.browser.current_hidden() and window.visible_uid() is None
    assert window.hidden_banner.isVisible() and "hidden by the browser's filter" in window.hidden_banner.text()
    assert "hidden" in window.review.current.text() and not window.review.approve.isEnabled()
    assert not window.reader.save.isEnabled()
    window.save_review("approved", "")  # e.g. from a key: refused, nothing saved
    with library.session() as s:
        assert reviews_for(s, get_instance(s, uid)) == []
    shoot(window, "filter_hides_shown_image")
    window.browser.status.setCurrentIndex(0)  # the filter brings it back
    assert not window.browser.current_hidden() and not window.hidden_banner.isVisible()
    assert window.review.approve.isEnabled() and window.browser.current_uid() == uid
