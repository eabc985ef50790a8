"""The run pipeline: a run that exists is reused as it is, a missing Adaptor without a recipe is a
clear error, and the recipe's runs are the ones the pipeline built (tiny real pipeline)."""

from __future__ import annotations

import pytest

from core_model.errors import UserError
from core_model.training.pipeline import ensure_finetuned, ensure_pretrained, finetuned_exists


def test_a_missing_adaptor_without_pretrain_config_says_how_to_build_it(tmp_path):
    with pytest.raises(UserError, match=r"no pretrained Adaptor in .*run `adaptor-train pretrain --out"):
        ensure_pretrained(tmp_path / "nothing-here")
    assert not (tmp_path / "nothing-here").exists()  # nothing half-made


def test_existing_runs_are_reused_untouched(tiny_pipeline):
    stamps = {
        p: p.stat().st_mtime_ns
        for p in (tiny_pipeline / "cls" / "head.json", tiny_pipeline / "pretrain" / "adaptor.safetensors")
    }
    assert ensure_pretrained(tiny_pipeline / "pretrain", tiny_pipeline / "pretrain.yaml") == tiny_pipeline / "pretrain"
    assert finetuned_exists(tiny_pipeline / "cls")
    assert ensure_finetuned("classification", tiny_pipeline / "cls.yaml", tiny_pipeline / "cls") is False
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_the_recipe_runs_were_built_with_their_task_defaults(tiny_pipeline):
    import yaml

    cls = yaml.safe_load((tiny_pipeline / "cls" / "config.yaml").read_text())
    seg = yaml.safe_load((tiny_pipeline / "seg" / "config.yaml").read_text())
    assert cls["head"] == {"kind": "mlp", "dropout": 0.2}
    assert seg["head"] == {"kind": "light", "dropout": 0.0}  # the file's kind over the segmentation default
    assert cls["train"]["epochs"] == 4 and "warmup" not in cls["train"]
    pre = yaml.safe_load((tiny_pipeline / "pretrain" / "config.yaml").read_text())
    assert pre["train"]["epochs"] == 3 and pre["loss"]["local_candidates"] == 4
