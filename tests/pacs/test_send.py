"""STOW-RS of result objects to a real Orthanc: one clear result per object."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.pacs import PacsAuthError, PacsClient, PacsUnreachable, ServerRecord, send_objects
from tests.imaging.builders import BASIC_TEXT_SR, write_sr
from tests.pacs.orthanc import free_port

pytestmark = pytest.mark.timeout(120)


def test_each_object_gets_its_own_result(orthanc, tmp_path, patient_id):
    sr_path = write_sr(tmp_path / "sr.dcm", patient_id=patient_id)
    second = pydicom.dcmread(write_sr(tmp_path / "sr2.dcm", patient_id=patient_id))
    refused = Dataset()  # no Study / Series Instance UID: Orthanc cannot file it
    refused.file_meta = FileMetaDataset()
    refused.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    refused.SOPClassUID, refused.SOPInstanceUID, refused.Modality = BASIC_TEXT_SR, generate_uid(), "SR"
    (tmp_path / "notes.txt").write_text("not DICOM")
    pacs = PacsClient(ServerRecord("o", orthanc.dicomweb_url))

    results = send_objects(pacs, [sr_path, second, refused, tmp_path / "notes.txt", tmp_path / "missing.dcm"])
    assert [r.accepted for r in results] == [True, True, False, False, False]
    assert results[0].sop_instance_uid == pydicom.dcmread(sr_path).SOPInstanceUID and results[0].path == str(sr_path)
    assert results[1].path == "SR object"
    assert results[2].reason == "refused by the server: cannot understand (0xC000)"
    assert results[3].reason.startswith("not sent: not a readable DICOM file")
    assert results[4].reason == "not sent: no such file"
    stored = {i["SOPInstanceUID"] for i in orthanc.study_instances(str(second.StudyInstanceUID))}
    assert stored == {str(second.SOPInstanceUID)}


def test_send_to_a_server_that_refuses_or_is_gone(orthanc_auth, tmp_path):
    sr = write_sr(tmp_path / "sr.dcm")
    with pytest.raises(PacsAuthError, match="HTTP 401"):
        send_objects(PacsClient(ServerRecord("o", orthanc_auth.dicomweb_url, "basic", "reader"), "wrong"), [sr])
    with pytest.raises(PacsUnreachable):
        send_objects(PacsClient(ServerRecord("o", f"http://127.0.0.1:{free_port()}/dicom-web")), [sr])
