"""Dataset readers: real label files parse with the right counts; bad rows are reported, not fatal."""

import math
import shutil

import numpy as np
import pytest

from core_model.data.chexpert import attach_mimic_chexpert, read_chexpert, read_mimic_chexpert
from core_model.data.covidx import CLASSES, class_index, read_covidx
from core_model.data.rle import rle_encode
from core_model.data.rsna import Box, boxes_to_mask, read_rsna, read_rsna_labels
from core_model.data.siim import read_siim, read_siim_labels
from core_model.errors import DataError


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


# ---------------------------------------------------------------- RSNA


def test_real_rsna_counts(rsna_table):
    t = rsna_table
    assert t.n_rows == 30227
    assert len(t.all_patient_ids) == len(t.target) == 26684
    assert sum(t.target.values()) == 6012
    assert sum(len(b) for b in t.boxes.values()) == 9555
    assert t.skipped == [] and t.clipped_boxes == 0 and t.dropped_boxes == 0


RSNA_CSV = """patientId,x,y,width,height,Target
neg1,,,,,0
pos1,100,200,50,60,1
pos1,300,300,10,10,1
edge,1000,1000,100,50,1
outside,2000,10,10,10,1
badtarget,,,,,2
nobox,,,,,1
mixed,,,,,0
mixed,1,1,5,5,1
noimage,,,,,0
"""


def test_rsna_bad_rows_reported_and_boxes_clipped(tmp_path):
    labels = tmp_path / "stage_2_train_labels.csv"
    labels.write_text(RSNA_CSV)
    _touch(tmp_path / "images" / "sub", "neg1.dcm", "pos1.dcm", "edge.dcm", "outside.dcm", "mixed.dcm")
    res = read_rsna(labels, tmp_path / "images")
    assert {r.id for r in res.records} == {"neg1", "pos1", "edge"}
    assert res.skip_counts() == {"bad_label": 4, "missing_image": 1}
    reasons = {s.id: s.detail for s in res.skipped}
    assert "outside" in reasons and "outside the image" in reasons["outside"]
    assert res.table.clipped_boxes == 1 and res.table.dropped_boxes == 1
    pos = next(r for r in res.records if r.id == "pos1")
    assert pos.labels == {"pneumonia": 1.0} and pos.finding == "pneumonia" and pos.patient_id == "pos1"
    assert pos.image_path.endswith("sub/pos1.dcm")
    mask = res.mask("pos1")
    assert mask.shape == (1024, 1024) and mask.sum() == 50 * 60 + 10 * 10
    assert mask[200, 100] and mask[259, 149] and not mask[260, 150]
    edge = res.mask("edge")
    assert edge.sum() == 24 * 24  # clipped at the image border
    assert not res.mask("neg1").any()
    small = res.mask("pos1", 256)  # the 1024 grid scaled to 256: 100..150 -> 25..37
    assert small.shape == (256, 256) and small[50, 25] and not small[50, 38]


def test_boxes_to_mask_truncates_like_mgca():
    m = boxes_to_mask([Box(1.7, 2.2, 3.0, 2.0)], 10, source_size=10)
    assert np.array_equal(np.argwhere(m.any(axis=0)).ravel(), [1, 2, 3])  # int(1.7)=1 .. int(4.7)=4
    assert np.array_equal(np.argwhere(m.any(axis=1)).ravel(), [2, 3])


