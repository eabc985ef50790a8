"""Splits: the published MGCA/Adaptor protocol reproduced exactly, split files, no leakage.

The fingerprints below were computed by running MGCA's own preprocessing logic
(``preprocess/rsna.py``: pandas ``groupby(...).agg(list)``, sklearn ``train_test_split``,
``DataFrame.sample(frac, random_state=42)``) with pandas 3.1.1 and scikit-learn 1.9.1 on the real
label files, outside this repository (pandas is not a dependency). Equal fingerprints mean the
same ids in the same order.
"""

import hashlib

import numpy as np
import pytest

from core_model.data.records import ReadResult, Record
from core_model.data.splits import (
    SplitAssignment,
    apply_splits,
    covidx_splits,
    grouped_split,
    leaking_groups,
    pandas_sample,
    read_split_file,
    rsna_splits,
    siim_splits,
    write_split_file,
)
from core_model.errors import DataError


def fp(ids) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def test_rsna_classification_split_is_the_published_one(rsna_table):
    s = rsna_splits(rsna_table.all_patient_ids, "classification")
    assert s.sizes() == {"train": 18678, "val": 4003, "test": 4003}
    assert (fp(s.train), fp(s.val), fp(s.test)) == ("3636029f7e38baf9", "5c1f9790ea1d2a2e", "03176609aaf3ffe0")
    assert s.protocol_id == "mgca-rsna-classification"
    assert not set(s.train) & set(s.val) and not set(s.train) & set(s.test) and not set(s.val) & set(s.test)


@pytest.mark.parametrize("frac,size,digest", [(0.01, 187, "56b3680844650bc7"), (0.1, 1868, "96f05d99d028dd8e")])
def test_rsna_label_fractions_match_pandas_sample(rsna_table, frac, size, digest):
    s = rsna_splits(rsna_table.all_patient_ids, "classification", frac)
    assert len(s.train) == size and fp(s.train) == digest
    assert s.sizes()["test"] == 4003  # evaluation set never shrinks


def test_rsna_segmentation_split(rsna_table):
    s = rsna_splits(rsna_table.all_patient_ids, "segmentation")
    assert s.sizes() == {"train": 16010, "val": 5337, "test": 5337}
    assert (fp(s.val), fp(s.test)) == ("ce3791d97d9b4aad", "680ae5b060c38e96")
    assert sorted(s.train) == sorted(rsna_splits(rsna_table.all_patient_ids, "segmentation", 1.0).train)
    assert len(rsna_splits(rsna_table.all_patient_ids, "segmentation", 0.01).train) == 160  # int(0.01 * 16010)


def test_pandas_sample_semantics():
    ids = [f"r{i}" for i in range(2000)]
    assert fp(pandas_sample(ids, 0.01)) == "fcc41c62242347d3"
    assert fp(pandas_sample(ids, 0.1)) == "2593b0cf7e8e5d4c"
    assert fp(pandas_sample(ids, 0.333)) == "d8cc2af201fa71af"
    assert pandas_sample(ids, 1.0) == ids
    assert len(pandas_sample(ids[:5], 0.5)) == 2  # round(2.5) == 2: Python's (banker's) rounding, as pandas
    with pytest.raises(DataError):
        pandas_sample(ids, 0)


def test_covidx_split_80_20_plus_official_test():
    train_ids = [f"img{i}.png" for i in range(101)]
    s = covidx_splits(train_ids, ["t1.png", "t2.png"])
    assert s.sizes() == {"train": 80, "val": 21, "test": 2}
    assert sorted(s.train + s.val) == sorted(train_ids)
    assert len(covidx_splits(train_ids, ["t1.png"], 0.1).train) == 8


def test_siim_mgca_split(siim_table):
    s = siim_splits(siim_table.rows)
    assert fp(s.test) == "e0f1bcd97a4a5223" and len(s.test) == 1903  # MGCA's test images
    mapping = s.mapping()
    assert len(mapping) == len(s.train) + len(s.val) + len(s.test)  # one split per image
    pos = set(siim_table.positives())
    n_pos = sum(i in pos for i in s.train)
    assert n_pos == 1720 and len(s.train) - n_pos == 2002  # balanced before removing the 282 leaked positives
    assert any("282 training" in n for n in s.notes)


def test_siim_image_protocol_is_balanced_and_leak_free(siim_table):
    s = siim_splits(siim_table.rows, protocol="image")
    pos = set(siim_table.positives())
    n_pos = sum(i in pos for i in s.train)
    assert n_pos == len(s.train) - n_pos == 1862
    assert not (set(s.train) | set(s.val)) & set(s.test) and not set(s.train) & set(s.val)
    assert len(siim_splits(siim_table.rows, 0.1, protocol="image").train) == 372


def _records(ids):
    return ReadResult(records=[Record(id=i, image_path=f"/x/{i}.png", patient_id=i[:2]) for i in ids])


def test_split_file_round_trip_keeps_order(tmp_path):
    s = SplitAssignment(train=["c", "a"], val=["b"], test=["d"])
    path = tmp_path / "splits.csv"
    write_split_file(path, s)
    assert path.read_text().splitlines()[0] == "id,split"
    loaded = read_split_file(path)
    assert list(loaded.items()) == [("c", "train"), ("a", "train"), ("b", "val"), ("d", "test")]
    res = apply_splits(_records(["a", "b", "c", "d", "e"]), loaded)
    assert [(r.id, r.split) for r in res.records] == [("c", "train"), ("a", "train"), ("b", "val"), ("d", "test")]
    assert res.skip_counts() == {"not_in_split": 1}
    assert not list(tmp_path.glob("*.part"))


def test_user_split_file_aliases_and_errors(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("split,id,comment\nvalid,x,hello\nvalidate,y,\nTRAIN,z,\ntest,q,\n")
    assert read_split_file(p) == {"x": "val", "y": "val", "z": "train", "q": "test"}
    res = apply_splits(_records(["x", "z"]), read_split_file(p))
    assert res.skip_counts() == {"not_found": 2}
    p.write_text("id,split\na,holdout\n")
    with pytest.raises(DataError, match="line 2"):
        read_split_file(p)
    p.write_text("id,split\na,train\na,test\n")
    with pytest.raises(DataError, match="both"):
        read_split_file(p)
    p.write_text("name,fold\na,1\n")
    with pytest.raises(DataError, match="'id' and 'split'"):
        read_split_file(p)
    with pytest.raises(DataError, match="no record matches"):
        apply_splits(_records(["zz"]), {"x": "train"})


def test_grouped_split_keeps_patients_together():
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(500)]
    patients = [f"p{int(k)}" for k in rng.integers(0, 120, 500)]
    s = grouped_split(ids, patients, seed=3)
    group_of = dict(zip(ids, patients))
    assert leaking_groups(s.mapping(), group_of) == {}
    assert sum(s.sizes().values()) == 500
    assert grouped_split(ids, patients, seed=3).mapping() == s.mapping()
    # a row-level split of the same data does leak, and the check says so
    assert leaking_groups(dict(zip(ids, ["train", "test"] * 250)), group_of)
