"""The library under faults: another program holding the SQLite write lock, a read-only library
(file without write permission, a read-only mount), a full disk. Real SQLite files, a real second
sqlite3 connection holding the lock, a real size-limited tmpfs (or RLIMIT_FSIZE) for the full
disk, through ``adaptor-review import`` / ``list`` as a user runs them."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, text

from app.library import open_library
from app.library.db import LibraryBusyError, LibraryFullError, LibraryReadOnlyError
from app.library.models import Instance, Review
from app.library.queries import add_review
from app.main import main
from tests.imaging.builders import write
from tests.library.conftest import make_good

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def hold_write_lock(db: Path) -> sqlite3.Connection:
    """What another program does when it keeps a write transaction open (sqlite3 shell,
    DB Browser for SQLite before "Write Changes", another import)."""
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE IF NOT EXISTS other_program (x)")
    return other


def count_instances(lib) -> tuple[int, int]:
    with lib.session() as s:
        return (
            s.execute(select(func.count(Instance.id))).scalar_one(),
            s.execute(select(func.count(func.distinct(Instance.sop_instance_uid)))).scalar_one(),
        )


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- the lock -------------------------------------------------------------------------------------


def test_cli_import_says_plainly_that_another_program_holds_the_library(tmp_path, capsys, monkeypatch):
    db = tmp_path / "lib" / "library.db"
    open_library(db).close()
    src = tmp_path / "in"
    make_good(src, 3)
    monkeypatch.setenv("CXR_ADAPTOR_LOCK_TIMEOUT", "0.5")  # the bounded wait (default 10 s)
    other = hold_write_lock(db)
    try:
        code, out, err = run_cli(capsys, "import", src, "--db", db)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "another program is using the library" in err and "try again" in err
    # once the other program is done, the same command works
    code, out, err = run_cli(capsys, "import", src, "--db", db)
    assert code == 0, err
    assert "3 imported" in out


def test_a_write_waits_for_a_short_lock_and_reports_the_wait(tmp_path):
    lib = open_library(tmp_path / "library.db", lock_timeout=30)
    other = hold_write_lock(lib.db_path)
    waits: list[float] = []

    def on_wait(waited: float) -> None:
        waits.append(waited)
        if len(waits) == 2:  # the other program finishes while we wait
            other.execute("COMMIT")

    try:
        with lib.write(on_lock_wait=on_wait) as s:
            s.execute(text("INSERT INTO other_program VALUES (1)"))
        assert len(waits) == 2
        with lib.session() as s:
            assert s.execute(text("SELECT count(*) FROM other_program")).scalar() == 1
    finally:
        other.close()
        lib.close()


def test_lock_error_leaves_the_library_usable_and_nothing_half_written(lib, tmp_path):
    make_good(tmp_path / "in", 2)
    from app.library.importer import Importer

    Importer(lib, mode="copy", fsync=False).run([tmp_path / "in"])
    with lib.session() as s:
        uid = s.execute(select(Instance.sop_instance_uid)).scalars().first()
    other = hold_write_lock(lib.db_path)
    try:
        with pytest.raises(LibraryBusyError, match="another program"):
            with lib.write(lock_timeout=0.3) as s:
                s.add(Review(instance_pk=1, status="approved", comment="", reviewer="", created_at="x"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    add_review(lib, uid, "approved", "after the lock")
    with lib.session() as s:
        assert [r.comment for r in s.execute(select(Review)).scalars()] == ["after the lock"]


# -- read-only ------------------------------------------------------------------------------------


def _library_with_studies(tmp_path: Path, n: int = 3) -> Path:
    db = tmp_path / "lib" / "library.db"
    make_good(tmp_path / "in", n)
    code = main(["import", str(tmp_path / "in"), "--db", str(db), "--json"])
    assert code == 0
    return db


def test_read_only_library_file_opens_for_browsing_and_refuses_writes(tmp_path, capsys):
    db = _library_with_studies(tmp_path)
    capsys.readouterr()
    os.chmod(db, 0o444)
    before = sha(db)
    try:
        lib = open_library(db)
        try:
            assert lib.read_only and "read-only" in lib.read_only_reason
            assert count_instances(lib) == (3, 3)
            with lib.session() as s:
                uid = s.execute(select(Instance.sop_instance_uid)).scalars().first()
            with pytest.raises(LibraryReadOnlyError, match="read-only"):
                add_review(lib, uid, "approved")
        finally:
            lib.close()
        code, out, err = run_cli(capsys, "list", "--db", db)
        assert code == 0, err
        assert out.count("\n") >= 3
        code, out, err = run_cli(capsys, "import", tmp_path / "in", "--db", db)
        assert code == 2 and err.count("\n") == 1 and "read-only" in err and "Traceback" not in err
        assert sha(db) == before
    finally:
        os.chmod(db, 0o644)


def _can_mount() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        return "needs root on Linux to mount a read-only / size-limited file system"
    return None


def test_library_on_a_read_only_mount_opens_for_browsing(tmp_path, capsys):
    why = _can_mount()
    if why:
        pytest.skip(why)
    db = _library_with_studies(tmp_path)
    capsys.readouterr()
    assert not db.with_name("library.db-wal").exists()  # closed cleanly: no -wal/-shm to read with
    ro = tmp_path / "ro"
    ro.mkdir()
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(db.parent), str(ro)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    if not os.statvfs(ro).f_flag & os.ST_RDONLY:  # older mount(8): "ro" needs a remount of the bind
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True)
    if not os.statvfs(ro).f_flag & os.ST_RDONLY:
        subprocess.run(["umount", str(ro)], check=True)
        pytest.skip("the bind mount did not become read-only here")
    try:
        lib = open_library(ro / "library.db")
        try:
            assert lib.read_only and lib.read_only_reason == "it is on a read-only file system"
            assert count_instances(lib) == (3, 3)
            with pytest.raises(LibraryReadOnlyError, match="read-only file system"):
                with lib.write():
                    pass
        finally:
            lib.close()
        code, out, err = run_cli(capsys, "import", tmp_path / "in", "--db", ro / "library.db")
        assert code == 2 and "read-only" in err and err.count("\n") == 1
        # a new library cannot be created there: said plainly
        code, out, err = run_cli(capsys, "import", tmp_path / "in", "--db", ro / "new.db")
        assert code == 2 and "read-only file system" in err and err.count("\n") == 1
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# -- disk full ------------------------------------------------------------------------------------


def _noise_dicoms(folder: Path, n: int, size: int = 128) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        write(folder / f"n{i:03d}.dcm", rng.integers(0, 4095, (size, size)).astype(np.uint16), instance_number=i + 1)


_FSIZE_CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from app.main import main
sys.exit(main(["import", sys.argv[2], "--db", sys.argv[1]]))
"""


