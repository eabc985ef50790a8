"""Browser, import (menu, drag-and-drop, progress, cancel), review, batch analysis, exports and
remembered settings, through the real widgets against a real SQLite library."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, QRectF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage, QPainter
from PySide6.QtWidgets import QApplication, QFileDialog

from app.library.queries import get_instance, reviews_for
from app.logic.overlay import composite, visible_box
from app.logic.predictions_csv import read_predictions_csv
from tests.gui.conftest import (
    analysis_rows,
    close_window,
    direct_analysis,
    make_gated,
    shoot,
    show_image,
    uid_of,
    write_studies,
)

pytestmark = pytest.mark.qt


def header_click(qtbot, window, column: int) -> None:
    header = window.browser.table.horizontalHeader()
    x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
    from PySide6.QtCore import QPoint

    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))


def names(window) -> list[str]:
    return [window.browser.model.cell_text(r, 1) for r in window.browser.model.rows]


def test_browser_sorts_searches_and_shows_thumbnails(qtbot, make_window, library):
    window = make_window()
    model = window.browser.model
    assert model.total == 7 and window.browser.count.text() == "7 images"
    # default: newest study first
    dates = [r.study_date for r in model.rows if r.study_date]
    assert dates == sorted(dates, reverse=True)
    header_click(qtbot, window, 1)  # Patient
    first = names(window)
    assert model.sort_key == "patient_name"
    header_click(qtbot, window, 1)  # again: the other direction
    assert names(window) == list(reversed(first)) or model.descending != (first == names(window))
    header_click(qtbot, window, 4)  # View
    assert model.sort_key == "view"
    qtbot.keyClicks(window.browser.search, "okafor")
    qtbot.waitUntil(lambda: model.total == 2, timeout=3000)
    assert set(names(window)) == {"OKAFOR, BEN"} and "(filtered)" in window.browser.count.text()
    window.browser.search.clear()
    qtbot.keyClicks(window.browser.search, "PAT-C")  # the start of a patient ID
    qtbot.waitUntil(lambda: model.total == 2 and set(names(window)) == {"SILVA, CARA"}, timeout=3000)
    window.browser.search.clear()
    qtbot.waitUntil(lambda: model.total == 7, timeout=3000)
    # thumbnails: made in a worker for the rows on screen, kept under the library's data folder
    qtbot.waitUntil(lambda: len(model.thumbs) == 7, timeout=20000)
    from app.logic.thumbnails import thumbnail_path

    assert all(thumbnail_path(library, r.sop_instance_uid).exists() for r in model.rows)
    pix = model.data(model.index(0, 0), Qt.ItemDataRole.DecorationRole)
    assert pix is not None and max(pix.width(), pix.height()) == 96
    assert max(pix.deviceIndependentSize().width(), pix.deviceIndependentSize().height()) == 48
    shoot(window, "browser_thumbnails")


def test_import_from_the_file_menu_with_progress_and_drag_and_drop(
    qtbot, make_window, empty_library, tmp_path, monkeypatch
):
    window = make_window(lib=empty_library)
    assert window.browser.model.total == 0 and window.viewer.image is None
    folder = tmp_path / "incoming"
    write_studies(folder)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    progress = []
    with qtbot.waitSignal(window.import_finished, timeout=30000) as blocker:
        window.act_import_folder.trigger()
        assert window.jobs.isVisible() and window.jobs.rows
        row = next(iter(window.jobs.rows.values()))
        row.task.signals.progress.connect(lambda d, t, s: progress.append((d, t)))
    summary = blocker.args[0]
    assert summary.imported == 7 and not summary.cancelled
    assert progress and progress[-1][0] == progress[-1][1] == 7
    qtbot.waitUntil(lambda: not window.jobs.isVisible(), timeout=5000)  # the progress row goes away
    assert window.browser.model.total == 7
    qtbot.waitUntil(lambda: window.viewer.image is not None, timeout=10000)  # first image selected
    assert "Import finished: 7 imported" in " ".join(window.messages)
    # drag and drop of a file: the same import (here a duplicate and a new PNG)
    Image.fromarray(np.full((40, 50), 90, np.uint8)).save(tmp_path / "dropped.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "dropped.png")), QUrl.fromLocalFile(str(folder / "anna_pa.dcm"))])
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
    assert blocker.args[0].imported == 1 and blocker.args[0].duplicates == 1
    assert window.browser.model.total == 8
    # something that is not a file is refused
    text = QMimeData()
    text.setText("hello")
    enter = QDragEnterEvent(
        window.rect().center(),
        Qt.DropAction.CopyAction,
        text,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(window, enter)
    assert not enter.isAccepted()


def test_import_can_be_cancelled_and_rejections_are_reported(qtbot, make_window, empty_library, tmp_path):
    from core_model.imaging.dicom_write import DicomSpec, write_dicom

    folder = tmp_path / "many"
    for i in range(400):
        write_dicom(folder / f"f{i:04d}.dcm", np.full((8, 8), i, np.uint16), DicomSpec(patient_id=f"P{i % 7}"))
    window = make_window(lib=empty_library)
    task = window.import_paths([str(folder)])
    row = window.jobs.rows[task.id]
    qtbot.waitUntil(lambda: row.bar.maximum() > 0 and row.bar.value() > 0, timeout=20000)
    with qtbot.waitSignal(window.import_finished, timeout=30000) as blocker:
        qtbot.mouseClick(row.cancel, Qt.MouseButton.LeftButton)
    summary = blocker.args[0]
    assert summary.cancelled and 0 < summary.imported < 400
    assert "Import cancelled" in window.messages[-1]
    assert window.browser.model.total == summary.imported  # what was imported stays
    # rejected files: reported in a message with the reasons
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.dcm").write_text("not dicom")
    with qtbot.waitSignal(window.import_finished, timeout=30000):
        window.import_paths([str(bad)])
    box = window._boxes[-1]
    assert "not imported" in box.text() and "not_dicom" in box.detailedText()
    shoot(box, "import_rejections_message")


def test_review_approve_flag_and_filter(qtbot, make_window, library):
    window = make_window()
    uid = uid_of(library, "ben_cr.dcm")
    show_image(qtbot, window, uid)
    window.review.comment.setFocus()
    qtbot.mouseClick(window.review.flag, Qt.MouseButton.LeftButton)  # flag needs a comment
    assert "comment is required" in window.review.current.text()
    qtbot.keyClicks(window.review.comment, "possible apical pneumothorax, check lateral")
    with qtbot.waitSignal(window.review_saved, timeout=10000):
        qtbot.mouseClick(window.review.flag, Qt.MouseButton.LeftButton)
    assert "flagged" in window.review.current.text()
    assert "check lateral" in window.review.history.item(0).text()
    with library.session() as s:
        reviews = reviews_for(s, get_instance(s, uid))
    assert [(r.status, r.comment) for r in reviews] == [("flagged", "possible apical pneumothorax, check lateral")]
    other = uid_of(library, "cara_pa.dcm")
    show_image(qtbot, window, other)
    with qtbot.waitSignal(window.review_saved, timeout=10000):
        qtbot.mouseClick(window.review.approve, Qt.MouseButton.LeftButton)
    model = window.browser.model
    assert model.cell_text(model.rows[model.row_of(other)], 5) == "✓ approved"
    assert model.cell_text(model.rows[model.row_of(uid)], 5) == "⚑ flagged"
    shoot(window, "review_flagged")
    window.browser.status.setCurrentIndex(3)  # Flagged
    assert [r.sop_instance_uid for r in model.rows] == [uid]
    assert window.current_uid == other and window.viewer.image is not None
    window.browser.status.setCurrentIndex(1)  # Unreviewed
    assert model.total == 5 and uid not in [r.sop_instance_uid for r in model.rows]
    window.browser.status.setCurrentIndex(2)  # Approved
    assert [r.sop_instance_uid for r in model.rows] == [other]
    # the shown image stays shown while filtered out, and selected again when it is back
    assert window.current_uid == other and window.browser.current_uid() == other


def test_analyze_all_with_progress_then_filter_on_a_finding(
    qtbot, make_window, library, exported_bundle, loaded_bundle
):
    window = make_window(bundle=exported_bundle)
    qtbot.waitUntil(lambda: window.is_idle(), timeout=20000)
    shown = window.current_uid
    assert [r[0] for r in analysis_rows(library, shown)] == [window.current_result.analysis_id]
    progress = []
    task = window.analyze_all()
    task.signals.progress.connect(lambda d, t, s: progress.append((d, t)))
    assert window.jobs.rows[task.id].bar.accessibleName() == "Analysing progress"
    with qtbot.waitSignal(window.batch_finished, timeout=60000) as blocker:
        pass
    summary = blocker.args[0]
    # the image shown first was analysed when it was selected; "analyze all" did the others
    assert summary.total == summary.analysed == 6 and not summary.failed
    assert progress[-1] == (6, 6)
    assert len(analysis_rows(library)) == 7 and len(analysis_rows(library, shown)) == 1
    # the browser shows the runtime's top finding for every image, and filters on it
    model = window.browser.model
    direct = {
        r.sop_instance_uid: direct_analysis(loaded_bundle, library, r.sop_instance_uid).probabilities
        for r in model.rows
    }
    top = {uid: max(p, key=p.get) for uid, p in direct.items()}
    for r in model.rows:
        assert r.top_finding == top[r.sop_instance_uid]
        assert r.top_probability == pytest.approx(direct[r.sop_instance_uid][r.top_finding], abs=1e-5)
    finding = max(loaded_bundle.classes, key=lambda c: (sum(t == c for t in top.values()), c))
    window.browser.finding.setCurrentText(finding)
    window.browser.finding_on.setChecked(True)
    threshold = window.browser.threshold.value()
    assert threshold == pytest.approx(round(loaded_bundle.thresholds[finding], 2))  # the operating threshold
    expected = {u for u, p in direct.items() if top[u] == finding and p[finding] >= threshold}
    assert {r.sop_instance_uid for r in model.rows} == expected
    shoot(window, "browser_finding_filter")
    window.browser.threshold.setValue(0.0)  # every image whose top finding it is
    assert {r.sop_instance_uid for r in model.rows} == {u for u in direct if top[u] == finding} != set()
    with qtbot.waitSignal(window.batch_finished, timeout=10000) as blocker:
        window.analyze_all()  # nothing left to do
    assert blocker.args[0].total == 0 and "already has an analysis" in window.messages[-1]
    assert len(analysis_rows(library)) == 7


def test_analyze_all_can_be_cancelled(qtbot, make_window, library, loaded_bundle):
    bundle = make_gated(loaded_bundle)  # the real bundle, held at the start of analyze()
    window = make_window(bundle=bundle, select_first=False)
    task = window.analyze_all()
    row = window.jobs.rows[task.id]
    qtbot.waitUntil(bundle.entered.is_set, timeout=10000)
    with qtbot.waitSignal(window.batch_finished, timeout=30000) as blocker:
        qtbot.mouseClick(row.cancel, Qt.MouseButton.LeftButton)
        bundle.release.set()  # the image in flight finishes its model step; nothing after it runs
    summary = blocker.args[0]
    assert summary.cancelled and summary.analysed == 0 and summary.total == 7
    assert analysis_rows(library) == []  # the cancelled image was not stored half-done
    assert bundle.threads and "MainThread" not in bundle.threads  # inference ran in workers
    # a new "analyze all" does them all, once each (an image shown meanwhile is analysed by
    # whichever asks first; the other reuses it)
    with qtbot.waitSignal(window.batch_finished, timeout=60000) as blocker:
        window.analyze_all()
    qtbot.waitUntil(window.is_idle, timeout=10000)
    summary = blocker.args[0]
    assert summary.analysed + summary.cached == summary.total and not summary.failed
    assert [len(analysis_rows(library, r.sop_instance_uid)) for r in window.browser.model.rows] == [1] * 7


def test_shown_image_and_analyze_all_analyse_an_image_once(qtbot, make_window, library, loaded_bundle):
    bundle = make_gated(loaded_bundle)  # the real bundle, held at the start of analyze()
    window = make_window(bundle=bundle)  # the first row is shown and its analysis starts
    qtbot.waitUntil(bundle.entered.is_set, timeout=10000)
    shown = window.current_uid
    window.analyze_all()  # the shown image is not stored yet: the batch has it too
    qtbot.wait(300)  # let the batch reach its first image (the shown one: the same order)
    with qtbot.waitSignal(window.batch_finished, timeout=60000) as blocker:
        bundle.release.set()
    qtbot.waitUntil(window.is_idle, timeout=10000)
    summary = blocker.args[0]
    assert summary.total == 7 and summary.analysed == 6 and summary.cached == 1
    assert [len(analysis_rows(library, r.sop_instance_uid)) for r in window.browser.model.rows] == [1] * 7
    assert window.current_result.uid == shown
    assert window.current_result.analysis_id == analysis_rows(library, shown)[0][0]
    assert len(bundle.images) == 7  # the model ran once per image


def qt_render_of_image(viewer) -> np.ndarray:
    """What the scene shows over the image, rendered at the image's native resolution."""
    h, w = viewer.image.shape
    img = QImage(w, h, QImage.Format.Format_RGB888)
    img.fill(Qt.GlobalColor.black)
    painter = QPainter(img)
    src = viewer.image_item.mapRectToScene(viewer.image_item.boundingRect())
    viewer.graphics.scene().render(painter, QRectF(0, 0, w, h), src)
    painter.end()
    ptr = img.constBits()
    arr = np.frombuffer(ptr, np.uint8, count=img.sizeInBytes()).reshape(h, img.bytesPerLine())
    return arr[:, : w * 3].reshape(h, w, 3).copy()


