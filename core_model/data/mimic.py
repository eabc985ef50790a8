"""MIMIC-CXR-JPG images with MIMIC-CXR reports.

Layout (PhysioNet releases; see NOTES.md section 2):

- images root (MIMIC-CXR-JPG): ``mimic-cxr-2.0.0-split.csv`` (``dicom_id, study_id, subject_id,
  split`` with train / validate / test), ``mimic-cxr-2.0.0-metadata.csv`` (``dicom_id, ...,
  ViewPosition, ...``), optionally ``mimic-cxr-2.0.0-chexpert.csv`` (``subject_id, study_id`` and
  14 observations valued 1 / 0 / -1 / blank), each plain or ``.csv.gz`` (any ``2.x.y`` version),
  and ``files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg``;
- reports root (MIMIC-CXR): ``files/pXX/pSUBJECT/sSTUDY.txt``.

One record per image: ``id = dicom_id``, ``patient_id = subject_id``, ``study_id``, ``view =
ViewPosition``, the official split (validate -> ``val``), the study's report as the paper's text
(IMPRESSION + " " + FINDINGS, see :mod:`core_model.data.reports`; ``___`` de-identification
placeholders removed), and the CheXpert labels under snake-case names (``no_finding``,
``enlarged_cardiomediastinum``, ``pneumonia``, ``pneumothorax``, ...) plus ``normal`` (= ``No
Finding``). ``finding`` stays None (MIMIC-CXR is multi-label).

The frontal-view filter (``frontal_only=True``, views PA and AP) is on by default; other views are
listed as skipped with reason ``not_frontal``. Other reasons: ``missing_image``,
``missing_report``, ``empty_report`` (no FINDINGS, IMPRESSION or other free text), ``bad_label``,
``bad_split``, ``bad_row`` (blank ids), ``unreadable_image`` (``verify_images=True`` only). A
missing CSV or a missing required column raises :class:`~core_model.errors.DataError` naming it.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from core_model.data._files import open_text
from core_model.data.manifest import parse_label
from core_model.data.records import ReadResult, Record, Skipped
from core_model.data.reports import report_text
from core_model.errors import DataError

FRONTAL_VIEWS = ("PA", "AP")
_SPLITS = {"train": "train", "validate": "val", "val": "val", "validation": "val", "test": "test"}
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")


def find_csv(root: Path, kind: str, *, required: bool = True) -> Path | None:
    """``mimic-cxr-<version>-<kind>.csv`` or ``.csv.gz`` in ``root`` (newest version first)."""
    candidates = sorted(root.glob(f"mimic-cxr-*-{kind}.csv"), reverse=True) + sorted(
        root.glob(f"mimic-cxr-*-{kind}.csv.gz"), reverse=True
    )
    if candidates:
        return candidates[0]
    if required:
        raise DataError(f"MIMIC-CXR-JPG {kind} file not found: expected {root}/mimic-cxr-2.0.0-{kind}.csv (or .csv.gz)")
    return None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict]:
    with open_text(path, "MIMIC-CXR-JPG file") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for col in required:
            if col not in header:
                raise DataError(
                    f"{path.name}: required column {col!r} is missing; columns found: {', '.join(header) or 'none'}"
                )
        try:
            return list(reader)
        except (csv.Error, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable CSV ({exc})") from exc


def _files_dir(root: Path) -> Path:
    return root if root.name == "files" and not (root / "files").is_dir() else root / "files"


def _id(value) -> str:
    """'50414267', '50414267.0', ' s50414267' -> '50414267'."""
    s = str(value or "").strip()
    s = re.sub(r"\.0+$", "", s)
    return s.lstrip("ps") if s[:1] in ("p", "s") and s[1:].isdigit() else s


def label_name(column: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", column.strip().lower()).strip("_")


def image_path(files: Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    return files / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}" / f"{dicom_id}.jpg"


def report_path(files: Path, subject_id: str, study_id: str) -> Path:
    return files / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}.txt"


def read_mimic(
    images_root: str | os.PathLike,
    reports_root: str | os.PathLike | None = None,
    *,
    frontal_only: bool = True,
    views: tuple[str, ...] = FRONTAL_VIEWS,
    split_csv: str | os.PathLike | None = None,
    metadata_csv: str | os.PathLike | None = None,
    chexpert_csv: str | os.PathLike | None = None,
    use_chexpert: bool = True,
    require_report: bool = True,
    check_images: bool = True,
    verify_images: bool = False,
    deid: str = "remove",
) -> ReadResult:
    """Read MIMIC-CXR-JPG (+ MIMIC-CXR reports) into records; see the module docs."""
    root = Path(images_root).expanduser()
    if not root.is_dir():
        raise DataError(f"MIMIC-CXR-JPG folder not found: {root}")
    if reports_root is None and require_report:
        raise DataError(
            "MIMIC-CXR reports folder not given (the reports come from MIMIC-CXR, "
            "files/pXX/pSUBJECT/sSTUDY.txt); pass require_report=False for images only"
        )
    reports_files = None
    if reports_root is not None:
        rr = Path(reports_root).expanduser()
        if not rr.is_dir():
            raise DataError(f"MIMIC-CXR reports folder not found: {rr}")
        reports_files = _files_dir(rr)
    image_files = _files_dir(root)

    split_path = Path(split_csv) if split_csv else find_csv(root, "split")
    if not split_path.is_file():
        raise DataError(f"MIMIC-CXR-JPG split file not found: {split_path}")
    rows = _read_csv(split_path, SPLIT_COLUMNS)

    views_of: dict[str, str] = {}
    if frontal_only or metadata_csv:
        meta_path = Path(metadata_csv) if metadata_csv else find_csv(root, "metadata")
        if not meta_path.is_file():
            raise DataError(f"MIMIC-CXR-JPG metadata file not found: {meta_path} (needed for the view filter)")
        for m in _read_csv(meta_path, ("dicom_id", "ViewPosition")):
            views_of[(m.get("dicom_id") or "").strip()] = (m.get("ViewPosition") or "").strip().upper()
    elif (p := find_csv(root, "metadata", required=False)) is not None:
        for m in _read_csv(p, ("dicom_id", "ViewPosition")):
            views_of[(m.get("dicom_id") or "").strip()] = (m.get("ViewPosition") or "").strip().upper()

    labels_of: dict[tuple[str, str], dict[str, float] | str] = {}
    if use_chexpert:
        cx_path = Path(chexpert_csv) if chexpert_csv else find_csv(root, "chexpert", required=False)
        if chexpert_csv and not Path(chexpert_csv).is_file():
            raise DataError(f"MIMIC-CXR-JPG CheXpert label file not found: {chexpert_csv}")
        if cx_path is not None:
            for c in _read_csv(cx_path, ("subject_id", "study_id")):
                key = (_id(c.get("subject_id")), _id(c.get("study_id")))
                labels: dict[str, float] = {}
                problem = ""
                for col, value in c.items():
                    if col in ("subject_id", "study_id") or not col:
                        continue
                    try:
                        labels[label_name(col)] = parse_label(value)
                    except (ValueError, TypeError):
                        problem = f"{col}={value!r} is not 1, 0, -1 or blank"
                        break
                if problem:
                    labels_of[key] = problem
                    continue
                if "no_finding" in labels:
                    labels["normal"] = labels["no_finding"]
                labels_of[key] = labels

    wanted_views = tuple(v.upper() for v in views)
    result = ReadResult()
    report_cache: dict[tuple[str, str], str | None | Exception] = {}
    for row in rows:
        dicom_id = (row.get("dicom_id") or "").strip()
        subject, study = _id(row.get("subject_id")), _id(row.get("study_id"))
        rid = dicom_id or f"s{study}"
        if not (dicom_id and subject.isdigit() and study.isdigit()):
            result.skipped.append(Skipped(rid or "?", "bad_row", "blank or malformed dicom_id/subject_id/study_id"))
            continue
        view = views_of.get(dicom_id, "")
        if frontal_only and view not in wanted_views:
            result.skipped.append(Skipped(rid, "not_frontal", view or "no ViewPosition"))
            continue
        split_raw = (row.get("split") or "").strip().lower()
        split = _SPLITS.get(split_raw)
        if split is None:
            result.skipped.append(Skipped(rid, "bad_split", repr(split_raw)))
            continue
        labels = labels_of.get((subject, study), {})
        if isinstance(labels, str):
            result.skipped.append(Skipped(rid, "bad_label", labels))
            continue
        img = image_path(image_files, subject, study, dicom_id)
        if check_images and not img.is_file():
            result.skipped.append(
                Skipped(rid, "missing_image", str(img.relative_to(root)) if img.is_relative_to(root) else str(img))
            )
            continue
        report = None
        if reports_files is not None:
            key = (subject, study)
            if key not in report_cache:
                rp = report_path(reports_files, subject, study)
                try:
                    report_cache[key] = report_text(rp.read_text(encoding="utf-8", errors="replace"), deid=deid)
                except FileNotFoundError as exc:
                    report_cache[key] = exc
                except OSError as exc:
                    report_cache[key] = exc
            cached = report_cache[key]
            if isinstance(cached, Exception):
                if require_report:
                    reason = "missing_report" if isinstance(cached, FileNotFoundError) else "unreadable_report"
                    result.skipped.append(Skipped(rid, reason, f"s{study}.txt"))
                    continue
            else:
                report = cached
        if require_report and not report:
            result.skipped.append(Skipped(rid, "empty_report", f"s{study}.txt"))
            continue
        if verify_images:
            from core_model.data.manifest import verify_image

            problem = verify_image(str(img))
            if problem:
                result.skipped.append(Skipped(rid, "unreadable_image", problem))
                continue
        result.records.append(
            Record(
                id=dicom_id,
                image_path=str(img.resolve()) if img.exists() else str(img.absolute()),
                report=report,
                split=split,
                patient_id=subject,
                study_id=study,
                view=view or None,
                labels=dict(labels),
            )
        )
    return result
