"""Reader-study labels.

- ``reader_labels``: one row per label (committed one by one, so a crash loses nothing already
  labelled): the image, the finding (one of the loaded model's classes, or a free finding with
  ``free`` = 1), the reader's verdict on "the finding is present" (agree / disagree /
  uncertain), an optional confidence 1-5, a comment, the reviewer, the model (id, version,
  content hash) and its probability for the finding, whether the AI's results were shown when
  the label was made (``ai_shown`` 0: blinded), the browser filter the worklist was made under
  (JSON) and the seconds spent on the case. Rows go with their image (ON DELETE CASCADE).
- Downgrade drops the table (the labels are lost; export them as CSV first).

Revision ID: 0004_reader_labels
Revises: 0003_analysis_extras
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_reader_labels"
down_revision = "0003_analysis_extras"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reader_labels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("instance_pk", sa.Integer(), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("finding", sa.String(), nullable=False),
        sa.Column("free", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("model_id", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("model_hash", sa.String(), nullable=True),
        sa.Column("ai_probability", sa.Float(), nullable=True),
        sa.Column("ai_shown", sa.Integer(), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("time_spent_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.String(), nullable=False),
        sa.CheckConstraint("verdict IN ('agree', 'disagree', 'uncertain')", name="ck_reader_labels_verdict"),
        sa.CheckConstraint(
            "confidence IS NULL OR (confidence >= 1 AND confidence <= 5)", name="ck_reader_labels_confidence"
        ),
    )
    op.create_index("ix_reader_labels_instance_reviewer", "reader_labels", ["instance_pk", "reviewer"])
    op.create_index("ix_reader_labels_created_at", "reader_labels", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_reader_labels_created_at", table_name="reader_labels")
    op.drop_index("ix_reader_labels_instance_reviewer", table_name="reader_labels")
    op.drop_table("reader_labels")
