"""One registry of dataset readers, keyed by a config's ``data.kind`` (torch-free).

Two kinds of reading, each a table ``kind -> function``:

- **records** (:func:`read_dataset`): images with their reports, for pretraining, the report bank
  of a bundle and the domain guard. Kinds: ``phantoms`` (generated when missing), ``manifest``,
  ``mimic``, ``openi``, ``webdataset`` (tar shards, OpenCLIP convention).
- **labelled** (:func:`read_labeled`): images with labels or masks and the split protocol of
  their dataset, for fine-tuning and evaluation. Kinds: ``phantoms``, ``manifest``, ``rsna``,
  ``siim``, ``covidx``, ``chexpert``, ``chexpert5x200`` (the zero-shot set), ``ms_cxr`` (phrase
  grounding boxes as lesion masks).

A reader is registered with :func:`register_reader` and takes the ``data`` section (a mapping,
``data.get(...)``). A missing required key is a :class:`~core_model.errors.ConfigError` that names
it; an unknown kind lists the kinds there are. What comes after reading (a ``limit``, splits for
records without one, applying a split file) stays with the callers in
:mod:`core_model.training.datasets` and :mod:`core_model.training.downstream_data`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from core_model.data.records import ReadResult
from core_model.data.splits import SplitAssignment
from core_model.errors import ConfigError, DataError


@dataclass
class LabeledRead:
    """What a labelled reader returns: the records (split not applied yet), the split its
    dataset's protocol gives, the class names, the classification task and the dataset name."""

    result: ReadResult
    split: SplitAssignment
    classes: list[str]
    task: str  # binary | multilabel | multiclass (for classification)
    dataset: str


RecordsReader = Callable[[Mapping], ReadResult]
LabeledReader = Callable[[Mapping, str, "Path | None"], LabeledRead]

_RECORDS: dict[str, RecordsReader] = {}
_LABELED: dict[str, LabeledReader] = {}


def register_reader(kind: str, *, labeled: bool = False):
    """Decorator: the function reads ``data.kind == kind``; image-report records by default,
    labelled records (``fn(data, task, out_dir) -> LabeledRead``) with ``labeled=True``."""
    registry = _LABELED if labeled else _RECORDS

    def register(fn):
        if kind in registry:
            raise ValueError(f"a {'labelled' if labeled else 'records'} reader for data.kind {kind!r} exists already")
        registry[kind] = fn
        return fn

    return register


def reader_kinds(*, labeled: bool = False) -> list[str]:
    """The registered kinds, in registration order."""
    return list(_LABELED if labeled else _RECORDS)


def read_dataset(data: Mapping) -> ReadResult:
    """Image-report records of the dataset ``data`` names (``data.kind``)."""
    kind = data.get("kind")
    reader = _RECORDS.get(kind)
    if reader is None:
        kinds = reader_kinds()
        raise ConfigError(f"unknown data.kind {kind!r}: {', '.join(kinds[:-1])} or {kinds[-1]}")
    return reader(data)


def read_labeled(data: Mapping, task: str, out_dir: Path | None = None) -> LabeledRead:
    """Labelled records of the dataset ``data`` names; ``task``: classification or segmentation."""
    kind = data.get("kind")
    reader = _LABELED.get(kind)
    if reader is None:
        raise ConfigError(f"unknown data.kind {kind!r} for fine-tuning: {', '.join(reader_kinds(labeled=True))}")
    return reader(data, task, out_dir)


def require(data: Mapping, key: str, what: str):
    """``data[key]``, or a ConfigError saying what it must give."""
    if not data.get(key):
        raise ConfigError(f"data.{key} must give {what}")
    return data[key]


def ensure_phantom_manifest(data: Mapping) -> Path:
    """The phantom set a config names (synthetic data), generated when missing."""
    from core_model.data.phantoms import ensure_phantoms

    if not data.get("path"):
        raise ConfigError("data.path must name the folder of the phantom set")
    return ensure_phantoms(
        Path(data["path"]), n=int(data.get("n", 2000)), seed=int(data.get("seed", 0)), dicom=data.get("dicom") or "none"
    )


# ----------------------------------------------------------------------------------------------
# Image-report records


@register_reader("phantoms")
def _phantoms_records(data: Mapping) -> ReadResult:
    from core_model.data.manifest import read_manifest

    return read_manifest(ensure_phantom_manifest(data))


