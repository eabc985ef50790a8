"""Bundle recipes: build whatever fine-tuning runs are missing, then export (YAML)."""

from __future__ import annotations

from pathlib import Path

from core_model.errors import ConfigError

KEYS = {"classification", "segmentation", "export"}


def build_runs_from_recipe(path: str | Path, progress: bool = True) -> tuple[list[Path], dict]:
    from core_model.training.config import load_config, save_config
    from core_model.training.finetune import FINETUNE_DEFAULTS, finetune_classification, finetune_segmentation

    from core_model.training.config import read_yaml_mapping

    p = Path(path)
    recipe = read_yaml_mapping(p, "bundle recipe")
    unknown = set(recipe) - KEYS
    if unknown:
        raise ConfigError(f"unknown keys in {p}: {sorted(unknown)}; known: {sorted(KEYS)}")
    runs = []
    for key, fn in (("classification", finetune_classification), ("segmentation", finetune_segmentation)):
        part = recipe.get(key)
        if not part:
            continue
        if not part.get("out") or not part.get("config"):
            raise ConfigError(f"{p}: {key} needs 'config' (a fine-tuning config) and 'out' (its run folder)")
        out = Path(part["out"])
        if not (out / "head.json").exists():
            defaults = FINETUNE_DEFAULTS
            if key == "segmentation":
                defaults = {**FINETUNE_DEFAULTS, "head": {"kind": "progressive", "dropout": 0.0}}
            cfg = load_config(defaults, part["config"], part.get("set", []))
            out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, out / "config.yaml")
            print(f"{key} run {out} is missing: fine-tuning it with {part['config']}")
            fn(cfg, out, progress=progress)
        runs.append(out)
    if not runs:
        raise ConfigError(f"{p} names no classification or segmentation run")
    return runs, recipe.get("export") or {}
