"""Experiment tracking: TensorBoard event files from pretrain and fine-tune runs beside the CSV
logs, read back with TensorBoard's own reader; a one-line error when the package is missing."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    pytest.importorskip("tensorboard")
    from training_cli.main import main

    root = tmp_path_factory.mktemp("tracking")
    (root / "pretrain.yaml").write_text(
        textwrap.dedent(f"""\
        data: {{kind: phantoms, path: {root / "phantoms"}, n: 60, seed: 3}}
        encoders: {{image: tiny-vit, text: tiny-bert}}
        cache: {{patch_pool: 2, batch_size: 16, workers: 0}}
        adaptor: {{dim: 32, heads: 2, ffn_dim: 64, cross_heads: 2}}
        loss: {{local_candidates: 4}}
        train: {{epochs: 3, batch_size: 16, lr: 2.0e-3}}
        """)
    )
    pre = root / "pre"
    assert (
        main(["pretrain", "--config", str(root / "pretrain.yaml"), "--out", str(pre), "--no-progress", "--tensorboard"])
        == 0
    )
    cls = root / "cls"
    args = [
        "finetune-cls",
        "--pretrained",
        str(pre),
        "--out",
        str(cls),
        "--no-progress",
        "--set",
        f"data.path={root / 'phantoms'}",
        "--set",
        "data.n=60",
        "--set",
        "data.seed=3",
        "--set",
        "data.classes=[normal, pneumonia, covid19]",
        "--set",
        "train.epochs=4",
        "--set",
        "train.tensorboard=true",
        "--set",
        "cache.workers=0",
        "--set",
        "eval.examples=0",
        "--set",
        "eval.bootstrap=20",
    ]
    assert main(args) == 0
    return root, pre, cls


@pytest.mark.slow
def test_pretraining_writes_event_files_beside_its_csv_log(tracked):
    _, pre, _ = tracked
    scalars = _scalars(pre / "tensorboard")
    with open(pre / "log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    assert len(log) == 3  # the CSV log stays
    loss = scalars["pretrain/train_loss"]
    assert [s for s, _ in loss] == [int(r["step"]) for r in log]
    assert [v for _, v in loss] == pytest.approx([float(r["train_loss"]) for r in log], rel=1e-6)
    assert "pretrain/i2t_R@5" in scalars and "pretrain/val_loss" in scalars


@pytest.mark.slow
def test_finetuning_logs_each_epoch_and_the_test_metrics(tracked):
    import json

    _, _, cls = tracked
    scalars = _scalars(cls / "tensorboard")
    assert [s for s, _ in scalars["finetune-cls/val_score"]] == [1, 2, 3, 4]
    m = json.loads((cls / "metrics.json").read_text())
    assert scalars["test/auroc_macro"][0][1] == pytest.approx(m["metrics"]["auroc_macro"]["auroc"], rel=1e-6)


def test_tracking_is_off_by_default_and_a_missing_package_is_one_line(tmp_path):
    from core_model.errors import ConfigError
    from core_model.training.config import PRETRAIN_DEFAULTS, load_config
    from core_model.training.tracking import open_tracker

    cfg = load_config(PRETRAIN_DEFAULTS, None)
    assert cfg["train"].tensorboard is False and cfg["train"].wandb is None
    tracker = open_tracker(tmp_path)
    tracker.log(1, {"loss": 1.0})
    tracker.close()
    assert not tracker.active and not (tmp_path / "tensorboard").exists()
    # a machine without the package (import blocked in a fresh interpreter): a clear error, no traceback
    code = (
        "import sys; sys.modules['tensorboard'] = None\n"
        "from core_model.errors import ConfigError\n"
        "from core_model.training.tracking import open_tracker\n"
        "try:\n    open_tracker(sys.argv[1], tensorboard=True)\n"
        "except ConfigError as e:\n    print(e); sys.exit(2)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "pip install tensorboard" in proc.stdout
    if "wandb" not in sys.modules:
        try:
            import wandb  # noqa: F401
        except ImportError:
            with pytest.raises(ConfigError, match="pip install wandb"):
                open_tracker(tmp_path, wandb="my-project")


def test_a_protocol_puts_its_cells_and_comparisons_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from core_model.training.protocol import load_protocol, track_results

    p = tmp_path / "p.yaml"
    p.write_text("tensorboard: true\ntasks: [{name: cls, task: classification, metric: auroc}]\n")
    protocol = load_protocol(p)
    assert protocol.tracking_overrides() == ["train.tensorboard=true"]  # every run of it tracks too
    cell = {"task": "cls", "row": "adaptor", "head": "mlp", "column": "16-shot", "status": "measured"}
    results = {
        "cells": [
            {**cell, "mean": 0.8, "sd": 0.05, "ci_low": 0.7, "ci_high": 0.9},
            {**cell, "row": "frozen", "status": "not measured here"},
        ],
        "comparisons": [
            {
                "task": "cls",
                "method": "adaptor",
                "control": "frozen",
                "head": "mlp",
                "column": "16-shot",
                "difference": 0.2,
                "p_value": 0.01,
            }
        ],
    }
    (tmp_path / "results.md").write_text("# Protocol\n")
    track_results(protocol, results, tmp_path)
    scalars = _scalars(tmp_path / "tensorboard")
    assert scalars["cls/adaptor/mlp/16-shot/mean"] == [(0, pytest.approx(0.8))]
    assert scalars["cls/adaptor-vs-frozen/mlp/16-shot/difference"] == [(0, pytest.approx(0.2))]
    assert not any(k.startswith("cls/frozen/") for k in scalars)  # nothing for unmeasured cells
