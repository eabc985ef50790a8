"""Fine-tuning and evaluation runs on the tiny phantom pipeline: outputs, honesty, repeatability."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_classification_run_reports_everything(tiny_pipeline):
    run = tiny_pipeline / "cls"
    m = _metrics(run)
    assert m["research_use_only"] and m["classes"] == ["normal", "pneumonia", "covid19"]
    cm = m["metrics"]
    for name in m["classes"]:
        e = cm["per_class"][name]
        assert {"auroc", "ci_low", "ci_high", "operating_point"} <= set(e)
        op = e["operating_point"]
        assert {"sensitivity", "specificity", "f1", "threshold"} <= set(op)
    assert {"ece", "ece_uncalibrated", "temperature", "thresholds", "auroc_macro", "accuracy"} <= set(cm)
    head = json.loads((run / "head.json").read_text())
    assert head["thresholds"] == cm["thresholds"] and head["temperature"] == cm["temperature"]
    assert (run / "report.md").read_text().count("Research use only") >= 1
    assert any(run.glob("curves_*.png"))
    split_rows = (run / "splits.csv").read_text().splitlines()
    assert split_rows[0] == "id,split" and len(split_rows) > 100


def test_segmentation_run_reports_three_dice_and_the_empty_baseline(tiny_pipeline):
    run = tiny_pipeline / "seg"
    m = _metrics(run)["metrics"]
    for key in ("dice_mgca", "dice_positive", "dice_aggregate", "iou_positive", "iou_aggregate"):
        assert key in m
    assert m["empty_baseline"]["dice_mgca"] == pytest.approx(1 - m["positive_fraction"])
    assert m["empty_baseline"]["dice_positive"] == 0.0
    report = (run / "report.md").read_text()
    assert "all-empty" in report.lower() or "empty" in report.lower()
    if not m["beats_empty_baseline"]:
        assert "Warning" in report
    assert (run / "segmentation_examples.png").stat().st_size > 10_000


@torch.no_grad()
def test_predictions_do_not_depend_on_the_batch(tiny_pipeline):
    from safetensors.torch import load_file

    from core_model.features.cache import FeatureCache
    from core_model.heads import SegDecoder, make_cls_head
    from core_model.training.artifacts import load_adaptor
    from core_model.training.batches import CachedPairs
    from core_model.training.finetune import adaptor_image_outputs

    adaptor, _, _ = load_adaptor(tiny_pipeline / "pretrain")
    cache_dir = next((tiny_pipeline / "phantoms" / "features").glob("*"))
    pairs = CachedPairs(FeatureCache(cache_dir), text=False)
    h = json.loads((tiny_pipeline / "cls" / "head.json").read_text())["head"]
    head = make_cls_head(h["kind"], h["in_dim"], h["outputs"])
    head.load_state_dict(load_file(str(tiny_pipeline / "cls" / "head.safetensors")))
    head.eval()
    s = json.loads((tiny_pipeline / "seg" / "head.json").read_text())["head"]
    dec = SegDecoder(s["in_dim"], tuple(s["grid"]), s["input_size"], s["kind"])
    dec.load_state_dict(load_file(str(tiny_pipeline / "seg" / "head.safetensors")))
    dec.eval()
    idx = np.arange(12)
    feats, toks = adaptor_image_outputs(adaptor, pairs, idx, "cpu", batch_size=12, tokens=True)
    ref_logits, ref_masks = head(feats), dec(toks)
    for bs in (1, 5):
        order = np.random.default_rng(bs).permutation(idx)
        f, t = adaptor_image_outputs(adaptor, pairs, order, "cpu", batch_size=bs, tokens=True)
        logits = torch.cat([head(f[i : i + bs]) for i in range(0, 12, bs)])
        masks = torch.cat([dec(t[i : i + bs]) for i in range(0, 12, bs)])
        assert torch.allclose(logits, ref_logits[order], atol=1e-6)
        assert torch.allclose(masks, ref_masks[order], atol=1e-5)


@pytest.mark.slow
def test_seeded_classification_runs_repeat(tiny_pipeline, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "training_cli.main",
        "finetune-cls",
        "--config",
        str(tiny_pipeline / "cls.yaml"),
        "--epochs",
        "2",
        "--set",
        "eval.bootstrap=20",
        "--no-progress",
    ]
    for name in ("a", "b"):
        proc = subprocess.run(
            cmd + ["--out", str(tmp_path / name)], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _metrics(tmp_path / "a")["metrics"], _metrics(tmp_path / "b")["metrics"]
    assert a["auroc_macro"] == b["auroc_macro"] and a["thresholds"] == b["thresholds"]
    assert (tmp_path / "a" / "predictions_test.csv").read_text() == (
        tmp_path / "b" / "predictions_test.csv"
    ).read_text()


@pytest.mark.parametrize(
    "task,run",
    [
        ("classification", "cls"),
        ("segmentation", "seg"),
        ("zeroshot", "pretrain"),
        ("retrieval", "pretrain"),
        ("grounding", "pretrain"),
    ],
)
def test_evaluate_scores_each_task(tiny_pipeline, tmp_path, task, run):
    cmd = [
        sys.executable,
        "-m",
        "training_cli.main",
        "evaluate",
        "--run",
        str(tiny_pipeline / run),
        "--task",
        task,
        "--out",
        str(tmp_path),
        "--bootstrap",
        "20",
        "--no-progress",
    ]
    if run == "pretrain":
        cmd += ["--config", str(tiny_pipeline / "cls.yaml")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = _metrics(tmp_path)
    assert m["task"] == task and m["n"] > 0 and m["research_use_only"]
    if task == "classification":
        # the run's own thresholds are used, not refitted on the scored data
        head = json.loads((tiny_pipeline / "cls" / "head.json").read_text())
        assert m["metrics"]["thresholds"] == head["thresholds"]
    if task == "zeroshot":
        assert set(m["metrics"]["per_class"]) == {"normal", "pneumonia", "covid19"}
    if task == "retrieval":
        assert "i2t_R@5" in m["metrics"] and "i2t_P@5_finding" in m["metrics"]
    if task == "grounding":
        per = m["metrics"]["per_finding"]
        assert set(per) == {"pneumonia", "covid19", "pneumothorax"}
        assert all(0 < e["chance"] < 1 and 0 <= e["pointing_game_prompt"] <= 1 for e in per.values())
        for e in per.values():  # the positional prior (fitted on training masks) with intervals
            ci = e["positional_prior_ci"]
            assert ci["ci_low"] <= e["positional_prior"] == ci["value"] <= ci["ci_high"]
            p = e["pointing_game_prompt_ci"]
            assert p["ci_low"] <= e["pointing_game_prompt"] <= p["ci_high"]
            d = e["prompt_minus_prior"]
            assert d["difference"] == pytest.approx(e["pointing_game_prompt"] - e["positional_prior"])
        # lesions are not placed uniformly, so the prior beats chance (why chance is the wrong baseline)
        assert np.mean([e["positional_prior"] for e in per.values()]) > np.mean([e["chance"] for e in per.values()])
        assert "positional prior" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.md").exists()


def test_evaluate_rejects_a_pretraining_run_for_classification(tiny_pipeline, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training_cli.main",
            "evaluate",
            "--run",
            str(tiny_pipeline / "pretrain"),
            "--task",
            "classification",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "needs a fine-tuning run" in proc.stderr and "Traceback" not in proc.stderr


def test_label_fraction_keeps_that_share_of_the_training_split(tiny_pipeline, tmp_path):
    """1 % / 10 % / 100 % of the training labels: only the training split shrinks, by pandas'
    sample(frac, random_state=42) as the published protocol draws it."""
    import yaml

    from core_model.data.splits import pandas_sample
    from core_model.training.config import FINETUNE_DEFAULTS
    from core_model.training.downstream_data import load_labeled

    data = {**FINETUNE_DEFAULTS["data"], **yaml.safe_load((tiny_pipeline / "cls.yaml").read_text())["data"]}
    full = load_labeled(data, "classification")
    tenth = load_labeled({**data, "fraction": 0.1}, "classification")
    train_full = [r.id for r in full.records if r.split == "train"]
    train_tenth = [r.id for r in tenth.records if r.split == "train"]
    assert len(train_tenth) == round(0.1 * len(train_full))
    assert train_tenth == pandas_sample(train_full, 0.1)
    for s in ("val", "test"):
        assert [r.id for r in tenth.records if r.split == s] == [r.id for r in full.records if r.split == s]
