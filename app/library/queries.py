"""The Qt-free query API the desktop app and the headless commands use.

Searches read the denormalised instance columns (patient, study date, view, review status, top
finding) so a filtered, sorted page over 100,000 instances stays within tens of milliseconds;
the writers here (:func:`add_review`, :func:`add_analysis`, :func:`remove_instances`) keep
those columns in step in the same transaction as the rows they summarise.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.library.db import Library
from app.library.models import (
    READER_VERDICTS,
    REVIEW_STATUSES,
    Analysis,
    ImportRun,
    Instance,
    Patient,
    ReaderLabel,
    RejectedFile,
    Report,
    Review,
    Series,
    Study,
    utcnow,
)
from app.library.storage import load_heatmap, load_mask, save_heatmap, save_mask
from core_model.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceRow:
    """One line of the viewer's study list."""

    id: int
    sop_instance_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_description: str
    series_uid: str
    modality: str
    view_position: str
    rows: int
    columns: int
    source_format: str
    storage: str
    file_path: str
    review_status: str | None
    top_finding: str | None
    top_probability: float | None
    imported_at: str
    top_domain: str | None = None  # domain status of the latest analysis (see core_model.runtime.domain)
    original_path: str = ""  # where it was imported from (file name, folder of a PNG/JPEG)
    series_description: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    accession_number: str = ""
    patient_pk: int = 0

    @property
    def file_name(self) -> str:
        return (self.original_path or self.file_path).replace("\\", "/").rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        """The folder it was imported from (PNG/JPEG files are grouped by it)."""
        path = (self.original_path or self.file_path).replace("\\", "/")
        return path.rsplit("/", 1)[0] if "/" in path else ""


@dataclass(frozen=True)
class SearchResult:
    rows: list[InstanceRow]
    total: int


_ROW_COLUMNS = (
    Instance.id,
    Instance.sop_instance_uid,
    Patient.name,
    Patient.patient_id,
    Patient.birth_date,
    Patient.sex,
    Study.study_uid,
    Instance.study_date,
    Study.description,
    Series.series_uid,
    Instance.modality,
    Instance.view_position,
    Instance.rows,
    Instance.columns,
    Instance.source_format,
    Instance.storage,
    Instance.file_path,
    Instance.review_status,
    Instance.top_finding,
    Instance.top_probability,
    Instance.imported_at,
    Instance.top_domain,
    Instance.original_path,
    Series.description,
    Series.series_number,
    Instance.instance_number,
    Study.accession_number,
    Instance.patient_pk,
)

SORT_KEYS = {
    "study_date": Instance.study_date,
    "patient_name": Patient.name_search,
    "patient_id": Patient.patient_id,
    "view": Instance.view_position,
    "modality": Instance.modality,
    "top_probability": Instance.top_probability,
    "review_status": Instance.review_status,
    "imported": Instance.imported_at,
    "file": Instance.original_path,
}


def _norm_date(value: str | _dt.date | None) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, _dt.date):
        return value.strftime("%Y%m%d")
    digits = str(value).replace("-", "").replace(".", "").replace("/", "").strip()
    if len(digits) != 8 or not digits.isdigit():
        raise UserError(f"dates are YYYYMMDD or YYYY-MM-DD, not {value!r}")
    return digits


def _escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(term: str) -> str:
    return "%" + _escape(term) + "%"


