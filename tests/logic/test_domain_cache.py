"""The analysis cache keyed by the bundle's content hash, and the domain state stored with each
analysis (Qt-free: app.logic.analysis over a real SQLite library, the real runtime and the real
demo bundle), including a library written before revision 0002 (analyses without a hash) and one
written before revision 0003 (extras in files beside the mask)."""

from __future__ import annotations

import shutil

import pytest

from tests.gui.conftest import analysis_rows, copy_bundle, direct_analysis


@pytest.fixture(scope="module")
def demo():
    from app.logic.demo import demo_assets

    return demo_assets()


@pytest.fixture(scope="module")
def demo_bundle(demo):
    from app.logic.bundles import open_bundle

    return open_bundle(demo.bundle)


@pytest.fixture
def lib(tmp_path, demo):
    from app.library import open_library
    from app.library.importer import Importer

    folder = tmp_path / "files"
    folder.mkdir()
    for p in sorted(demo.studies.glob("*.dcm"))[:3]:
        shutil.copy(p, folder / p.name)
    library = open_library(tmp_path / "lib" / "library.db")
    assert Importer(library, mode="copy", fsync=False).run([folder]).imported == 3
    yield library
    library.close()


def test_the_stored_analysis_keeps_the_hash_and_the_domain_state(lib, demo_bundle):
    from app.library.queries import get_instance
    from app.logic import analysis as A

    uid = A.all_instance_uids(lib)[0]
    direct = direct_analysis(demo_bundle, lib, uid)
    first = A.analyze_instance(lib, demo_bundle, uid)
    assert not first.from_cache and first.bundle_hash == demo_bundle.content_hash
    assert first.domain == direct.domain
    again = A.analyze_instance(lib, demo_bundle, uid)
    assert again.from_cache and again.analysis_id == first.analysis_id
    assert again.domain == direct.domain and again.bundle_hash == demo_bundle.content_hash
    with lib.session() as s:
        assert get_instance(s, uid).top_domain == direct.domain.status  # the browser's column
    # the CSV of the stored result carries it too
    from app.logic.predictions_csv import prediction_rows

    rows, _ = prediction_rows(lib, [uid])
    assert rows[0]["domain_status"] == direct.domain.status
    assert rows[0]["domain_reasons"] == "; ".join(direct.domain.reasons)


def test_another_bundle_with_the_same_id_and_version_never_gets_the_first_ones_result(lib, demo, demo_bundle, tmp_path):
    from app.logic import analysis as A
    from app.logic.bundles import open_bundle

    other = open_bundle(
        copy_bundle(
            demo.bundle,
            tmp_path / "copy",
            config={"thresholds": {c: round(t + 0.01, 6) for c, t in demo_bundle.thresholds.items()}},
        )
    )
    assert (other.id, other.version) == (demo_bundle.id, demo_bundle.version)
    assert other.content_hash != demo_bundle.content_hash
    uid = A.all_instance_uids(lib)[0]
    first = A.analyze_instance(lib, demo_bundle, uid)
    second = A.analyze_instance(lib, other, uid)
    assert not second.from_cache and second.analysis_id != first.analysis_id
    assert second.thresholds == pytest.approx(other.thresholds)
    assert A.analyze_instance(lib, demo_bundle, uid).analysis_id == first.analysis_id
    assert A.analyze_instance(lib, other, uid).analysis_id == second.analysis_id
    assert A.unanalysed_uids(lib, other.id, other.version, bundle_hash=other.content_hash) == [
        u for u in A.all_instance_uids(lib) if u != uid
    ]
    assert len(analysis_rows(lib, uid)) == 2


