"""File -> Connect to PACS...: the dialog (Qt offscreen) against a real Orthanc, retrieving into a
real library off the GUI thread; errors as one line in the dialog."""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before anything imports Qt
os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from app.library.models import Instance  # noqa: E402
from app.pacs import servers as pacs_servers  # noqa: E402
from tests.gui.conftest import (  # noqa: E402, F401  (the GUI suite's settings, library and window fixtures)
    isolated_settings,
    library,
    make_window,
    study_files,
)
from tests.pacs.conftest import write_study  # noqa: E402
from tests.pacs.orthanc import free_port  # noqa: E402

pytestmark = pytest.mark.timeout(180)
SHOTS = Path(__file__).resolve().parents[2] / "runs" / "gui_screenshots"


@pytest.fixture(autouse=True)
def server_list(tmp_path, monkeypatch):
    monkeypatch.setenv(pacs_servers.SERVERS_ENV, str(tmp_path / "pacs_servers.json"))
    return tmp_path / "pacs_servers.json"


def count(lib) -> int:
    with lib.session() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def test_search_and_retrieve_off_the_gui_thread(qtbot, orthanc, lib, tmp_path, patient_id, server_list):
    from app.gui.pacs_dialog import PacsDialog

    for i, date in enumerate(("20240105", "20240210")):
        _, files = write_study(tmp_path / f"s{i}", patient_id=patient_id, study_date=date, images=i + 1)
        for f in files:
            orthanc.upload(f)
    imported = []
    dialog = PacsDialog(lib, on_imported=imported.append)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.url.setText(orthanc.dicomweb_url)
    dialog.patient_id.setText(patient_id)
    dialog.search_button.click()
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 2, timeout=30000)
    assert dialog.table.item(0, 0).text() == "2024-02-10"  # newest first
    assert dialog.table.item(0, 2).text() == patient_id
    assert "2 studies found" in dialog.status.text() and "Research use only" in dialog.status.text()
    assert pacs_servers.load_servers(server_list)[0].url == orthanc.dicomweb_url  # remembered, without secret

    assert not dialog.retrieve_button.isEnabled()
    dialog.table.selectAll()
    assert dialog.retrieve_button.isEnabled()
    dialog.retrieve_button.click()
    qtbot.waitUntil(lambda: dialog.last_summary is not None and dialog._retrieve_task is None, timeout=60000)
    assert dialog.last_summary.imported == 3 and imported == [dialog.last_summary]
    assert "2 of 2 studies retrieved" in dialog.status.text()
    assert count(lib) == 3
    SHOTS.mkdir(parents=True, exist_ok=True)
    dialog.grab().save(str(SHOTS / "pacs_dialog.png"))


def test_errors_are_one_line_in_the_dialog(qtbot, lib):
    from app.gui.pacs_dialog import PacsDialog

    dialog = PacsDialog(lib)
    qtbot.addWidget(dialog)
    dialog.url.setText(f"http://127.0.0.1:{free_port()}/dicom-web")
    dialog.search_button.click()
    qtbot.waitUntil(lambda: bool(dialog.last_error), timeout=30000)
    assert dialog.last_error.startswith("cannot reach the PACS") and "\n" not in dialog.last_error
    assert dialog.table.rowCount() == 0

    dialog.last_error = ""
    dialog.date_from.setText("yesterday")
    dialog.search_button.click()
    assert "not a date" in dialog.last_error  # refused before any request

    dialog.url.setText("not a url")
    dialog.search_button.click()
    assert "not a DICOMweb URL" in dialog.last_error
    assert count(lib) == 0


def test_cancel_in_the_dialog_leaves_nothing_half_imported(qtbot, lib, tmp_path, patient_id):
    import json

    from app.gui.pacs_dialog import PacsDialog
    from tests.pacs import stub_server as stub

    _, files = write_study(tmp_path / "s", patient_id=patient_id)
    server = stub.StubServer().start()
    try:
        row = {"0020000D": {"vr": "UI", "Value": ["1.2.3.7"]}, "00100020": {"vr": "LO", "Value": [patient_id]}}
        server.routes["/dicom-web/studies?"] = stub.answer(json.dumps([row]).encode(), "application/dicom+json")
        server.routes["/dicom-web/studies/1.2.3.7"] = stub.stall_in_body(files[0].read_bytes())
        dialog = PacsDialog(lib)
        qtbot.addWidget(dialog)
        dialog.show()
        dialog.url.setText(server.url)
        dialog.search_button.click()
        qtbot.waitUntil(lambda: dialog.table.rowCount() == 1, timeout=30000)
        dialog.table.selectAll()
        dialog.retrieve_button.click()
        qtbot.waitUntil(lambda: bool(server.requests) and "1.2.3.7" in server.requests[-1], timeout=30000)
        assert dialog.cancel_button.isVisible() and dialog.progress.isVisible()
        dialog.cancel_button.click()
        qtbot.waitUntil(lambda: dialog._retrieve_task is None, timeout=60000)  # the stall ends by the cancel
        assert dialog.last_summary.cancelled and not dialog.last_summary.retrieved
        assert "Retrieve cancelled" in dialog.status.text()
        assert count(lib) == 0
    finally:
        server.stop()


def test_file_menu_opens_the_dialog(qtbot, make_window):  # noqa: F811 (the fixture imported above)
    window = make_window()
    (action,) = [a for a in window.menuBar().actions()[0].menu().actions() if a.text() == "Connect to PACS…"]
    action.trigger()
    dialog = window._pacs_dialog
    assert dialog.isVisible() and dialog.library is window.library and dialog.runner is window.runner
    action.trigger()
    assert window._pacs_dialog is dialog  # one per window
    dialog.close()
