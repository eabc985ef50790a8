"""QIDO-RS search and WADO-RS retrieve against a real Orthanc (and a misbehaving stub server for
what Orthanc never does), into real library files: deduplicated, nothing half-imported."""

from __future__ import annotations

import threading

import numpy as np
import pydicom
import pytest
from sqlalchemy import func, select

from app.library.models import Instance
from app.pacs import (
    PacsAuthError,
    PacsClient,
    PacsInvalidResponse,
    PacsTimeout,
    PacsUnreachable,
    ServerRecord,
    StudyQuery,
    retrieve_studies,
)
from tests.imaging.builders import truncate, write_sr
from tests.pacs import stub_server as stub
from tests.pacs.conftest import write_study
from tests.pacs.orthanc import free_port

pytestmark = pytest.mark.timeout(120)


def client(url: str, *, timeout: float = 30.0, auth: str = "none", user: str = "", secret: str | None = None):
    return PacsClient(ServerRecord("test", url, auth, user), secret, timeout=timeout)


def library_uids(lib) -> set[str]:
    with lib.session() as s:
        return set(s.scalars(select(Instance.sop_instance_uid)))


def instance_count(lib) -> int:
    with lib.session() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def staging_empty(lib) -> bool:
    return not lib.staging_dir.exists() or not any(p.is_file() for p in lib.staging_dir.rglob("*"))


def upload(orthanc, files) -> None:
    for f in files:
        orthanc.upload(f)


@pytest.fixture
def stub_server():
    server = stub.StubServer().start()
    yield server
    server.stop()


# -- search ----------------------------------------------------------------------------------
def test_search_filters_patient_date_modality_accession(orthanc, tmp_path, patient_id):
    a, fa = write_study(tmp_path / "a", patient_id=patient_id, study_date="20240105", accession_number="ACC-A1")
    b, fb = write_study(
        tmp_path / "b", patient_id=patient_id, study_date="20240310", accession_number="ACC-B2", modality="CR", images=2
    )
    c, fc = write_study(tmp_path / "c", patient_id=patient_id, study_date="20240320", modality="CT")
    upload(orthanc, fa + fb + fc)
    pacs = client(orthanc.dicomweb_url)

    def found(**kw) -> set[str]:
        return {h.study_uid for h in pacs.search_studies(StudyQuery(patient_id=patient_id, **kw))}

    assert found() == {a, b}  # CR and DX by default: the CT study is not a chest radiograph
    assert found(modalities=()) == {a, b, c}
    assert found(date_from="2024-03-01") == {b}
    assert found(date_from="20240101", date_to="20240131") == {a}
    assert found(accession="ACC-B2") == {b}
    name = f"pacs^test{patient_id[-4:]}".lower()  # a case-insensitive prefix, "^" as in DICOM
    assert {h.study_uid for h in pacs.search_studies(StudyQuery(patient_name=name))} >= {a, b}
    hit = next(h for h in pacs.search_studies(StudyQuery(patient_id=patient_id)) if h.study_uid == b)
    assert (hit.patient_id, hit.study_date, hit.modalities, hit.instances) == (patient_id, "20240310", ("CR",), 2)
    assert hit.accession == "ACC-B2"


def test_search_refuses_bad_dates_before_asking_the_server():
    pacs = client("http://127.0.0.1:9/dicom-web")
    with pytest.raises(Exception, match="not a date"):
        pacs.search_studies(StudyQuery(date_from="5 May"))
    with pytest.raises(Exception, match="date range is empty"):
        pacs.search_studies(StudyQuery(date_from="20240301", date_to="20240101"))


# -- retrieve --------------------------------------------------------------------------------
def test_retrieve_imports_studies_and_deduplicates(orthanc, lib, tmp_path, patient_id):
    a, fa = write_study(tmp_path / "a", patient_id=patient_id, images=2)
    b, fb = write_study(tmp_path / "b", patient_id=patient_id)
    upload(orthanc, fa + fb)
    seen = []
    summary = retrieve_studies(lib, client(orthanc.dicomweb_url), [a, b], progress=seen.append)
    assert [o.ok for o in summary.outcomes] == [True, True]
    assert summary.imported == 3 and summary.duplicates == 0 and not summary.failed
    sent = {pydicom.dcmread(f).SOPInstanceUID: f for f in fa + fb}
    assert library_uids(lib) == set(sent)
    with lib.session() as s:  # the managed copies hold the pixels that were uploaded
        for inst in s.scalars(select(Instance)):
            stored = pydicom.dcmread(lib.resolve(inst.file_path, inst.storage))
            assert np.array_equal(stored.pixel_array, pydicom.dcmread(sent[inst.sop_instance_uid]).pixel_array)
    assert seen[-1].stage == "done" and seen[-1].done == 2 and seen[-1].instances == 3
    assert staging_empty(lib)

    again = retrieve_studies(lib, client(orthanc.dicomweb_url), [a, b])
    assert again.imported == 0 and again.duplicates == 3
    assert instance_count(lib) == 3


