"""RSNA Pneumonia Detection reader (``stage_2_train_labels.csv`` + ``<patientId>.dcm``).

File format (NOTES.md section 2): ``patientId,x,y,width,height,Target``, one row per box (a patient
with ``Target`` 0 has one row with blank box fields); plain CSV or the Kaggle ``.zip``. Images are
1024 x 1024 CR DICOMs named ``<patientId>.dcm`` (searched recursively below ``image_dir``).

One record per patient (one image per patient in RSNA): ``id = patient_id = patientId``,
``labels = {"pneumonia": 1.0 / 0.0}``, ``finding = "pneumonia"`` for positives (None for negatives:
RSNA's Target 0 covers both "Normal" and "No Lung Opacity / Not Normal"). The boxes are kept in a
side table (``result.table.boxes[record_id]``, pixel coordinates of the 1024 grid) and become the
filled-box segmentation mask (the MGCA protocol) on demand: ``result.mask(record_id, size)``.

Bad rows (reported with counts, never fatal):

- ``bad_label``: Target not 0/1, a positive row without a usable box (blank, non-numeric,
  non-positive width/height), a negative row with box values, a patient with both Target 0 and 1
  rows, or a patient whose boxes all lie outside the image. The whole patient is skipped, since a
  partial box list would be a wrong mask.
- ``missing_image``: no ``<patientId>.dcm`` below the image folder.

Boxes partly outside the image are clipped (counted in ``table.clipped_boxes`` and listed in
``table.notes``); boxes entirely outside are dropped (``table.dropped_boxes``). The real stage-2
file has no such box; the check is for edited or converted label files.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field

import numpy as np

from core_model.data._files import index_files, open_text
from core_model.data.records import ReadResult, Record, Skipped
from core_model.errors import DataError

FINDING = "pneumonia"
RSNA_SIZE = 1024
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates (x to the right, y down), as in the label file."""

    x: float
    y: float
    width: float
    height: float

    @property
    def x2(self) -> float:
        return self.x + self.width

    @property
    def y2(self) -> float:
        return self.y + self.height


@dataclass
class RsnaLabels:
    """The parsed label file, before images are looked up."""

    target: dict[str, int] = field(default_factory=dict)  # usable patientId -> 0/1 (file order)
    boxes: dict[str, list[Box]] = field(default_factory=dict)  # usable patientId -> clipped boxes
    all_patient_ids: list[str] = field(default_factory=list)  # every patientId of the file, sorted
    skipped: list[Skipped] = field(default_factory=list)
    n_rows: int = 0
    clipped_boxes: int = 0
    dropped_boxes: int = 0
    notes: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (RSNA_SIZE, RSNA_SIZE)  # (height, width) the boxes refer to

    def mask(self, patient_id: str, size: int | tuple[int, int] | None = None) -> np.ndarray:
        return boxes_to_mask(self.boxes.get(patient_id, []), size or self.image_size, self.image_size)