@register_reader("manifest")
def _manifest_records(data: Mapping) -> ReadResult:
    from core_model.data.manifest import read_manifest

    if not data.get("path"):
        raise ConfigError("data.path must name the manifest CSV/JSONL")
    return read_manifest(Path(data["path"]))


@register_reader("mimic")
def _mimic_records(data: Mapping) -> ReadResult:
    from core_model.data.mimic import read_mimic

    if not data.get("images") or not data.get("reports"):
        raise ConfigError("data.images (MIMIC-CXR-JPG root) and data.reports (MIMIC-CXR reports root) are required")
    return read_mimic(Path(data["images"]), Path(data["reports"]), frontal_only=bool(data.get("frontal_only", True)))


@register_reader("openi")
def _openi_records(data: Mapping) -> ReadResult:
    from core_model.data.openi import read_openi

    if not data.get("path"):
        raise ConfigError("data.path must name the Open-I reports archive (NLMCXR_reports.tgz)")
    return read_openi(Path(data["path"]), images=Path(data["images"]) if data.get("images") else None)


@register_reader("webdataset")
def _webdataset_records(data: Mapping) -> ReadResult:
    from core_model.data.webdataset import read_webdataset

    if not data.get("path"):
        raise ConfigError(
            "data.path must name the webdataset shards (a .tar, a folder of them, or data-{000000..000009}.tar)"
        )
    return read_webdataset(data["path"])


# ----------------------------------------------------------------------------------------------
# Labelled records, each with its dataset's split protocol (core_model.data.splits)


def _generic_splits(result: ReadResult, fraction: float, protocol: str) -> SplitAssignment:
    """The records' own ``split`` values (train / val / test) as a split."""
    from core_model.data.splits import official_splits

    ids: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for r in result.records:
        s = (r.split or "").lower()
        s = {"validate": "val", "valid": "val", "validation": "val"}.get(s, s)
        if s in ids:
            ids[s].append(r.id)
    if not ids["train"] or not (ids["val"] or ids["test"]):
        raise DataError(f"{protocol}: the data needs train and val/test splits (a 'split' column, or data.split_file)")
    return official_splits(ids, fraction, protocol=protocol)


def fraction_of(data: Mapping) -> float:
    """``data.fraction``: the share of the training split with labels, in (0, 1]."""
    f = float(data.get("fraction", 1.0))
    if not 0 < f <= 1:
        raise ConfigError(f"data.fraction must be in (0, 1], not {f}")
    return f


def _manifest_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    from core_model.data.manifest import read_manifest

    kind = data.get("kind")
    fraction = fraction_of(data)
    if kind == "phantoms":
        manifest = ensure_phantom_manifest(data)
    else:
        manifest = Path(require(data, "path", "the manifest CSV/JSONL"))
    result = read_manifest(manifest, require_report=False)
    classes = list(data.get("classes") or [])
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
    return LabeledRead(result, split, classes, data.get("task") or "multilabel", kind)


register_reader("phantoms", labeled=True)(_manifest_labeled)
register_reader("manifest", labeled=True)(_manifest_labeled)


@register_reader("rsna", labeled=True)
def _rsna_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    from core_model.data.rsna import read_rsna
    from core_model.data.splits import rsna_splits

    fraction = fraction_of(data)
    result = read_rsna(
        require(data, "path", "the RSNA stage_2_train_labels.csv"), require(data, "images", "the RSNA DICOM folder")
    )
    split = rsna_splits(
        result.table.all_patient_ids, "segmentation" if task == "segmentation" else "classification", fraction
    )
    if task == "segmentation":
        result.write_mask_pngs(Path(out_dir or ".") / "masks", size=None)
    return LabeledRead(result, split, ["pneumonia"], "binary", "rsna")


@register_reader("siim", labeled=True)
def _siim_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    from core_model.data.siim import read_siim
    from core_model.data.splits import siim_splits

    fraction = fraction_of(data)
    result = read_siim(
        require(data, "path", "the SIIM train-rle.csv"), require(data, "images", "the SIIM DICOM folder")
    )
    split = siim_splits(result.table.rows, fraction, protocol=data.get("split_protocol") or "mgca")
    if task == "segmentation":
        result.write_mask_pngs(Path(data.get("mask_dir") or Path(out_dir or ".") / "masks"))
    return LabeledRead(result, split, ["pneumothorax"], "binary", "siim")


