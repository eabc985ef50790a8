"""Initial study library schema: patients, studies, series, instances, reports, analyses,
reviews, import runs with their rejected files, settings.

Revision ID: 0001_initial
Revises:
Create Date: 2025-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patient_key", sa.String(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("issuer", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("name_search", sa.String(), nullable=False),
        sa.Column("birth_date", sa.String(), nullable=False),
        sa.Column("sex", sa.String(), nullable=False),
        sa.UniqueConstraint("patient_key"),
    )
    op.create_index("ix_patients_patient_id", "patients", ["patient_id"])
    op.create_index("ix_patients_name_search", "patients", ["name_search"])

    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("study_date", sa.String(), nullable=False),
        sa.Column("study_time", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("accession_number", sa.String(), nullable=False),
        sa.UniqueConstraint("study_uid"),
    )
    op.create_index("ix_studies_patient_pk", "studies", ["patient_pk"])
    op.create_index("ix_studies_study_date", "studies", ["study_date"])

    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("study_pk", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("modality", sa.String(), nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("body_part", sa.String(), nullable=False),
        sa.UniqueConstraint("series_uid"),
    )
    op.create_index("ix_series_study_pk", "series", ["study_pk"])

    op.create_table(
        "import_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("started_at", sa.String(), nullable=False),
        sa.Column("finished_at", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("files_seen", sa.Integer(), nullable=False),
        sa.Column("imported", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("ignored", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'cancelled', 'interrupted', 'failed')", name="ck_import_runs_status"
        ),
    )

    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(), nullable=False),
        sa.Column("series_pk", sa.Integer(), sa.ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
        sa.Column("patient_pk", sa.Integer(), sa.ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
        sa.Column("study_date", sa.String(), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("storage", sa.String(), nullable=False),
        sa.Column("source_format", sa.String(), nullable=False),
        sa.Column("original_path", sa.Text(), nullable=False),
        sa.Column("file_size", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(), nullable=False),
        sa.Column("view_position", sa.String(), nullable=False),
        sa.Column("photometric", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.Integer(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("pixel_spacing_row", sa.Float(), nullable=True),
        sa.Column("pixel_spacing_col", sa.Float(), nullable=True),
        sa.Column("pixel_spacing_kind", sa.String(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(), nullable=False),
        sa.Column("bits_allocated", sa.Integer(), nullable=False),
        sa.Column("bits_stored", sa.Integer(), nullable=False),
        sa.Column("pixel_representation", sa.Integer(), nullable=False),
        sa.Column("burned_in_annotation", sa.String(), nullable=False),
        sa.Column("imported_at", sa.String(), nullable=False),
        sa.Column("import_run_id", sa.Integer(), sa.ForeignKey("import_runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("review_status", sa.String(), nullable=True),
        sa.Column("top_finding", sa.String(), nullable=True),
        sa.Column("top_probability", sa.Float(), nullable=True),
        sa.UniqueConstraint("sop_instance_uid"),
        sa.CheckConstraint("storage IN ('managed', 'linked')", name="ck_instances_storage"),
        sa.CheckConstraint(
            "review_status IS NULL OR review_status IN ('approved', 'flagged')", name="ck_instances_review_status"
        ),
        sa.CheckConstraint(
            "pixel_spacing_kind IS NULL OR pixel_spacing_kind IN ('PixelSpacing', 'ImagerPixelSpacing')",
            name="ck_instances_spacing_kind",
        ),
    )
    for column in ("series_pk", "study_date", "modality", "imported_at"):
        op.create_index(f"ix_instances_{column}", "instances", [column])
    op.create_index("ix_instances_patient_date", "instances", ["patient_pk", "study_date"])
    op.create_index("ix_instances_view_date", "instances", ["view_position", "study_date"])
    op.create_index("ix_instances_review_date", "instances", ["review_status", "study_date"])
    op.create_index("ix_instances_top_finding", "instances", ["top_finding", "top_probability"])
    op.create_index("ix_instances_top_probability", "instances", ["top_probability"])

    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_pk", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("instance_pk", sa.Integer(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(), nullable=False),
    )
    op.create_index("ix_reports_study_pk", "reports", ["study_pk"])
    op.create_index("ix_reports_instance_pk", "reports", ["instance_pk"])

    op.create_table(
        "analyses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance_pk", sa.Integer(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("bundle_id", sa.String(), nullable=False),
        sa.Column("bundle_version", sa.String(), nullable=False),
        sa.Column("probabilities", sa.Text(), nullable=False),
        sa.Column("top_finding", sa.String(), nullable=True),
        sa.Column("top_probability", sa.Float(), nullable=True),
        sa.Column("mask_path", sa.Text(), nullable=True),
        sa.Column("heatmap_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(), nullable=False),
    )
    op.create_index("ix_analyses_instance_pk", "analyses", ["instance_pk"])
    op.create_index("ix_analyses_created_at", "analyses", ["created_at"])

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance_pk", sa.Integer(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.CheckConstraint("status IN ('approved', 'flagged')", name="ck_reviews_status"),
    )
    op.create_index("ix_reviews_instance_pk", "reviews", ["instance_pk"])

    op.create_table(
        "rejected_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("import_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(), nullable=False),
    )
    op.create_index("ix_rejected_files_run_id", "rejected_files", ["run_id"])
    op.create_index("ix_rejected_files_reason", "rejected_files", ["reason"])

    op.create_table(
        "settings",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "settings",
        "rejected_files",
        "reviews",
        "analyses",
        "reports",
        "instances",
        "import_runs",
        "series",
        "studies",
        "patients",
    ):
        op.drop_table(table)