def _num(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def clip_box(box: Box, height: int, width: int) -> Box | None:
    """The part of ``box`` inside a ``height x width`` image, or None when nothing is left."""
    x1, y1 = max(box.x, 0.0), max(box.y, 0.0)
    x2, y2 = min(box.x2, float(width)), min(box.y2, float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    return Box(x1, y1, x2 - x1, y2 - y1)


def boxes_to_mask(
    boxes, size: int | tuple[int, int] = RSNA_SIZE, source_size: int | tuple[int, int] = RSNA_SIZE
) -> np.ndarray:
    """Filled-box mask (bool, ``size`` = (height, width) or an int for square) for boxes given on a
    ``source_size`` grid. Coordinates are scaled, then truncated to integers as MGCA does
    (``mask[y1:y2, x1:x2]`` with int64 casts) on the source grid; anything outside is clipped."""
    h, w = (size, size) if isinstance(size, int) else size
    sh, sw = (source_size, source_size) if isinstance(source_size, int) else source_size
    mask = np.zeros((h, w), bool)
    sy, sx = h / sh, w / sw
    for b in boxes:
        x1, y1 = int(b.x * sx), int(b.y * sy)
        x2, y2 = int(b.x2 * sx), int(b.y2 * sy)
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, w), min(y2, h)
        if x2 > x1 and y2 > y1:
            mask[y1:y2, x1:x2] = True
    return mask


def read_rsna_labels(labels_path, *, image_size: tuple[int, int] = (RSNA_SIZE, RSNA_SIZE)) -> RsnaLabels:
    """Parse ``stage_2_train_labels.csv`` (or its zip). DataError when the file or a column is
    missing, or nothing usable is left."""
    table = RsnaLabels(image_size=image_size)
    h, w = image_size
    rows_of: dict[str, list[tuple[int, str, str, str, str, str]]] = {}
    with open_text(labels_path, "RSNA label file") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"RSNA label file {labels_path} is empty")
        names = [c.strip() for c in header]
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise DataError(f"RSNA label file {labels_path} lacks column(s) {', '.join(missing)} (found {header})")
        idx = [names.index(c) for c in COLUMNS]
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            table.n_rows += 1
            vals = [row[i].strip() if i < len(row) else "" for i in idx]
            pid = vals[0]
            if not pid:
                table.skipped.append(Skipped(f"line {lineno}", "bad_label", "no patientId"))
                continue
            rows_of.setdefault(pid, []).append((lineno, *vals[1:]))
    table.all_patient_ids = sorted(rows_of)
    for pid, rows in rows_of.items():
        targets = set()
        boxes: list[Box] = []
        problem = ""
        for lineno, x, y, bw, bh, target in rows:
            t = _num(target)
            if t not in (0.0, 1.0):
                problem = f"line {lineno}: Target {target!r} is not 0 or 1"
                break
            targets.add(int(t))
            coords = [_num(v) for v in (x, y, bw, bh)]
            if t == 0:
                if any(c is not None for c in coords):
                    problem = f"line {lineno}: Target 0 with box values"
                    break
                continue
            if any(c is None for c in coords):
                problem = f"line {lineno}: Target 1 without a numeric box"
                break
            box = Box(*coords)
            if box.width <= 0 or box.height <= 0:
                problem = f"line {lineno}: box width/height must be positive"
                break
            clipped = clip_box(box, h, w)
            if clipped is None:
                table.dropped_boxes += 1
                table.notes.append(f"line {lineno}: box entirely outside the {w}x{h} image, dropped")
                continue
            if clipped != box:
                table.clipped_boxes += 1
                table.notes.append(f"line {lineno}: box clipped to the {w}x{h} image")
            boxes.append(clipped)
        if not problem and len(targets) > 1:
            problem = "both Target 0 and Target 1 rows"
        if not problem and targets == {1} and not boxes:
            problem = "every box lies outside the image"
        if problem:
            table.skipped.append(Skipped(pid, "bad_label", problem))
            continue
        positive = targets == {1}
        table.target[pid] = int(positive)
        table.boxes[pid] = boxes
    if not table.target:
        raise DataError(f"RSNA label file {labels_path}: no usable patient ({len(table.skipped)} skipped)")
    return table


class RsnaReadResult(ReadResult):
    """A ReadResult that also carries the label table (boxes, masks on demand)."""

    table: RsnaLabels

    def boxes(self, record_id: str) -> list[Box]:
        return self.table.boxes.get(record_id, [])

    def mask(self, record_id: str, size: int | tuple[int, int] | None = None) -> np.ndarray:
        """Filled-box mask of a record at ``size`` (default: the 1024 grid of the label file)."""
        return self.table.mask(record_id, size)

    def write_mask_pngs(self, out_dir, size: int | tuple[int, int] | None = None) -> int:
        """Render every record's filled-box mask as ``<id>.png`` (0 / 255) and set ``mask_path``."""
        return self._write_mask_pngs(out_dir, lambda rid: self.mask(rid, size))


def read_rsna(labels_path, image_dir, *, image_size: tuple[int, int] = (RSNA_SIZE, RSNA_SIZE)) -> RsnaReadResult:
    """One record per usable patient whose ``<patientId>.dcm`` exists below ``image_dir``."""
    table = read_rsna_labels(labels_path, image_size=image_size)
    images, _dups = index_files(image_dir, (".dcm",), "RSNA image folder")
    result = RsnaReadResult()
    result.table = table
    result.skipped.extend(table.skipped)
    for pid, target in table.target.items():
        path = images.get(pid)
        if path is None:
            result.skipped.append(Skipped(pid, "missing_image", f"{pid}.dcm not under {image_dir}"))
            continue
        result.records.append(
            Record(
                id=pid,
                image_path=path,
                patient_id=pid,
                labels={FINDING: float(target)},
                finding=FINDING if target else None,
            )
        )
    if not result.records:
        raise DataError(
            f"RSNA: none of the {len(table.target)} labelled patients has an image under {image_dir} "
            f"(looked for <patientId>.dcm recursively)"
        )
    return result
