"""The query API the viewer uses: search / filter / sort, reviews, analyses with mask and heatmap
files, reports, removal."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from app.library.importer import import_paths
from app.library.models import Analysis, Instance
from app.library.queries import (
    add_analysis,
    add_review,
    analysis_heatmap,
    analysis_mask,
    analysis_probabilities,
    get_instance,
    latest_analysis,
    remove_instances,
    reviews_for,
    search_instances,
)
from core_model.errors import UserError
from tests.imaging.builders import gradient, write

PEOPLE = [  # name, id, date, view
    ("MÜLLER^ANNA", "A-100", "20230105", "PA"),
    ("MÜLLER^ANNA", "A-100", "20240310", "AP"),
    ("SMITH^JOHN", "B-200", "20220720", "PA"),
    ("SMITHERS^WAYLON", "C-300", "20240101", "LL"),
    ("O'NEIL^KIM", "D-400", "", "PA"),
]


@pytest.fixture
def filled(lib, tmp_path):
    for k, (name, pid, date, view) in enumerate(PEOPLE):
        write(
            tmp_path / "in" / f"{k}.dcm",
            gradient(16, 16),
            patient_name=name,
            patient_id=pid,
            study_date=date or "20000101",
            view_position=view,
        )
    # an empty StudyDate: rewrite the last file without one
    import pydicom

    last = tmp_path / "in" / "4.dcm"
    ds = pydicom.dcmread(last)
    ds.StudyDate = ""
    ds.ContentDate = ""
    ds.save_as(last)
    assert import_paths(lib, [tmp_path / "in"], mode="link").imported == len(PEOPLE)
    return lib


def uids(result) -> list[str]:
    return [r.patient_id for r in result.rows]


def test_search_by_name_is_case_and_accent_preserving_substring(filled):
    with filled.session() as s:
        assert sorted(uids(search_instances(s, text="smith"))) == ["B-200", "C-300"]
        assert uids(search_instances(s, text="müller")) == ["A-100", "A-100"]
        assert uids(search_instances(s, patient_name="anna müller")) == []  # order of parts matters
        assert uids(search_instances(s, patient_name="müller anna")) == ["A-100", "A-100"]
        assert uids(search_instances(s, text="o'neil")) == ["D-400"]
        # LIKE wildcards typed by the user are literal
        assert search_instances(s, text="%").total == 0 and search_instances(s, text="_").total == 0


def test_search_by_id_date_view(filled):
    with filled.session() as s:
        assert uids(search_instances(s, text="B-2")) == ["B-200"]  # ID prefix
        assert uids(search_instances(s, patient_id="A-100", view="AP")) == ["A-100"]
        in_2024 = search_instances(s, date_from="2024-01-01", date_to="20241231")
        assert sorted(uids(in_2024)) == ["A-100", "C-300"]
        assert search_instances(s, date_to="2023-12-31").total == 2  # undated studies are not "before"
        assert sorted(uids(search_instances(s, view=["PA", "LL"]))) == ["A-100", "B-200", "C-300", "D-400"]
        with pytest.raises(UserError):
            search_instances(s, date_from="last tuesday")


def test_sorting_and_stable_paging(filled):
    with filled.session() as s:
        by_date = search_instances(s, sort="study_date", descending=False)
        assert [r.study_date for r in by_date.rows] == ["", "20220720", "20230105", "20240101", "20240310"]
        by_name = search_instances(s, sort="patient_name", descending=False)
        assert [r.patient_name for r in by_name.rows][0] == "MÜLLER^ANNA"
        pages = [search_instances(s, sort="view", limit=2, offset=o) for o in (0, 2, 4)]
        assert all(p.total == 5 for p in pages)
        seen = [r.id for p in pages for r in p.rows]
        assert len(seen) == len(set(seen)) == 5
        with pytest.raises(UserError):
            search_instances(s, sort="shoe size")


def test_reviews_set_the_instance_status(filled):
    with filled.session() as s:
        target = search_instances(s, patient_id="B-200").rows[0].sop_instance_uid
    add_review(filled, target, "flagged", "possible nodule")
    add_review(filled, target, "approved", "on second look fine")
    with filled.session() as s:
        assert uids(search_instances(s, review_status="approved")) == ["B-200"]
        assert search_instances(s, review_status="flagged").total == 0  # the latest review counts
        assert search_instances(s, review_status="unreviewed").total == 4
        history = reviews_for(s, get_instance(s, target))
        assert [r.status for r in history] == ["approved", "flagged"]
    with pytest.raises(UserError):
        add_review(filled, target, "maybe")


def test_analysis_top_finding_mask_and_heatmap(filled):
    with filled.session() as s:
        a, b = [r.sop_instance_uid for r in search_instances(s, patient_id="A-100").rows]
    mask = np.zeros((16, 16), bool)
    mask[4:9, 2:7] = True
    heat = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    add_analysis(
        filled,
        a,
        bundle_id="adaptor-cxr",
        bundle_version="1.0",
        probabilities={"normal": 0.1, "pneumonia": 0.7, "pneumothorax": 0.2},
    )
    aid = add_analysis(
        filled,
        a,
        bundle_id="adaptor-cxr",
        bundle_version="1.1",
        probabilities={"normal": 0.2, "pneumonia": 0.3, "pneumothorax": 0.5},
        mask=mask,
        heatmap=heat,
    )
    add_analysis(
        filled, b, bundle_id="adaptor-cxr", bundle_version="1.1", probabilities={"normal": 0.9, "pneumonia": 0.05}
    )
    with filled.session() as s:
        # the latest analysis decides the top finding
        assert uids(search_instances(s, top_finding="pneumothorax")) == ["A-100"]
        assert search_instances(s, top_finding="pneumonia").total == 0
        assert search_instances(s, top_finding="normal", min_probability=0.95).total == 0
        ranked = search_instances(s, sort="top_probability", descending=True)
        assert [r.top_probability for r in ranked.rows][:2] == [0.9, 0.5]
        latest = latest_analysis(s, get_instance(s, a))
        assert latest.id == aid and latest.bundle_version == "1.1"
        assert analysis_probabilities(latest)["pneumothorax"] == 0.5
    # masks and heatmaps are files under the library folder, paths relative to it
    assert not latest.mask_path.startswith("/") and latest.mask_path.startswith("derived/")
    assert (filled.data_dir / latest.mask_path).is_file() and (filled.data_dir / latest.heatmap_path).is_file()
    assert np.array_equal(analysis_mask(filled, latest) > 0, mask)
    assert np.array_equal(analysis_heatmap(filled, latest), heat)


def test_failed_analysis_commit_leaves_no_files(filled):
    with filled.session() as s:
        uid = search_instances(s, limit=1).rows[0].sop_instance_uid
    with pytest.raises(Exception):  # noqa: B017 (any failure of the commit; the test is about the files left)
        add_analysis(
            filled, uid, bundle_id=None, bundle_version="1", probabilities={"x": 0.5}, mask=np.ones((4, 4), bool)
        )
    assert not list(filled.derived_dir.rglob("*.png"))
    with filled.session() as s:
        assert s.execute(select(Analysis)).first() is None


def test_remove_instances_cleans_up_rows_and_managed_files(lib, tmp_path):
    for k in range(2):
        write(tmp_path / "in" / f"{k}.dcm", gradient(16, 16), patient_id="P-1", study_uid="1.2.826.0.1.3680043.8.498.5")
    import_paths(lib, [tmp_path / "in"], mode="copy")
    with lib.session() as s:
        rows = s.execute(select(Instance)).scalars().all()
        files = [lib.resolve(r.file_path, r.storage) for r in rows]
    add_analysis(
        lib,
        rows[0].sop_instance_uid,
        bundle_id="b",
        bundle_version="1",
        probabilities={"n": 1.0},
        heatmap=np.zeros((2, 2)),
    )
    assert remove_instances(lib, [rows[0].sop_instance_uid]) == 1
    assert not files[0].exists() and files[1].exists()
    assert not list(lib.derived_dir.rglob("*.npy"))
    assert remove_instances(lib, [rows[1].sop_instance_uid]) == 1
    from app.library.queries import counts

    with lib.session() as s:
        assert counts(s) == dict(patients=0, studies=0, series=0, instances=0, reports=0, analyses=0, reviews=0)
    # the original source files are never deleted
    assert (tmp_path / "in" / "0.dcm").exists()