def test_export_view_png_composites_overlays_as_shown(
    qtbot, make_window, library, exported_bundle, tmp_path, monkeypatch
):
    window = make_window(bundle=exported_bundle)
    uid = uid_of(library, "anna_pa.dcm")
    show_image(qtbot, window, uid)
    qtbot.waitUntil(
        lambda: (
            window.current_result is not None
            and window.current_result.uid == uid
            and window.current_heat is not None
            and window.is_idle()
        ),
        timeout=10000,
    )
    window.ai.mask_opacity.setValue(60)
    window.ai.heat_opacity.setValue(45)
    v = window.viewer
    assert [layer.opacity for layer in v.layers()] == [pytest.approx(0.6), pytest.approx(0.45)]
    expected = composite(v.display, v.layers())
    # the scene as Qt paints it equals our composite (opacity included): this is "as shown"
    shown = qt_render_of_image(v).astype(int)
    assert np.abs(shown - expected.astype(int)).mean() < 1.5
    assert np.percentile(np.abs(shown - expected.astype(int)), 99) <= 3
    # export through the menu action (the save dialog answered by the test)
    out = tmp_path / "exports" / "view.png"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "PNG images (*.png)"))
    window.act_export_png.trigger()
    qtbot.waitUntil(lambda: out.exists(), timeout=10000)
    written = np.asarray(Image.open(out).convert("RGB"))
    r0, r1, c0, c1 = visible_box(v.view_rect(), v.image.shape)
    assert np.array_equal(written[: r1 - r0], expected[r0:r1, c0:c1])
    assert written.shape[0] > r1 - r0  # the footer (notice, legend, colour bar) below
    # pyqtgraph's own save would have dropped the opacity: our export differs from full opacity
    full = composite(v.display, [type(layer)(layer.rgba, 1.0) for layer in v.layers()])
    assert not np.array_equal(written[: r1 - r0], full[r0:r1, c0:c1])
    shoot(window, "export_view_with_overlays")
    # zoomed in: only the visible part is exported
    window.viewer.zoom(3.0)
    out2 = tmp_path / "zoomed.png"
    window.export_png(str(out2))
    qtbot.waitUntil(lambda: out2.exists(), timeout=10000)
    r0, r1, c0, c1 = visible_box(v.view_rect(), v.image.shape)
    zoomed = np.asarray(Image.open(out2).convert("RGB"))
    assert zoomed.shape[1] == c1 - c0 < v.image.shape[1]
    assert np.array_equal(zoomed[: r1 - r0], composite(v.display, v.layers())[r0:r1, c0:c1])
    import shutil

    from tests.gui.conftest import SHOTS

    shutil.copy(out, SHOTS / "exported_view.png")


