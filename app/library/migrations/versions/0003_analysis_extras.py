"""An analysis's extras in the database instead of files beside it.

- ``analyses.extras``: JSON of what the analysis columns do not hold (the bundle's thresholds and
  classes, the mask threshold, area fraction and label, the default heatmap's phrase and
  peak-to-mean ratio, the pooled embedding, the similar reports), written with the row by
  :func:`app.library.queries.add_analysis` (NULL: not recorded; the app then takes the bundle's
  facts and recomputes the rest on demand).
- Up to revision 0002 the app wrote them to ``<library>_files/derived/<instance id>/
  analysis-<analysis id>.json``; this upgrade reads each such file once into the column (an
  unreadable or missing file leaves NULL). The old files are left where they are (never read
  again): a file cannot be put back if the migration's transaction rolls back.
- Downgrade drops the column; an older app then recomputes the extras on demand, as it does
  for a missing file.

Revision ID: 0003_analysis_extras
Revises: 0002_analysis_bundle_hash_domain
Create Date: 2026-12-01
"""

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0003_analysis_extras"
down_revision = "0002_analysis_bundle_hash_domain"
branch_labels = None
depends_on = None


def _legacy_extras_dir() -> Path | None:
    """The library's ``derived`` folder (``<db stem>_files/derived``), or None for a database
    without a file (in memory)."""
    database = op.get_bind().engine.url.database
    if not database or database == ":memory:":
        return None
    db = Path(database)
    return db.with_name(db.stem + "_files") / "derived"


def upgrade() -> None:
    op.add_column("analyses", sa.Column("extras", sa.Text(), nullable=True))
    derived = _legacy_extras_dir()
    if derived is None or not derived.is_dir():
        return
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, instance_pk FROM analyses")).all()
    for analysis_id, instance_pk in rows:
        path = derived / str(instance_pk) / f"analysis-{analysis_id}.json"
        try:
            extras = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue  # none, or unreadable: the extras are recomputed on demand
        if isinstance(extras, dict):
            conn.execute(
                sa.text("UPDATE analyses SET extras = :extras WHERE id = :id"),
                {"extras": json.dumps(extras, sort_keys=True), "id": analysis_id},
            )


def downgrade() -> None:
    # plain DROP COLUMN (SQLite 3.35+; the column carries no constraint): no table is rebuilt
    op.drop_column("analyses", "extras")
