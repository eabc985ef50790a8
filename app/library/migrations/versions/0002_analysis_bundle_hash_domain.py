"""Analyses keyed by the bundle's content hash, with the model's domain state.

- ``analyses.bundle_hash``: SHA-256 of the bundle's ``manifest.json`` (``Bundle.content_hash``).
  A cached analysis is shown as a loaded bundle's only when the hashes match; rows written before
  this revision have none and are never shown as any loaded bundle's (they stay in the library,
  e.g. for the CSV of what was stored).
- ``analyses.domain``: JSON of the runtime's ``DomainState`` (``to_dict``), so a cached result
  shows the same in / out of domain / unknown state as when it was computed (NULL: not recorded).
- ``instances.top_domain``: the domain status of the instance's latest analysis, beside
  ``top_finding`` (the browser's finding column says when the model could not vouch for it).

Revision ID: 0002_analysis_bundle_hash_domain
Revises: 0001_initial
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_analysis_bundle_hash_domain"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (SQLite supports it): the tables and their constraints are not rebuilt
    op.add_column("analyses", sa.Column("bundle_hash", sa.String(), nullable=True))
    op.add_column("analyses", sa.Column("domain", sa.Text(), nullable=True))
    op.create_index("ix_analyses_instance_hash", "analyses", ["instance_pk", "bundle_hash"])
    op.add_column("instances", sa.Column("top_domain", sa.String(), nullable=True))


def downgrade() -> None:
    # plain DROP COLUMN (SQLite 3.35+; the columns carry no constraint): no table is rebuilt, so
    # no ON DELETE CASCADE can fire on the rows that reference them
    op.drop_column("instances", "top_domain")
    op.drop_index("ix_analyses_instance_hash", table_name="analyses")
    op.drop_column("analyses", "domain")
    op.drop_column("analyses", "bundle_hash")
