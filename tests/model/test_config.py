"""The config loader: typed sections built once, unknown keys refused, the saved config.yaml is
the resolved config (and loads back to the same one), one copy of the fine-tuning defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core_model.errors import ConfigError
from core_model.training.config import (
    PRETRAIN_DEFAULTS,
    CacheConfig,
    FinetuneCacheConfig,
    FinetuneTrainConfig,
    LossConfig,
    PretrainTrainConfig,
    config_to_dict,
    load_config,
    load_flat_config,
    save_config,
)
from core_model.training.pipeline import finetune_defaults, load_finetune_config

ROOT = Path(__file__).resolve().parents[2]


def test_train_and_loss_sections_are_typed_and_numbers_in_strings_become_numbers(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  lr: 2e-5\n  epochs: '3'\nloss:\n  local_candidates: 4\n")  # YAML reads 2e-5 as text
    cfg = load_config(PRETRAIN_DEFAULTS, cfg_file, ["train.seed=7"])
    assert isinstance(cfg["train"], PretrainTrainConfig) and isinstance(cfg["loss"], LossConfig)
    assert cfg["train"].lr == 2e-5 and isinstance(cfg["train"].lr, float)
    assert cfg["train"].epochs == 3 and cfg["train"].seed == 7
    assert cfg["loss"].local_candidates == 4 and cfg["loss"].temperature == 0.07  # defaults kept
    assert cfg["adaptor"]["dim"] == 256  # untyped sections stay mappings
    ft = load_finetune_config("classification", ROOT / "configs" / "phantoms-cls.yaml")
    assert isinstance(ft["train"], FinetuneTrainConfig) and ft["train"].epochs == 40


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'; known keys here: batch_size, checkpoint_every"),
        ("loss.tau=1", "unknown config key 'loss.tau'"),
        ("adaptor.size=1", "unknown config key 'adaptor.size'"),
        ("trian.lr=1", "unknown config key 'trian'"),
        ("train.epochs=abc", "'train.epochs' must be an integer, got 'abc'"),
        ("train.epochs=2.5", "'train.epochs' must be an integer, got 2.5"),
        ("train.device=3", "'train.device' must be a str"),
        ("train.lr=null", "'train.lr' needs a value"),
        ("train=5", "'train' must be a mapping"),
    ],
)
def test_bad_keys_and_values_get_a_specific_error(override, message):
    with pytest.raises(ConfigError) as exc:
        load_config(PRETRAIN_DEFAULTS, None, [override])
    assert message in str(exc.value)


def test_saved_config_is_plain_yaml_and_loads_back_to_the_same_config(tmp_path):
    cfg = load_config(PRETRAIN_DEFAULTS, ROOT / "configs" / "phantoms-minilm.yaml", ["train.grad_clip=null"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "!!" not in text  # no Python objects in the file
    saved = yaml.safe_load(text)
    assert list(saved) == list(PRETRAIN_DEFAULTS)
    assert list(saved["train"]) == [
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "warmup",
        "grad_clip",
        "seed",
        "checkpoint_every",
        "device",
        "threads",
        "ram_limit_gb",
        "tensorboard",
        "wandb",
    ]
    assert saved == config_to_dict(cfg) and saved["train"]["grad_clip"] is None
    again = load_config(PRETRAIN_DEFAULTS, tmp_path / "config.yaml")
    assert again == cfg


def test_one_copy_of_the_segmentation_defaults_and_the_demo_passes_its_own():
    from core_model.demo import DEMO_SEGMENTATION_HEAD

    assert finetune_defaults("classification")["head"] == {"kind": "mlp", "dropout": 0.2}
    assert finetune_defaults("segmentation")["head"] == {"kind": "progressive", "dropout": 0.0}
    demo = load_finetune_config("segmentation", ROOT / "configs" / "phantoms-seg.yaml", head=DEMO_SEGMENTATION_HEAD)
    assert demo["head"] == {"kind": "light"}
    with pytest.raises(ConfigError, match="unknown config key 'head.dropout'"):
        load_finetune_config("segmentation", None, ["head.dropout=0.1"], head=DEMO_SEGMENTATION_HEAD)


def test_flat_config_files_use_the_same_loader(tmp_path):
    types = {"n": int, "seed": int, "dicom_fraction": float}
    f = tmp_path / "p.yaml"
    f.write_text("phantoms:\n  n: '12'\n  dicom_fraction: 0.2\n")
    assert load_flat_config({"n": 1, "seed": 0, "dicom_fraction": 0.05}, f, types, section="phantoms") == {
        "n": 12,
        "seed": 0,
        "dicom_fraction": 0.2,
    }
    f.write_text("n: 4\nnumber: 5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) number; known keys: n, seed, dicom_fraction"):
        load_flat_config({}, f, types)
    f.write_text("n: many\n")
    with pytest.raises(ConfigError, match="'n' must be int, got 'many'"):
        load_flat_config({}, f, types)


def test_a_typo_in_a_config_is_one_line_on_the_command_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  learning_rate: 1e-3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "training_cli.main", "pretrain", "--config", str(cfg), "--out", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "adaptor-train pretrain: error: unknown config key 'train.learning_rate'; known keys here: batch_size, "
        "checkpoint_every, device, epochs, grad_clip, lr, ram_limit_gb, seed, tensorboard, threads, wandb, warmup, "
        "weight_decay"
    ]


def test_finetune_train_section_has_its_own_keys():
    with pytest.raises(ConfigError, match="unknown config key 'train.warmup'"):
        load_config(finetune_defaults("classification"), None, ["train.warmup=0.1"])
    cfg = load_config(finetune_defaults("segmentation"), None, ["train.class_weights=balanced"])
    assert cfg["train"].class_weights == "balanced"


def test_cache_section_is_typed_with_its_own_keys_per_command(tmp_path):
    cfg = load_config(PRETRAIN_DEFAULTS, ROOT / "configs" / "phantoms-minilm.yaml", ["cache.shard_size='64'"])
    assert isinstance(cfg["cache"], CacheConfig)
    assert cfg["cache"].shard_size == 64 and cfg["cache"].patch_pool == 2 and cfg["cache"].image_tokens is True
    with pytest.raises(ConfigError, match="'cache.image_tokens' must be a bool, got 'yes please'"):
        load_config(PRETRAIN_DEFAULTS, None, ["cache.image_tokens=yes please"])
    ft = load_config(finetune_defaults("classification"), None, ["cache.patch_pool=2"])
    assert isinstance(ft["cache"], FinetuneCacheConfig) and ft["cache"].patch_pool == 2
    with pytest.raises(ConfigError, match="unknown config key 'cache.text_tokens'"):
        load_config(finetune_defaults("classification"), None, ["cache.text_tokens=false"])
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert list(saved["cache"]) == [
        "dir",
        "patch_pool",
        "image_tokens",
        "text_tokens",
        "batch_size",
        "workers",
        "shard_size",
        "device",
        "stream",
        "stream_memory_share",
        "stream_buffer_shards",
    ]
    assert load_config(PRETRAIN_DEFAULTS, tmp_path / "config.yaml") == cfg
