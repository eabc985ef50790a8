"""`adaptor-train protocol`: a tiny table protocol end to end on phantoms (controls, seeds, CIs,
paired bootstrap, "not measured here" for absent data, resume after a killed cell)."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import pytest

from core_model.errors import ConfigError

pytestmark = pytest.mark.timeout(900)


def _write_protocol(root: Path) -> Path:
    phantoms = root / "phantoms"
    (root / "pretrain.yaml").write_text(
        textwrap.dedent(f"""\
        data: {{kind: phantoms, path: {phantoms}, n: 120, seed: 5}}
        encoders: {{image: tiny-vit, text: tiny-bert}}
        cache: {{patch_pool: 2, batch_size: 16, workers: 0}}
        adaptor: {{dim: 64, heads: 4, ffn_dim: 128, cross_heads: 4, local_mixing: 1}}
        loss: {{local_candidates: 4}}
        train: {{epochs: 2, batch_size: 32, lr: 2.0e-3}}
        """)
    )
    data = f"data.path={phantoms}"
    (root / "protocol.yaml").write_text(
        textwrap.dedent(f"""\
        description: tiny test protocol on phantoms
        name: tiny
        seeds: 2
        fractions: [0.5, 1.0]
        bootstrap: 60
        pretrain: {{config: {root / "pretrain.yaml"}}}
        controls: [frozen, random, paper]
        heads: [linear]
        few_shot: {{k: [3], folds: 2}}
        tasks:
          - name: cls
            task: classification
            metric: auroc
            overrides: ["{data}", "data.n=120", "data.seed=5", "data.classes=[normal, pneumonia, covid19]",
                        "train.epochs=3", "train.batch_size=32", "cache.workers=0", "eval.examples=0"]
          - name: seg
            task: segmentation
            metric: dice_positive
            overrides: ["{data}", "data.n=120", "data.seed=5", "head.kind=light", "train.epochs=1",
                        "train.batch_size=16", "cache.workers=0", "cache.patch_pool=2", "eval.examples=1"]
          - name: retr
            task: retrieval
            metric: i2t_P@5_finding
            overrides: ["{data}", "data.n=120", "data.seed=5", "data.classes=[normal, pneumonia, covid19]",
                        "cache.workers=0"]
          - name: covidx
            task: classification
            metric: accuracy
            dataset: covidx
            split_protocol: mgca-covidx
            overrides: ["data.kind=covidx", "data.path={root / "absent" / "train.txt"}",
                        "data.test_path={root / "absent" / "test.txt"}", "data.images={root / "absent"}"]
        """)
    )
    return root / "protocol.yaml"


@pytest.fixture(scope="module")
def tiny_protocol(tmp_path_factory):
    from training_cli.main import main

    root = tmp_path_factory.mktemp("protocol")
    path = _write_protocol(root)
    out = root / "out"
    assert main(["protocol", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    return path, out


def _cells(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["cells"]


@pytest.mark.slow
def test_protocol_writes_every_cell_with_controls_seeds_and_intervals(tiny_protocol):
    _, out = tiny_protocol
    results = json.loads((out / "results.json").read_text())
    assert results["research_use_only"] is True
    cells = results["cells"]
    measured = [c for c in cells if c["status"] == "measured"]
    rows = {c["row"] for c in measured if c["task"] == "cls"}
    assert rows == {"adaptor", "frozen", "random", "paper"}
    assert {c["row"] for c in measured if c["task"] == "seg"} == {"adaptor", "frozen", "random"}
    paper_seg = [c for c in cells if c["task"] == "seg" and c["row"] == "paper"]
    assert paper_seg and all("not applicable" in c["reason"] for c in paper_seg)
    for c in measured:
        if c["task"] == "retr":  # one pretraining run per row: retrieval has one replicate
            continue
        assert c["seeds"] == [0, 1] and len(c["values"]) == 2
        assert c["mean"] == pytest.approx(sum(c["values"]) / 2)
        assert c["ci_low"] <= c["mean"] <= c["ci_high"]
        assert c["sd"] >= 0
    # each seed's value is the run's own metric (the cell re-reads the runs' predictions)
    c = next(c for c in measured if c["task"] == "cls" and c["row"] == "adaptor" and c["fraction"] == 1.0)
    run = json.loads((Path(c["runs"][0]) / "metrics.json").read_text())
    assert c["values"][0] == pytest.approx(run["metrics"]["auroc_macro"]["auroc"], abs=1e-6)
    # the fraction reached the runs: fewer training images at 0.5
    half = next(x for x in measured if x["task"] == "cls" and x["row"] == "adaptor" and x["fraction"] == 0.5)
    n_half = json.loads((Path(half["runs"][0]) / "metrics.json").read_text())["split"]["sizes"]["train"]
    assert n_half < run["split"]["sizes"]["train"]
    # the method is compared with every control on the same test images
    comps = results["comparisons"]
    assert {(k["task"], k["control"]) for k in comps} >= {("cls", "frozen"), ("cls", "random"), ("cls", "paper")}
    for k in comps:
        assert k["ci_low"] <= k["difference"] <= k["ci_high"] and 0 < k["p_value"] <= 1
    # split hygiene is reported: phantoms are split by patient, so nobody is in two splits
    hyg = results["split_hygiene"]["cls"]
    assert hyg["checked"] and not hyg["leaks"] and set(hyg["shared_patients"].values()) == {0}


@pytest.mark.slow
def test_absent_data_says_not_measured_and_keeps_the_published_numbers_apart(tiny_protocol):
    _, out = tiny_protocol
    covidx = [c for c in _cells(out) if c["task"] == "covidx"]
    assert covidx and all(c["status"] == "not measured here" and "mean" not in c for c in covidx)
    full = next(c for c in covidx if c["fraction"] == 1.0)
    assert any(r["method"] == "MGCA ViT-B/16" and r["value_percent"] == 92.3 for r in full["references"])
    assert not next(c for c in covidx if c["fraction"] == 0.5)["references"]  # no published 50 % column
    phantom = next(c for c in _cells(out) if c["task"] == "cls" and c["status"] == "measured")
    assert phantom["references"] == [] and "no published reference" in phantom["references_note"]
    md = (out / "results.md").read_text()
    assert "not measured here" in md and "Research use only" in md and "frozen encoder alone" in md
    assert "MGCA ViT-B/16 (published)" in md and "Paired bootstrap" in md
    figures = json.loads((out / "results.json").read_text())["figures"]
    assert set(figures) == {"cls", "seg"}  # nothing measured for covidx, so no empty plot
    for name in figures.values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({name})" in md
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(_cells(out))
    measured = [r for r in rows if r["status"] == "measured"]
    assert all(float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) for r in measured)
    assert all(r["mean"] == "" for r in rows if r["task"] == "covidx")


@pytest.mark.slow
def test_a_killed_cell_is_rebuilt_and_finished_cells_are_reused(tiny_protocol):
    from training_cli.main import main

    path, out = tiny_protocol
    cells = [c for c in _cells(out) if c["status"] == "measured"]
    killed = Path(cells[0]["runs"][1])
    (killed / "metrics.json").unlink()  # killed after head.json, before its metrics
    kept = Path(cells[1]["runs"][0]) / "head.safetensors"
    before = kept.stat().st_mtime_ns
    assert main(["protocol", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cells_built"] == 1
    assert (killed / "metrics.json").exists()
    assert kept.stat().st_mtime_ns == before
    again = next(c for c in results["cells"] if c["runs"] and c["runs"][0] == cells[0]["runs"][0])
    assert again["values"] == pytest.approx(cells[0]["values"])  # same seeds, same numbers (CPU, deterministic)


def test_protocol_file_errors_name_the_key(tmp_path):
    from core_model.training.protocol import load_protocol

    p = tmp_path / "p.yaml"
    p.write_text("tasks: [{name: a, task: classification, metric: auroc}]\nseed: 3\n")
    with pytest.raises(ConfigError, match="'seed'"):
        load_protocol(p)
    p.write_text("tasks: [{name: a, task: classification, metric: dice_mgca}]\n")
    with pytest.raises(ConfigError, match="dice_mgca belongs to segmentation"):
        load_protocol(p)
    p.write_text("controls: [probe]\ntasks: [{name: a, task: classification, metric: auroc}]\n")
    with pytest.raises(ConfigError, match="unknown control 'probe'"):
        load_protocol(p)
    p.write_text("tasks: [{name: a, task: classification, metric: auroc, head: mlp}]\n")
    with pytest.raises(ConfigError, match="head"):
        load_protocol(p)


def test_shipped_protocols_load():
    from core_model.training.protocol import load_protocol

    root = Path(__file__).resolve().parents[2] / "configs" / "protocols"
    names = {p.stem: load_protocol(p) for p in root.glob("*.yaml")}
    assert {"phantoms-smoke", "paper-table1", "paper-table2", "paper-ablations", "phantoms-ablations"} <= set(names)
    assert names["paper-table1"].few_shot_k == [16] and names["paper-table1"].few_shot_folds == 5
    ablations = {r.name for r in names["paper-ablations"].rows if r.ablation}
    assert {"width-128", "depth-2", "pooled", "pooled-released-code", "patch-pool-1", "contextual"} <= ablations
    t1 = names["paper-table1"]
    assert t1.fractions == [0.01, 0.1, 1.0] and len(t1.seeds) == 3
    assert {r.name for r in t1.rows} == {"adaptor", "frozen", "random", "paper"}
    assert {(t.dataset, t.metric) for t in t1.tasks} == {("rsna", "auroc"), ("covidx", "accuracy")}
    assert math.isclose(sum(names["paper-table2"].fractions), 1.11)


@pytest.mark.slow
def test_few_shot_columns_sit_beside_the_fractions_with_folds_and_intervals(tiny_protocol):
    """k-shot probes: k balanced training images per class, one seeded draw per fold; the cell is
    mean +- sd over the folds with the bootstrap interval of the fold mean."""
    _, out = tiny_protocol
    results = json.loads((out / "results.json").read_text())
    assert results["few_shot"] == {"k": [3], "folds": 2}
    shot = [c for c in results["cells"] if c["task"] == "cls" and c.get("shots") == 3]
    assert {c["row"] for c in shot} == {"adaptor", "frozen", "random", "paper"}
    assert not [c for c in results["cells"] if c["task"] == "seg" and c.get("shots")]  # classification only
    for c in shot:
        assert c["status"] == "measured" and c["folds"] == [0, 1] and c["column"] == "3-shot"
        assert c["fraction"] is None and c["ci_low"] <= c["mean"] <= c["ci_high"]
    runs = [Path(r) for r in shot[0]["runs"]]
    sizes = []
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        sizes.append(m["split"]["sizes"])
        assert any("few-shot: 3 training images per class" in n for n in m["split"]["notes"])
        with open(run / "splits.csv", newline="") as fh:
            train = [r for r in csv.DictReader(fh) if r["split"] == "train"]
        assert len(train) == 3 * 4  # normal, pneumonia, covid19 and 3 negatives for all (pneumothorax)
    # the folds draw different images, and validation / test stay whole
    assert (runs[0] / "splits.csv").read_text() != (runs[1] / "splits.csv").read_text()
    assert sizes[0]["test"] == sizes[1]["test"] and sizes[0]["val"] == sizes[1]["val"]
    assert any(k["column"] == "3-shot" for k in results["comparisons"])
    md = (out / "results.md").read_text()
    assert "3-shot" in md and "k-shot columns" in md


@pytest.mark.slow
def test_retrieval_cells_have_intervals_and_are_paired_against_the_controls(tiny_protocol):
    _, out = tiny_protocol
    results = json.loads((out / "results.json").read_text())
    retr = [c for c in results["cells"] if c["task"] == "retr"]
    by_row = {c["row"]: c for c in retr}
    assert set(by_row) == {"adaptor", "frozen", "random", "paper"}
    assert "not applicable" in by_row["frozen"]["reason"]  # no Adaptor: no common space
    for name in ("adaptor", "random", "paper"):
        c = by_row[name]
        assert c["status"] == "measured" and c["seeds"] == [0]  # one pretraining run per row
        assert c["ci_low"] <= c["mean"] <= c["ci_high"]
        m = json.loads((Path(c["runs"][0]) / "metrics.json").read_text())["metrics"]
        assert c["mean"] == pytest.approx(m["i2t_P@5_finding"])
        ci = m["i2t_P@5_finding_ci"]
        assert ci["ci_low"] <= m["i2t_P@5_finding"] <= ci["ci_high"]
    assert {k["control"] for k in results["comparisons"] if k["task"] == "retr"} == {"random", "paper"}
    assert "Precision@5 by finding" in (out / "results.md").read_text()