def test_rsna_missing_column_and_nothing_usable(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("patientId,x,y,width,height\na,,,,\n")
    with pytest.raises(DataError, match="Target"):
        read_rsna_labels(bad)
    with pytest.raises(DataError, match="not found"):
        read_rsna_labels(tmp_path / "nope.csv")
    good = tmp_path / "ok.csv"
    good.write_text("patientId,x,y,width,height,Target\na,,,,,0\n")
    (tmp_path / "img").mkdir()
    with pytest.raises(DataError, match="none of the 1 labelled patients"):
        read_rsna(good, tmp_path / "img")


# ---------------------------------------------------------------- SIIM


def test_real_siim_counts(siim_table):
    t = siim_table
    assert t.n_rows == 12954
    assert len(t.rles) == 12047
    assert len(t.positives()) == 2669
    assert t.skipped == []
    assert len(t.rows) == 12954


def test_real_siim_with_the_real_dicom(tmp_path, siim_labels_path, siim_dicom_path):
    nested = tmp_path / "dicom-images-train" / "1.2.276" / "1.2.277"
    nested.mkdir(parents=True)
    shutil.copy(siim_dicom_path, nested)
    res = read_siim(siim_labels_path, tmp_path)
    assert len(res.records) == 1
    rec = res.records[0]
    assert rec.id == siim_dicom_path.stem and rec.labels == {"pneumothorax": 0.0}
    assert res.skip_counts() == {"missing_image": 12046}
    assert not res.mask(rec.id).any()


def test_siim_bad_rows(tmp_path):
    lesion = np.zeros((1024, 1024), bool)
    lesion[100:120, 300:310] = True
    lesion2 = np.zeros((1024, 1024), bool)
    lesion2[600:610, 700:720] = True
    rows = [
        ("multi", rle_encode(lesion)),
        ("multi", rle_encode(lesion2)),
        ("neg", "-1"),
        ("past", f"{1024 * 1024 - 2} 5"),
        ("both", "-1"),
        ("both", rle_encode(lesion)),
        ("", "-1"),
        ("garbage", "1 x"),
    ]
    csv_path = tmp_path / "train-rle.csv"
    csv_path.write_text("ImageId, EncodedPixels\n" + "".join(f"{i}, {r}\n" for i, r in rows))
    t = read_siim_labels(csv_path)
    assert set(t.rles) == {"multi", "neg"}
    assert {s.id for s in t.skipped} == {"past", "both", "line 8", "garbage"}
    assert all(s.reason == "bad_label" for s in t.skipped)
    assert np.array_equal(t.mask("multi"), lesion | lesion2)
    _touch(tmp_path / "img", "multi.dcm")
    res = read_siim(csv_path, tmp_path / "img")
    assert [r.id for r in res.records] == ["multi"] and res.records[0].finding == "pneumothorax"
    assert res.skip_counts() == {"bad_label": 4, "missing_image": 1}
    written = res.write_mask_pngs(tmp_path / "masks")
    assert written == 1 and res.records[0].mask_path.endswith("multi.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(res.records[0].mask_path)) > 0, lesion | lesion2)


def test_siim_missing_column(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("ImageId,Pixels\na,-1\n")
    with pytest.raises(DataError, match="EncodedPixels"):
        read_siim_labels(p)


# ---------------------------------------------------------------- COVIDx


def test_covidx_three_class_file(tmp_path):
    lines = [
        "p1 a.png normal rsna",
        "p2 b.jpg pneumonia rsna",
        "p3 c d.png COVID-19 cohen",
        "p4 e.png covid19 sirm",
        "p5 f.png normal rsna",
        "p6 short",
        "p7 a.png normal rsna",
    ]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    _touch(tmp_path / "train", "a.png", "b.jpg", "c d.png", "e.png")
    res = read_covidx(tmp_path / "train.txt", tmp_path / "train")
    assert res.version == "A" and res.classes == ("normal", "pneumonia", "covid19")
    assert [r.id for r in res.records] == ["a.png", "b.jpg", "c d.png"]
    assert [class_index(r) for r in res.records] == [0, 1, 2]
    assert res.records[2].labels == {"normal": 0.0, "pneumonia": 0.0, "covid19": 1.0}
    assert res.records[2].patient_id == "p3" and res.records[2].finding == "covid19"
    assert res.skip_counts() == {"bad_label": 2, "missing_image": 1, "duplicate": 1}


def test_covidx_binary_file(tmp_path):
    (tmp_path / "test.txt").write_text("1 x.png positive bimcv\n2 y.png negative rsna\n")
    _touch(tmp_path / "test", "x.png", "y.png")
    res = read_covidx(tmp_path / "test.txt", tmp_path / "test", split="test")
    assert res.version == "B" and CLASSES["B"] == ("negative", "covid19")
    assert [r.labels for r in res.records] == [{"negative": 0.0, "covid19": 1.0}, {"negative": 1.0, "covid19": 0.0}]
    assert all(r.split == "test" for r in res.records)


# ---------------------------------------------------------------- CheXpert / MIMIC

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)


def _chexpert(tmp_path):
    rows = [
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,,,,1.0,,-1.0,,-1.0,-1.0,0.0,,,,1.0",
        "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg,Female,68,Lateral,,,,,1.0,,,,,,,,,,",
        "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Male,40,Frontal,PA,1.0,,,,,,,,,,,,,",
        "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,40,Frontal,PA,2.0,,,,,,,,,,,,,",
    ]
    p = tmp_path / "train.csv"
    p.write_text(CHEXPERT_HEADER + "\n" + "\n".join(rows) + "\n")
    return p


@pytest.mark.parametrize("policy,expect", [("as_is", -1.0), ("ones", 1.0), ("zeros", 0.0), ("ignore", math.nan)])
def test_chexpert_uncertainty_policies(tmp_path, policy, expect):
    res = read_chexpert(_chexpert(tmp_path), uncertainty=policy)
    first = res.records[0]
    v = first.labels["pneumonia"]
    assert (math.isnan(v) and math.isnan(expect)) or v == expect
    assert first.labels["lung_opacity"] == 1.0 and first.labels["pneumothorax"] == 0.0
    assert math.isnan(first.labels["no_finding"])  # blank = not mentioned
    assert first.view == "AP" and first.patient_id == "patient00001"
    assert res.skip_counts() == {"not_frontal": 1, "bad_label": 1}


def test_chexpert_competition_policy_blank_zeros_and_image_root(tmp_path):
    csv_path = _chexpert(tmp_path)
    release = tmp_path / "data" / "CheXpert-v1.0-small"
    _touch(release / "train" / "patient00001" / "study1", "view1_frontal.jpg")
    # the root may be the release folder itself (MGCA drops the first path component)
    res = read_chexpert(csv_path, release, uncertainty="competition", blank="zeros")
    assert [r.id for r in res.records] == ["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"]
    lab = res.records[0].labels
    assert lab["edema"] == 1.0 and lab["atelectasis"] == 1.0 and lab["pneumonia"] == -1.0
    assert lab["no_finding"] == 0.0
    assert res.skip_counts()["missing_image"] == 1


def test_mimic_labels_attach_by_study(tmp_path):
    from core_model.data.records import Record

    header = (
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,"
        "Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
        "Pneumothorax,Support Devices"
    )
    p = tmp_path / "mimic-cxr-2.0.0-chexpert.csv"
    p.write_text(header + "\n10000032,50414267,,,,,,,,,1.0,,,,,\n10000032,53189527,,,,,,,,,,,,-1.0,1.0,\n")
    recs = [
        Record(id="a", image_path="/a.jpg", study_id="s50414267"),
        Record(id="b", image_path="/b.jpg", study_id="53189527", labels={"pneumonia": 0.0}),
        Record(id="c", image_path="/c.jpg", study_id="s1"),
    ]
    res = attach_mimic_chexpert(recs, p, uncertainty="ignore")
    assert [r.id for r in res.records] == ["a", "b", "c"]
    assert res.records[0].labels["no_finding"] == 1.0
    assert math.isnan(res.records[1].labels["pneumonia"]) and res.records[1].labels["pneumothorax"] == 1.0
    assert res.records[2].labels == {}
    strict = attach_mimic_chexpert(recs, read_mimic_chexpert(p)[0], require_labels=True)
    assert [r.id for r in strict.records] == ["a", "b"] and strict.skip_counts() == {"no_labels": 1}
