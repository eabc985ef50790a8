"""MS-CXR phrase grounding (Boecking et al., ECCV 2022; PhysioNet ``ms-cxr``): phrases of
MIMIC-CXR reports with the boxes a radiologist drew for them (stdlib csv only).

File (``MS_CXR_Local_Alignment_v1.0.0.csv`` / ``v1.1.0``): one row per box, columns ``dicom_id,
category_name, label_text, path, x, y, w, h, image_width, image_height`` (v1.1.0 adds ``split``).
``path`` is relative to the MIMIC-CXR-JPG root (``files/p10/p10000032/s5.../<dicom_id>.jpg``); the
image root may be that root or its ``files`` folder. Boxes are in pixels of the
``image_width x image_height`` image, x to the right and y down.

One :class:`~core_model.data.records.Record` per (image, phrase): ``report`` is the phrase,
``finding`` and ``labels`` the category in snake case (``pleural_effusion``), ``split`` the file's
own split when it has one (else ``test``: MS-CXR is an evaluation set), and, once
:meth:`MsCxrResult.write_mask_pngs` ran, ``lesion_mask_path`` / ``mask_path`` the filled-box mask
of that phrase's boxes on the image's own grid (what the grounding evaluation scores heatmaps
against: pointing game, mIoU / CNR). Bad rows are skipped with a reason: ``bad_row`` (a missing
field, a box that is not a positive number, a box entirely outside the image), ``missing_image``.
Boxes partly outside the image are clipped.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core_model.data._files import open_text, require_dir
from core_model.data.records import ReadResult, Record, Skipped
from core_model.data.rsna import Box, boxes_to_mask, clip_box
from core_model.errors import DataError

COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height")
CATEGORIES = (
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "lung_opacity",
    "pleural_effusion",
    "pneumonia",
    "pneumothorax",
)


def category_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


@dataclass
class MsCxrResult(ReadResult):
    """The records plus each record's boxes (clipped) and the image size they refer to."""

    boxes: dict[str, list[Box]] = field(default_factory=dict)
    image_size: dict[str, tuple[int, int]] = field(default_factory=dict)  # record id -> (height, width)

    def mask(self, record_id: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """The filled-box mask (bool) of a record's phrase, on ``size`` (default: the image's grid)."""
        source = self.image_size[record_id]
        return boxes_to_mask(self.boxes[record_id], size or source, source)

    def write_mask_pngs(self, out_dir) -> int:
        """Each record's box mask as ``<id>.png`` on the image file's own grid (boxes scaled when
        the file is a resized copy of the ``image_width x image_height`` original); sets
        ``lesion_mask_path`` (and ``mask_path``). Returns the number of files written (existing
        ones are reused)."""
        paths = {r.id: r.image_path for r in self.records}
        n = self._write_mask_pngs(out_dir, lambda rid: self.mask(rid, _file_size(paths[rid])))
        for r in self.records:
            r.lesion_mask_path = r.mask_path
        return n


def _file_size(path: str) -> tuple[int, int] | None:
    """(height, width) of a PNG / JPEG from its header (the one sniffer), or None (DICOM, absent)."""
    from core_model.imaging.sniff import file_declared_size

    try:
        size = file_declared_size(path)
    except OSError:
        return None
    return (int(size.rows), int(size.columns)) if size else None


def _resolve(root: Path | None, rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or root is None:
        return p
    direct = root / p
    if direct.exists() or not p.parts or p.parts[0] != "files":
        return direct
    stripped = root.joinpath(*p.parts[1:])  # a root that *is* the files/ folder
    return stripped if stripped.exists() else direct


def _number(row: dict, key: str) -> float:
    try:
        v = float((row.get(key) or "").strip())
    except ValueError:
        raise ValueError(f"{key} is not a number: {row.get(key)!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{key} is not finite")
    return v


def read_ms_cxr(csv_path, image_root=None, *, check_images: bool = True) -> MsCxrResult:
    """Records (one per image and phrase) of an MS-CXR local-alignment CSV."""
    root = require_dir(image_root, "MIMIC-CXR-JPG image folder").resolve() if image_root is not None else None
    result = MsCxrResult()
    entries: dict[tuple[str, str], dict] = {}  # (dicom_id, phrase) -> first row's fields + boxes
    bad: set[tuple[str, str]] = set()
    with open_text(csv_path, "MS-CXR CSV") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in fields]
        if missing:
            raise DataError(
                f"MS-CXR CSV {csv_path} lacks the column(s) {', '.join(missing)}; it needs {', '.join(COLUMNS)}"
            )
        for lineno, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            dicom, phrase = row["dicom_id"], " ".join(row["label_text"].split())
            key = (dicom, phrase)
            if not dicom or not phrase or not row["path"] or not row["category_name"]:
                result.skipped.append(Skipped(dicom or f"line {lineno}", "bad_row", f"line {lineno}: empty field"))
                continue
            try:
                box = Box(_number(row, "x"), _number(row, "y"), _number(row, "w"), _number(row, "h"))
                width, height = int(_number(row, "image_width")), int(_number(row, "image_height"))
                if box.width <= 0 or box.height <= 0 or width <= 0 or height <= 0:
                    raise ValueError("box and image sizes must be positive")
            except ValueError as exc:
                result.skipped.append(Skipped(dicom, "bad_row", f"line {lineno}: {exc}"))
                bad.add(key)
                continue
            clipped = clip_box(box, height, width)
            if clipped is None:
                result.skipped.append(Skipped(dicom, "bad_row", f"line {lineno}: box entirely outside the image"))
                bad.add(key)
                continue
            e = entries.setdefault(
                key,
                {
                    "category": category_key(row["category_name"]),
                    "path": row["path"],
                    "size": (height, width),
                    "split": row.get("split") or "test",
                    "boxes": [],
                },
            )
            e["boxes"].append(clipped)
    per_image: dict[str, int] = {}
    for (dicom, phrase), e in entries.items():
        if (dicom, phrase) in bad:  # a phrase with one unusable box would be a wrong mask
            continue
        k = per_image.get(dicom, 0)
        per_image[dicom] = k + 1
        rid = f"{dicom}-{k}"
        path = _resolve(root, e["path"])
        if check_images and root is not None and not path.is_file():
            result.skipped.append(Skipped(rid, "missing_image", str(path)))
            continue
        parts = Path(e["path"]).parts
        patient = next((q for q in parts if re.fullmatch(r"p\d{8}", q)), None)
        study = next((q for q in parts if re.fullmatch(r"s\d+", q)), None)
        split = {"validation": "val", "valid": "val"}.get(e["split"].lower(), e["split"].lower())
        result.records.append(
            Record(
                id=rid,
                image_path=str(path),
                report=phrase,
                split=split if split in ("train", "val", "test") else "test",
                patient_id=patient,
                study_id=study,
                labels={e["category"]: 1.0},
                finding=e["category"],
            )
        )
        result.boxes[rid] = list(e["boxes"])
        result.image_size[rid] = e["size"]
    if not result.records:
        raise DataError(f"MS-CXR CSV {csv_path}: nothing usable ({result.summary()})")
    return result
