"""Alembic environment for the study library. Run programmatically by
:func:`app.library.db.migrate` with an open connection in ``config.attributes["connection"]``
(there is no alembic.ini); ``render_as_batch`` lets later migrations alter SQLite tables.
Importing this module outside Alembic does nothing."""

from __future__ import annotations

from alembic import context

from app.library.models import Base


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run library migrations through app.library.db.migrate()")
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # only inside an Alembic command
    run_migrations()
