"""MIMIC-CXR-JPG + MIMIC-CXR reports reader on a small fake tree with the public layout."""

import csv
import gzip
import math

import pytest
from PIL import Image

from core_model.data.mimic import read_mimic
from core_model.errors import DataError

CHEXPERT = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 INDICATION:  ___ year old with cough
 FINDINGS:
 Right lower lobe opacity.
 IMPRESSION:
 Right lower lobe pneumonia.
"""

# (dicom_id, subject, study, split, view, has image, report text or None for no file)
ROWS = [
    ("d1", "10000032", "50414267", "train", "PA", True, REPORT),
    ("d2", "10000032", "50414267", "train", "LATERAL", True, REPORT),  # same study, lateral
    ("d3", "10000032", "53189527", "validate", "AP", True, "IMPRESSION: No acute process."),
    ("d4", "11000011", "51000001", "test", "AP", False, "FINDINGS: Clear."),  # image missing
    ("d5", "11000011", "51000002", "test", "PA", True, None),  # report missing
    ("d6", "12000022", "52000003", "train", "PA", True, "INDICATION: cough\nCOMPARISON: none"),  # empty text
    ("d7", "12000022", "52000004", "train", "", True, "FINDINGS: x"),  # no view
    ("d8", "13000033", "53000005", "train", "PA", True, "FINDINGS: Small pneumothorax."),  # bad label row
    ("d9", "13000033", "53000006", "bogus", "PA", True, "FINDINGS: y"),
]


def _write_csv(path, header, rows, gz=False):
    opener = (lambda p: gzip.open(p, "wt", newline="")) if gz else (lambda p: open(p, "w", newline=""))
    with opener(path) as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def build_tree(tmp_path, gz=False, with_chexpert=True):
    jpg, rep = tmp_path / "mimic-cxr-jpg", tmp_path / "mimic-cxr-reports"
    ext = ".csv.gz" if gz else ".csv"
    jpg.mkdir()
    _write_csv(
        jpg / f"mimic-cxr-2.0.0-split{ext}",
        ["dicom_id", "study_id", "subject_id", "split"],
        [(d, st, su, sp) for d, su, st, sp, *_ in ROWS],
        gz,
    )
    _write_csv(
        jpg / f"mimic-cxr-2.0.0-metadata{ext}",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows"],
        [(d, su, st, "CHEST", v, 2048) for d, su, st, _, v, *_ in ROWS],
        gz,
    )
    if with_chexpert:
        lab = {c: "" for c in CHEXPERT}
        rows = []
        for _, su, st, *_ in ROWS:
            vals = dict(lab)
            if st == "50414267":
                vals.update({"Pneumonia": "1.0", "Consolidation": "-1.0", "No Finding": ""})
            elif st == "53189527":
                vals.update({"No Finding": "1.0", "Pneumothorax": "0.0"})
            elif st == "53000005":
                vals.update({"Pneumothorax": "maybe"})
            rows.append([su, st] + [vals[c] for c in CHEXPERT])
        _write_csv(jpg / f"mimic-cxr-2.0.0-chexpert{ext}", ["subject_id", "study_id"] + CHEXPERT, rows, gz)
    for d, su, st, _, _, has_image, text in ROWS:
        folder = jpg / "files" / f"p{su[:2]}" / f"p{su}" / f"s{st}"
        folder.mkdir(parents=True, exist_ok=True)
        if has_image:
            Image.new("L", (8, 8), 50).save(folder / f"{d}.jpg")
        rfolder = rep / "files" / f"p{su[:2]}" / f"p{su}"
        rfolder.mkdir(parents=True, exist_ok=True)
        if text is not None:
            (rfolder / f"s{st}.txt").write_text(text)
    return jpg, rep


@pytest.mark.parametrize("gz", [False, True])
def test_frontal_official_split_reports_and_labels(tmp_path, gz):
    jpg, rep = build_tree(tmp_path, gz=gz)
    res = read_mimic(jpg, rep)
    by_id = {r.id: r for r in res.records}
    assert sorted(by_id) == ["d1", "d3"]
    d1 = by_id["d1"]
    assert d1.image_path == str((jpg / "files/p10/p10000032/s50414267/d1.jpg").resolve())
    assert (d1.split, d1.patient_id, d1.study_id, d1.view) == ("train", "10000032", "50414267", "PA")
    assert d1.report == "Right lower lobe pneumonia. Right lower lobe opacity."
    assert d1.labels["pneumonia"] == 1.0 and d1.labels["consolidation"] == -1.0
    assert math.isnan(d1.labels["no_finding"]) and math.isnan(d1.labels["normal"])
    assert "enlarged_cardiomediastinum" in d1.labels and d1.finding is None
    d3 = by_id["d3"]
    assert d3.split == "val" and d3.view == "AP" and d3.labels["normal"] == 1.0 and d3.labels["pneumothorax"] == 0.0
    reasons = {s.id: s.reason for s in res.skipped}
    assert reasons == {
        "d2": "not_frontal",
        "d4": "missing_image",
        "d5": "missing_report",
        "d6": "empty_report",
        "d7": "not_frontal",
        "d8": "bad_label",
        "d9": "bad_split",
    }


def test_filter_off_keeps_lateral_and_images_only_mode(tmp_path):
    jpg, rep = build_tree(tmp_path, with_chexpert=False)
    res = read_mimic(jpg, rep, frontal_only=False)
    ids = {r.id for r in res.records}
    assert {"d1", "d2", "d3", "d7", "d8"} <= ids
    assert {r.id: r.view for r in res.records}["d2"] == "LATERAL"
    assert all(r.labels == {} for r in res.records)  # no CheXpert file: no labels, no error
    img_only = read_mimic(jpg, None, require_report=False)
    assert {r.id for r in img_only.records} == {"d1", "d3", "d5", "d6", "d8"}
    assert all(r.report is None for r in img_only.records)


def test_missing_files_and_columns_are_named(tmp_path):
    jpg, rep = build_tree(tmp_path)
    with pytest.raises(DataError, match="reports folder not given"):
        read_mimic(jpg, None)
    (jpg / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(DataError, match="metadata"):
        read_mimic(jpg, rep)
    assert read_mimic(jpg, rep, frontal_only=False).records  # metadata only needed for the view filter
    (jpg / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,subject_id,split\nd1,10000032,train\n")
    with pytest.raises(DataError) as exc:
        read_mimic(jpg, rep, frontal_only=False)
    assert "'study_id'" in str(exc.value) and "dicom_id, subject_id, split" in str(exc.value)
    (jpg / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DataError, match="split"):
        read_mimic(jpg, rep, frontal_only=False)
    with pytest.raises(DataError, match="not found"):
        read_mimic(tmp_path / "nowhere", rep)
