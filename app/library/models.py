"""SQLAlchemy 2.0 ORM models of the study library (SQLite).

patients 1-n studies 1-n series 1-n instances; an instance has reports (also linked to its
study), analyses (model outputs) and reviews. Import runs keep the files they rejected.

Denormalised columns, kept in step by :mod:`app.library.importer` and :mod:`app.library.queries`
inside the same transaction as the rows they summarise, make the viewer's search fast:
``instances.patient_pk`` / ``study_date`` (filter and sort without joins),
``instances.review_status`` (the latest review) and ``instances.top_finding`` /
``top_probability`` / ``top_domain`` (from the latest analysis).

Masks and heatmaps are files under the library's data folder (``derived/``), referenced by a
path relative to that folder; see :mod:`app.library.storage`.
"""

from __future__ import annotations

import datetime as _dt

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> str:
    """ISO 8601 UTC timestamps as text: sortable, readable, no timezone surprises in SQLite."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Base(DeclarativeBase):
    pass


STORAGE_KINDS = ("managed", "linked")
REVIEW_STATUSES = ("approved", "flagged")
# a reader-study label: the reader's answer to "is <finding> present on this image?"
READER_VERDICTS = ("agree", "disagree", "uncertain")
SPACING_KINDS = ("PixelSpacing", "ImagerPixelSpacing")
RUN_STATUSES = ("running", "completed", "cancelled", "interrupted", "failed")


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Identity used for de-duplication: Patient ID + Issuer, or the name + birth date when the
    # file has no ID; "unknown" for images without patient information.
    patient_key: Mapped[str] = mapped_column(String, unique=True)
    patient_id: Mapped[str] = mapped_column(String, default="", index=True)
    issuer: Mapped[str] = mapped_column(String, default="")
    name: Mapped[str] = mapped_column(String, default="")
    name_search: Mapped[str] = mapped_column(String, default="", index=True)  # lower case, ^ -> space
    birth_date: Mapped[str] = mapped_column(String, default="")  # YYYYMMDD or ""
    sex: Mapped[str] = mapped_column(String, default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient", passive_deletes=True)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    study_date: Mapped[str] = mapped_column(String, default="", index=True)  # YYYYMMDD or ""
    study_time: Mapped[str] = mapped_column(String, default="")
    description: Mapped[str] = mapped_column(String, default="")
    accession_number: Mapped[str] = mapped_column(String, default="")

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study", passive_deletes=True)
    reports: Mapped[list[Report]] = relationship(back_populates="study", passive_deletes=True)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str] = mapped_column(String, default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String, default="")
    body_part: Mapped[str] = mapped_column(String, default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", passive_deletes=True)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        CheckConstraint("storage IN ('managed', 'linked')", name="ck_instances_storage"),
        CheckConstraint(
            "review_status IS NULL OR review_status IN ('approved', 'flagged')", name="ck_instances_review_status"
        ),
        CheckConstraint(
            "pixel_spacing_kind IS NULL OR pixel_spacing_kind IN ('PixelSpacing', 'ImagerPixelSpacing')",
            name="ck_instances_spacing_kind",
        ),
        # filter + default sort (study date) served by one index each; also single-column lookups
        Index("ix_instances_patient_date", "patient_pk", "study_date"),
        Index("ix_instances_view_date", "view_position", "study_date"),
        Index("ix_instances_review_date", "review_status", "study_date"),
        Index("ix_instances_top_finding", "top_finding", "top_probability"),
        Index("ix_instances_top_probability", "top_probability"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String, default="")
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    study_date: Mapped[str] = mapped_column(String, default="", index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # File location: relative to the library's data folder when managed, absolute when linked.
    file_path: Mapped[str] = mapped_column(Text)
    storage: Mapped[str] = mapped_column(String)
    source_format: Mapped[str] = mapped_column(String, default="dicom")  # dicom | png | jpeg
    original_path: Mapped[str] = mapped_column(Text, default="")  # where it was imported from
    file_size: Mapped[int] = mapped_column(Integer, default=0)
    modality: Mapped[str] = mapped_column(String, default="", index=True)
    view_position: Mapped[str] = mapped_column(String, default="")
    photometric: Mapped[str] = mapped_column(String, default="")
    rows: Mapped[int] = mapped_column(Integer, default=0)
    columns: Mapped[int] = mapped_column(Integer, default=0)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    pixel_spacing_row: Mapped[float | None] = mapped_column(Float, nullable=True)  # mm
    pixel_spacing_col: Mapped[float | None] = mapped_column(Float, nullable=True)
    pixel_spacing_kind: Mapped[str | None] = mapped_column(String, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String, default="")
    bits_allocated: Mapped[int] = mapped_column(Integer, default=8)
    bits_stored: Mapped[int] = mapped_column(Integer, default=8)
    pixel_representation: Mapped[int] = mapped_column(Integer, default=0)
    burned_in_annotation: Mapped[str] = mapped_column(String, default="")  # YES | NO | ""
    imported_at: Mapped[str] = mapped_column(String, default=utcnow, index=True)
    import_run_id: Mapped[int | None] = mapped_column(ForeignKey("import_runs.id", ondelete="SET NULL"), nullable=True)
    review_status: Mapped[str | None] = mapped_column(String, nullable=True)
    top_finding: Mapped[str | None] = mapped_column(String, nullable=True)
    top_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    # the latest analysis's domain status (in_domain / out_of_domain / unknown; NULL: not recorded)
    top_domain: Mapped[str | None] = mapped_column(String, nullable=True)

    series: Mapped[Series] = relationship(back_populates="instances")
    reports: Mapped[list[Report]] = relationship(back_populates="instance", passive_deletes=True)
    analyses: Mapped[list[Analysis]] = relationship(back_populates="instance", passive_deletes=True)
    reviews: Mapped[list[Review]] = relationship(back_populates="instance", passive_deletes=True)
    reader_labels: Mapped[list[ReaderLabel]] = relationship(back_populates="instance", passive_deletes=True)


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    instance_pk: Mapped[int | None] = mapped_column(
        ForeignKey("instances.id", ondelete="CASCADE"), nullable=True, index=True
    )
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String)  # sidecar_txt | user | ...
    source_path: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="reports")
    instance: Mapped[Instance | None] = relationship(back_populates="reports")


class Analysis(Base):
    __tablename__ = "analyses"
    __table_args__ = (Index("ix_analyses_instance_hash", "instance_pk", "bundle_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    bundle_id: Mapped[str] = mapped_column(String)
    bundle_version: Mapped[str] = mapped_column(String, default="")
    # SHA-256 of the bundle's manifest.json (Bundle.content_hash): the cache key. NULL for rows
    # stored before revision 0002, which are never shown as a loaded bundle's.
    bundle_hash: Mapped[str | None] = mapped_column(String, nullable=True)
    domain: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON of the runtime's DomainState
    probabilities: Mapped[str] = mapped_column(Text, default="{}")  # JSON {finding: probability}
    top_finding: Mapped[str | None] = mapped_column(String, nullable=True)
    top_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    mask_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # relative to the data folder
    heatmap_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # JSON of the extras (bundle thresholds and classes, mask threshold / area / label, default
    # heatmap phrase and contrast, embedding, similar reports); NULL: not recorded (revision 0003)
    extras: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String, default=utcnow, index=True)

    instance: Mapped[Instance] = relationship(back_populates="analyses")


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("status IN ('approved', 'flagged')", name="ck_reviews_status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String)
    comment: Mapped[str] = mapped_column(Text, default="")
    reviewer: Mapped[str] = mapped_column(String, default="")
    created_at: Mapped[str] = mapped_column(String, default=utcnow)

    instance: Mapped[Instance] = relationship(back_populates="reviews")


class ReaderLabel(Base):
    """One reader-study label (revision 0004): per image, per finding of the loaded model or a
    free finding, the reader's verdict on "the finding is present" (agree / disagree /
    uncertain), an optional confidence 1-5 and a comment; who labelled it, with which model
    (id, version, content hash) and the AI probability of that finding, whether the AI's results
    were shown when the label was made (0: blinded), the browser filter the worklist was made
    under (JSON) and the seconds spent on the case. Each label is its own committed row."""

    __tablename__ = "reader_labels"
    __table_args__ = (
        CheckConstraint("verdict IN ('agree', 'disagree', 'uncertain')", name="ck_reader_labels_verdict"),
        CheckConstraint(
            "confidence IS NULL OR (confidence >= 1 AND confidence <= 5)", name="ck_reader_labels_confidence"
        ),
        Index("ix_reader_labels_instance_reviewer", "instance_pk", "reviewer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    finding: Mapped[str] = mapped_column(String)
    free: Mapped[int] = mapped_column(Integer, default=0)  # 1: a finding the model does not have
    verdict: Mapped[str] = mapped_column(String)
    confidence: Mapped[int | None] = mapped_column(Integer, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")
    reviewer: Mapped[str] = mapped_column(String, default="")
    model_id: Mapped[str] = mapped_column(String, default="")
    model_version: Mapped[str] = mapped_column(String, default="")
    model_hash: Mapped[str | None] = mapped_column(String, nullable=True)
    ai_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    ai_shown: Mapped[int] = mapped_column(Integer, default=1)
    filter: Mapped[str] = mapped_column(Text, default="")
    time_spent_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[str] = mapped_column(String, default=utcnow, index=True)

    instance: Mapped[Instance] = relationship(back_populates="reader_labels")


class ImportRun(Base):
    __tablename__ = "import_runs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('running', 'completed', 'cancelled', 'interrupted', 'failed')", name="ck_import_runs_status"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[str] = mapped_column(String, default=utcnow)
    finished_at: Mapped[str | None] = mapped_column(String, nullable=True)
    status: Mapped[str] = mapped_column(String, default="running")
    mode: Mapped[str] = mapped_column(String, default="copy")
    sources: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of the paths given
    pid: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str] = mapped_column(String, default="")
    files_seen: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    ignored: Mapped[int] = mapped_column(Integer, default=0)

    rejected_files: Mapped[list[RejectedFile]] = relationship(back_populates="run", passive_deletes=True)


class RejectedFile(Base):
    __tablename__ = "rejected_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("import_runs.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String, index=True)  # machine-readable code
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String, default=utcnow)

    run: Mapped[ImportRun] = relationship(back_populates="rejected_files")


class Setting(Base):
    """Per-library values (the anonymisation secret, the library id). Never exported."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
