"""Opening a library: the SQLite engine (WAL, foreign keys), migrations and the data folder.

A library is one SQLite file plus a data folder beside it named ``<db stem>_files/``::

    library.db            the database (with library.db-wal / -shm while open)
    library_files/
        managed/ab/<SOP Instance UID>.dcm   copies made by ``import --copy`` (and zip members)
        derived/<instance id>/<analysis>-mask.png, -heatmap.npy   analysis outputs
        staging/            half-written copies; emptied at the start of every import

Every write transaction starts with ``BEGIN IMMEDIATE`` so two processes never deadlock on a
lock upgrade; a second writer waits for the lock (at most ``lock_timeout`` seconds, default
``$CXR_ADAPTOR_LOCK_TIMEOUT`` or 10 s) and then gets :class:`LibraryBusyError`, which says that
another program holds the library. Migrations are Alembic revisions shipped in
``app/library/migrations`` and run on open, in one transaction.

Faults become :class:`LibraryError` subclasses with one-line messages: the lock
(:class:`LibraryBusyError`), a full disk (:class:`LibraryFullError`), a read-only library
(:class:`LibraryReadOnlyError`). A library that cannot be written (a read-only file system, a
file without write permission, a folder that is not writable) opens **read-only** for browsing
(``Library.read_only`` and ``read_only_reason``); every write then raises
:class:`LibraryReadOnlyError` before touching anything.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core_model.errors import UserError

log = logging.getLogger(__name__)

APP_NAME = "cxr-adaptor"
DB_FILENAME = "library.db"
HEAD_REVISION = "0004_reader_labels"  # tests check this equals the migration scripts' head
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


LOCK_TIMEOUT_S = 10.0  # how long a write waits for another program's lock (CXR_ADAPTOR_LOCK_TIMEOUT)
_LOCK_SLICE_MS = 250  # BEGIN IMMEDIATE is retried in slices, so waiting can be reported


class LibraryError(UserError):
    """The library database cannot be opened or used."""


class LibraryBusyError(LibraryError):
    """Another program holds the library's write lock (and kept it past the lock timeout)."""


class LibraryFullError(LibraryError):
    """The disk (or quota) holding the library is full."""


class LibraryReadOnlyError(LibraryError):
    """The library is open read-only: nothing can be saved in it."""


def lock_timeout_default() -> float:
    raw = os.environ.get("CXR_ADAPTOR_LOCK_TIMEOUT")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            log.warning("CXR_ADAPTOR_LOCK_TIMEOUT=%r is not a number of seconds; using %s", raw, LOCK_TIMEOUT_S)
    return LOCK_TIMEOUT_S


_BUSY_TEXT = ("database is locked", "database is busy", "database table is locked")
_FULL_TEXT = ("database or disk is full", "no space left", "disk quota exceeded", "file too large")
_READONLY_TEXT = ("attempt to write a readonly database", "readonly database", "read-only file system")


def busy_message(db_path) -> str:
    return (
        f"another program is using the library {db_path} (it holds the database lock: another "
        "adaptor-review import or a database tool such as sqlite3 or DB Browser); close it or let it "
        "finish, then try again"
    )


def full_message(db_path, detail: str = "") -> str:
    return (
        f"the disk holding the library {db_path} is full{f' ({detail})' if detail else ''}; free some "
        "space and try again: what was saved before is intact"
    )