def search_instances(
    session: Session,
    *,
    text: str | None = None,
    patient_name: str | None = None,
    patient_id: str | None = None,
    date_from: str | _dt.date | None = None,
    date_to: str | _dt.date | None = None,
    view: str | Sequence[str] | None = None,
    modality: str | Sequence[str] | None = None,
    review_status: str | None = None,
    top_finding: str | None = None,
    min_probability: float | None = None,
    uids: Sequence[str] | None = None,
    sort: str = "study_date",
    descending: bool = True,
    limit: int | None = 200,
    offset: int = 0,
    with_total: bool = True,
) -> SearchResult:
    """Filter, sort and page the instances.

    ``text`` matches a patient name (any part, case-insensitive) or the start of a patient ID;
    ``review_status`` is "approved", "flagged" or "unreviewed"; ``top_finding`` the finding with
    the highest probability in the instance's latest analysis (``min_probability`` bounds it).
    ``uids``: only these SOP Instance UIDs (e.g. "does the filter show this image?").
    Ties are broken by instance id so paging is stable.

    Query plan: matching patients are resolved first; then the page of instance ids is selected
    on the instances table alone (patients joined only to sort by name or ID) and the display
    columns are fetched for those ids only. Where SQLite's planner would pick the wrong index
    (a filter index when few patients match, or when sorting many matches by patient name), the
    filter columns are written as ``col || ''`` / ``col + 0``: same values and NULLs, no index."""
    if sort not in SORT_KEYS:
        raise UserError(f"unknown sort key {sort!r}; use one of {', '.join(SORT_KEYS)}")
    if review_status and review_status != "unreviewed" and review_status not in REVIEW_STATUSES:
        raise UserError(f"review status is approved, flagged or unreviewed, not {review_status!r}")
    d0, d1 = _norm_date(date_from), _norm_date(date_to)

    patient_conditions = []
    if text:
        term = text.strip()
        patient_conditions.append(
            or_(
                Patient.name_search.like(_like(" ".join(term.lower().replace("^", " ").split())), escape="\\"),
                Patient.patient_id.like(_escape(term) + "%", escape="\\"),
            )
        )
    if patient_name:
        patient_conditions.append(
            Patient.name_search.like(_like(" ".join(patient_name.lower().replace("^", " ").split())), escape="\\")
        )
    if patient_id:
        patient_conditions.append(Patient.patient_id == patient_id)
    patient_filter = None
    few_patients = False
    if patient_conditions:
        # Up to 2,000 matching patients go in as a list (their index is the way in); more as a
        # subquery, which SQLite turns into one temporary index per statement.
        patient_ids = list(session.execute(select(Patient.id).where(*patient_conditions).limit(2001)).scalars())
        if not patient_ids:
            return SearchResult([], 0)
        few_patients = len(patient_ids) <= 2000
        patient_filter = (
            Instance.patient_pk.in_(patient_ids)
            if few_patients
            else Instance.patient_pk.in_(select(Patient.id).where(*patient_conditions))
        )

    def build(hide: bool) -> list:
        def col(column):
            return column.concat("") if hide else column

        out: list[ColumnElement[bool]] = [patient_filter] if patient_filter is not None else []
        if d0:
            out.append(col(Instance.study_date) >= d0)
        if d1:
            out.append(and_(col(Instance.study_date) <= d1, col(Instance.study_date) != ""))
        for column, value in ((Instance.view_position, view), (Instance.modality, modality)):
            if value:
                values = [value] if isinstance(value, str) else list(value)
                out.append(col(column).in_([v.upper() for v in values]))
        if review_status == "unreviewed":
            out.append(col(Instance.review_status).is_(None))
        elif review_status:
            out.append(col(Instance.review_status) == review_status)
        if top_finding:
            out.append(col(Instance.top_finding) == top_finding)
        if min_probability is not None:
            prob = (Instance.top_probability + 0) if hide else Instance.top_probability
            out.append(prob >= float(min_probability))
        if uids is not None:
            out.append(Instance.sop_instance_uid.in_(list(uids)))
        return out

    count_conditions = build(hide=few_patients)
    total = None

    def count() -> int:
        return session.execute(select(func.count()).select_from(Instance).where(*count_conditions)).scalar_one()

    patient_sort = sort in ("patient_name", "patient_id")
    hide = few_patients
    if patient_sort and not few_patients and len(count_conditions) > 0:
        total = count()
        hide = total > 3000  # many matches: walk patients in name order, the page fills fast

    key = SORT_KEYS[sort]
    order: list[Any] = [
        key.desc() if descending else key.asc(),
        Instance.id.desc() if descending else Instance.id.asc(),
    ]
    ids_query = select(Instance.id).where(*build(hide))
    if patient_sort:
        ids_query = ids_query.join(Patient, Patient.id == Instance.patient_pk)
    ids_query = ids_query.order_by(*order).offset(offset)
    if limit is not None:
        ids_query = ids_query.limit(limit)
    ids = list(session.execute(ids_query).scalars())
    rows: list[InstanceRow] = []
    if ids:
        found: dict[int, InstanceRow] = {}
        for start in range(0, len(ids), 20000):
            chunk = ids[start : start + 20000]
            query = (
                select(*_ROW_COLUMNS)
                .select_from(Instance)
                .join(Patient, Patient.id == Instance.patient_pk)
                .join(Series, Series.id == Instance.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .where(Instance.id.in_(chunk))
            )
            found.update((r[0], InstanceRow(*tuple(r))) for r in session.execute(query).all())
        rows = [found[i] for i in ids]
    if total is None:
        needs_count = with_total and (limit is None or len(rows) == limit or offset)
        total = count() if needs_count else len(rows) + offset
    return SearchResult(rows, total)


def get_instance(session: Session, uid: str) -> Instance | None:
    return session.execute(select(Instance).where(Instance.sop_instance_uid == uid)).scalar_one_or_none()


def instance_path(library: Library, instance: Instance) -> Path:
    return library.resolve(instance.file_path, instance.storage)


def resolve_uids(session: Session, uids: Iterable[str]) -> tuple[list[Instance], list[str]]:
    """Instances for SOP Instance, Series or Study UIDs (any mix); returns (instances, unknown)."""
    found: dict[int, Instance] = {}
    unknown = []
    for uid in uids:
        hits = session.execute(select(Instance).where(Instance.sop_instance_uid == uid)).scalars().all()
        if not hits:
            hits = session.execute(select(Instance).join(Series).where(Series.series_uid == uid)).scalars().all()
        if not hits:
            hits = (
                session.execute(select(Instance).join(Series).join(Study).where(Study.study_uid == uid)).scalars().all()
            )
        if not hits:
            unknown.append(uid)
        for inst in hits:
            found[inst.id] = inst
    return list(found.values()), unknown


# -- tree listing ----------------------------------------------------------------------------


def library_tree(session: Session) -> list[dict[str, Any]]:
    """patients -> studies -> series -> instances, as plain dicts (for ``list`` and exports)."""
    patients: dict[int, dict] = {}
    studies: dict[int, dict] = {}
    series: dict[int, dict] = {}
    for p in session.execute(select(Patient).order_by(Patient.name_search, Patient.patient_id)).scalars():
        patients[p.id] = dict(patient_id=p.patient_id, name=p.name, birth_date=p.birth_date, sex=p.sex, studies=[])
    for s in session.execute(select(Study).order_by(Study.study_date, Study.id)).scalars():
        studies[s.id] = dict(
            study_uid=s.study_uid,
            date=s.study_date,
            description=s.description,
            accession_number=s.accession_number,
            series=[],
        )
        patients[s.patient_pk]["studies"].append(studies[s.id])
    for se in session.execute(select(Series).order_by(Series.series_number, Series.id)).scalars():
        series[se.id] = dict(
            series_uid=se.series_uid,
            modality=se.modality,
            number=se.series_number,
            description=se.description,
            instances=[],
        )
        studies[se.study_pk]["series"].append(series[se.id])
    for i in session.execute(select(Instance).order_by(Instance.instance_number, Instance.id)).scalars():
        series[i.series_pk]["instances"].append(
            dict(
                sop_instance_uid=i.sop_instance_uid,
                view=i.view_position,
                rows=i.rows,
                columns=i.columns,
                photometric=i.photometric,
                transfer_syntax=i.transfer_syntax_uid,
                format=i.source_format,
                storage=i.storage,
                file=i.file_path,
                review_status=i.review_status,
                top_finding=i.top_finding,
                top_probability=i.top_probability,
            )
        )
    return list(patients.values())


def counts(session: Session) -> dict[str, int]:
    return {
        name: session.execute(select(func.count()).select_from(model)).scalar_one()
        for name, model in (
            ("patients", Patient),
            ("studies", Study),
            ("series", Series),
            ("instances", Instance),
            ("reports", Report),
            ("analyses", Analysis),
            ("reviews", Review),
        )
    }


# -- reports, runs --------------------------------------------------------------------------


def reports_for(session: Session, instance: Instance) -> list[Report]:
    """The instance's own reports, then its study's study-level reports."""
    study_pk = session.execute(select(Series.study_pk).where(Series.id == instance.series_pk)).scalar_one()
    return list(
        session.execute(
            select(Report)
            .where(
                or_(Report.instance_pk == instance.id, and_(Report.study_pk == study_pk, Report.instance_pk.is_(None)))
            )
            .order_by(Report.instance_pk.is_(None), Report.id)
        ).scalars()
    )


def add_report(library: Library, uid: str, text: str, source: str = "user") -> int:
    with library.write() as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError(f"no instance {uid} in the library")
        study_pk = s.execute(select(Series.study_pk).where(Series.id == inst.series_pk)).scalar_one()
        rep = Report(study_pk=study_pk, instance_pk=inst.id, text=text, source=source, source_path="")
        s.add(rep)
        s.flush()
        return rep.id


def import_runs(session: Session, limit: int = 50) -> list[ImportRun]:
    return list(session.execute(select(ImportRun).order_by(ImportRun.id.desc()).limit(limit)).scalars())


def rejected_files(session: Session, run_id: int | None = None) -> list[RejectedFile]:
    q = select(RejectedFile).order_by(RejectedFile.id)
    if run_id is not None:
        q = q.where(RejectedFile.run_id == run_id)
    return list(session.execute(q).scalars())


# -- reviews --------------------------------------------------------------------------------


def add_review(
    library: Library,
    uid: str,
    status: str,
    comment: str = "",
    reviewer: str = "",
    *,
    created_at: str | None = None,
    lock_timeout: float | None = None,
) -> int:
    """Record a review; the instance's review status becomes its latest one.

    ``created_at`` (a queued review saved later, see app.library.pending) keeps the time of the
    click and makes the call idempotent: the same review (instance, status, comment, reviewer,
    time) is recorded once however often it is saved. ``lock_timeout``: how long to wait for
    another program's lock before :class:`~app.library.db.LibraryBusyError`."""
    if status not in REVIEW_STATUSES:
        raise UserError(f"review status is one of {', '.join(REVIEW_STATUSES)}, not {status!r}")
    with library.write(lock_timeout=lock_timeout) as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError(f"no instance {uid} in the library")
        if created_at is not None:
            same = s.execute(
                select(Review.id).where(
                    Review.instance_pk == inst.id,
                    Review.status == status,
                    Review.comment == comment,
                    Review.reviewer == reviewer,
                    Review.created_at == created_at,
                )
            ).scalar()
            if same is not None:
                return int(same)
        review = Review(
            instance_pk=inst.id, status=status, comment=comment, reviewer=reviewer, created_at=created_at or utcnow()
        )
        s.add(review)
        s.flush()
        inst.review_status = s.execute(
            select(Review.status)
            .where(Review.instance_pk == inst.id)
            .order_by(Review.created_at.desc(), Review.id.desc())
            .limit(1)
        ).scalar()
        return review.id


def reviews_for(session: Session, instance: Instance) -> list[Review]:
    return list(
        session.execute(
            select(Review).where(Review.instance_pk == instance.id).order_by(Review.created_at.desc(), Review.id.desc())
        ).scalars()
    )


# -- analyses -------------------------------------------------------------------------------


# -- reader-study labels --------------------------------------------------------------------


def add_reader_label(
    library: Library,
    uid: str,
    finding: str,
    verdict: str,
    *,
    confidence: int | None = None,
    comment: str = "",
    reviewer: str = "",
    free: bool = False,
    model_id: str = "",
    model_version: str = "",
    model_hash: str | None = None,
    ai_probability: float | None = None,
    ai_shown: bool = True,
    filter_json: str = "",
    time_spent_s: float | None = None,
    lock_timeout: float | None = None,
) -> int:
    """Record one reader-study label in its own transaction (committed when this returns)."""
    finding = " ".join(str(finding).split())
    if not finding:
        raise UserError("a label needs a finding name")
    if verdict not in READER_VERDICTS:
        raise UserError(f"a label's verdict is one of {', '.join(READER_VERDICTS)}, not {verdict!r}")
    if confidence is not None and not (isinstance(confidence, int) and 1 <= confidence <= 5):
        raise UserError(f"confidence is 1 to 5 (or none), not {confidence!r}")
    with library.write(lock_timeout=lock_timeout) as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError(f"no instance {uid} in the library")
        label = ReaderLabel(
            instance_pk=inst.id,
            finding=finding,
            free=int(bool(free)),
            verdict=verdict,
            confidence=confidence,
            comment=comment,
            reviewer=reviewer,
            model_id=model_id,
            model_version=model_version,
            model_hash=model_hash,
            ai_probability=None if ai_probability is None else float(ai_probability),
            ai_shown=int(bool(ai_shown)),
            filter=filter_json,
            time_spent_s=None if time_spent_s is None else float(time_spent_s),
            created_at=utcnow(),
        )
        s.add(label)
        s.flush()
        return label.id


def reader_labels_for(session: Session, uid: str, reviewer: str | None = None) -> list[ReaderLabel]:
    """The labels of an image (by ``reviewer`` if given), newest first."""
    q = (
        select(ReaderLabel)
        .join(Instance, Instance.id == ReaderLabel.instance_pk)
        .where(Instance.sop_instance_uid == uid)
        .order_by(ReaderLabel.created_at.desc(), ReaderLabel.id.desc())
    )
    if reviewer is not None:
        q = q.where(ReaderLabel.reviewer == reviewer)
    return list(session.execute(q).scalars())


def labelled_uids(session: Session, reviewer: str | None = None) -> set[str]:
    """SOP Instance UIDs with at least one label (by ``reviewer`` if given)."""
    q = select(Instance.sop_instance_uid).join(ReaderLabel, ReaderLabel.instance_pk == Instance.id).distinct()
    if reviewer is not None:
        q = q.where(ReaderLabel.reviewer == reviewer)
    return set(session.execute(q).scalars())


def reader_label_rows(
    session: Session, uids: Sequence[str] | None = None, reviewer: str | None = None
) -> list[dict[str, Any]]:
    """Labels with the identifiers that map them back to files (file name, study date,
    accession, study / series / instance UIDs), oldest first. No patient name or ID."""
    q = (
        select(
            ReaderLabel,
            Instance.sop_instance_uid,
            Instance.original_path,
            Instance.file_path,
            Instance.view_position,
            Instance.study_date,
            Series.series_uid,
            Study.study_uid,
            Study.accession_number,
        )
        .join(Instance, Instance.id == ReaderLabel.instance_pk)
        .join(Series, Series.id == Instance.series_pk)
        .join(Study, Study.id == Series.study_pk)
        .order_by(ReaderLabel.created_at, ReaderLabel.id)
    )
    if reviewer is not None:
        q = q.where(ReaderLabel.reviewer == reviewer)
    wanted = set(uids) if uids is not None else None
    rows = []
    for label, sop, original, file_path, view, date, series_uid, study_uid, accession in session.execute(q):
        if wanted is not None and sop not in wanted:
            continue
        name = (original or file_path or "").replace("\\", "/").rsplit("/", 1)[-1]
        rows.append(
            dict(
                file_name=name,
                study_date=date,
                accession_number=accession,
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                sop_instance_uid=sop,
                view=view,
                reviewer=label.reviewer,
                finding=label.finding,
                free_finding=label.free,
                verdict=label.verdict,
                confidence=label.confidence,
                comment=label.comment,
                time_spent_s=label.time_spent_s,
                ai_shown=label.ai_shown,
                ai_probability=label.ai_probability,
                model_id=label.model_id,
                model_version=label.model_version,
                model_hash=label.model_hash,
                filter=label.filter,
                labelled_at=label.created_at,
            )
        )
    return rows


def _top(probabilities: dict[str, float]) -> tuple[str | None, float | None]:
    clean = {k: float(v) for k, v in probabilities.items() if v is not None and math.isfinite(float(v))}
    if not clean:
        return None, None
    name = max(clean, key=lambda k: (clean[k], k))
    return name, clean[name]


def add_analysis(
    library: Library,
    uid: str,
    *,
    bundle_id: str,
    bundle_version: str,
    probabilities: dict[str, float],
    mask: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    bundle_hash: str | None = None,
    domain: dict | None = None,
    extras: dict | None = None,
) -> int:
    """Store a model's output for an instance. Mask and heatmap are written as files first
    (atomically); the row and the instance's top finding (with the domain status, from
    ``domain``: a ``DomainState.to_dict()``) are committed together afterwards. If the commit
    fails the files are removed again. ``bundle_hash`` is the bundle's content hash, the key
    under which the analysis is reused; ``extras`` (a JSON-able dict: what the other columns do
    not hold, see :func:`analysis_extras`) is stored in the row's ``extras`` column."""
    with library.session() as s:
        inst = get_instance(s, uid)
        if inst is None:
            raise UserError(f"no instance {uid} in the library")
        instance_pk = inst.id
    token = f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    written: list[Path] = []
    try:
        mask_rel = save_mask(library.data_dir, instance_pk, token, mask) if mask is not None else None
        if mask_rel:
            written.append(library.data_dir / mask_rel)
        heat_rel = save_heatmap(library.data_dir, instance_pk, token, heatmap) if heatmap is not None else None
        if heat_rel:
            written.append(library.data_dir / heat_rel)
        top_name, top_p = _top(probabilities)
        status = domain.get("status") if isinstance(domain, dict) else None
        with library.write() as s:
            row = Analysis(
                instance_pk=instance_pk,
                bundle_id=bundle_id,
                bundle_version=bundle_version,
                probabilities=json.dumps({k: float(v) for k, v in probabilities.items()}, sort_keys=True),
                top_finding=top_name,
                top_probability=top_p,
                mask_path=mask_rel,
                heatmap_path=heat_rel,
                created_at=utcnow(),
                bundle_hash=bundle_hash,
                domain=None if domain is None else json.dumps(domain, sort_keys=True),
                extras=None if extras is None else json.dumps(extras, sort_keys=True),
            )
            s.add(row)
            s.flush()
            s.execute(
                update(Instance)
                .where(Instance.id == instance_pk)
                .values(top_finding=top_name, top_probability=top_p, top_domain=status)
            )
            return row.id
    except BaseException:
        for path in written:
            try:
                path.unlink()
            except OSError:
                pass
        raise


def latest_analysis(session: Session, instance: Instance) -> Analysis | None:
    return session.execute(
        select(Analysis)
        .where(Analysis.instance_pk == instance.id)
        .order_by(Analysis.created_at.desc(), Analysis.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def analysis_probabilities(analysis: Analysis) -> dict[str, float]:
    return json.loads(analysis.probabilities or "{}")


def analysis_extras(analysis: Analysis) -> dict:
    """The stored extras of an analysis (``app.logic.analysis.store_result`` writes them), or
    ``{}`` when none were recorded or they cannot be read."""
    try:
        value = json.loads(analysis.extras) if analysis.extras else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def analysis_domain(analysis: Analysis) -> dict | None:
    """The stored ``DomainState.to_dict()`` of an analysis, or None (not recorded, unreadable)."""
    try:
        value = json.loads(analysis.domain) if analysis.domain else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def analysis_mask(library: Library, analysis: Analysis) -> np.ndarray | None:
    return load_mask(library.data_dir, analysis.mask_path) if analysis.mask_path else None


def analysis_heatmap(library: Library, analysis: Analysis) -> np.ndarray | None:
    return load_heatmap(library.data_dir, analysis.heatmap_path) if analysis.heatmap_path else None


# -- removal --------------------------------------------------------------------------------


def remove_instances(library: Library, uids: Iterable[str], *, delete_managed_files: bool = True) -> int:
    """Remove instances (and their reports, analyses, reviews; then series, studies and patients
    left empty). Managed copies and analysis files are deleted after the commit; linked files
    are never touched."""
    uids = list(uids)
    files: list[Path] = []
    with library.write() as s:
        insts = s.execute(select(Instance).where(Instance.sop_instance_uid.in_(uids))).scalars().all()
        for inst in insts:
            if inst.storage == "managed":
                files.append(library.resolve(inst.file_path, inst.storage))
            for a in s.execute(select(Analysis).where(Analysis.instance_pk == inst.id)).scalars():
                files.extend(library.data_dir / p for p in (a.mask_path, a.heatmap_path) if p)
        ids = [i.id for i in insts]
        if ids:
            s.execute(delete(Instance).where(Instance.id.in_(ids)))
            s.execute(delete(Series).where(~exists().where(Instance.series_pk == Series.id)))
            s.execute(delete(Study).where(~exists().where(Series.study_pk == Study.id)))
            s.execute(delete(Patient).where(~exists().where(Study.patient_pk == Patient.id)))
    if delete_managed_files:
        for path in files:
            try:
                os.unlink(path)
            except OSError:
                pass
    return len(ids)


# -- moved files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RelocateSummary:
    missing: int  # linked files not where the library had them
    found: int  # found in the folder (the library now points at them)
    still_missing: list[str]  # SOP Instance UIDs not found


def missing_linked(library: Library) -> list[tuple[str, str, str, int]]:
    """``(uid, file path, source format, file size)`` of linked files that are not there."""
    with library.session() as s:
        rows = s.execute(
            select(Instance.sop_instance_uid, Instance.file_path, Instance.source_format, Instance.file_size).where(
                Instance.storage == "linked"
            )
        ).all()
    return [tuple(r) for r in rows if not os.path.exists(r[1])]  # type: ignore[misc]


def _same_file(path: Path, uid: str, source_format: str, size: int) -> bool:
    """The file at ``path`` is the instance's: its SOP Instance UID (DICOM), else its size."""
    try:
        if source_format == "dicom":
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            return str(getattr(ds, "SOPInstanceUID", "")) == uid
        return path.stat().st_size == size
    except Exception:  # unreadable: not it
        return False


def relocate_linked(library: Library, folder: str | os.PathLike, *, cancelled=None) -> RelocateSummary:
    """Find linked files that moved: search ``folder`` (recursively) for files with the same
    name, check each is the same image (its SOP Instance UID; size for PNG / JPEG) and point the
    library at it. Managed copies are never touched."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    missing = missing_linked(library)
    if not missing:
        return RelocateSummary(0, 0, [])
    wanted = {Path(path).name for _uid, path, _f, _n in missing}
    by_name: dict[str, list[Path]] = {}
    for root, _dirs, files in os.walk(folder):
        if cancelled is not None and cancelled():
            break
        for name in files:
            if name in wanted:
                by_name.setdefault(name, []).append(Path(root) / name)
    moves: dict[str, str] = {}
    for uid, path, source_format, size in missing:
        for candidate in by_name.get(Path(path).name, []):
            if _same_file(candidate, uid, source_format, size):
                moves[uid] = str(candidate.resolve())
                break
    if moves:
        with library.write() as s:
            for uid, new in moves.items():
                s.execute(
                    update(Instance)
                    .where(Instance.sop_instance_uid == uid, Instance.storage == "linked")
                    .values(file_path=new)
                )
    log.info("relocated %d of %d missing linked files", len(moves), len(missing))
    return RelocateSummary(len(missing), len(moves), [uid for uid, *_ in missing if uid not in moves])


def removal_counts(library: Library, uids: Iterable[str]) -> tuple[int, int]:
    """``(managed, linked)`` among ``uids``: what a removal deletes and what it leaves."""
    uids = list(uids)
    with library.session() as s:
        kinds = list(s.execute(select(Instance.storage).where(Instance.sop_instance_uid.in_(uids))).scalars())
    return kinds.count("managed"), kinds.count("linked")