@register_reader("covidx", labeled=True)
def _covidx_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    from core_model.data.covidx import read_covidx, read_covidx_ids
    from core_model.data.splits import covidx_splits

    fraction = fraction_of(data)
    train_file = require(data, "path", "the COVIDx train label file")
    test_file = require(data, "test_path", "the COVIDx test label file")
    images = require(data, "images", "the COVIDx image folder (with train/ and test/)")
    result = read_covidx(train_file, Path(images) / "train", split="train")
    result.extend(read_covidx(test_file, Path(images) / "test", split="test"))
    split = covidx_splits(read_covidx_ids(train_file), read_covidx_ids(test_file), fraction)
    return LabeledRead(result, split, list(result.classes), "multiclass", "covidx")


@register_reader("chexpert", labeled=True)
def _chexpert_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    from core_model.data.chexpert import COMPETITION_TASKS, label_key, read_chexpert

    fraction = fraction_of(data)
    result = read_chexpert(
        require(data, "path", "the CheXpert CSV"), data.get("images"), uncertainty=data.get("uncertainty", "as_is")
    )
    if data.get("val_path"):
        result.extend(read_chexpert(data["val_path"], data.get("images"), uncertainty=data.get("uncertainty", "as_is")))
    classes = [label_key(c) for c in (list(data.get("classes") or []) or COMPETITION_TASKS)]
    split = _generic_splits(result, fraction, "chexpert-official")
    return LabeledRead(result, split, classes, data.get("task") or "multilabel", "chexpert")


def _evaluation_split(result: ReadResult, protocol: str, note: str) -> SplitAssignment:
    """Every record in its own split (``test`` unless the file says otherwise): evaluation sets."""
    split = SplitAssignment(protocol=protocol, protocol_id=protocol)
    for r in result.records:
        getattr(split, r.split if r.split in ("train", "val", "test") else "test").append(r.id)
    split.notes.append(note)
    return split


@register_reader("chexpert5x200", labeled=True)
def _chexpert_5x200_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    """CheXpert 5x200 (zero-shot): ``data.path`` the CheXpert CSV (GLoRIA draws from train.csv),
    ``data.images`` the folder holding the release folder."""
    from core_model.data.chexpert import FIVE_BY_200_SEED, chexpert_5x200, read_chexpert

    if task != "classification":
        raise ConfigError("chexpert5x200 is a classification (zero-shot) set; it has no masks")
    read = read_chexpert(
        require(data, "path", "the CheXpert CSV (train.csv)"),
        data.get("images"),
        uncertainty="competition",
        blank="zeros",
    )
    per_class = 200
    chosen, keys = chexpert_5x200(read.records, per_class=per_class, seed=FIVE_BY_200_SEED)
    result = ReadResult(chosen, read.skipped)
    split = _evaluation_split(
        result,
        "chexpert-5x200",
        f"CheXpert 5x200: {per_class} images per finding with exactly that one positive among the five "
        f"competition findings (uncertain labels by the competition policy, blanks 0), drawn with seed "
        f"{FIVE_BY_200_SEED}; all in the test split",
    )
    return LabeledRead(result, split, keys, "multiclass", "chexpert5x200")


@register_reader("ms_cxr", labeled=True)
def _ms_cxr_labeled(data: Mapping, task: str, out_dir: Path | None) -> LabeledRead:
    """MS-CXR phrase grounding: ``data.path`` the local-alignment CSV, ``data.images`` the
    MIMIC-CXR-JPG root; box masks are written to ``data.mask_dir`` (default ``<out>/ms_cxr_masks``)."""
    from core_model.data.mscxr import read_ms_cxr

    result = read_ms_cxr(require(data, "path", "the MS-CXR CSV"), data.get("images"))
    result.write_mask_pngs(Path(data.get("mask_dir") or Path(out_dir or ".") / "ms_cxr_masks"))
    classes = list(data.get("classes") or sorted({r.finding for r in result.records if r.finding}))
    split = _evaluation_split(
        result, "ms-cxr", "MS-CXR: the file's own split column when it has one (v1.1.0), else every phrase in test"
    )
    return LabeledRead(result, split, classes, data.get("task") or "multilabel", "ms_cxr")
