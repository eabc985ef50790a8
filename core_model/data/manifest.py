"""The generic manifest: a CSV or JSONL file listing images with their reports (and more).

Columns (CSV header, or JSONL object keys):

- ``image`` (required): path of a DICOM / PNG / JPEG, relative to the manifest's folder or absolute;
- ``report`` (required unless ``require_report=False``): free-text report. By default the paper's
  text is used (IMPRESSION + " " + FINDINGS, see :func:`core_model.data.reports.report_text`; a
  report without section headers is used whole); ``text="raw"`` keeps it as given (whitespace
  collapsed);
- optional: ``id`` (default: the image path as written), ``split`` (train / val / test; also
  validate / valid / validation / dev / training / testing; blank = none), ``patient_id``,
  ``study_id``, ``view``, ``finding``, ``mask`` (segmentation mask), ``lesion_mask`` (region of the
  finding, for scoring heatmaps), and any ``label_<name>`` columns valued 1 / 0 / -1 / blank
  (blank = unknown, NaN). JSONL may give ``labels`` as an object ``{"name": value}``.
- Other columns are ignored. ``image_column="dicom"`` reads the phantoms' DICOM copies instead of
  the PNGs (rows with a blank cell are skipped as ``missing_image``).

Rows a run cannot use become :class:`~core_model.data.records.Skipped` with a reason:
``missing_image`` (blank or not found), ``unreadable_image`` (only with ``verify_images=True``:
the file does not decode), ``empty_report``, ``bad_label``, ``bad_split``, ``missing_mask``,
``duplicate_id``, ``bad_row`` (a JSONL line that is not a JSON object). A missing manifest file or
required column raises :class:`~core_model.errors.DataError` naming it (and the columns found).
``.csv.gz`` and ``.jsonl.gz`` are read too.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from core_model.data._files import open_text
from core_model.data.records import ReadResult, Record, Skipped
from core_model.data.reports import clean_text, report_text
from core_model.data.splits import SPLIT_ALIASES
from core_model.errors import DataError
from core_model.fileio import atomic_write_text

# the split names of core_model.data.splits, and "dev" (a common manifest spelling of val)
_SPLITS = {**SPLIT_ALIASES, "dev": "val"}


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json"))


def parse_label(value) -> float:
    """1 / 0 / -1 (also 1.0, "1", true / false) -> float; blank / None / "nan" -> NaN.
    Anything else raises ValueError."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        s = str(value).strip().lower()
        if s in ("", "nan", "na", "none", "null"):
            return math.nan
        if s in ("true", "yes"):
            return 1.0
        if s in ("false", "no"):
            return 0.0
        v = float(s)  # ValueError for text
    if math.isnan(v):
        return math.nan
    if v not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank")
    return v


