"""The generic CSV / JSONL manifest reader and writer."""

import gzip
import json
import math

import numpy as np
import pytest
from PIL import Image

from core_model.data.manifest import parse_label, read_manifest, write_manifest
from core_model.errors import DataError


def _png(path, value=100, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        _png(tmp_path / "imgs" / f"{name}.png")
    _png(tmp_path / "masks" / "a.png", 255)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return tmp_path


def test_csv_manifest_relative_paths_labels_optional_columns_and_skips(folder):
    rows = [
        {
            "id": "1",
            "image": "imgs/a.png",
            "report": "FINDINGS: Left pneumothorax.\nIMPRESSION: Pneumothorax.",
            "split": "train",
            "patient_id": "p1",
            "study_id": "s1",
            "view": "pa",
            "finding": "Pneumothorax",
            "label_pneumothorax": "1",
            "label_normal": "0",
            "mask": "masks/a.png",
            "lesion_mask": "masks/a.png",
        },
        {
            "id": "2",
            "image": "imgs/b.png",
            "report": "Lungs clear.",
            "split": "validate",
            "label_pneumothorax": "",
            "label_normal": "1.0",
        },
        {"id": "3", "image": "imgs/missing.png", "report": "x"},
        {"id": "4", "image": "imgs/c.png", "report": "   "},
        {"id": "5", "image": "imgs/d.png", "report": "ok", "label_normal": "yes please"},
        {"id": "6", "image": "imgs/e.png", "report": "ok", "split": "holdout"},
        {"id": "1", "image": "imgs/f.png", "report": "duplicate id"},
        {"id": "8", "image": "imgs/g.png", "report": "ok", "mask": "masks/nope.png"},
        {"id": "9", "image": "", "report": "ok"},
        {
            "id": "10",
            "image": str((folder / "imgs" / "g.png").resolve()),
            "report": "absolute path",
            "split": "TEST",
            "label_normal": "-1",
        },
    ]
    path = write_manifest(folder / "manifest.csv", rows)
    assert not list(folder.glob("*.part"))
    res = read_manifest(path)
    by_id = {r.id: r for r in res.records}
    assert sorted(by_id) == ["1", "10", "2"]
    r1 = by_id["1"]
    assert r1.image_path == str((folder / "imgs" / "a.png").resolve())
    assert r1.report == "Pneumothorax. Left pneumothorax."  # the paper's IMPRESSION + FINDINGS
    assert (r1.split, r1.patient_id, r1.study_id, r1.view, r1.finding) == ("train", "p1", "s1", "PA", "pneumothorax")
    assert r1.labels == {"pneumothorax": 1.0, "normal": 0.0}
    assert r1.mask_path == r1.lesion_mask_path == str((folder / "masks" / "a.png").resolve())
    r2 = by_id["2"]
    assert r2.split == "val" and math.isnan(r2.labels["pneumothorax"]) and r2.labels["normal"] == 1.0
    assert r2.mask_path is None and r2.finding is None and r2.report == "Lungs clear."
    assert by_id["10"].split == "test" and by_id["10"].labels["normal"] == -1.0  # -1: uncertain
    assert math.isnan(by_id["10"].labels["pneumothorax"])  # blank cell: unknown
    reasons = {s.id: s.reason for s in res.skipped}
    assert reasons == {
        "3": "missing_image",
        "4": "empty_report",
        "5": "bad_label",
        "6": "bad_split",
        "1": "duplicate_id",
        "8": "missing_mask",
        "9": "missing_image",
    }
    assert res.skip_counts()["missing_image"] == 2
    assert "3 usable; 7 skipped" in res.summary()


def test_missing_required_column_names_it_and_the_columns_found(tmp_path):
    (tmp_path / "m.csv").write_text("path,text\na.png,hello\n")
    with pytest.raises(DataError) as exc:
        read_manifest(tmp_path / "m.csv")
    msg = str(exc.value)
    assert "'image'" in msg and "path, text" in msg
    (tmp_path / "n.csv").write_text("image,label_x\na.png,1\n")
    with pytest.raises(DataError, match="'report'"):
        read_manifest(tmp_path / "n.csv")
    # reports are optional when asked
    _png(tmp_path / "a.png")
    res = read_manifest(tmp_path / "n.csv", require_report=False)
    assert [r.labels for r in res.records] == [{"x": 1.0}]
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_manifest(tmp_path / "empty.csv")


def test_jsonl_with_labels_object_bad_lines_and_gzip(folder):
    lines = [
        json.dumps({"image": "imgs/a.png", "report": "IMPRESSION: Normal.", "labels": {"normal": 1, "pneumonia": 0}}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"image": "imgs/b.png", "report": "Opacity.", "labels": {"pneumonia": None}, "label_covid19": 1}),
        "",
    ]
    (folder / "m.jsonl").write_text("\n".join(lines))
    res = read_manifest(folder / "m.jsonl")
    assert [r.id for r in res.records] == ["imgs/a.png", "imgs/b.png"]  # id defaults to the image path
    assert res.records[0].labels == {"normal": 1.0, "pneumonia": 0.0}
    assert math.isnan(res.records[1].labels["pneumonia"]) and res.records[1].labels["covid19"] == 1.0
    assert [s.reason for s in res.skipped] == ["bad_row", "bad_row"]
    with gzip.open(folder / "m.jsonl.gz", "wt") as fh:
        fh.write("\n".join(lines))
    assert len(read_manifest(folder / "m.jsonl.gz").records) == 2
    (folder / "noimage.jsonl").write_text(json.dumps({"report": "x"}) + "\n")
    with pytest.raises(DataError, match="'image'.*columns found: report"):
        read_manifest(folder / "noimage.jsonl")


