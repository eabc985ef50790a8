"""Issue 14's round trip in one test: a phantom study goes Orthanc -> app library -> analysis with
the demo bundle -> DICOM SEG + SR (core_model.dicom_results) -> STOW-RS to Orthanc, and the SEG
read back from Orthanc (WADO-RS) matches the runtime's mask at the bundle's threshold (Dice 1.0)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from app.logic.analysis import analyze_instance, instance_file
from app.pacs import PacsClient, ServerRecord, StudyQuery, retrieve_studies, send_objects
from core_model.runtime import load_bundle

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo"
PHANTOM = DEMO / "studies" / "phantom-00043.dcm"  # pneumothorax, RLE Lossless
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo_bundle():
    return load_bundle(DEMO / "bundle")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def test_orthanc_library_analysis_seg_sr_orthanc(orthanc, lib, demo_bundle, tmp_path):
    source = pydicom.dcmread(PHANTOM, stop_before_pixels=True)
    orthanc.upload(PHANTOM)
    pacs = PacsClient(ServerRecord("orthanc", orthanc.dicomweb_url))

    (hit,) = pacs.search_studies(StudyQuery(patient_id=str(source.PatientID)))
    assert hit.study_uid == source.StudyInstanceUID
    summary = retrieve_studies(lib, pacs, [hit.study_uid])
    assert summary.imported + summary.duplicates == 1 and not summary.failed

    sop = str(source.SOPInstanceUID)
    result = analyze_instance(lib, demo_bundle, sop)
    image = instance_file(lib, sop)
    from core_model.dicom_results import build_seg, build_sr

    seg = build_seg(image, result, demo_bundle)
    sr = build_sr(image, result, demo_bundle, seg=seg)
    results = send_objects(pacs, [seg, sr])
    assert [(r.sop_instance_uid, r.accepted) for r in results] == [
        (seg.SOPInstanceUID, True),
        (sr.SOPInstanceUID, True),
    ]

    # query them again from Orthanc: the study now has the image, the SEG and the SR
    (hit,) = pacs.search_studies(StudyQuery(patient_id=str(source.PatientID), modalities=()))
    assert set(hit.modalities) >= {"CR", "SEG", "SR"} and hit.instances == 3

    got = pacs.retrieve_study(hit.study_uid, tmp_path / "back")
    objects = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in got.files)}
    seg_back = objects[str(seg.SOPInstanceUID)]
    assert seg_back.SOPClassUID == SEG_STORAGE
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg_back.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {sop}
    assert seg_back.StudyInstanceUID == source.StudyInstanceUID  # same study, a new series
    assert seg_back.SeriesInstanceUID != source.SeriesInstanceUID
    assert str(sr.SOPInstanceUID) in objects
    if shutil.which("dciodvfy"):  # the objects as Orthanc returns them are still valid (dicom3tools)
        for uid in (seg.SOPInstanceUID, sr.SOPInstanceUID):
            path = next(f for f in got.files if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == uid)
            report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
            errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
            assert errors == [], errors

    runtime = demo_bundle.analyze(PHANTOM)  # the runtime's own mask, independent of the library
    expected = runtime.mask >= runtime.mask_threshold
    assert expected.any()  # a pneumothorax phantom: the test compares a real mask
    pixels = seg_back.pixel_array
    back = pixels.reshape(expected.shape) if pixels.size == expected.size else pixels
    assert back.shape == expected.shape
    assert dice(back > 0, expected) == 1.0

    # retrieving the study again into the library skips the results (not images) and adds nothing
    again = retrieve_studies(lib, pacs, [hit.study_uid])
    (outcome,) = again.outcomes
    assert outcome.ok and outcome.instances == 1 and outcome.skipped == 2
    assert again.imported == 0 and again.duplicates == 1
