"""The committed demo assets: a valid bundle within budget, demo studies in every encoding, and a
recipe that rebuilds the same model.

Tolerance for the rebuild (the recipe is deterministic on CPU; other CPUs and thread counts
change floating-point sums slightly): AUROC and Precision@5 within 0.03, Dice within 0.05.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
TOL = {"auroc": 0.03, "p5": 0.03, "dice": 0.05}


def test_demo_bundle_is_valid_and_small(tmp_path):
    from core_model.runtime import load_bundle

    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= 40 * 2**20, f"assets/demo is {size / 2**20:.1f} MiB"
    b = load_bundle(DEMO / "bundle")  # checks every SHA-256
    assert b.classes == ["normal", "pneumonia", "covid19"] and b.mask_label == "pneumothorax"
    assert b.card["research_use_only"] and "SYNTHETIC" in b.card_markdown
    assert b.card["encoders"]["text"]["name"] == "minilm"
    assert b.card["quantization"]["report_embedding_cosine_min"] > 0.9
    # the domain guard: trained on synthetic frontal phantoms, and the runtime says so
    assert b.synthetic and b.domain_model is not None and b.domain_model.views == ("AP", "PA")
    assert b.card["domain"]["test_false_ood_rate"] <= 0.05
    metrics = json.loads((DEMO / "metrics.json").read_text())["metrics"]
    assert metrics["domain_test_in_domain_rate"] >= 0.95
    # heatmaps: the card vouches for a finding exactly when its validation pointing game beat the
    # positional prior, and the app follows the card (issue 16)
    g = b.card["grounding"]
    assert g["evaluated"] and g["split"] == "val" and g["weak_supervision"]["images"] > 0
    for f, pg in metrics["grounding_val_pointing_game"].items():
        assert b.grounding(f).validated == (pg > metrics["grounding_val_positional_prior"][f]), f


def test_demo_studies_cover_findings_views_and_encodings():
    from core_model.imaging.dicom import read_dataset

    index = json.loads((DEMO / "studies.json").read_text())
    assert sorted(p.name for p in (DEMO / "studies").glob("*.dcm")) == sorted(e["file"] for e in index)
    assert 10 <= len(index) <= 16
    assert {e["finding"] for e in index} == {"normal", "pneumonia", "covid19", "pneumothorax"}
    assert {e["view"] for e in index} == {"PA", "AP"}
    syntaxes = set()
    for e in index:
        ds = read_dataset(DEMO / "studies" / e["file"], header_only=True)
        syntaxes.add(ds.file_meta.TransferSyntaxUID.name)
        assert "SYNTHETIC" in str(ds.StudyDescription)
        assert (DEMO / "studies" / e["file"]).with_suffix(".txt").read_text().strip()
    assert {"MONOCHROME1", "MONOCHROME2"} <= {e["photometric"] for e in index}
    assert len(syntaxes) >= 6


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a hang guard, not a speed claim (~8 min on an idle 2-core machine)
def test_recipe_rebuilds_the_committed_metrics(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "training_cli.main", "demo", "--out", str(tmp_path / "demo"), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1750,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    new = json.loads((tmp_path / "demo" / "demo.json").read_text())["metrics"]
    old = json.loads((DEMO / "metrics.json").read_text())["metrics"]
    for c, v in old["cls_test_auroc"].items():
        assert new["cls_test_auroc"][c] == pytest.approx(v, abs=TOL["auroc"]), c
    for key in ("pretrain_val_i2t_P@5_finding", "retrieval_test_i2t_P@5_finding"):
        assert new[key] == pytest.approx(old[key], abs=TOL["p5"]), key
    for key in ("seg_test_dice_positive", "seg_test_dice_mgca"):
        assert new[key] == pytest.approx(old[key], abs=TOL["dice"]), key
    assert new["domain_test_in_domain_rate"] >= 0.95 and new["domain_generated_out_of_domain_rate"] == 1.0
    # grounding that points: every finding's heatmap beats its positional prior by 0.10 on test
    for f, pg in new["grounding_test_pointing_game"].items():
        assert pg >= new["grounding_test_positional_prior"][f] + 0.10, (f, pg)