def _rows(path: Path, image_column: str, require_report: bool) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, row or None, problem) for each data row; checks required columns first."""
    required = [image_column] + (["report"] if require_report else [])
    with open_text(path, "manifest") as fh:
        if _is_jsonl(path):
            parsed: list[tuple[int, dict | None, str]] = []
            keys: set[str] = set()
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    parsed.append((lineno, None, f"not valid JSON ({exc.msg})"))
                    continue
                if not isinstance(obj, dict):
                    parsed.append((lineno, None, "not a JSON object"))
                    continue
                keys.update(obj)
                parsed.append((lineno, obj, ""))
            if not any(row is not None for _, row, _ in parsed):
                raise DataError(f"manifest {path} holds no JSON object rows")
            for col in required:
                if col not in keys:
                    raise DataError(
                        f"manifest {path}: required column {col!r} is missing; "
                        f"columns found: {', '.join(sorted(keys)) or 'none'}"
                    )
            yield from parsed
            return
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if not header:
            raise DataError(f"manifest {path} is empty (no header row)")
        header = [h.strip() for h in header]
        reader.fieldnames = header
        for col in required:
            if col not in header:
                raise DataError(
                    f"manifest {path}: required column {col!r} is missing; columns found: {', '.join(header)}"
                )
        for row in reader:
            yield reader.line_num, row, ""


def _cell(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


def read_manifest(
    path: str | os.PathLike,
    *,
    image_column: str = "image",
    base_dir: str | os.PathLike | None = None,
    check_images: bool = True,
    verify_images: bool = False,
    require_report: bool = True,
    text: str = "paper",
    deid: str = "remove",
) -> ReadResult:
    """Read a generic CSV / JSONL manifest into records (see the module docs)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"manifest file not found: {path}")
    if text not in ("paper", "raw"):
        raise ValueError("text must be 'paper' or 'raw'")
    base = Path(base_dir).expanduser() if base_dir else path.parent
    base = base.resolve()
    result = ReadResult()
    seen: set[str] = set()

    def resolve(p: str) -> str:
        return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))

    for lineno, row, problem in _rows(path, image_column, require_report):
        if row is None:
            result.skipped.append(Skipped(f"line{lineno}", "bad_row", problem))
            continue
        image = _cell(row, image_column)
        rid = _cell(row, "id") or image or f"line{lineno}"
        if rid in seen:
            result.skipped.append(Skipped(rid, "duplicate_id", f"line {lineno}"))
            continue
        seen.add(rid)
        if not image:
            result.skipped.append(Skipped(rid, "missing_image", f"blank {image_column!r} cell"))
            continue
        image_path = resolve(image)
        if check_images and not os.path.isfile(image_path):
            result.skipped.append(Skipped(rid, "missing_image", image))
            continue
        raw_report = _cell(row, "report")
        if text == "paper":
            report = report_text(raw_report, deid=deid) if raw_report else None
        else:
            report = clean_text(raw_report, deid="keep") or None
        if require_report and not report:
            result.skipped.append(Skipped(rid, "empty_report", f"line {lineno}"))
            continue
        labels: dict[str, float] = {}
        bad = ""
        items = [(k[len("label_") :], v) for k, v in row.items() if k and k.startswith("label_") and len(k) > 6]
        extra = row.get("labels")
        if isinstance(extra, dict):
            items += list(extra.items())
        elif extra not in (None, ""):
            bad = "'labels' must be an object"
        for name, value in items:
            try:
                labels[str(name).strip()] = parse_label(value)
            except (ValueError, TypeError):
                bad = f"{name}={value!r} is not 1, 0, -1 or blank"
                break
        if bad:
            result.skipped.append(Skipped(rid, "bad_label", bad))
            continue
        split_raw = _cell(row, "split").lower()
        split = _SPLITS.get(split_raw) if split_raw else None
        if split_raw and split is None:
            result.skipped.append(Skipped(rid, "bad_split", f"{split_raw!r} (train, val or test)"))
            continue
        masks = {}
        for col in ("mask", "lesion_mask"):
            value = _cell(row, col)
            masks[col] = resolve(value) if value else None
        missing = [c for c, p in masks.items() if p and check_images and not os.path.isfile(p)]
        if missing:
            result.skipped.append(Skipped(rid, "missing_mask", _cell(row, missing[0])))
            continue
        if verify_images:
            problem = verify_image(image_path)
            if problem:
                result.skipped.append(Skipped(rid, "unreadable_image", problem))
                continue
        finding = _cell(row, "finding").lower() or None
        result.records.append(
            Record(
                id=rid,
                image_path=image_path,
                report=report,
                split=split,
                patient_id=_cell(row, "patient_id") or None,
                study_id=_cell(row, "study_id") or None,
                view=_cell(row, "view").upper() or None,
                labels=labels,
                mask_path=masks["mask"],
                finding=finding,
                lesion_mask_path=masks["lesion_mask"],
            )
        )
    return result


def verify_image(path: str) -> str:
    """'' when the image decodes, else why not."""
    from core_model.imaging.preprocess import load_display

    try:
        arr = load_display(path)
    except Exception as exc:
        return f"{Path(path).name}: {exc}"
    if arr.size == 0:
        return f"{Path(path).name}: empty image"
    return ""


def write_manifest(path: str | os.PathLike, rows: Iterable[dict], columns: list[str] | None = None) -> Path:
    """Write rows as CSV (``.csv``) or JSONL (``.jsonl``) atomically (:func:`core_model.fileio.atomic_write`)."""
    path = Path(path)
    rows = list(rows)
    if columns is None:
        columns = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
    fh = io.StringIO()
    if _is_jsonl(path):
        for r in rows:
            fh.write(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) + "\n")
    else:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    return atomic_write_text(path, fh.getvalue(), mkdir=True)