def test_retrieve_skips_non_image_objects(orthanc, lib, tmp_path, patient_id):
    study, files = write_study(tmp_path / "s", patient_id=patient_id)
    sr = pydicom.dcmread(write_sr(tmp_path / "sr.dcm", patient_id=patient_id))
    sr.StudyInstanceUID = study
    sr.save_as(tmp_path / "sr.dcm")
    upload(orthanc, [*files, tmp_path / "sr.dcm"])
    summary = retrieve_studies(lib, client(orthanc.dicomweb_url), [study])
    (outcome,) = summary.outcomes
    assert outcome.ok and outcome.instances == 1 and outcome.skipped == 1
    assert summary.imported == 1 and summary.rejected == 0


def test_unknown_study_fails_alone(orthanc, lib, tmp_path, patient_id):
    good, files = write_study(tmp_path / "g", patient_id=patient_id)
    upload(orthanc, files)
    summary = retrieve_studies(lib, client(orthanc.dicomweb_url), [good, "1.2.826.0.1.999.404"])
    assert [o.ok for o in summary.outcomes if o.study_uid == good] == [True]
    (bad,) = summary.failed
    assert bad.study_uid == "1.2.826.0.1.999.404" and "not on the PACS" in bad.error and "404" in bad.error
    assert summary.imported == 1


def test_unreachable_server_is_one_clear_error_and_imports_nothing(lib):
    pacs = client(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=5)
    with pytest.raises(PacsUnreachable, match=r"cannot reach the PACS http://127\.0\.0\.1:\d+/dicom-web"):
        pacs.search_studies(StudyQuery())
    with pytest.raises(PacsUnreachable):
        retrieve_studies(lib, pacs, ["1.2.3.4", "1.2.3.5"])
    assert instance_count(lib) == 0 and staging_empty(lib)


def test_basic_auth_refused_then_accepted(orthanc_auth, lib, tmp_path, patient_id):
    study, files = write_study(tmp_path / "s", patient_id=patient_id)
    upload(orthanc_auth, files)
    wrong = client(orthanc_auth.dicomweb_url, auth="basic", user="reader", secret="not-the-password")
    with pytest.raises(PacsAuthError, match="refused the credentials \\(HTTP 401\\)") as info:
        wrong.search_studies(StudyQuery(patient_id=patient_id))
    assert "not-the-password" not in str(info.value)
    with pytest.raises(PacsAuthError):
        retrieve_studies(lib, wrong, [study])
    with pytest.raises(PacsAuthError):  # no credentials at all
        client(orthanc_auth.dicomweb_url).search_studies(StudyQuery())
    assert instance_count(lib) == 0

    right = client(orthanc_auth.dicomweb_url, auth="basic", user="reader", secret="s3cret-pw")
    assert [h.study_uid for h in right.search_studies(StudyQuery(patient_id=patient_id))] == [study]
    assert retrieve_studies(lib, right, [study]).imported == 1
    assert "s3cret-pw" not in repr(right)