def test_a_library_from_before_the_hashes_is_migrated_and_its_old_rows_are_not_reused(lib, demo_bundle):
    """Revision 0001 -> 0002: analyses stored without a hash stay in the library (the CSV of what
    was stored shows them, with no recorded domain state) but are never shown as a loaded
    bundle's; the bundle analyses again."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from app.library import open_library
    from app.library.db import HEAD_REVISION, MIGRATIONS_DIR
    from app.logic import analysis as A

    uid = A.all_instance_uids(lib)[0]
    old = A.analyze_instance(lib, demo_bundle, uid)
    db = lib.db_path
    lib.close()
    # back to revision 0001, as an older app left it (its analyses have no hash, no domain)
    engine = sa.create_engine(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001_initial")
    with engine.connect() as conn:
        columns = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(analyses)")}
        assert "bundle_hash" not in columns and "domain" not in columns
        assert conn.exec_driver_sql("SELECT count(*) FROM analyses").scalar() == 1  # nothing cascaded away
    engine.dispose()
    reopened = open_library(db)  # migrates to the head again
    try:
        with reopened.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD_REVISION
            assert conn.exec_driver_sql("SELECT bundle_hash, domain FROM analyses").all() == [(None, None)]
        assert (
            A.cached_analysis(reopened, uid, demo_bundle.id, demo_bundle.version, bundle_hash=demo_bundle.content_hash)
            is None
        )
        stored = A.latest_any(reopened, uid)
        assert stored.analysis_id == old.analysis_id and stored.bundle_hash is None
        assert stored.domain.status == "unknown" and "no domain state was recorded" in stored.domain.reasons[0]
        fresh = A.analyze_instance(reopened, demo_bundle, uid)
        assert not fresh.from_cache and fresh.analysis_id != old.analysis_id
        assert fresh.domain == direct_analysis(demo_bundle, reopened, uid).domain
    finally:
        reopened.close()


def test_extras_files_of_an_older_library_are_read_into_the_database(lib, demo_bundle):
    """Revision 0002 -> 0003: the extras an older app wrote beside the mask
    (``derived/<instance>/analysis-<id>.json``) are read once into ``analyses.extras``; the cached
    analysis shows them without the file, and an unreadable file only leaves them unrecorded."""
    import json

    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from app.library import open_library
    from app.library.db import HEAD_REVISION, MIGRATIONS_DIR
    from app.logic import analysis as A

    good, bad = A.all_instance_uids(lib)[:2]
    first = A.analyze_instance(lib, demo_bundle, good)
    other = A.analyze_instance(lib, demo_bundle, bad)
    with lib.engine.connect() as conn:
        rows = {
            r[0]: (r[1], json.loads(r[2])) for r in conn.exec_driver_sql("SELECT id, instance_pk, extras FROM analyses")
        }
    assert set(rows) == {first.analysis_id, other.analysis_id}
    assert rows[first.analysis_id][1]["heatmap_phrase"] == first.heatmap_phrase
    db, derived = lib.db_path, lib.derived_dir
    lib.close()
    # back to revision 0002, with the files such an app wrote (one of them damaged)
    engine = sa.create_engine(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002_analysis_bundle_hash_domain")
    with engine.connect() as conn:
        assert "extras" not in {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(analyses)")}
    engine.dispose()
    legacy = {}
    for analysis_id, (instance_pk, extras) in rows.items():
        legacy[analysis_id] = derived / str(instance_pk) / f"analysis-{analysis_id}.json"
        legacy[analysis_id].parent.mkdir(parents=True, exist_ok=True)
        legacy[analysis_id].write_text(json.dumps(extras) if analysis_id == first.analysis_id else "{not json")
    reopened = open_library(db)  # migrates to the head again, reading the files once
    try:
        with reopened.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == HEAD_REVISION
            stored = dict(conn.exec_driver_sql("SELECT id, extras FROM analyses").all())
        assert json.loads(stored[first.analysis_id]) == rows[first.analysis_id][1]
        assert stored[other.analysis_id] is None
        for path in legacy.values():
            path.unlink()  # never read again
        again = A.analyze_instance(reopened, demo_bundle, good)
        assert again.from_cache and again.analysis_id == first.analysis_id
        assert again.heatmap_phrase == first.heatmap_phrase and again.mask_threshold == first.mask_threshold
        assert [h.id for h in again.similar] == [h.id for h in first.similar]
        assert again.embedding is not None and again.embedding.tolist() == pytest.approx(first.embedding.tolist())
        unrecorded = A.analyze_instance(reopened, demo_bundle, bad)  # still the stored analysis
        assert unrecorded.from_cache and unrecorded.analysis_id == other.analysis_id
        assert unrecorded.similar is None and unrecorded.thresholds == demo_bundle.thresholds
    finally:
        reopened.close()


def test_headless_analyze_says_how_many_images_are_out_of_domain(tmp_path, demo, demo_bundle, capsys):
    if not isinstance(demo_bundle.card.get("domain"), dict):
        pytest.skip("the demo bundle's model card records no training domain yet")
    from app.library import open_library
    from app.library.importer import Importer
    from app.logic.predictions_csv import read_predictions_csv
    from app.main import main
    from tests.real_data import real_file

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(real_file("00000001_000.png"), folder / "00000001_000.png")
    phantom = sorted(demo.studies.glob("*.dcm"))[0]
    shutil.copy(phantom, folder / phantom.name)
    db = tmp_path / "lib" / "library.db"
    library = open_library(db)
    assert Importer(library, mode="copy", fsync=False).run([folder]).imported == 2
    library.close()
    out = tmp_path / "p.csv"
    assert main(["analyze", "--all", "--bundle", str(demo.bundle), "--csv", str(out), "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "Domain: 1 in the model's training domain, 1 out of it (results not meaningful), 0 unknown" in text
    assert "trained on synthetic phantoms" in text
    status = {r["sop_instance_uid"]: r["domain_status"] for r in read_predictions_csv(out)}
    assert sorted(status.values()) == ["in_domain", "out_of_domain"]


def test_the_librarys_view_and_modality_reach_the_runtime(lib, demo_bundle):
    from app.library.queries import get_instance
    from app.logic import analysis as A
    from core_model.runtime import Bundle

    class Recording(Bundle):
        """The real bundle; records the hints it is given before running the real analysis."""

        calls: list = []

        def analyze(self, image, *, view=None, modality=None):
            self.calls.append((view, modality))
            return super().analyze(image, view=view, modality=modality)

    bundle = Recording(demo_bundle.folder, demo_bundle.manifest)
    uid = A.all_instance_uids(lib)[0]
    with lib.session() as s:
        inst = get_instance(s, uid)
        want = (inst.view_position, inst.modality)
    assert all(want)
    r = A.analyze_instance(lib, bundle, uid)
    assert Recording.calls == [want]
    assert r.domain == demo_bundle.analyze(str(A.instance_file(lib, uid))).domain  # same as the header's
