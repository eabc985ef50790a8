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
from core_model.data.splits import SplitAssignment, apply_splits, read_split_file
from core_model.errors import ConfigError, DataError


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


def load_labeled(data: dict, task: str, out_dir: Path | None = None) -> Labeled:
    """``task``: ``classification`` or ``segmentation``."""
    from core_model.data.readers import fraction_of, read_labeled

    kind = data.get("kind")
    fraction = fraction_of(data)
    read = read_labeled(data, task, out_dir)
    result, split, classes, cls_task, dataset = read.result, read.split, read.classes, read.task, read.dataset

    if data.get("split_file"):
        split = SplitAssignment.from_mapping(
            read_split_file(data["split_file"]), protocol=f"split file {data['split_file']}"
        )
    applied = apply_splits(result, split)  # in the split's order; records outside it are skipped
    result.records, result.skipped = applied.records, applied.skipped
    records = [r for r in result.records if r.split in ("train", "val", "test")]
    if data.get("limit"):
        records = records[: int(data["limit"])]
    if not records:
        raise DataError(f"{kind}: no usable labelled records left ({result.summary()})")
    if data.get("shots") and task != "classification":
        raise ConfigError("data.shots (k-shot probes) is for classification; segmentation uses data.fraction")
    if task == "classification":
        if cls_task not in ("binary", "multilabel", "multiclass"):
            raise ConfigError("data.task must be binary, multilabel or multiclass")
        unknown = [c for c in classes if not any(c in r.labels for r in records)]
        if unknown:
            raise DataError(
                f"{kind}: no record carries the label(s) {unknown}; labels found: "
                f"{sorted({k for r in records for k in r.labels})}"
            )
        if cls_task == "binary" and len(classes) != 1:
            cls_task = "multilabel"
        if data.get("shots"):
            records = few_shot_train(records, classes, cls_task, int(data["shots"]), int(data.get("shot_seed") or 0))
            split.notes = [
                *(split.notes or []),
                f"few-shot: {int(data['shots'])} training images per class (balanced), drawn with seed "
                f"{int(data.get('shot_seed') or 0)}; validation and test splits whole",
            ]
    return Labeled(
        records, classes, "segmentation" if task == "segmentation" else cls_task, dataset, split, result, fraction
    )


def few_shot_train(records: list[Record], classes: list[str], task: str, k: int, seed: int) -> list[Record]:
    """Keep ``k`` labelled training images per class (validation and test stay whole): for each
    class ``k`` images positive for it (binary: ``k`` positives and ``k`` negatives; multi-label:
    also ``k`` images negative for every class, when there are such), drawn without replacement
    with ``numpy.random.default_rng(seed)`` from the training split in its order, never one
    image twice. Too few images of a class is an error, never a smaller draw."""
    import numpy as np

    if k < 1:
        raise ConfigError(f"data.shots must be at least 1, not {k}")
    rng = np.random.default_rng(seed)
    train = [i for i, r in enumerate(records) if r.split == "train"]

    def positive(r: Record, c: str) -> bool:
        return r.labels.get(c) == 1.0

    groups: list[tuple[str, object]] = [(c, lambda r, c=c: positive(r, c)) for c in classes]
    if task == "binary":
        groups.append((f"not {classes[0]}", lambda r: r.labels.get(classes[0]) == 0.0))
    elif task == "multilabel":
        none = [i for i in train if all(records[i].labels.get(c) == 0.0 for c in classes)]
        if len(none) >= k:
            groups.append(("none of the classes", lambda r: all(r.labels.get(c) == 0.0 for c in classes)))
    chosen: set[int] = set()
    for name, member in groups:
        candidates = [i for i in train if i not in chosen and member(records[i])]  # type: ignore[operator]
        if len(candidates) < k:
            raise DataError(
                f"few-shot: {k} training images of {name!r} asked, the training split has {len(candidates)}"
            )
        chosen.update(int(candidates[j]) for j in rng.choice(len(candidates), size=k, replace=False))
    return [r for i, r in enumerate(records) if r.split != "train" or i in chosen]
