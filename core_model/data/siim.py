"""SIIM-ACR Pneumothorax reader (``train-rle.csv`` + DICOMs found recursively).

File format (NOTES.md section 2): header ``ImageId, EncodedPixels`` (note the space; both column
names are matched after stripping blanks), one row per connected lesion, so several rows per image
are possible; ``-1`` means no pneumothorax. The RLE is SIIM's relative, column-major encoding
(:mod:`core_model.data.rle`). Masks are the union of an image's rows, on the 1024 x 1024 grid.

Bad rows never stop the read; the whole image is skipped (``bad_label``) when any of its rows is
unusable, because a partial mask would be a wrong label:

- an RLE that is malformed or runs past the image,
- an image listed both as ``-1`` and with a lesion,
- a row without an ImageId.

Images: ``<ImageId>.dcm`` anywhere below ``image_dir``; absent ones become ``missing_image``.
Records: ``id = image_path stem = ImageId``, ``labels = {"pneumothorax": 1.0 / 0.0}``,
``finding = "pneumothorax"`` for positives (None for negatives). The masks are kept in a side table
(:class:`SiimLabels`, ``result.table``): ``result.mask(record_id)``; call
:meth:`SiimReadResult.write_mask_pngs` to render them as PNGs and fill ``Record.mask_path``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import numpy as np

from core_model.data._files import index_files, open_text
from core_model.data.records import ReadResult, Record, Skipped
from core_model.data.rle import SIIM_SIZE, RLEError, is_empty_rle, rle_decode_union, rle_runs
from core_model.errors import DataError

FINDING = "pneumothorax"


@dataclass
class SiimLabels:
    """The parsed label file, before images are looked up."""

    rows: list[tuple[str, str]] = field(default_factory=list)  # usable (ImageId, rle) in file order
    rles: dict[str, list[str]] = field(default_factory=dict)  # ImageId -> lesion RLEs ([] = negative)
    skipped: list[Skipped] = field(default_factory=list)
    n_rows: int = 0  # data rows in the file
    height: int = SIIM_SIZE
    width: int = SIIM_SIZE

    @property
    def image_ids(self) -> list[str]:
        return list(self.rles)

    def is_positive(self, image_id: str) -> bool:
        return bool(self.rles[image_id])

    def positives(self) -> list[str]:
        return [k for k, v in self.rles.items() if v]

    def area(self, image_id: str) -> int:
        return int(self.mask(image_id).sum())

    def mask(self, image_id: str) -> np.ndarray:
        """Boolean ``(height, width)`` mask: the union of the image's rows."""
        return rle_decode_union(self.rles[image_id], self.height, self.width)


def read_siim_labels(csv_path, *, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> SiimLabels:
    """Parse ``train-rle.csv`` (plain, .gz or .zip). Raises DataError when the file or one of its
    two columns is missing, or when no usable row is left."""
    labels = SiimLabels(height=height, width=width)
    bad: dict[str, str] = {}
    neg_marked: set[str] = set()
    raw_rows: list[tuple[str, str]] = []
    with open_text(csv_path, "SIIM label file") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise DataError(f"SIIM label file {csv_path} is empty")
        names = [h.strip() for h in header]
        for col in ("ImageId", "EncodedPixels"):
            if col not in names:
                raise DataError(f"SIIM label file {csv_path} has no '{col}' column (found {header})")
        i_id, i_rle = names.index("ImageId"), names.index("EncodedPixels")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            labels.n_rows += 1
            image_id = row[i_id].strip() if len(row) > i_id else ""
            rle = row[i_rle].strip() if len(row) > i_rle else ""
            if not image_id:
                labels.skipped.append(Skipped(f"line {lineno}", "bad_label", "no ImageId"))
                continue
            if image_id in bad:
                continue
            if is_empty_rle(rle):
                neg_marked.add(image_id)
                rle = "-1"
            else:
                try:
                    rle_runs(rle, height, width)
                except RLEError as exc:
                    bad[image_id] = f"line {lineno}: {exc}"
                    continue
            raw_rows.append((image_id, rle))
    for image_id, rle in raw_rows:
        if image_id in bad:
            continue
        lesions = labels.rles.setdefault(image_id, [])
        if rle != "-1":
            if image_id in neg_marked:
                bad[image_id] = "listed both as -1 (no pneumothorax) and with a lesion"
                continue
            lesions.append(rle)
        labels.rows.append((image_id, rle))
    for image_id, detail in bad.items():
        labels.rles.pop(image_id, None)
        labels.skipped.append(Skipped(image_id, "bad_label", detail))
    if bad:
        labels.rows = [r for r in labels.rows if r[0] not in bad]
    if not labels.rles:
        raise DataError(f"SIIM label file {csv_path}: no usable row ({len(labels.skipped)} skipped)")
    return labels


class SiimReadResult(ReadResult):
    """A ReadResult that also carries the label table (masks on demand)."""

    table: SiimLabels

    def mask(self, record_id: str) -> np.ndarray:
        return self.table.mask(record_id)

    def write_mask_pngs(self, out_dir) -> int:
        """Render every record's mask as ``<id>.png`` (0 / 255) under ``out_dir`` and set
        ``mask_path``; existing files are reused. Returns the number written."""
        return self._write_mask_pngs(out_dir, self.mask)


def _new_result(labels: SiimLabels) -> SiimReadResult:
    result = SiimReadResult()
    result.table = labels
    result.skipped.extend(labels.skipped)
    return result


def read_siim(csv_path, image_dir, *, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> SiimReadResult:
    """Records for every labelled image with a DICOM below ``image_dir`` (searched recursively)."""
    labels = read_siim_labels(csv_path, height=height, width=width)
    images, _dups = index_files(image_dir, (".dcm",), "SIIM image folder")
    result = _new_result(labels)
    for image_id, lesions in labels.rles.items():
        path = images.get(image_id)
        if path is None:
            result.skipped.append(Skipped(image_id, "missing_image", f"{image_id}.dcm not under {image_dir}"))
            continue
        result.records.append(
            Record(
                id=image_id,
                image_path=path,
                patient_id=None,  # in the DICOM header only (PatientID); never logged
                labels={FINDING: 1.0 if lesions else 0.0},
                finding=FINDING if lesions else None,
            )
        )
    if not result.records:
        raise DataError(
            f"SIIM: none of the {len(labels.rles)} labelled images was found under {image_dir} "
            f"(looked for <ImageId>.dcm recursively)"
        )
    return result
