"""`adaptor-review pacs add|servers|search|retrieve|send` as a user runs them, against a real
Orthanc, and the server records: the secret never reaches a file, the library or the output."""

from __future__ import annotations

import json
import logging

import pydicom
import pytest

from app.main import main
from app.pacs import PacsError, ServerRecord
from app.pacs import servers as pacs_servers
from tests.imaging.builders import write_sr
from tests.pacs.conftest import write_study
from tests.pacs.orthanc import free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def server_list(tmp_path, monkeypatch):
    path = tmp_path / "config" / "pacs_servers.json"
    monkeypatch.setenv(pacs_servers.SERVERS_ENV, str(path))
    monkeypatch.delenv(pacs_servers.SECRET_ENV, raising=False)
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_retrieve_send_round(orthanc, tmp_path, capsys, patient_id):
    study, files = write_study(tmp_path / "s", patient_id=patient_id, images=2, accession_number="ACC-CLI")
    for f in files:
        orthanc.upload(f)
    url = orthanc.dicomweb_url

    code, out, err = run_cli(capsys, "pacs", "search", "--url", url, "--id", patient_id)
    assert code == 0, err
    assert "Research use only" in out and "1 study" in out and study in out and "ACC-CLI" in out

    code, out, err = run_cli(capsys, "pacs", "search", "--url", url, "--id", patient_id, "--json")
    assert json.loads(out)["studies"][0]["study_uid"] == study

    db = tmp_path / "lib.db"
    code, out, err = run_cli(capsys, "pacs", "retrieve", "--url", url, study, "--db", db)
    assert code == 0, err
    assert f"{study}: retrieved (2 images)" in out and "2 images imported" in out

    code, out, err = run_cli(capsys, "pacs", "retrieve", "--url", url, study, "--db", db, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["imported"] == 0 and summary["duplicates"] == 2

    sr = pydicom.dcmread(write_sr(tmp_path / "sr.dcm", patient_id=patient_id))
    sr.StudyInstanceUID = study
    sr.save_as(tmp_path / "sr.dcm")
    (tmp_path / "notes.txt").write_text("not DICOM")
    code, out, err = run_cli(capsys, "pacs", "send", "--url", url, tmp_path / "sr.dcm", tmp_path / "notes.txt")
    assert code == 2
    assert f"[{sr.SOPInstanceUID}]: accepted" in out
    assert "notes.txt [-]: FAILED: not sent: not a readable DICOM file" in out
    assert err.strip().splitlines() == [
        "adaptor-review pacs: error: 1 of 2 objects were not stored (first: not sent: not a readable DICOM file "
        "(InvalidDicomError))"
    ]
    assert sr.SOPInstanceUID in {i["SOPInstanceUID"] for i in orthanc.study_instances(study)}


def test_failures_exit_2_with_one_line(orthanc, tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}/dicom-web"
    code, out, err = run_cli(capsys, "pacs", "search", "--url", dead)
    assert code == 2 and err.count("\n") == 1 and "cannot reach the PACS" in err and "Traceback" not in err

    code, out, err = run_cli(
        capsys, "pacs", "retrieve", "--url", orthanc.dicomweb_url, "1.2.3.404", "--db", tmp_path / "l.db"
    )
    assert code == 2 and "1.2.3.404: FAILED: study 1.2.3.404 is not on the PACS" in out
    assert err.strip() == (
        f"adaptor-review pacs: error: 1 of 1 studies failed (first: study 1.2.3.404 is not on the PACS "
        f"{orthanc.dicomweb_url} (HTTP 404))"
    )

    code, out, err = run_cli(capsys, "pacs", "search", "--url", "ftp://host/x")
    assert code == 2 and "not a DICOMweb URL" in err


def test_saved_server_with_basic_auth_secret_from_the_environment(
    orthanc_auth, tmp_path, capsys, caplog, monkeypatch, server_list, patient_id
):
    caplog.set_level(logging.DEBUG)
    study, files = write_study(tmp_path / "s", patient_id=patient_id)
    for f in files:
        orthanc_auth.upload(f)
    code, out, err = run_cli(capsys, "pacs", "add", "research", orthanc_auth.dicomweb_url, "--user", "reader")
    assert code == 0 and "not stored" in out
    code, out, err = run_cli(capsys, "pacs", "servers")
    assert f"research\t{orthanc_auth.dicomweb_url}\tbasic as reader" in out

    # no terminal, no keyring, no environment: a clear error instead of a prompt
    code, out, err = run_cli(capsys, "pacs", "search", "--server", "research", "--id", patient_id)
    assert code == 2 and "needs a password" in err and pacs_servers.SECRET_ENV in err

    monkeypatch.setenv(pacs_servers.SECRET_ENV, "s3cret-pw")
    db = tmp_path / "lib.db"
    code, out, err = run_cli(capsys, "pacs", "search", "--server", "research", "--id", patient_id)
    assert code == 0 and study in out
    code, out, err = run_cli(capsys, "pacs", "retrieve", "--server", "research", study, "--db", db)
    assert code == 0, err
    assert "1 images imported" in out
    assert "s3cret-pw" not in out + err + caplog.text
    assert patient_id not in caplog.text  # the debug log names study UIDs, not the query's patient
    assert "s3cret-pw" not in server_list.read_text()
    assert b"s3cret-pw" not in db.read_bytes()

    monkeypatch.setenv(pacs_servers.SECRET_ENV, "wrong")
    pacs_servers._session_secrets.clear()
    code, out, err = run_cli(capsys, "pacs", "search", "--server", "research")
    assert code == 2 and "refused the credentials (HTTP 401)" in err and "wrong" not in err


def test_server_records(tmp_path):
    path = tmp_path / "servers.json"
    pacs_servers.save_server(ServerRecord("a", "http://host:8042/dicom-web/"), path)
    pacs_servers.save_server(ServerRecord("b", "https://pacs.example/dicomweb", "bearer"), path)
    pacs_servers.save_server(ServerRecord("a", "http://other:8042/dicom-web", "basic", "me"), path)
    assert [(s.name, s.url, s.auth, s.username) for s in pacs_servers.load_servers(path)] == [
        ("b", "https://pacs.example/dicomweb", "bearer", ""),
        ("a", "http://other:8042/dicom-web", "basic", "me"),
    ]
    with pytest.raises(PacsError, match="no saved PACS server named 'c' \\(saved: b, a\\)"):
        pacs_servers.find_server("c", path)
    with pytest.raises(PacsError, match="not in the URL"):
        ServerRecord("x", "http://me:pw@host/dicom-web")
    with pytest.raises(PacsError, match="needs a user name"):
        ServerRecord("x", "http://host/dicom-web", "basic")
    path.write_text("{not json")
    with pytest.raises(PacsError, match="unreadable"):
        pacs_servers.load_servers(path)

    record = ServerRecord("s", "http://host/dicom-web", "basic", "me")
    pacs_servers._session_secrets.clear()
    assert pacs_servers.get_secret(record) is None or pacs_servers.keyring_available()
    pacs_servers.remember_secret(record, "pw")
    assert pacs_servers.get_secret(record) == "pw"
    pacs_servers.forget_secret(record)
    assert pacs_servers.get_secret(record) is None or pacs_servers.keyring_available()