def translate_error(exc: BaseException, db_path) -> LibraryError | None:
    """The :class:`LibraryError` for a database or file-system failure, or None when ``exc`` is
    none of the known faults (lock, full disk, read-only). Works on SQLAlchemy errors, sqlite3
    errors and OSErrors."""
    if isinstance(exc, LibraryError):
        return exc
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return LibraryFullError(full_message(db_path, exc.strerror or ""))
        if exc.errno == errno.EROFS:
            return LibraryReadOnlyError(f"the library {db_path} is on a read-only file system: nothing can be saved")
        return None
    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, sqlite3.Error):
        return None
    text = str(orig).lower()
    name = str(getattr(orig, "sqlite_errorname", "") or "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or any(t in text for t in _BUSY_TEXT):
        return LibraryBusyError(busy_message(db_path))
    if name.startswith("SQLITE_FULL") or any(t in text for t in _FULL_TEXT):
        return LibraryFullError(full_message(db_path, "database or disk is full"))
    if name.startswith("SQLITE_READONLY") or any(t in text for t in _READONLY_TEXT):
        return LibraryReadOnlyError(f"the library {db_path} cannot be written ({orig}): nothing was saved")
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return LibraryFullError(
            f"the disk holding the library {db_path} failed to write ({orig}): it may be "
            "full or removed; free some space (or reconnect it) and try again: what was saved "
            "before is intact"
        )
    return None


def read_only_reason(db_path: Path) -> str | None:
    """Why the library at ``db_path`` cannot be written (None: it can). A database file without
    any write permission bit counts as read-only even for root, who could write it anyway: the
    owner said "read-only"."""
    folder = db_path.parent
    try:
        if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return "it is on a read-only file system"
    except OSError:
        pass
    if db_path.exists():
        try:
            mode = db_path.stat().st_mode
        except OSError as exc:
            return f"its file cannot be examined ({exc.strerror or exc})"
        if not os.access(db_path, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return "its file is read-only"
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return "its folder is not writable"
    return None


def default_db_path() -> Path:
    """``<user data dir>/library.db`` (platformdirs, app name "cxr-adaptor"); the environment
    variable ``CXR_ADAPTOR_DB`` overrides it (tests, portable installs)."""
    override = os.environ.get("CXR_ADAPTOR_DB")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False) / DB_FILENAME


def _connect_hook(lock_timeout_s: float, read_only: bool):
    def on_connect(dbapi_connection: sqlite3.Connection, _record) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit BEGIN is deferred
        # and does not cover DDL), see the SQLAlchemy docs on pysqlite transactional behaviour.
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(lock_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        if not read_only:  # a read-only connection cannot change the journal mode
            mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL journal mode (%s); using %s", "journal_mode", mode)
            cur.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
        cur.close()

    return on_connect


def _begin_hook(lock_timeout_s: float):
    def on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if not options.get("sqlite_immediate", False):
            conn.exec_driver_sql("BEGIN")
            return
        # BEGIN IMMEDIATE waits for another writer's lock in short slices, so that a caller can
        # say that it is waiting (``on_lock_wait(waited_s)``) and the wait stays bounded.
        timeout = float(options.get("lock_timeout", lock_timeout_s))
        on_wait = options.get("on_lock_wait")
        raw = conn.connection.dbapi_connection
        assert raw is not None  # a checked-out connection always has one
        started = time.monotonic()
        raw.execute(f"PRAGMA busy_timeout = {min(_LOCK_SLICE_MS, int(timeout * 1000))}")
        try:
            while True:
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except OperationalError as exc:
                    waited = time.monotonic() - started
                    if not isinstance(translate_error(exc, ""), LibraryBusyError) or waited >= timeout:
                        raise
                    if on_wait is not None:
                        on_wait(waited)
        finally:
            raw.execute(f"PRAGMA busy_timeout = {int(lock_timeout_s * 1000)}")

    return on_begin


def make_engine(
    db_path: Path, *, lock_timeout_s: float | None = None, read_only: bool = False, immutable: bool = False
) -> Engine:
    """The engine for a library file; ``read_only`` opens it with ``mode=ro`` (``immutable``:
    also without the -wal/-shm files, for a library on a read-only medium)."""
    lock_timeout_s = lock_timeout_default() if lock_timeout_s is None else float(lock_timeout_s)
    kwargs = {}
    if read_only:
        uri = db_path.as_uri() + "?mode=ro" + ("&immutable=1" if immutable else "")
        kwargs["creator"] = lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
    engine = create_engine(f"sqlite:///{db_path}", future=True, **kwargs)
    event.listen(engine, "connect", _connect_hook(lock_timeout_s, read_only))
    event.listen(engine, "begin", _begin_hook(lock_timeout_s))
    return engine


def current_revision(conn: Connection) -> str | None:
    exists = conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")).first()
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

    def __init__(self, db_path: Path, engine: Engine, *, read_only_reason: str | None = None):
        self.db_path = db_path
        self.engine = engine
        self.read_only_reason = read_only_reason
        self.read_only = read_only_reason is not None
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
    def write(self, *, lock_timeout: float | None = None, on_lock_wait=None) -> Iterator[Session]:
        """A write session in a ``BEGIN IMMEDIATE`` transaction, committed on success.

        Waits at most ``lock_timeout`` seconds (default: the library's) for another program's
        lock, calling ``on_lock_wait(waited_s)`` meanwhile; faults arrive as
        :class:`LibraryBusyError` / :class:`LibraryFullError` / :class:`LibraryReadOnlyError`."""
        with self._translated():
            with self.engine.connect().execution_options(**self._write_options(lock_timeout, on_lock_wait)) as conn:
                with Session(bind=conn, expire_on_commit=False) as session:
                    with session.begin():
                        yield session

    @contextmanager
    def write_connection(self, *, lock_timeout: float | None = None, on_lock_wait=None) -> Iterator[Connection]:
        with self._translated():
            with self.engine.connect().execution_options(**self._write_options(lock_timeout, on_lock_wait)) as conn:
                with conn.begin():
                    yield conn

    def check_writable(self) -> None:
        """Raise :class:`LibraryReadOnlyError` when the library is open read-only."""
        if self.read_only:
            raise LibraryReadOnlyError(
                f"the library {self.db_path.name} is open read-only ({self.read_only_reason}): "
                "nothing can be saved in it"
            )

    def _write_options(self, lock_timeout: float | None, on_lock_wait) -> dict:
        self.check_writable()
        options: dict = {"sqlite_immediate": True}
        if lock_timeout is not None:
            options["lock_timeout"] = float(lock_timeout)
        if on_lock_wait is not None:
            options["on_lock_wait"] = on_lock_wait
        return options

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, sqlite3.Error, OSError) as exc:
            translated = translate_error(exc, self.db_path)
            if translated is None or translated is exc:
                raise
            raise translated from exc

    # -- files ----------------------------------------------------------------------------
    def resolve(self, file_path: str, storage: str) -> Path:
        """Absolute path of an instance's file (managed paths are relative to the data folder)."""
        return self.data_dir / file_path if storage == "managed" else Path(file_path)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_is_sqlite(db_path: Path) -> None:
    try:
        with open(db_path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise LibraryError(f"cannot read the library database {db_path}: {exc.strerror or exc}") from exc
    if head and head != SQLITE_MAGIC:  # an empty file is a new database to SQLite
        raise LibraryError(f"{db_path} is not a library database (not SQLite)")


def open_library(
    db: str | os.PathLike | None = None, *, create: bool = True, lock_timeout: float | None = None
) -> Library:
    """Open (creating and migrating when needed) the library at ``db`` or the default path.

    A library that cannot be written opens read-only (``Library.read_only``). Raises
    :class:`LibraryError` with a one-line message when the file is not a usable SQLite
    database or cannot be created; :class:`LibraryBusyError` when it needs a migration while
    another program holds its lock."""
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
        reason = read_only_reason(db_path)
        if reason is not None:
            raise LibraryReadOnlyError(f"cannot create a library at {db_path}: {reason}")
    else:
        _check_is_sqlite(db_path)
    reason = read_only_reason(db_path)
    if reason is not None:
        return _open_read_only(db_path, reason, lock_timeout)
    engine = make_engine(db_path, lock_timeout_s=lock_timeout)
    try:
        migrate(engine)
    except (OperationalError, sqlite3.Error, OSError) as exc:
        engine.dispose()
        translated = translate_error(exc, db_path)
        if translated is not None:
            raise translated from exc
        if "file is not a database" in str(exc):
            raise LibraryError(f"{db_path} is not a library database (not SQLite)") from exc
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise LibraryError(f"cannot open the library database {db_path}: {detail}") from exc
    except Exception as exc:
        engine.dispose()
        if isinstance(exc, sqlite3.DatabaseError) or "file is not a database" in str(exc):
            raise LibraryError(f"{db_path} is not a library database (not SQLite)") from exc
        raise
    return Library(db_path, engine)


def _open_read_only(db_path: Path, reason: str, lock_timeout: float | None) -> Library:
    """A library that cannot be written, opened for browsing. SQLite needs the -wal/-shm files
    (or a writable folder to create them) to read a WAL database; without both it is opened
    ``immutable`` (nothing can change it on a read-only medium anyway)."""
    folder_writable = os.access(db_path.parent, os.W_OK) and "read-only file system" not in reason
    shm = db_path.with_name(db_path.name + "-shm")
    immutable = not folder_writable and not shm.exists()
    engine = make_engine(db_path, lock_timeout_s=lock_timeout, read_only=True, immutable=immutable)
    try:
        with engine.connect() as conn:
            revision = current_revision(conn)
    except (OperationalError, sqlite3.Error) as exc:
        engine.dispose()
        translated = translate_error(exc, db_path)
        if isinstance(translated, LibraryBusyError):
            raise translated from exc
        if "file is not a database" in str(exc):
            raise LibraryError(f"{db_path} is not a library database (not SQLite)") from exc
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise LibraryError(f"cannot open the read-only library {db_path} ({reason}): {detail}") from exc
    if revision != HEAD_REVISION:
        engine.dispose()
        if revision is None:
            raise LibraryError(f"{db_path} is read-only ({reason}) and is not a library database yet")
        raise LibraryReadOnlyError(
            f"the library {db_path} is read-only ({reason}) and was made by another version of the app "
            f"(schema {revision}, this app needs {HEAD_REVISION}); open it once with write access to upgrade it"
        )
    log.info("library %s opened read-only: %s", db_path.name, reason)
    return Library(db_path, engine, read_only_reason=reason)