def test_verify_images_finds_undecodable_files_only_when_asked(folder):
    write_manifest(
        folder / "m.csv", [{"image": "imgs/a.png", "report": "ok"}, {"image": "imgs/broken.png", "report": "ok"}]
    )
    assert len(read_manifest(folder / "m.csv").records) == 2
    res = read_manifest(folder / "m.csv", verify_images=True)
    assert [r.id for r in res.records] == ["imgs/a.png"]
    assert [(s.id, s.reason) for s in res.skipped] == [("imgs/broken.png", "unreadable_image")]


def test_raw_text_mode_and_other_image_column(folder):
    write_manifest(
        folder / "m.csv",
        [
            {"image": "imgs/a.png", "dicom": "imgs/b.png", "report": "INDICATION: x\nFINDINGS: y"},
            {"image": "imgs/c.png", "dicom": "", "report": "z"},
        ],
    )
    raw = read_manifest(folder / "m.csv", text="raw")
    assert raw.records[0].report == "INDICATION: x FINDINGS: y"
    alt = read_manifest(folder / "m.csv", image_column="dicom")
    assert [r.image_path for r in alt.records] == [str((folder / "imgs" / "b.png").resolve())]
    assert [s.reason for s in alt.skipped] == ["missing_image"]


def test_jsonl_writer_round_trip(folder):
    rows = [{"image": "imgs/a.png", "report": 'Ünïcode, "quotes", newline\nhere', "label_x": 1}]
    write_manifest(folder / "out.jsonl", rows)
    res = read_manifest(folder / "out.jsonl", text="raw")
    assert res.records[0].report == 'Ünïcode, "quotes", newline here' and res.records[0].labels == {"x": 1.0}


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1", 1.0),
        ("0.0", 0.0),
        ("-1", -1.0),
        (1, 1.0),
        (True, 1.0),
        ("", math.nan),
        (None, math.nan),
        ("nan", math.nan),
    ],
)
def test_parse_label_values(value, expected):
    got = parse_label(value)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize("value", ["2", "0.5", "positive"])
def test_parse_label_rejects_other_values(value):
    with pytest.raises(ValueError):
        parse_label(value)
