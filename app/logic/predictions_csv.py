"""CSV of predictions for a set of instances (the app's export and ``adaptor-review analyze``).

One row per instance: identifiers that are not patient attributes (SOP Instance / Study UID,
study date, view, modality), the bundle, one ``p_<class>`` column per class with its operating
threshold (``threshold_<class>``) and whether the probability reaches it (``above_<class>``:
1 / 0), the top finding, the model's domain state (``domain_status``: in_domain /
out_of_domain / unknown, with its score, threshold and reasons; a row that is not in domain is
a result the model cannot vouch for), the mask's area fraction, the latest review, and
``error`` when the image could not be analysed. Patient names and IDs are not written. The first line is a comment
(``# Research use only ...``); read with ``csv`` skipping lines that start with ``#`` or
``pandas.read_csv(path, comment="#")``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from app.logic.analysis import AnalysisResult, latest_any

NOTICE_LINE = (
    "# Research use only; not for diagnosis. Probabilities are a research model's output; "
    "rows whose domain_status is not in_domain are not meaningful."
)
BASE_COLUMNS = [
    "sop_instance_uid",
    "study_instance_uid",
    "study_date",
    "view",
    "modality",
    "bundle_id",
    "bundle_version",
    "analysed_at",
    "top_finding",
    "top_probability",
    "domain_status",
    "domain_score",
    "domain_threshold",
    "domain_reasons",
]
TAIL_COLUMNS = ["mask_label", "mask_area_fraction", "review_status", "review_comment", "error"]


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _instance_facts(library, uids: Sequence[str]) -> dict[str, dict]:
    from sqlalchemy import select

    from app.library.models import Instance, Review, Series, Study

    facts: dict[str, dict] = {}
    with library.session() as s:
        for start in range(0, len(uids), 500):
            chunk = list(uids[start : start + 500])
            rows = s.execute(
                select(
                    Instance.sop_instance_uid,
                    Study.study_uid,
                    Instance.study_date,
                    Instance.view_position,
                    Instance.modality,
                    Instance.review_status,
                    Instance.id,
                )
                .join(Series, Series.id == Instance.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .where(Instance.sop_instance_uid.in_(chunk))
            ).all()
            pks = {}
            for uid, study_uid, date, view, modality, status, pk in rows:
                facts[uid] = dict(
                    study_instance_uid=study_uid,
                    study_date=date,
                    view=view,
                    modality=modality,
                    review_status=status or "",
                    review_comment="",
                )
                pks[pk] = uid
            if pks:
                for pk, comment in s.execute(
                    select(Review.instance_pk, Review.comment)
                    .where(Review.instance_pk.in_(list(pks)))
                    .order_by(Review.created_at, Review.id)
                ).all():
                    facts[pks[pk]]["review_comment"] = comment or ""  # the latest wins
    return facts


def prediction_rows(
    library, uids: Iterable[str], results: dict[str, AnalysisResult] | None = None, errors: dict[str, str] | None = None
) -> tuple[list[dict], list[str]]:
    """Rows (dicts of strings) and the class names, from ``results`` where given, else from the
    latest analysis stored in the library (any bundle)."""
    uids = list(dict.fromkeys(uids))
    results = dict(results or {})
    errors = dict(errors or {})
    facts = _instance_facts(library, uids)
    for uid in uids:
        if uid not in results and uid not in errors and uid in facts:
            found = latest_any(library, uid)
            if found is not None:
                results[uid] = found
    classes: list[str] = []
    for r in results.values():
        for c in r.classes or list(r.probabilities):
            if c not in classes:
                classes.append(c)
    rows = []
    for uid in uids:
        f = facts.get(uid)
        r = results.get(uid)
        row = dict.fromkeys(BASE_COLUMNS + TAIL_COLUMNS, "")
        row["sop_instance_uid"] = uid
        if f is None:
            row["error"] = "not in the library"
            rows.append(row)
            continue
        for key in ("study_instance_uid", "study_date", "view", "modality", "review_status", "review_comment"):
            row[key] = f[key]
        if r is None:
            row["error"] = errors.get(uid, "not analysed")
        else:
            top, p = r.top_finding
            row.update(
                bundle_id=r.bundle_id,
                bundle_version=r.bundle_version,
                analysed_at=r.created_at,
                top_finding=top or "",
                top_probability=_fmt(p),
                mask_label=r.mask_label or "",
                mask_area_fraction=_fmt(r.mask_area_fraction),
                domain_status=r.domain.status,
                domain_score=_fmt(r.domain.score),
                domain_threshold=_fmt(r.domain.threshold),
                domain_reasons="; ".join(r.domain.reasons),
            )
            for c in classes:
                row[f"p_{c}"] = _fmt(r.probabilities.get(c))
                row[f"threshold_{c}"] = _fmt(r.thresholds.get(c))
                above = r.above_threshold(c)
                row[f"above_{c}"] = "" if above is None else str(int(above))
        rows.append(row)
    return rows, classes


def columns_for(classes: Sequence[str]) -> list[str]:
    per_class = [f"{kind}_{c}" for c in classes for kind in ("p", "threshold", "above")]
    return BASE_COLUMNS + per_class + TAIL_COLUMNS


def write_predictions_csv(path: str | os.PathLike, rows: list[dict], classes: Sequence[str]) -> Path:
    """Write atomically (:func:`core_model.fileio.atomic_write`); returns the path."""
    path = Path(path)
    buf = io.StringIO()
    buf.write(NOTICE_LINE + "\n")
    writer = csv.DictWriter(buf, fieldnames=columns_for(classes), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in writer.fieldnames})
    from core_model.fileio import atomic_write_text

    return atomic_write_text(path, buf.getvalue(), fsync=False, mkdir=True)


def read_predictions_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV written by :func:`write_predictions_csv` (comment lines skipped)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))
