"""Results as DICOM SEG / SR / Secondary Capture and as plain files (core_model.dicom_results), on
the real demo bundle and phantom DICOMs written here; read back with highdicom, pydicom and
nibabel, and checked with dciodvfy when dicom3tools is installed."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.dicom_results.conftest import NORMAL, dciodvfy_errors


def read(path: Path):
    import pydicom

    return pydicom.dcmread(path)


def text_values(ds) -> list[str]:
    """Every string value in ``ds``, nested sequences included."""
    out = []
    for elem in ds.iterall():
        if elem.VR in ("UT", "LT", "ST", "LO", "SH", "UI", "CS") and elem.value:
            out.append(str(elem.value))
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def written(tmp_path, bundle, spatial_source):
    from core_model.dicom_results import write_results

    analysis = bundle.analyze(str(spatial_source))
    assert analysis.mask_area_fraction > 0.01  # the demo model finds the phantom's pneumothorax
    heat = bundle.heatmap(analysis, "pneumothorax")
    out = write_results(
        spatial_source,
        analysis,
        bundle,
        dicom_dir=tmp_path / "out",
        plain_dir=tmp_path / "out",
        heatmap=heat,
        heatmap_phrase="pneumothorax",
    )
    return out, analysis, heat, read(spatial_source)


def test_seg_reads_back_with_the_source_references_and_the_runtime_mask(written, bundle):
    import highdicom as hd

    out, analysis, _, src = written
    seg = hd.seg.segread(out.dicom["seg"])
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY"
    # same study and Frame of Reference, a new series, the source image referenced
    assert seg.StudyInstanceUID == src.StudyInstanceUID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert list(seg.get_source_image_uids()) == [(src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID)]
    # pixel agreement with the runtime's mask at the bundle's threshold: Dice 1.0, every pixel
    pixels = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]
    expected = analysis.mask >= analysis.mask_threshold
    assert pixels.shape == expected.shape == (src.Rows, src.Columns)
    assert dice(pixels, expected) == 1.0 and np.array_equal(pixels.astype(bool), expected)
    assert float(expected.mean()) == pytest.approx(analysis.mask_area_fraction)
    # the algorithm identification: bundle id, version and model name
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "36118008"  # SCT pneumothorax
    alg = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert bundle.id in alg.AlgorithmVersion and bundle.version in alg.AlgorithmVersion
    assert alg.AlgorithmName == bundle.card["name"]
    assert bundle.id in segment.SegmentLabel
    # research use and the synthetic demo model, in the series description
    assert "RESEARCH USE ONLY" in seg.SeriesDescription and "SYNTHETIC" in seg.SeriesDescription
    # no patient attribute leaks into a file or folder name
    assert out.dicom_folder.name.startswith("img-") and set(out.key) <= set("0123456789abcdef")


def test_fractional_seg_holds_the_probabilities(tmp_path, bundle, spatial_source):
    import highdicom as hd

    from core_model.dicom_results import build_seg

    analysis = bundle.analyze(str(spatial_source))
    ds = build_seg(spatial_source, analysis, bundle, fractional=True)
    path = tmp_path / "frac.dcm"
    ds.save_as(path, enforce_file_format=True)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    assert int(seg.MaximumFractionalValue) == 255
    stored = np.asarray(seg.pixel_array, dtype=np.float64).reshape(analysis.mask.shape) / 255.0
    assert np.abs(stored - analysis.mask).max() <= 0.5 / 255 + 1e-6
    # a different object than the binary SEG of the same image (its own SOP Instance UID)
    assert ds.SOPInstanceUID != build_seg(spatial_source, analysis, bundle).SOPInstanceUID


def _groups(sr):
    return sr.content.get_image_measurement_groups(), sr.content.get_planar_roi_measurement_groups()


def test_sr_numbers_equal_the_analysis_and_reference_source_and_seg(written, bundle):
    import highdicom as hd

    out, analysis, _, src = written
    sr = hd.sr.srread(out.dicom["sr"])
    seg = read(out.dicom["seg"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.VerificationFlag == "UNVERIFIED"
    # evidence: the source image and the SEG
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for series in s.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert evidence == {src.SOPInstanceUID, seg.SOPInstanceUID}
    groups, planar = _groups(sr)
    by_finding = {g.finding_type.meaning: g for g in groups if g.finding_type is not None}
    meanings = {"normal": "Normal", "pneumonia": "Pneumonia", "covid19": "COVID-19"}
    for name in bundle.classes:
        g = by_finding[meanings[name]]
        values = {m.name.meaning: m.value for m in g.get_measurements()}
        assert values["Probability"] == pytest.approx(analysis.probabilities[name], abs=1e-9)
        assert values["Threshold Value"] == pytest.approx(bundle.thresholds[name], abs=1e-9)
        (evaluation,) = g.get_qualitative_evaluations()
        present = analysis.probabilities[name] >= bundle.thresholds[name]
        assert evaluation.value.meaning == ("Present" if present else "Absent")
        assert g.source_images[0].referenced_sop_instance_uid == src.SOPInstanceUID
    # the mask: area in mm2 from PixelSpacing, the fraction, the threshold, the SEG referenced
    (mask_group,) = planar
    assert mask_group.finding_type.meaning == "Pneumothorax"
    ref = mask_group.referenced_segmentation_frame
    assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
    values = {m.name.meaning: m.value for m in mask_group.get_measurements()}
    pixels = int((analysis.mask >= analysis.mask_threshold).sum())
    assert values["Area"] == pytest.approx(pixels * 0.5 * 0.25)
    assert values["Mask area as a percentage of the image"] == pytest.approx(100 * analysis.mask_area_fraction)
    assert values["Threshold Value"] == pytest.approx(analysis.mask_threshold)
    # the domain state with its score, the intended use and the synthetic-model marking
    (domain,) = [g for g in groups if g.finding_type is None]
    evaluations = {(q.name.meaning, q.value.meaning) for q in domain.get_qualitative_evaluations()}
    assert ("Training domain state", "In the model's training domain") in evaluations
    assert analysis.domain.status == "in_domain"
    assert ("Intended use", "Research use only - not for diagnostic use.") in evaluations
    assert ("Intended use", "Demo model trained on synthetic phantoms") in evaluations
    scores = {m.name.meaning: m.value for m in domain.get_measurements()}
    assert scores["Training domain distance score"] == pytest.approx(analysis.domain.score)
    assert scores["Training domain score threshold"] == pytest.approx(analysis.domain.threshold)
    # the model's identity: algorithm name / version and the bundle's content hash
    texts = text_values(read(out.dicom["sr"]))
    assert any(bundle.content_hash in t for t in texts)
    assert bundle.card["name"] in texts and any(bundle.id in t and bundle.version in t for t in texts)
    assert "RESEARCH USE ONLY" in sr.SeriesDescription and "SYNTHETIC" in sr.SeriesDescription


def test_heatmap_secondary_capture_burns_the_overlay_into_the_display(written, bundle):
    from core_model.dicom_results.heatmap import DEFAULT_THRESHOLD
    from core_model.imaging.dicom import render_dataset

    out, _analysis, heat, src = written
    sc = read(out.dicom["heatmap"])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.PhotometricInterpretation == "RGB"
    assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.SeriesInstanceUID != src.SeriesInstanceUID
    assert "pneumothorax" in sc.SeriesDescription and "RESEARCH USE ONLY" in sc.SeriesDescription
    assert "SYNTHETIC" in sc.SeriesDescription
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    rgb = sc.pixel_array
    gray = render_dataset(src)
    assert rgb.shape == (src.Rows, src.Columns, 3)
    cold = heat < DEFAULT_THRESHOLD
    assert cold.any() and (~cold).any()
    assert np.array_equal(rgb[cold], np.repeat(gray[cold][:, None], 3, axis=1))  # untouched where cold
    assert not np.array_equal(rgb[~cold], np.repeat(gray[~cold][:, None], 3, axis=1))  # coloured where hot


def test_plain_files_on_the_original_grid_and_the_json(written, bundle):
    import nibabel as nib
    from PIL import Image

    out, analysis, _, src = written
    binary = analysis.mask >= analysis.mask_threshold
    png = np.asarray(Image.open(out.plain["mask_png"]))
    assert png.shape == binary.shape and np.array_equal(png == 255, binary) and set(np.unique(png)) <= {0, 255}
    nii = nib.load(out.plain["mask_nifti"])
    data = np.asarray(nii.dataobj)
    assert data.shape == (src.Columns, src.Rows, 1)
    assert np.array_equal(data[:, :, 0].T.astype(bool), binary)
    assert np.allclose(np.diag(nii.affine)[:3], [0.25, 0.5, 1.0])  # column, row spacing (mm)
    record = json.loads(out.plain["json"].read_text())
    assert record["notice"] == "Research use only - not for diagnostic use."
    assert record["synthetic_model"] is True and any("synthetic" in n for n in record["notices"])
    assert record["model"] == dict(
        id=bundle.id, version=bundle.version, content_hash=bundle.content_hash, name=bundle.card["name"], synthetic=True
    )
    for c in record["classes"]:
        assert c["probability"] == pytest.approx(analysis.probabilities[c["name"]], abs=1e-12)
        assert c["threshold"] == pytest.approx(bundle.thresholds[c["name"]], abs=1e-12)
        assert c["present"] == (c["probability"] >= c["threshold"])
    assert record["mask"]["area_fraction"] == pytest.approx(analysis.mask_area_fraction)
    assert record["mask"]["area_pixels"] == int(binary.sum())
    assert record["mask"]["area_mm2"] == pytest.approx(binary.sum() * 0.125)
    assert record["domain"] == analysis.domain.to_dict()
    assert record["source"]["sop_instance_uid"] == src.SOPInstanceUID
    assert record["dicom"]["seg"]["sop_instance_uid"] == read(out.dicom["seg"]).SOPInstanceUID
    assert record["heatmap"] == {"phrase": "pneumothorax"}
    text = out.plain["json"].read_text()
    assert "passwd" not in text and "evil" not in text and "../ID" not in text  # no patient attribute


def test_hostile_patient_attributes_never_reach_a_file_name(tmp_path, written):
    out, *_ = written
    files = all_files(tmp_path / "out")
    assert {p.parent.name for p in files} == {out.dicom_folder.name}
    assert sorted(p.name for p in files) == sorted(
        ["seg.dcm", "sr.dcm", "heatmap.dcm", "mask.png", "mask.nii.gz", "results.json"]
    )
    assert all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in files)
    assert not any(part.startswith(".") for p in files for part in p.relative_to(tmp_path / "out").parts)
    assert not (tmp_path / "etc").exists() and not (tmp_path / "out" / "..").resolve().joinpath("ID").exists()


def test_writing_again_replaces_the_same_objects(tmp_path, bundle, spatial_source):
    from core_model.dicom_results import write_dicom_results

    analysis = bundle.analyze(str(spatial_source))
    first = write_dicom_results(spatial_source, analysis, bundle, tmp_path / "d")
    uids = [read(p).SOPInstanceUID for p in first]
    again = write_dicom_results(spatial_source, analysis, bundle, tmp_path / "d")
    assert again == first and [read(p).SOPInstanceUID for p in again] == uids
    assert len(all_files(tmp_path / "d")) == 2  # SEG + SR, no duplicates, no leftovers


def test_a_plain_cr_without_frame_of_reference_or_spacing(tmp_path, bundle, bare_source):
    import highdicom as hd

    from core_model.dicom_results import write_results

    analysis = bundle.analyze(str(bare_source))
    out = write_results(bare_source, analysis, bundle, dicom_dir=tmp_path / "o", plain_dir=tmp_path / "o")
    seg = hd.seg.segread(out.dicom["seg"])
    src = read(bare_source)
    assert "FrameOfReferenceUID" not in src and "FrameOfReferenceUID" not in seg
    pixels = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])[0, :, :, 0]
    assert dice(pixels, analysis.mask >= analysis.mask_threshold) == 1.0
    sr = hd.sr.srread(out.dicom["sr"])
    (mask_group,) = sr.content.get_planar_roi_measurement_groups()
    names = {m.name.meaning for m in mask_group.get_measurements()}
    assert "Area" not in names and "Mask area as a percentage of the image" in names  # no spacing: no mm2
    record = json.loads(out.plain["json"].read_text())
    assert record["mask"]["area_mm2"] is None and record["source"]["pixel_spacing_mm"] is None
    assert record["source"]["frame_of_reference_uid"] is None


def test_the_demo_studies_imager_pixel_spacing_gives_the_detector_area(tmp_path, bundle):
    from core_model.dicom_results import write_results
    from tests.dicom_results.conftest import PNEUMOTHORAX

    analysis = bundle.analyze(str(PNEUMOTHORAX))
    out = write_results(PNEUMOTHORAX, analysis, bundle, plain_dir=tmp_path / "o")
    record = json.loads(out.plain["json"].read_text())
    spacing = [float(v) for v in read(PNEUMOTHORAX).ImagerPixelSpacing]
    assert record["source"]["pixel_spacing_from"] == "ImagerPixelSpacing"
    assert record["mask"]["area_mm2"] == pytest.approx(record["mask"]["area_pixels"] * spacing[0] * spacing[1])
    assert out.dicom == {} and out.dicom_folder is None  # only what was asked for


def test_a_png_source_gets_the_plain_files_and_says_why_not_dicom(tmp_path, bundle, spatial_source):
    from PIL import Image

    from core_model.dicom_results import NotDicomSourceError, build_sr, write_dicom_results, write_results
    from core_model.imaging.preprocess import load_display

    png = tmp_path / "image.png"
    Image.fromarray(load_display(spatial_source)).save(png)
    analysis = bundle.analyze(str(png))
    out = write_results(png, analysis, bundle, dicom_dir=tmp_path / "d", plain_dir=tmp_path / "p")
    assert out.dicom == {} and sorted(out.plain) == ["json", "mask_nifti", "mask_png"]
    assert out.notes and "DICOM SEG and SR need a DICOM source image" in out.notes[0]
    record = json.loads(out.plain["json"].read_text())
    assert record["notes"] == out.notes and record["source"]["kind"] == "png" and record["dicom"] == {}
    assert not (tmp_path / "d").exists() or all_files(tmp_path / "d") == []
    with pytest.raises(NotDicomSourceError, match="need a DICOM source image"):
        write_dicom_results(png, analysis, bundle, tmp_path / "d2")
    with pytest.raises(NotDicomSourceError):
        build_sr(png, analysis, bundle)
    assert not (tmp_path / "d2").exists() or all_files(tmp_path / "d2") == []


def test_an_analysis_of_another_image_is_refused_and_nothing_is_written(tmp_path, bundle, spatial_source):
    from core_model.dicom_results import ResultsError, write_results

    other = bundle.analyze(str(NORMAL))  # another size
    with pytest.raises(ResultsError, match="belongs to another image"):
        write_results(spatial_source, other, bundle, dicom_dir=tmp_path / "o", plain_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists() or all_files(tmp_path / "o") == []


def test_a_heatmap_of_another_size_is_refused_before_anything_is_written(tmp_path, bundle, spatial_source):
    from core_model.dicom_results import ResultsError, write_results

    analysis = bundle.analyze(str(spatial_source))
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "img-earlier").mkdir()
    with pytest.raises(ResultsError, match="the heatmap is 8x8 but the image is"):
        write_results(
            spatial_source,
            analysis,
            bundle,
            dicom_dir=out_dir,
            plain_dir=out_dir,
            heatmap=np.zeros((8, 8), np.float32),
            heatmap_phrase="pneumothorax",
        )
    assert [p.name for p in out_dir.iterdir()] == ["img-earlier"]  # no staged or half-written folder


@pytest.mark.parametrize("which", ["spatial", "bare", "demo"])
def test_dciodvfy_reports_no_errors_on_seg_sr_and_secondary_capture(tmp_path, bundle, which, request):
    from core_model.dicom_results import build_seg, write_results
    from tests.dicom_results.conftest import PNEUMOTHORAX

    source = {"spatial": "clean_spatial_source", "bare": "bare_source"}.get(which)
    path = request.getfixturevalue(source) if source else PNEUMOTHORAX
    analysis = bundle.analyze(str(path))
    heat = bundle.heatmap(analysis, "pneumothorax")
    out = write_results(path, analysis, bundle, dicom_dir=tmp_path / "o", heatmap=heat, heatmap_phrase="pneumothorax")
    fractional = tmp_path / "fractional-seg.dcm"
    build_seg(path, analysis, bundle, fractional=True).save_as(fractional, enforce_file_format=True)
    assert sorted(out.dicom) == ["heatmap", "seg", "sr"]
    for written in [*out.dicom.values(), fractional]:
        errors, warnings = dciodvfy_errors(written)
        assert errors == [], (written.name, errors)
        # the only warnings: our private coding scheme (99CXRADAPTOR) is not a defined term
        assert all("99CXRADAPTOR" in w for w in warnings), (written.name, warnings)


def test_a_multi_valued_patient_name_is_kept_as_the_source_has_it_and_never_logged(
    tmp_path, bundle, spatial_source, caplog
):
    """The hostile source's PatientName holds a backslash (a second value): highdicom would refuse
    it and log it; our objects carry the source's own element, and no log line names it."""
    from core_model.dicom_results import write_dicom_results

    caplog.set_level("DEBUG")
    analysis = bundle.analyze(str(spatial_source))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = write_dicom_results(spatial_source, analysis, bundle, tmp_path / "o")
    src = read(spatial_source)
    for p in paths:
        assert read(p).PatientName == src.PatientName and read(p).PatientID == src.PatientID
    logged = caplog.text + " ".join(str(w.message) for w in caught)
    assert "passwd" not in logged and "evil" not in logged


