"""The reader study's Qt-free parts on a real library file: labels committed one by one (seen by
another connection at once, refused when invalid), the worklist order and its keys' moves, the
case timer, the CSV written atomically and read back, and migration 0004 up and down."""

from __future__ import annotations

import sqlite3

import pytest

from app.library import open_library
from app.library.importer import Importer
from app.library.queries import add_reader_label, labelled_uids, reader_label_rows, reader_labels_for
from app.logic.reader_study import CaseTimer, Label, Worklist, export_labels, read_labels_csv, save_labels
from core_model.errors import UserError
from tests.gui.conftest import write_studies


@pytest.fixture
def lib(tmp_path):
    library = open_library(tmp_path / "lib" / "library.db")
    Importer(library, mode="link", fsync=False).run([write_studies(tmp_path / "studies")["a_pa"].parent])
    yield library
    library.close()


def uids(library) -> list[str]:
    from sqlalchemy import select

    from app.library.models import Instance

    with library.session() as s:
        return sorted(s.execute(select(Instance.sop_instance_uid)).scalars())


def test_each_label_is_committed_at_once_and_bad_labels_are_refused(lib):
    uid = uids(lib)[0]
    facts = dict(
        reviewer="R1",
        model_id="m",
        model_version="1",
        model_hash="abc",
        probabilities={"pneumonia": 0.25},
        ai_shown=False,
        filter_json='{"review_status": "unreviewed"}',
        time_spent_s=12.5,
    )
    labels = [Label("pneumonia", "agree", 4, "lll"), Label("nodule", "uncertain", None, "", free=True)]
    assert save_labels(lib, uid, labels, facts) == 2
    raw = sqlite3.connect(lib.db_path)  # another connection, as after a crash: both rows are there
    try:
        got = raw.execute(
            "SELECT finding, verdict, confidence, free, ai_probability, ai_shown, time_spent_s, reviewer "
            "FROM reader_labels ORDER BY id"
        ).fetchall()
    finally:
        raw.close()
    assert got == [
        ("pneumonia", "agree", 4, 0, 0.25, 0, 12.5, "R1"),
        ("nodule", "uncertain", None, 1, None, 0, 12.5, "R1"),
    ]
    with lib.session() as s:
        assert labelled_uids(s, "R1") == {uid} and labelled_uids(s, "R2") == set()
        assert [lab.finding for lab in reader_labels_for(s, uid)] == ["nodule", "pneumonia"]  # newest first
    for bad, match in (
        (dict(finding="pneumonia", verdict="yes"), "verdict"),
        (dict(finding="pneumonia", verdict="agree", confidence=7), "confidence"),
        (dict(finding="  ", verdict="agree"), "finding"),
    ):
        with pytest.raises(UserError, match=match):
            add_reader_label(lib, uid, **bad)
    with pytest.raises(UserError, match="no instance"):
        add_reader_label(lib, "1.2.3.4", "pneumonia", "agree")
    with lib.session() as s:
        assert len(reader_labels_for(s, uid)) == 2  # nothing half-saved


def test_worklist_order_seed_and_unreviewed_moves():
    cases = [f"u{i}" for i in range(10)]
    plain = Worklist.build(cases, {"u1", "u2"})
    assert plain.uids == cases and plain.progress_text() == "2 of 10 reviewed"
    assert plain.next_unreviewed("u0") == "u3"  # skips the labelled ones
    assert plain.next_unreviewed("u9") == "u0"  # wraps round
    assert plain.next_unreviewed("u3", -1) == "u0"
    assert plain.next_unreviewed(None) == "u0" and plain.next_unreviewed(None, -1) == "u9"
    a, b = Worklist.build(cases, set(), seed=5), Worklist.build(cases, set(), seed=5)
    assert a.uids == b.uids != cases and sorted(a.uids) == cases  # reproducible, shuffled, complete
    assert Worklist.build(cases, set(), seed=6).uids != a.uids
    done = Worklist.build(cases, set(cases))
    assert done.next_unreviewed("u4") is None and done.progress_text() == "10 of 10 reviewed"
    plain.mark_done("u3")
    plain.mark_done("not-in-the-list")
    assert plain.reviewed() == 3 and plain.neighbour("u9") is None and plain.neighbour("u0") == "u1"


def test_case_timer_sums_visits():
    now = [100.0]
    timer = CaseTimer(clock=lambda: now[0])
    timer.show("a")
    now[0] += 5
    timer.show("b")  # leaves a after 5 s
    now[0] += 2
    timer.show("a")
    now[0] += 3
    assert timer.take("a") == 8.0  # 5 + 3, the visit in progress included
    now[0] += 1
    assert timer.take("a") == 1.0 and timer.take("b") == 2.0


def test_labels_csv_maps_back_to_files_and_says_its_filter(lib, tmp_path):
    all_uids = uids(lib)
    for uid in all_uids[:2]:
        save_labels(lib, uid, [Label("pneumothorax", "disagree", 2, "clear apex")], dict(reviewer="R1", model_id="m"))
    path, n = export_labels(lib, tmp_path / "out" / "labels", all_uids[:1], '{"text": "NOVAK"}')
    assert path.name == "labels.csv" and n == 1 and not list(path.parent.glob("*.part"))
    text = path.read_text()
    assert text.splitlines()[0].startswith("# Research use only")
    assert text.splitlines()[1] == '# exported under the browser filter: {"text": "NOVAK"}'
    (row,) = read_labels_csv(path)
    with lib.session() as s:
        (facts,) = reader_label_rows(s, all_uids[:1])
    assert row["sop_instance_uid"] == all_uids[0] and row["file_name"].endswith((".dcm", ".png"))
    assert row["file_name"] == facts["file_name"] and row["study_instance_uid"] == facts["study_instance_uid"]
    assert (row["finding"], row["verdict"], row["confidence"], row["comment"]) == (
        "pneumothorax",
        "disagree",
        "2",
        "clear apex",
    )
    assert "PAT-" not in text.split("\n", 2)[2]  # patient IDs never in the rows


def test_migration_0004_up_and_down_keeps_the_rest(lib):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from app.library.db import HEAD_REVISION, MIGRATIONS_DIR

    uid = uids(lib)[0]
    add_reader_label(lib, uid, "pneumonia", "agree")
    db = lib.db_path
    lib.close()
    engine = sa.create_engine(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003_analysis_extras")
    with engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "reader_labels" not in tables
        assert conn.exec_driver_sql("SELECT count(*) FROM instances").scalar() == 7
    engine.dispose()
    again = open_library(db)  # an older library opened by this app: upgraded to 0004
    try:
        with again.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD_REVISION
        add_reader_label(again, uid, "pneumonia", "uncertain", confidence=1)
        with again.session() as s:
            assert [lab.verdict for lab in reader_labels_for(s, uid)] == ["uncertain"]
    finally:
        again.close()
