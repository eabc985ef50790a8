"""Opening a library: the SQLite engine (WAL, foreign keys), migrations and the data folder.

A library is one SQLite file plus a data folder beside it named ``<db stem>_files/``::

    library.db            the database (with library.db-wal / -shm while open)
    library_files/
        managed/ab/<SOP Instance UID>.dcm   copies made by ``import --copy`` (and zip members)
        derived/<instance id>/<analysis>-mask.png, -heatmap.npy   analysis outputs
        staging/            half-written copies; emptied at the start of every import

Every write transaction starts with ``BEGIN IMMEDIATE`` so two processes never deadlock on a
lock upgrade; ``busy_timeout`` makes the second writer wait instead of failing. Migrations are
Alembic revisions shipped in ``app/library/migrations`` and run on open, in one transaction.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core_model.errors import UserError

log = logging.getLogger(__name__)

APP_NAME = "cxr-adaptor"
DB_FILENAME = "library.db"
HEAD_REVISION = "0001_initial"  # tests check this equals the migration scripts' head
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class LibraryError(UserError):
    """The library database cannot be opened or used."""


def default_db_path() -> Path:
    """``<user data dir>/library.db`` (platformdirs, app name "cxr-adaptor"); the environment
    variable ``CXR_ADAPTOR_DB`` overrides it (tests, portable installs)."""
    override = os.environ.get("CXR_ADAPTOR_DB")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False) / DB_FILENAME


def _on_connect(dbapi_connection: sqlite3.Connection, _record) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is deferred and
    # does not cover DDL), see the SQLAlchemy docs on pysqlite transactional behaviour.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA busy_timeout = 15000")
    cur.execute("PRAGMA foreign_keys = ON")
    mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        log.warning("SQLite refused WAL journal mode (%s); using %s", "journal_mode", mode)
    cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
    cur.close()


def _on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("sqlite_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(db_path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{db_path}", future=True)
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    return engine


def current_revision(conn: Connection) -> str | None:
    exists = conn.execute(text(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")).first()
    if not exists:
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the schema to the head revision (no-op, without loading Alembic, when it is)."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD_REVISION:
            return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect().execution_options(sqlite_immediate=True) as conn:
        with conn.begin():
            if current_revision(conn) == HEAD_REVISION:  # another process just did it
                return
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    log.info("library schema migrated to %s", HEAD_REVISION)


class Library:
    """An open study library (engine + data folder). Sessions are cheap: open one per task and
    close it (a long-lived read session pins a WAL snapshot and keeps the WAL from being
    checkpointed). Writes go through :meth:`write` / :meth:`write_connection` (BEGIN IMMEDIATE).
    One Library may be shared by threads; each thread uses its own sessions."""

    def __init__(self, db_path: Path, engine: Engine):
        self.db_path = db_path
        self.engine = engine
        self.data_dir = db_path.with_name(db_path.stem + "_files")
        self.managed_dir = self.data_dir / "managed"
        self.derived_dir = self.data_dir / "derived"
        self.staging_dir = self.data_dir / "staging"
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    # -- sessions -------------------------------------------------------------------------
    def session(self) -> Session:
        """A read session (deferred transaction)."""
        return self._sessions()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write session in a ``BEGIN IMMEDIATE`` transaction, committed on success."""
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn:
            with Session(bind=conn, expire_on_commit=False) as session:
                with session.begin():
                    yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn:
            with conn.begin():
                yield conn

    # -- files ----------------------------------------------------------------------------
    def resolve(self, file_path: str, storage: str) -> Path:
        """Absolute path of an instance's file (managed paths are relative to the data folder)."""
        return self.data_dir / file_path if storage == "managed" else Path(file_path)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_library(db: str | os.PathLike | None = None, *, create: bool = True) -> Library:
    """Open (creating and migrating when needed) the library at ``db`` or the default path.

    Raises :class:`LibraryError` with a one-line message when the file is not a usable
    SQLite database or cannot be created."""
    db_path = Path(db).expanduser() if db is not None else default_db_path()
    db_path = db_path.resolve()
    if db_path.is_dir():
        raise LibraryError(f"{db_path} is a folder; give the database file (e.g. {db_path / DB_FILENAME})")
    if not db_path.exists():
        if not create:
            raise LibraryError(f"no library database at {db_path}")
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LibraryError(f"cannot create the library folder {db_path.parent}: {exc.strerror or exc}") from exc
    engine = make_engine(db_path)
    try:
        migrate(engine)
    except OperationalError as exc:
        engine.dispose()
        detail = str(exc.orig) if getattr(exc, "orig", None) else str(exc)
        raise LibraryError(f"cannot open the library database {db_path}: {detail}") from exc
    except Exception as exc:
        engine.dispose()
        if isinstance(exc, sqlite3.DatabaseError) or "file is not a database" in str(exc):
            raise LibraryError(f"{db_path} is not a library database (not SQLite)") from exc
        raise
    return Library(db_path, engine)