def test_bearer_token_is_sent(stub_server, tmp_path):
    def qido(h, _release):
        ok = h.headers.get("Authorization") == "Bearer tok-123"
        body = b"[]" if ok else b""
        h.send_response(200 if ok else 401)
        h.send_header("Content-Type", "application/dicom+json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    stub_server.routes["/dicom-web/studies"] = qido
    assert client(stub_server.url, auth="bearer", secret="tok-123").search_studies(StudyQuery()) == []
    with pytest.raises(PacsAuthError):
        client(stub_server.url, auth="bearer", secret="expired").search_studies(StudyQuery())


def test_invalid_dicom_from_the_server_imports_nothing(stub_server, lib, tmp_path, patient_id):
    _, good = write_study(tmp_path / "g", patient_id=patient_id, images=2)
    damaged = truncate(good[1], tmp_path / "damaged.dcm", 200)
    stub_server.routes["/dicom-web/studies/1.2.3.1"] = stub.garbage_study()
    stub_server.routes["/dicom-web/studies/1.2.3.2"] = stub.dicom_study([good[0], damaged])
    stub_server.routes["/dicom-web/studies/1.2.3.3"] = stub.dicom_study(good, close=False)
    stub_server.routes["/dicom-web/studies/1.2.3.4"] = stub.answer(b"<html>oops</html>", "text/html")
    summary = retrieve_studies(lib, client(stub_server.url), ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"])
    errors = {o.study_uid: o.error for o in summary.outcomes}
    assert not summary.retrieved
    assert "invalid DICOM" in errors["1.2.3.1"] and "not a DICOM file" in errors["1.2.3.1"]
    assert "truncated" in errors["1.2.3.2"]  # the good first image of that study is not imported either
    assert "ended before its last part" in errors["1.2.3.3"]
    assert "instead of multipart/related" in errors["1.2.3.4"]
    assert instance_count(lib) == 0 and staging_empty(lib)


def test_search_answer_that_is_not_json(stub_server):
    stub_server.routes["/dicom-web/studies"] = stub.answer(b"<html>login page</html>", "text/html")
    with pytest.raises(PacsInvalidResponse, match="not JSON"):
        client(stub_server.url).search_studies(StudyQuery())


def test_stalling_server_times_out_with_nothing_imported(stub_server, lib, tmp_path, patient_id):
    _, files = write_study(tmp_path / "s", patient_id=patient_id)
    stub_server.routes["/dicom-web/studies?"] = stub.stall_before_headers
    stub_server.routes["/dicom-web/studies/1.2.3.1"] = stub.stall_before_headers
    stub_server.routes["/dicom-web/studies/1.2.3.2"] = stub.stall_in_body(files[0].read_bytes())
    pacs = client(stub_server.url, timeout=1.0)
    with pytest.raises(PacsTimeout, match="did not answer within the timeout"):
        pacs.search_studies(StudyQuery())
    summary = retrieve_studies(lib, pacs, ["1.2.3.1", "1.2.3.2"])
    assert len(summary.failed) == 2
    assert all("did not answer within the timeout" in o.error for o in summary.failed)
    assert instance_count(lib) == 0 and staging_empty(lib)


def test_cancel_keeps_complete_studies_and_drops_the_one_in_flight(stub_server, lib, tmp_path, patient_id):
    _, files = write_study(tmp_path / "s", patient_id=patient_id)
    stub_server.routes["/dicom-web/studies/1.2.3.1"] = stub.dicom_study(files)
    stub_server.routes["/dicom-web/studies/1.2.3.2"] = stub.stall_in_body(files[0].read_bytes())
    cancel = threading.Event()

    def progress(p) -> None:
        if p.done >= 1:  # the first study is in; the second is stalled half-way
            cancel.set()

    # a client timeout longer than this test's hang guard: only the cancel can end the stalled read
    summary = retrieve_studies(
        lib, client(stub_server.url, timeout=300), ["1.2.3.1", "1.2.3.2"], progress=progress, cancel=cancel, workers=2
    )
    assert summary.cancelled
    assert [o.study_uid for o in summary.retrieved] == ["1.2.3.1"]
    assert summary.imported == 1 and library_uids(lib) == {pydicom.dcmread(files[0]).SOPInstanceUID}
    assert staging_empty(lib)


def test_pipelined_retrieve_of_many_studies(orthanc, lib, tmp_path, patient_id):
    studies = []
    for i in range(12):
        uid, files = write_study(tmp_path / f"s{i}", patient_id=patient_id)
        upload(orthanc, files)
        studies.append(uid)
    summary = retrieve_studies(lib, client(orthanc.dicomweb_url), studies, workers=4)
    assert len(summary.retrieved) == 12 and summary.imported == 12
    assert {o.study_uid for o in summary.outcomes} == set(studies)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_multipart_parts_survive_any_chunking(stub_server, tmp_path, patient_id, chunk):
    """Boundaries split across network reads: every part comes out byte for byte."""
    import requests

    from app.pacs.client import iter_multipart

    _, files = write_study(tmp_path / "s", patient_id=patient_id, images=3)
    stub_server.routes["/dicom-web/studies/1.2.3.9"] = stub.dicom_study(files)
    with requests.get(f"{stub_server.url}/studies/1.2.3.9", stream=True, timeout=30) as response:
        parts = list(iter_multipart(response, chunk_size=chunk))
    assert parts == [f.read_bytes() for f in files]
