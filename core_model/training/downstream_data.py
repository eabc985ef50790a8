"""Labelled datasets for fine-tuning and evaluation, with their published splits.

``load_labeled(data_cfg, task)`` returns the records (split assigned, bad rows skipped with
reasons), the class names and the split used. Splits follow the MGCA / Adaptor protocol per
dataset (:mod:`core_model.data.splits`), a split file (``data.split_file``) replaces them, and
every run writes the split it used to ``<out>/splits.csv`` so it can be repeated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core_model.data.records import ReadResult, Record
from core_model.data.splits import SplitAssignment, apply_splits, official_splits, read_split_file
from core_model.errors import ConfigError, DataError

PHANTOM_CLASSES = ["normal", "pneumonia", "covid19", "pneumothorax"]


@dataclass
class Labeled:
    records: list[Record]
    classes: list[str]
    task: str  # binary | multilabel | multiclass | segmentation
    dataset: str
    split: SplitAssignment
    result: ReadResult = field(default=None)  # the reader's result (skipped rows, masks on demand)
    fraction: float = 1.0

    def by_split(self, name: str) -> list[int]:
        return [i for i, r in enumerate(self.records) if r.split == name]


def _fraction(data: dict) -> float:
    f = float(data.get("fraction", 1.0))
    if not 0 < f <= 1:
        raise ConfigError(f"data.fraction must be in (0, 1], not {f}")
    return f


def _generic_splits(result: ReadResult, fraction: float, protocol: str) -> SplitAssignment:
    ids = {"train": [], "val": [], "test": []}
    for r in result.records:
        s = (r.split or "").lower()
        s = {"validate": "val", "valid": "val", "validation": "val"}.get(s, s)
        if s in ids:
            ids[s].append(r.id)
    if not ids["train"] or not (ids["val"] or ids["test"]):
        raise DataError(f"{protocol}: the data needs train and val/test splits (a 'split' column, or data.split_file)")
    return official_splits(ids, fraction, protocol=protocol)


def load_labeled(data: dict, task: str, out_dir: Path | None = None) -> Labeled:
    """``task``: ``classification`` or ``segmentation``."""
    kind = data.get("kind")
    fraction = _fraction(data)
    classes = list(data.get("classes") or [])
    cls_task = data.get("task") or "multilabel"
    if kind in ("phantoms", "manifest"):
        from core_model.data.manifest import read_manifest

        if kind == "phantoms":
            from core_model.training.datasets import ensure_phantom_manifest

            manifest = ensure_phantom_manifest(data)
        else:
            manifest = Path(data["path"])
        result = read_manifest(manifest, require_report=False)
        if task == "segmentation":
            name = data.get("mask_label") or "pneumothorax"
            # images without a mask are negatives only when their label says so
            keep = []
            for r in result.records:
                if r.mask_path or r.labels.get(name) == 0.0 or (r.finding and r.finding != name and name in r.labels):
                    keep.append(r)
            result.records = keep
            classes = [name]
        elif not classes:
            classes = sorted({k for r in result.records for k in r.labels})
        split = _generic_splits(result, fraction, f"{kind}: the manifest's own split")
        dataset = kind
    elif kind == "rsna":
        from core_model.data.rsna import read_rsna
        from core_model.data.splits import rsna_splits

        result = read_rsna(_req(data, "path", "the RSNA stage_2_train_labels.csv"), _req(data, "images", "the RSNA DICOM folder"))
        split = rsna_splits(result.table.all_patient_ids, "segmentation" if task == "segmentation" else "classification",
                            fraction)
        if task == "segmentation":
            result.write_mask_pngs(Path(out_dir or ".") / "masks", size=None)
        classes, cls_task, dataset = ["pneumonia"], "binary", "rsna"
    elif kind == "siim":
        from core_model.data.siim import read_siim
        from core_model.data.splits import siim_splits

        result = read_siim(_req(data, "path", "the SIIM train-rle.csv"), _req(data, "images", "the SIIM DICOM folder"))
        split = siim_splits(result.table.rows, fraction, protocol=data.get("split_protocol") or "mgca")
        if task == "segmentation":
            result.write_mask_pngs(Path(data.get("mask_dir") or Path(out_dir or ".") / "masks"))
        classes, cls_task, dataset = ["pneumothorax"], "binary", "siim"
    elif kind == "covidx":
        from core_model.data.covidx import read_covidx, read_covidx_ids
        from core_model.data.splits import covidx_splits

        train_file = _req(data, "path", "the COVIDx train label file")
        test_file = _req(data, "test_path", "the COVIDx test label file")
        images = _req(data, "images", "the COVIDx image folder (with train/ and test/)")
        result = read_covidx(train_file, Path(images) / "train", split="train")
        result.extend(read_covidx(test_file, Path(images) / "test", split="test"))
        split = covidx_splits(read_covidx_ids(train_file), read_covidx_ids(test_file), fraction)
        classes, cls_task, dataset = list(result.classes), "multiclass", "covidx"
    elif kind == "chexpert":
        from core_model.data.chexpert import COMPETITION_TASKS, label_key, read_chexpert

        result = read_chexpert(_req(data, "path", "the CheXpert CSV"), data.get("images"),
                               uncertainty=data.get("uncertainty", "as_is"))
        if data.get("val_path"):
            result.extend(read_chexpert(data["val_path"], data.get("images"), uncertainty=data.get("uncertainty", "as_is")))
        classes = [label_key(c) for c in (classes or COMPETITION_TASKS)]
        split = _generic_splits(result, fraction, "chexpert-official")
        dataset = "chexpert"
    else:
        raise ConfigError(f"unknown data.kind {kind!r} for fine-tuning: phantoms, manifest, rsna, siim, covidx, chexpert")

    if data.get("split_file"):
        split = SplitAssignment.from_mapping(read_split_file(data["split_file"]), protocol=f"split file {data['split_file']}")
    applied = apply_splits(result, split)  # in the split's order; records outside it are skipped
    result.records, result.skipped = applied.records, applied.skipped
    records = [r for r in result.records if r.split in ("train", "val", "test")]
    if data.get("limit"):
        records = records[: int(data["limit"])]
    if not records:
        raise DataError(f"{kind}: no usable labelled records left ({result.summary()})")
    if task == "classification":
        if cls_task not in ("binary", "multilabel", "multiclass"):
            raise ConfigError("data.task must be binary, multilabel or multiclass")
        unknown = [c for c in classes if not any(c in r.labels for r in records)]
        if unknown:
            raise DataError(f"{kind}: no record carries the label(s) {unknown}; labels found: "
                            f"{sorted({k for r in records for k in r.labels})}")
        if cls_task == "binary" and len(classes) != 1:
            cls_task = "multilabel"
    return Labeled(records, classes, "segmentation" if task == "segmentation" else cls_task, dataset, split, result, fraction)


def _req(data: dict, key: str, what: str) -> str:
    if not data.get(key):
        raise ConfigError(f"data.{key} must give {what}")
    return data[key]
