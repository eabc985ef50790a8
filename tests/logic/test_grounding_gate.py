"""A finding's heatmap is shown only when the bundle's model card vouches for it: its pointing
game on the validation split beat the positional prior (issue 16). The verdict comes from a real
grounding evaluation of the tiny pipeline through ``adaptor-train export --grounding``; the app
withholds the default heatmap of a finding the card does not vouch for and says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gui.conftest import copy_bundle, uid_of, vouch_all

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "training_cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def graded_bundle(tiny_pipeline, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny pipeline exported again with its real validation grounding evaluation."""
    work = tmp_path_factory.mktemp("graded")
    data = tiny_pipeline / "eval-data.yaml"
    data.write_text(f"data: {{kind: phantoms, path: {tiny_pipeline / 'phantoms'}, n: 160, seed: 3, dicom: some}}\n")
    ev = work / "grounding-val"
    _cli(
        "evaluate", "--checkpoint", str(tiny_pipeline / "pretrain"), "--task", "grounding", "--split", "val",
        "--config", str(data), "--bootstrap", "50", "--out", str(ev), "--no-progress",
    )  # fmt: skip
    out = work / "bundle"
    _cli("export", "--run", str(tiny_pipeline / "cls"), "--run", str(tiny_pipeline / "seg"),
         "--grounding", str(ev), "--out", str(out), "--no-progress")  # fmt: skip
    return out, json.loads((ev / "metrics.json").read_text())


def test_card_states_each_findings_verdict_from_the_validation_evaluation(graded_bundle, tmp_path):
    from core_model.runtime import load_bundle

    folder, ev = graded_bundle
    b = load_bundle(folder, cache_root=tmp_path)
    card = b.card["grounding"]
    assert card["evaluated"] and card["split"] == "val"
    per = ev["metrics"]["per_finding"]
    assert set(card["per_finding"]) == set(per)
    for finding, e in per.items():
        beat = e["pointing_game_prompt"] > e["positional_prior"]
        v = b.grounding(finding)
        assert v.validated == beat == card["per_finding"][finding]["validated"]
        assert f"{100 * e['positional_prior']:.0f} %" in v.reason  # the figures are said
        if not beat:
            assert "no reliable heatmap" in v.message()
    assert b.validated_heatmap_findings() == sorted(
        f for f, e in per.items() if e["pointing_game_prompt"] > e["positional_prior"]
    )
    md = (folder / "MODEL_CARD.md").read_text()
    assert "## Heatmaps (grounding)" in md and "positional prior" in md


def test_export_refuses_a_grounding_evaluation_of_the_test_split(tiny_pipeline, graded_bundle, tmp_path):
    _folder, ev = graded_bundle
    doc = {**ev, "split": "test"}
    bad = tmp_path / "grounding-test"
    bad.mkdir()
    (bad / "metrics.json").write_text(json.dumps(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "training_cli.main", "export", "--run", str(tiny_pipeline / "cls"),
         "--grounding", str(bad), "--out", str(tmp_path / "b"), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 2 and "validation split" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()


def _always_above(src: Path, dest: Path, card: dict | None = None) -> Path:
    """A copy whose operating thresholds are 0 (every finding is above its threshold)."""
    classes = json.loads((src / "config.json").read_text())["classes"]
    return copy_bundle(src, dest, config={"thresholds": {c: 0.0 for c in classes}}, card=card)


def test_app_withholds_the_default_heatmap_the_card_does_not_vouch_for(tiny_bundle, library, tmp_path):
    from app.logic import analysis as A
    from app.logic.bundles import open_bundle

    uid = uid_of(library, "anna_pa.dcm")
    # exported without a grounding evaluation: nothing is vouched for
    plain = open_bundle(_always_above(tiny_bundle, tmp_path / "plain"))
    assert not plain.validated_heatmap_findings()
    r = A.run_model(library, plain, uid)
    top = A.default_heatmap_finding(r.probabilities, r.thresholds)
    assert top is not None
    assert r.heatmap is None and r.heatmap_phrase is None
    assert r.heatmap_withheld and "no reliable heatmap" in r.heatmap_withheld and top in r.heatmap_withheld
    again = A.cached_analysis(library, uid, plain.id, plain.version, bundle_hash=plain.content_hash)
    assert again.heatmap is None and again.heatmap_withheld == r.heatmap_withheld  # stored with the result
    assert "vouches for no heatmap" in A.grounding_caveat(plain)
    # the same model with a card vouching only for another finding: still withheld
    others = vouch_all(tiny_bundle)
    others["grounding"]["per_finding"][top]["validated"] = False
    partial = open_bundle(_always_above(tiny_bundle, tmp_path / "partial", card=others))
    r2 = A.run_model(library, partial, uid, store=False)
    assert r2.heatmap is None and top in r2.heatmap_withheld
    assert f"not for {top}" in A.grounding_caveat(partial)
    # vouched for: the heatmap of that finding is drawn
    vouched = open_bundle(_always_above(tiny_bundle, tmp_path / "vouched", card=vouch_all(tiny_bundle)))
    r3 = A.run_model(library, vouched, uid, store=False)
    assert r3.heatmap is not None and r3.heatmap_phrase == A.finding_phrase(top) and r3.heatmap_withheld is None