def test_disk_full_import_stops_with_a_clear_message_keeps_the_library_and_resumes(tmp_path, capsys):
    """On a real size-limited tmpfs when we may mount one; else under RLIMIT_FSIZE (each file of
    the library limited in size, which the database sees as a full disk)."""
    src = tmp_path / "in"
    n = 40
    _noise_dicoms(src, n)  # ~33 KB each: ~1.3 MB to copy
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    mounted = False
    if _can_mount() is None:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mnt)], capture_output=True
            ).returncode
            == 0
        )
    db = mnt / "library.db"
    try:
        if mounted:
            from app.library.importer import Importer

            lib = open_library(db)
            try:
                with pytest.raises(LibraryFullError, match="is full"):  # batches of 5 commit until the disk fills
                    Importer(lib, mode="copy", batch_size=5, fsync=False).run([src])
                kept = count_instances(lib)
            finally:
                lib.close()
            assert 0 < kept[0] < n and kept[0] == kept[1]
            code, out, err = run_cli(capsys, "import", src, "--db", db)  # still full: the CLI says so
            assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
            assert "is full" in err and "free some space" in err
            subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)  # space freed
        else:
            open_library(db).close()
            child = subprocess.run(
                [sys.executable, "-c", _FSIZE_CHILD, str(db), str(src), str(96 * 1024)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert child.returncode == 2, child.stderr
            assert child.stderr.count("\n") == 1 and "Traceback" not in child.stderr
            assert "full" in child.stderr and "free some space" in child.stderr
        raw = sqlite3.connect(db)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        code, out, err = run_cli(capsys, "import", src, "--db", db)  # resumes: the rest, nothing twice
        assert code == 0, err
        lib = open_library(db)
        try:
            assert count_instances(lib) == (n, n)
            with lib.session() as s:
                rows = list(s.execute(select(Instance)).scalars())
            for inst in rows:
                assert sha(lib.resolve(inst.file_path, inst.storage)) == sha(inst.original_path)
        finally:
            lib.close()
    finally:
        if mounted and subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


# -- the queue of reviews waiting for the lock (app.library.pending) ------------------------------


def _imported(lib, tmp_path, n: int = 2) -> list[str]:
    from app.library.importer import Importer

    make_good(tmp_path / "in", n)
    Importer(lib, mode="copy", fsync=False).run([tmp_path / "in"])
    with lib.session() as s:
        return list(s.execute(select(Instance.sop_instance_uid).order_by(Instance.id)).scalars())


def test_review_queue_keeps_reviews_across_restarts_and_saves_each_once(lib, tmp_path):
    from app.library.pending import PendingReview, ReviewQueue

    uids = _imported(lib, tmp_path)
    queue = ReviewQueue(lib)
    first, second = PendingReview(uids[0], "flagged", "apex?"), PendingReview(uids[1], "approved")
    queue.add(first)
    queue.add(second)
    other = hold_write_lock(lib.db_path)
    try:
        result = queue.flush(lock_timeout=0.3)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result.busy and "another program" in result.error and result.left == 2 and result.saved == []
    # the app is closed; a crash happened right after the first review was written, before the
    # queue forgot it: the next start saves the rest and does not record the first one twice
    add_review(lib, first.uid, first.status, first.comment, first.reviewer, created_at=first.created_at)
    again = ReviewQueue(lib)
    assert again.items() == [first, second]
    result = again.flush()
    assert [i.uid for i in result.saved] == uids and result.left == 0 and not again.path.exists()
    with lib.session() as s:
        rows = [(r.instance_pk, r.status, r.comment) for r in s.execute(select(Review).order_by(Review.id)).scalars()]
        statuses = dict(s.execute(select(Instance.sop_instance_uid, Instance.review_status)).all())
    assert rows == [(1, "flagged", "apex?"), (2, "approved", "")]
    assert statuses == {uids[0]: "flagged", uids[1]: "approved"}


def test_unreadable_queue_file_is_moved_aside_not_fatal(lib, tmp_path):
    from app.library.pending import ReviewQueue

    lib.data_dir.mkdir(parents=True, exist_ok=True)
    path = lib.data_dir / "pending_reviews.json"
    path.write_text("{ half a json")
    queue = ReviewQueue(lib)
    assert len(queue) == 0 and not path.exists()
    assert path.with_name("pending_reviews.json.unreadable").read_text() == "{ half a json"


def test_queued_review_of_an_image_gone_meanwhile_is_dropped_with_the_reason(lib, tmp_path):
    from app.library.pending import PendingReview, ReviewQueue

    uids = _imported(lib, tmp_path, 1)
    queue = ReviewQueue(lib)
    queue.add(PendingReview("1.2.3.not.here", "approved"))
    queue.add(PendingReview(uids[0], "approved"))
    result = queue.flush()
    assert [why for _item, why in result.dropped] == ["no instance 1.2.3.not.here in the library"]
    assert [i.uid for i in result.saved] == uids and result.left == 0


# -- two imports at once ---------------------------------------------------------------------------


def test_two_concurrent_imports_of_the_same_folder_share_the_lock_without_duplicates(tmp_path):
    """Two processes import the same 300 files into one library at the same time: each waits for
    the other's batch commits (never "database is locked"), and every file is there once."""
    import json as _json

    n = 300
    src = tmp_path / "in"
    make_good(src, n)
    db = tmp_path / "lib" / "library.db"
    open_library(db).close()
    cmd = [sys.executable, "-m", "app.main", "import", str(src), "--db", str(db), "--link", "--json"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    summaries = [_json.loads(out) for out, _ in outs]
    assert sum(s["imported"] for s in summaries) == n
    assert all(s["imported"] + s["duplicates"] == n and s["rejected"] == [] for s in summaries)
    lib = open_library(db)
    try:
        assert count_instances(lib) == (n, n)
    finally:
        lib.close()
