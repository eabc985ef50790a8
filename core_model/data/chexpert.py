"""CheXpert CSV reader and MIMIC-CXR CheXpert labels (stdlib csv only).

CheXpert (``train.csv`` / ``valid.csv``): ``Path, Sex, Age, Frontal/Lateral, AP/PA`` then the 14
observations, each ``1`` (positive), ``0`` (negative), ``-1`` (uncertain) or blank (not mentioned).
MIMIC-CXR (``mimic-cxr-2.0.0-chexpert.csv``): ``subject_id, study_id`` then the same 14 observations
(alphabetical order; columns are matched by name).

Label keys in ``Record.labels`` are the observation names in snake case (:data:`OBSERVATIONS` ->
:data:`LABEL_KEYS`: ``no_finding``, ``enlarged_cardiomediastinum``, ..., ``pneumonia``,
``pneumothorax``, ...), so ``pneumonia`` and ``pneumothorax`` match the project's finding names.

Uncertainty policy (``uncertainty=``), applied to ``-1``:

- ``"as_is"`` (default): keep ``-1``;
- ``"ones"`` / ``"zeros"``: U-Ones / U-Zeros of the CheXpert paper;
- ``"ignore"``: ``nan`` (the loss / metric skips it);
- ``"competition"``: CheXpert's per-observation choice that GLoRIA/MGCA use
  (:data:`COMPETITION_UNCERTAIN`: Atelectasis, Edema, Pleural Effusion -> 1; Cardiomegaly,
  Consolidation -> 0; the others kept as ``-1``);
- or a dict ``{observation or key: policy}`` (unlisted ones: ``as_is``).

Blank cells become ``nan`` (``blank="nan"``) or ``0`` (``blank="zeros"``, what MGCA's
``fillna(0)`` does).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from core_model.data._files import open_text, require_dir
from core_model.data.records import ReadResult, Record, Skipped
from core_model.errors import DataError

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)


def label_key(observation: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", observation.strip().lower()).strip("_")


LABEL_KEYS: tuple[str, ...] = tuple(label_key(o) for o in OBSERVATIONS)
COMPETITION_TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
COMPETITION_UNCERTAIN = {
    "Atelectasis": "ones",
    "Cardiomegaly": "zeros",
    "Consolidation": "zeros",
    "Edema": "ones",
    "Pleural Effusion": "ones",
}
POLICIES = ("as_is", "ones", "zeros", "ignore")


def _policy_map(uncertainty) -> dict[str, str]:
    """Per label key policy."""
    if isinstance(uncertainty, str):
        if uncertainty == "competition":
            mapping = {label_key(k): v for k, v in COMPETITION_UNCERTAIN.items()}
            return {k: mapping.get(k, "as_is") for k in LABEL_KEYS}
        if uncertainty not in POLICIES:
            raise DataError(f"uncertainty policy must be one of {POLICIES + ('competition',)}, not {uncertainty!r}")
        return {k: uncertainty for k in LABEL_KEYS}
    if isinstance(uncertainty, Mapping):
        out = {k: "as_is" for k in LABEL_KEYS}
        for name, pol in uncertainty.items():
            key = label_key(name)
            if key not in out:
                raise DataError(f"unknown CheXpert observation {name!r} in the uncertainty policy")
            if pol not in POLICIES:
                raise DataError(f"uncertainty policy for {name!r} must be one of {POLICIES}, not {pol!r}")
            out[key] = pol
        return out
    raise DataError(f"uncertainty policy must be a name or a mapping, not {type(uncertainty).__name__}")


def apply_uncertainty(value: float, policy: str) -> float:
    """Map one label value (1 / 0 / -1 / nan) under a policy."""
    if value == -1.0:
        return {"as_is": -1.0, "ones": 1.0, "zeros": 0.0, "ignore": math.nan}[policy]
    return value


def parse_label(text: str, blank: str = "nan") -> float:
    """``'1.0' -> 1.0``, ``'-1' -> -1.0``, blank -> nan (or 0 with ``blank="zeros"``). Raises
    ValueError for anything else."""
    t = text.strip()
    if t == "":
        return 0.0 if blank == "zeros" else math.nan
    v = float(t)
    if v not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {t!r} is not 1, 0, -1 or blank")
    return v


def _labels_from_row(row: dict, columns: Mapping[str, str], policies: Mapping[str, str], blank: str) -> dict:
    out = {}
    for obs, col in columns.items():
        key = label_key(obs)
        out[key] = apply_uncertainty(parse_label(row.get(col) or "", blank), policies[key])
    return out


def _observation_columns(fieldnames, path, what) -> dict[str, str]:
    stripped = {f.strip(): f for f in fieldnames}
    missing = [o for o in OBSERVATIONS if o not in stripped]
    if missing:
        raise DataError(f"{what} {path} lacks observation column(s): {', '.join(missing)}")
    return {o: stripped[o] for o in OBSERVATIONS}


def _resolve_image(root: Path | None, rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or root is None:
        return p
    direct = root / p
    if direct.exists() or len(p.parts) < 2:
        return direct
    # CSV paths start with the release folder ("CheXpert-v1.0-small/train/..."): also accept a root
    # that *is* that folder (what MGCA does: drop the first component)
    stripped = root.joinpath(*p.parts[1:])
    return stripped if stripped.exists() else direct


def read_chexpert(
    csv_path,
    image_root=None,
    *,
    uncertainty="as_is",
    blank: str = "nan",
    frontal_only: bool = True,
    split: str | None = None,
    check_images: bool = True,
) -> ReadResult:
    """Records of a CheXpert CSV. ``image_root`` is the folder holding the release folder (or the
    release folder itself); without it, ``check_images`` is off and paths stay as in the CSV.
    Lateral images are skipped as ``not_frontal`` when ``frontal_only``."""
    policies = _policy_map(uncertainty)
    if blank not in ("nan", "zeros"):
        raise DataError(f"blank must be 'nan' or 'zeros', not {blank!r}")
    root = require_dir(image_root, "CheXpert image folder").resolve() if image_root is not None else None
    result = ReadResult()
    with open_text(csv_path, "CheXpert CSV") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        for col in ("Path", "Frontal/Lateral"):
            if col not in fields:
                raise DataError(f"CheXpert CSV {csv_path} has no '{col}' column")
        columns = _observation_columns(reader.fieldnames, csv_path, "CheXpert CSV")
        fmap = {f.strip(): f for f in reader.fieldnames}
        for lineno, row in enumerate(reader, start=2):
            rel = (row.get(fmap["Path"]) or "").strip()
            if not rel:
                result.skipped.append(Skipped(f"line {lineno}", "bad_row", "no Path"))
                continue
            fl = (row.get(fmap["Frontal/Lateral"]) or "").strip()
            if frontal_only and fl.lower() != "frontal":
                result.skipped.append(Skipped(rel, "not_frontal", fl or "blank view"))
                continue
            try:
                labels = _labels_from_row(row, columns, policies, blank)
            except ValueError as exc:
                result.skipped.append(Skipped(rel, "bad_label", f"line {lineno}: {exc}"))
                continue
            path = _resolve_image(root, rel)
            if check_images and root is not None and not path.is_file():
                result.skipped.append(Skipped(rel, "missing_image", str(path)))
                continue
            parts = Path(rel).parts
            patient = next((q for q in parts if q.startswith("patient")), None)
            study = next((q for q in parts if q.startswith("study")), None)
            appa = (row.get(fmap.get("AP/PA", ""), "") or "").strip() if "AP/PA" in fmap else ""
            view = (appa.upper() or None) if fl.lower() == "frontal" else "LATERAL"
            result.records.append(
                Record(
                    id=rel,
                    image_path=str(path),
                    split=split,
                    patient_id=patient,
                    study_id=f"{patient}/{study}" if patient and study else None,
                    view=view,
                    labels=labels,
                )
            )
    if not result.records:
        raise DataError(f"CheXpert CSV {csv_path}: nothing usable ({result.summary()})")
    return result


def _norm_study(study_id) -> str:
    s = str(study_id).strip()
    if s[:1] in ("s", "S") and s[1:].isdigit():
        s = s[1:]
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    return s


def read_mimic_chexpert(
    csv_path, *, uncertainty="as_is", blank: str = "nan"
) -> tuple[dict[str, dict[str, float]], list[Skipped]]:
    """``mimic-cxr-2.0.0-chexpert.csv`` as ``{study_id: labels}`` (study ids without the ``s``
    prefix, as strings) plus the rows that could not be used."""
    policies = _policy_map(uncertainty)
    table: dict[str, dict[str, float]] = {}
    skipped: list[Skipped] = []
    with open_text(csv_path, "MIMIC-CXR CheXpert label file") as fh:
        reader = csv.DictReader(fh)
        fmap = {f.strip(): f for f in (reader.fieldnames or [])}
        if "study_id" not in fmap:
            raise DataError(f"MIMIC-CXR CheXpert label file {csv_path} has no 'study_id' column")
        columns = _observation_columns(reader.fieldnames, csv_path, "MIMIC-CXR CheXpert label file")
        for lineno, row in enumerate(reader, start=2):
            sid = _norm_study(row.get(fmap["study_id"]) or "")
            if not sid:
                skipped.append(Skipped(f"line {lineno}", "bad_row", "no study_id"))
                continue
            try:
                table[sid] = _labels_from_row(row, columns, policies, blank)
            except ValueError as exc:
                skipped.append(Skipped(sid, "bad_label", f"line {lineno}: {exc}"))
    if not table:
        raise DataError(f"MIMIC-CXR CheXpert label file {csv_path}: no usable row")
    return table, skipped


def attach_mimic_chexpert(
    records: Iterable[Record], labels, *, uncertainty="as_is", blank: str = "nan", require_labels: bool = False
) -> ReadResult:
    """Attach MIMIC-CXR CheXpert labels to records by ``Record.study_id`` (``s50414267`` or
    ``50414267``). ``labels`` is the CSV path or the table from :func:`read_mimic_chexpert`.
    Existing label keys of a record are overwritten. Records without a label row are kept
    (``require_labels=False``) or skipped as ``no_labels``; the returned ReadResult holds the
    records and those skips (plus the CSV's bad rows)."""
    skipped: list[Skipped] = []
    if isinstance(labels, Mapping):
        table = labels
    else:
        table, skipped = read_mimic_chexpert(labels, uncertainty=uncertainty, blank=blank)
    result = ReadResult(skipped=list(skipped))
    for rec in records:
        row = table.get(_norm_study(rec.study_id)) if rec.study_id is not None else None
        if row is None:
            if require_labels:
                result.skipped.append(Skipped(rec.id, "no_labels", f"study {rec.study_id} has no CheXpert row"))
                continue
        else:
            rec.labels.update(row)
        result.records.append(rec)
    return result


FIVE_BY_200_SEED = 42


def chexpert_5x200(
    records: Iterable[Record], *, per_class: int = 200, seed: int = FIVE_BY_200_SEED
) -> tuple[list[Record], list[str]]:
    """The CheXpert 5x200 zero-shot set (GLoRIA / MGCA): for each of the five competition findings
    (:data:`COMPETITION_TASKS`), ``per_class`` images positive for it and negative for the other
    four, drawn as pandas' ``sample(n=per_class, random_state=seed)`` (``RandomState(seed).choice``
    without replacement) from the candidates in file order. Give records read with
    ``uncertainty="competition", blank="zeros"`` (what GLoRIA does); an uncertain or unknown label
    among the five disqualifies an image. Returns the records (split ``test``, labels one-hot over
    the five keys) and the five keys; too few candidates for a class is a DataError."""
    import numpy as np

    keys = [label_key(c) for c in COMPETITION_TASKS]
    records = list(records)
    chosen: list[Record] = []
    seen: set[str] = set()
    for key in keys:
        candidates = [
            r
            for r in records
            if r.labels.get(key) == 1.0 and all(r.labels.get(o) == 0.0 for o in keys if o != key) and r.id not in seen
        ]
        if len(candidates) < per_class:
            raise DataError(
                f"CheXpert 5x200: only {len(candidates)} images have {key} as their one positive among "
                f"{', '.join(keys)} ({per_class} needed)"
            )
        for i in np.random.RandomState(seed).choice(len(candidates), size=per_class, replace=False):
            r = candidates[int(i)]
            seen.add(r.id)
            r.split = "test"
            r.labels = {k: float(k == key) for k in keys}
            r.finding = key
            chosen.append(r)
    return chosen, keys