def test_export_predictions_csv_for_selected_images(
    qtbot, make_window, library, exported_bundle, loaded_bundle, tmp_path, monkeypatch
):
    window = make_window(bundle=exported_bundle)
    with qtbot.waitSignal(window.batch_finished, timeout=60000):
        window.analyze_all()
    window.browser.table.setFocus()
    window.browser.table.selectAll()
    qtbot.keyClick(window.browser.table, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    uids = window.browser.selected_uids()
    assert len(uids) == 7
    out = tmp_path / "predictions.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "CSV files (*.csv)"))
    window.act_export_csv.trigger()
    qtbot.waitUntil(lambda: out.exists(), timeout=10000)
    assert out.read_text().startswith("# Research use only")
    rows = read_predictions_csv(out)
    assert sorted(r["sop_instance_uid"] for r in rows) == sorted(uids)
    for r in rows:
        assert r["bundle_id"] == loaded_bundle.id and r["bundle_version"] == loaded_bundle.version
        assert not r["error"]
        direct = direct_analysis(loaded_bundle, library, r["sop_instance_uid"])  # the runtime on that file
        for c in loaded_bundle.classes:
            assert float(r[f"p_{c}"]) == pytest.approx(direct.probabilities[c], abs=1e-5)
            assert r[f"threshold_{c}"] == f"{loaded_bundle.thresholds[c]:.6g}"
            assert r[f"above_{c}"] == str(int(direct.probabilities[c] >= loaded_bundle.thresholds[c]))
    text = out.read_text()
    assert "NOVAK" not in text and "PAT-A" not in text  # no patient names or IDs


def test_settings_and_layout_are_remembered(qtbot, make_window, library, isolated_settings):
    window = make_window()
    window.ai.mask_opacity.setValue(70)
    window.ai.colormap.setCurrentIndex(window.ai.colormap.findData("viridis"))
    window.ai.mask_mode.setCurrentIndex(1)
    window.dock_review.hide()
    window.resize(800, 600)
    size = (window.width(), window.height())
    assert size[1] == 600
    close_window(qtbot, window)
    files = list(isolated_settings.rglob("*.ini"))
    assert files, "settings were not written to the isolated folder"
    from app.gui.main_window import MainWindow

    again = MainWindow(library)
    again.show()
    assert again.ai.mask_opacity.value() == 70
    assert again.ai.colormap.currentData() == "viridis"
    assert again.ai.mask_settings[2] == "outline"
    assert not again.dock_review.isVisible() and again.dock_reports.isVisible()
    assert again.height() == size[1] and abs(again.width() - size[0]) <= 2  # (the offscreen screen is 800 wide)
    close_window(qtbot, again)


def test_unreadable_image_is_a_message_not_a_traceback(qtbot, make_window, library):
    uid = uid_of(library, "cara_ap.dcm")
    with library.session() as s:
        path = library.resolve(get_instance(s, uid).file_path, "managed")
    path.write_bytes(path.read_bytes()[:400])  # truncated behind the library's back
    window = make_window()
    window.browser.select_uid(uid)
    qtbot.waitUntil(lambda: window.image_error is not None, timeout=10000)
    assert "cannot be shown" in window.viewer.info.text()
    assert "Traceback" not in window.viewer.info.text()
    # the next image still works
    show_image(qtbot, window, uid_of(library, "cara_pa.dcm"))


def test_accessible_names(qtbot, make_window):
    window = make_window()
    from PySide6.QtWidgets import QAbstractButton, QAbstractSlider, QComboBox, QLineEdit, QPlainTextEdit

    missing = [
        type(w).__name__ + ":" + (w.objectName() or (w.text() if hasattr(w, "text") else ""))
        for cls in (QAbstractButton, QAbstractSlider, QComboBox, QLineEdit, QPlainTextEdit)
        for w in window.findChildren(cls)
        if w.isVisibleTo(window)
        and not w.accessibleName()
        and not (hasattr(w, "text") and w.text())
        and not type(w).__name__.startswith("QScrollBar")
        and "qt_" not in w.objectName()
    ]
    assert not missing, missing


def test_import_files_from_the_file_menu(qtbot, make_window, empty_library, study_files, monkeypatch):
    window = make_window(lib=empty_library)
    chosen = [str(study_files["a_pa"]), str(study_files["png"])]
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: (chosen, "Images"))
    window.act_copy.setChecked(False)  # link in place
    with qtbot.waitSignal(window.import_finished, timeout=30000) as blocker:
        window.act_import_files.trigger()
    assert blocker.args[0].imported == 2 and blocker.args[0].mode == "link"
    assert window.settings.get("import/last_folder") == str(study_files["a_pa"].parent)
    assert window.settings.get("import/copy") is False
