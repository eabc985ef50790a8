"""The reader registry (core_model.data.readers): one table keyed by data.kind for image-report
records and one for labelled records, on real phantom sets and real manifests; clear errors for an
unknown kind or a missing key."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from core_model.data import readers
from core_model.data.manifest import read_manifest
from core_model.data.readers import read_dataset, read_labeled, reader_kinds, register_reader
from core_model.data.records import ReadResult, Record
from core_model.errors import ConfigError, DataError, UserError


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reg") / "phantoms"
    return {"kind": "phantoms", "path": str(folder), "n": 16, "seed": 4, "dicom": "none"}


def _manifest(tmp_path, rows):
    for r in rows:
        Image.fromarray(np.full((32, 32), 90, np.uint8)).save(tmp_path / r["image"])
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_the_kinds_each_table_serves():
    assert reader_kinds() == ["phantoms", "manifest", "mimic", "openi", "webdataset"]
    assert reader_kinds(labeled=True) == [
        "phantoms",
        "manifest",
        "rsna",
        "siim",
        "covidx",
        "chexpert",
        "chexpert5x200",
        "ms_cxr",
    ]


def test_unknown_kind_lists_the_kinds_there_are():
    with pytest.raises(ConfigError, match=r"unknown data.kind 'nih': phantoms, manifest, mimic, openi or webdataset$"):
        read_dataset({"kind": "nih"})
    with pytest.raises(
        ConfigError,
        match=r"unknown data.kind 'mimic' for fine-tuning: phantoms, manifest, rsna, "
        r"siim, covidx, chexpert, chexpert5x200, ms_cxr$",
    ):
        read_labeled({"kind": "mimic"}, "classification")
    with pytest.raises(ConfigError, match="unknown data.kind None"):
        read_dataset({})


@pytest.mark.parametrize(
    "data, task, needle",
    [
        ({"kind": "manifest"}, None, "data.path must name the manifest CSV/JSONL"),
        ({"kind": "phantoms"}, None, "data.path must name the folder of the phantom set"),
        ({"kind": "mimic", "images": "x"}, None, "data.images (MIMIC-CXR-JPG root) and data.reports"),
        ({"kind": "openi"}, None, "data.path must name the Open-I reports archive"),
        ({"kind": "webdataset"}, None, "data.path must name the webdataset shards"),
        ({"kind": "manifest"}, "classification", "data.path must give the manifest CSV/JSONL"),
        ({"kind": "rsna", "path": "labels.csv"}, "classification", "data.images must give the RSNA DICOM folder"),
        ({"kind": "siim"}, "segmentation", "data.path must give the SIIM train-rle.csv"),
        (
            {"kind": "covidx", "path": "train.txt"},
            "classification",
            "data.test_path must give the COVIDx test label file",
        ),
        ({"kind": "chexpert"}, "classification", "data.path must give the CheXpert CSV"),
        ({"kind": "chexpert5x200"}, "classification", "data.path must give the CheXpert CSV (train.csv)"),
        ({"kind": "ms_cxr"}, "classification", "data.path must give the MS-CXR CSV"),
        ({"kind": "rsna", "fraction": 0}, "classification", "data.fraction must be in (0, 1], not 0.0"),
    ],
)
def test_a_missing_key_is_a_config_error_that_names_it(data, task, needle):
    with pytest.raises(ConfigError) as err:
        read_dataset(data) if task is None else read_labeled(data, task)
    assert needle in str(err.value)
    assert isinstance(err.value, UserError)  # the CLIs print it as one line


def test_phantoms_are_generated_when_missing_and_read_like_their_manifest(phantom_data):
    result = read_dataset(phantom_data)
    assert len(result.records) == 16 and not result.skipped
    assert all(r.report and r.split in ("train", "val", "test") for r in result.records)
    again = read_manifest(readers.ensure_phantom_manifest(phantom_data))  # reused, not regenerated
    assert [r.id for r in again.records] == [r.id for r in result.records]
    manifest = read_dataset({"kind": "manifest", "path": phantom_data["path"] + "/manifest.csv"})
    assert [(r.id, r.report) for r in manifest.records] == [(r.id, r.report) for r in result.records]


def test_labelled_phantoms_classification_and_segmentation(phantom_data):
    cls = read_labeled(phantom_data, "classification")
    assert cls.classes == ["covid19", "normal", "pneumonia", "pneumothorax"]
    assert cls.task == "multilabel" and cls.dataset == "phantoms"
    assert "the manifest's own split" in cls.split.protocol
    by_id = {r.id: r.split for r in cls.result.records}
    assert {i: "train" for i in cls.split.train} == {i: by_id[i] for i in cls.split.train}
    assert sum(cls.split.sizes().values()) == 16
    seg = read_labeled({**phantom_data, "mask_label": "pneumothorax"}, "segmentation")
    assert seg.classes == ["pneumothorax"]
    # masked positives and labelled negatives are kept; every record of a phantom set has a label
    assert len(seg.result.records) == 16
    assert {r.finding for r in seg.result.records if r.mask_path} == {"pneumothorax"}


def test_labelled_manifest_fraction_and_split_requirements(tmp_path):
    rows = [
        {
            "image": f"i{k}.png",
            "report": "",
            "split": "train" if k < 8 else "val",
            "label_pneumonia": k % 2,
            "label_effusion": "",
        }
        for k in range(10)
    ]
    path = _manifest(tmp_path, rows)
    full = read_labeled({"kind": "manifest", "path": str(path)}, "classification")
    assert full.classes == ["effusion", "pneumonia"] and full.split.sizes() == {"train": 8, "val": 2, "test": 0}
    half = read_labeled(
        {"kind": "manifest", "path": str(path), "fraction": 0.5, "classes": ["pneumonia"], "task": "binary"},
        "classification",
    )
    assert half.classes == ["pneumonia"] and half.task == "binary"
    assert len(half.split.train) == 4 and set(half.split.train) <= set(full.split.train)
    only_train = _manifest(tmp_path, [{**r, "split": "train"} for r in rows])
    with pytest.raises(DataError, match="needs train and val/test splits"):
        read_labeled({"kind": "manifest", "path": str(only_train)}, "classification")


def test_a_registered_reader_is_dispatched_by_its_kind_once():
    calls = []

    @register_reader("registry-test")
    def _read(data):
        calls.append(dict(data))
        return ReadResult([Record(id="a", image_path="/x.png", report="r")])

    try:
        result = read_dataset({"kind": "registry-test", "path": "p"})
        assert [r.id for r in result.records] == ["a"] and calls == [{"kind": "registry-test", "path": "p"}]
        assert "registry-test" in str(pytest.raises(ConfigError, read_dataset, {"kind": "nope"}).value)
        with pytest.raises(ValueError, match="exists already"):
            register_reader("registry-test")(_read)
    finally:
        readers._RECORDS.pop("registry-test", None)
    assert "registry-test" not in reader_kinds()
