"""The database file: WAL, foreign keys, migrations from the first version, default location."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from app.library import LibraryError, open_library
from app.library.db import HEAD_REVISION, MIGRATIONS_DIR, default_db_path
from app.library.models import Base, Instance

ROOT = Path(__file__).resolve().parents[2]


def test_new_library_is_sqlite_wal_with_foreign_keys_and_head_schema(lib):
    raw = sqlite3.connect(lib.db_path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "patients",
        "studies",
        "series",
        "instances",
        "reports",
        "analyses",
        "reviews",
        "import_runs",
        "rejected_files",
    } <= tables
    raw.close()
    with lib.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(IntegrityError):  # an instance must belong to an existing series
        with lib.write_connection() as conn:
            conn.execute(
                insert(Instance).values(
                    sop_instance_uid="1.2.3", series_pk=999, patient_pk=999, file_path="x", storage="linked"
                )
            )


def test_head_constant_is_the_migration_scripts_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


def test_schema_matches_models(lib):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with lib.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_reopen_keeps_data_and_does_not_migrate_again(tmp_path):
    db = tmp_path / "l.db"
    first = open_library(db)
    with first.write() as s:
        from app.library.models import Setting

        s.add(Setting(key="k", value="v"))
    first.close()
    code = (
        "import sys\nfrom app.library import open_library\nopen_library(sys.argv[1]).close()\n"
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(db)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # schema at head: Alembic not even imported
    again = open_library(db)
    with again.session() as s:
        from app.library.models import Setting

        assert s.get(Setting, "k").value == "v"
    again.close()


def test_not_a_database_gives_a_one_line_error(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(LibraryError) as info:
        open_library(bad)
    assert "not a library database" in str(info.value) and "\n" not in str(info.value)


def test_folder_given_as_db_is_refused(tmp_path):
    with pytest.raises(LibraryError, match="is a folder"):
        open_library(tmp_path)


def test_default_location_comes_from_platformdirs(monkeypatch):
    monkeypatch.delenv("CXR_ADAPTOR_DB", raising=False)
    from platformdirs import user_data_path

    path = default_db_path()
    assert path.parent == user_data_path("cxr-adaptor", appauthor=False)
    assert "cxr-adaptor" in str(path) and path.name == "library.db"
    monkeypatch.setenv("CXR_ADAPTOR_DB", "/tmp/elsewhere.db")
    assert default_db_path() == Path("/tmp/elsewhere.db")