def test_an_analysis_without_a_mask_gives_an_sr_without_a_seg(tmp_path, bundle, clean_spatial_source):
    """What a bundle without a segmentation head produces: no SEG, no mask group, no mask files."""
    import dataclasses

    import highdicom as hd

    from core_model.dicom_results import ResultsError, build_seg, write_results

    analysis = dataclasses.replace(
        bundle.analyze(str(clean_spatial_source)), mask=None, mask_threshold=None, mask_area_fraction=None
    )
    out = write_results(clean_spatial_source, analysis, bundle, dicom_dir=tmp_path / "o", plain_dir=tmp_path / "o")
    assert sorted(out.dicom) == ["sr"] and sorted(out.plain) == ["json"]
    sr = hd.sr.srread(out.dicom["sr"])
    assert sr.content.get_planar_roi_measurement_groups() == []
    assert len(sr.content.get_image_measurement_groups()) == len(bundle.classes) + 1  # + the domain group
    assert json.loads(out.plain["json"].read_text())["mask"] is None
    with pytest.raises(ResultsError, match="no segmentation head"):
        build_seg(clean_spatial_source, analysis, bundle)


def test_a_real_radiograph_out_of_the_demo_models_domain_says_so(tmp_path, bundle):
    import highdicom as hd

    from core_model.dicom_results import write_results
    from tests.real_data import real_file

    path = real_file("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    analysis = bundle.analyze(str(path))
    assert analysis.domain.status == "out_of_domain"
    out = write_results(path, analysis, bundle, dicom_dir=tmp_path / "o", plain_dir=tmp_path / "o")
    sr = hd.sr.srread(out.dicom["sr"])
    (domain,) = [g for g in sr.content.get_image_measurement_groups() if g.finding_type is None]
    evaluations = [(q.name.meaning, q.value.meaning) for q in domain.get_qualitative_evaluations()]
    assert ("Training domain state", "Out of the model's training domain") in evaluations
    reasons = [v for n, v in evaluations if n == "Reason for the training domain state"]
    assert reasons and len(reasons) == len(analysis.domain.reasons)
    record = json.loads(out.plain["json"].read_text())
    assert record["domain"]["status"] == "out_of_domain" and record["domain"]["reasons"] == list(
        analysis.domain.reasons
    )
    seg = read(out.dicom["seg"])
    src = read(path)
    assert seg.StudyInstanceUID == src.StudyInstanceUID and (seg.Rows, seg.Columns) == (src.Rows, src.Columns)
    # dciodvfy: the only errors are the source's own, in the patient attributes we must copy as
    # they are (this file's Patient's Age "62" is not a valid AS value)
    source_errors, _ = dciodvfy_errors(path)
    for written in out.dicom.values():
        errors, _warnings = dciodvfy_errors(written)
        assert set(errors) <= set(source_errors), (written.name, errors)


def test_dicom_then_json_into_one_folder_keeps_both(tmp_path, bundle, clean_spatial_source):
    from core_model.dicom_results import write_results

    analysis = bundle.analyze(str(clean_spatial_source))
    first = write_results(clean_spatial_source, analysis, bundle, dicom_dir=tmp_path / "r")
    second = write_results(clean_spatial_source, analysis, bundle, plain_dir=tmp_path / "r")
    assert first.dicom_folder == second.plain_folder
    names = sorted(p.name for p in second.plain_folder.iterdir())
    assert names == sorted(["seg.dcm", "sr.dcm", "mask.png", "mask.nii.gz", "results.json"])
    assert [p.name for p in (tmp_path / "r").iterdir()] == [second.plain_folder.name]
