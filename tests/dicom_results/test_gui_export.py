"""File -> Export results: the dialog drives a real worker (TaskRunner) over a real library of demo
studies with the real demo bundle, offscreen; progress, cancel, the files written, a screenshot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.dicom_results.conftest import DEMO, ROOT

pytestmark = pytest.mark.qt
SHOT = ROOT / "docs" / "screenshots" / "export_results.png"


@pytest.fixture
def library(tmp_path):
    from app.library import open_library
    from app.library.importer import Importer

    folder = tmp_path / "files"
    folder.mkdir()
    for p in sorted((DEMO / "studies").glob("*.dcm"))[:4]:
        shutil.copy(p, folder / p.name)
    lib = open_library(tmp_path / "lib" / "library.db")
    assert Importer(lib, mode="copy", fsync=False).run([folder]).imported == 4
    yield lib
    lib.close()


@pytest.fixture
def runner(qtbot):
    from app.gui.workers import TaskRunner

    r = TaskRunner()
    yield r
    r.shutdown(15000)


def make_dialog(qtbot, runner, library, bundle, uids, folder: Path):
    from app.gui.export_results import ExportResultsDialog

    dialog = ExportResultsDialog(None, runner, library, bundle, uids)
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(folder))
    dialog.show()
    return dialog


def test_export_writes_the_selection_with_progress_and_a_summary(qtbot, runner, library, bundle, tmp_path):
    from app.logic.analysis import all_instance_uids

    uids = all_instance_uids(library)
    out = tmp_path / "results"
    dialog = make_dialog(qtbot, runner, library, bundle, uids, out)
    assert "Research use only" in dialog.notice.text() and "synthetic phantoms" in dialog.notice.text()
    assert dialog.export_button.isEnabled() and not dialog.cancel_button.isEnabled()
    dialog.export_button.click()
    assert not dialog.close_button.isEnabled()  # running: the dialog stays until the worker is done
    qtbot.waitUntil(lambda: dialog.summary is not None and dialog.task is None, timeout=60000)
    summary = dialog.summary
    assert len(summary.written) == 4 and summary.failed == [] and not summary.cancelled
    assert dialog.progress.value() == dialog.progress.maximum() == 4
    assert "Export finished: results of 4 of 4 images written" in dialog.status.text()
    index = json.loads((out / "index.json").read_text())
    assert sorted(e["sop_instance_uid"] for e in index["images"]) == sorted(uids)
    for e in index["images"]:
        names = {p.name for p in (out / e["folder"]).iterdir()}
        assert {"seg.dcm", "sr.dcm", "mask.png", "mask.nii.gz", "results.json"} <= names
    SHOT.parent.mkdir(parents=True, exist_ok=True)
    dialog.grab().save(str(SHOT))
    assert SHOT.stat().st_size > 0


def test_export_can_be_cancelled_and_only_dicom_can_be_chosen(qtbot, runner, library, bundle, tmp_path):
    from app.logic.analysis import all_instance_uids

    uids = all_instance_uids(library)
    out = tmp_path / "results"
    dialog = make_dialog(qtbot, runner, library, bundle, uids, out)
    dialog.plain.setChecked(False)
    dialog.fractional.setChecked(True)
    dialog.export_button.click()
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: dialog.task is None, timeout=60000)
    summary = dialog.summary
    assert summary.cancelled and len(summary.written) < 4
    assert "Export cancelled" in dialog.status.text()
    for e in summary.written:  # what was written is complete: DICOM only, a fractional SEG
        import pydicom

        assert sorted(p.name for p in (out / e["folder"]).iterdir()) in (
            ["seg.dcm", "sr.dcm"],
            ["heatmap.dcm", "seg.dcm", "sr.dcm"],
        )
        assert pydicom.dcmread(out / e["folder"] / "seg.dcm").SegmentationType == "FRACTIONAL"
    assert not [p for p in (out.iterdir() if out.exists() else []) if p.name.endswith(".partial")]
    # neither kind chosen: nothing to start
    dialog.dicom.setChecked(False)
    assert not dialog.export_button.isEnabled()


def test_the_file_menu_opens_the_dialog_for_the_browser_selection(qtbot, library, bundle, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from app.gui.export_results import ExportResultsDialog
    from app.gui.main_window import MainWindow
    from tests.gui.conftest import close_window

    (tmp_path / "qsettings").mkdir()
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    monkeypatch.setenv("CXR_ADAPTOR_DB", str(tmp_path / "default-library.db"))
    window = MainWindow(library)
    window.show()
    qtbot.waitExposed(window)
    try:
        window._bundle_loaded((str(bundle.folder), bundle))
        qtbot.waitUntil(lambda: window.browser.model.rowCount() == 4, timeout=20000)
        window.browser.table.selectAll()
        (file_menu,) = [a.menu() for a in window.menuBar().actions() if a.text() == "&File"]
        (action,) = [a for a in file_menu.actions() if a.text().startswith("Export results")]
        action.trigger()
        (dialog,) = [w for w in window.findChildren(ExportResultsDialog)]
        assert sorted(dialog.uids) == sorted(window.browser.selected_uids()) and len(dialog.uids) == 4
        assert dialog.bundle is bundle
        dialog.close()
    finally:
        close_window(qtbot, window)
