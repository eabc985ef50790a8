"""Bundle recipes: build whatever fine-tuning runs are missing, then export (YAML)."""

from __future__ import annotations

from pathlib import Path

from core_model.errors import ConfigError

KEYS = {"classification", "segmentation", "export"}


def build_runs_from_recipe(path: str | Path, progress: bool = True) -> tuple[list[Path], dict]:
    from core_model.training.config import read_yaml_mapping
    from core_model.training.pipeline import TASKS, ensure_finetuned

    p = Path(path)
    recipe = read_yaml_mapping(p, "bundle recipe")
    unknown = set(recipe) - KEYS
    if unknown:
        raise ConfigError(f"unknown keys in {p}: {sorted(unknown)}; known: {sorted(KEYS)}")
    runs = []
    for key in TASKS:
        part = recipe.get(key)
        if not part:
            continue
        if not part.get("out") or not part.get("config"):
            raise ConfigError(f"{p}: {key} needs 'config' (a fine-tuning config) and 'out' (its run folder)")
        out = Path(part["out"])
        ensure_finetuned(
            key,
            part["config"],
            out,
            part.get("set", []),
            progress=progress,
            announce=f"{key} run {out} is missing: fine-tuning it with {part['config']}",
        )
        runs.append(out)
    if not runs:
        raise ConfigError(f"{p} names no classification or segmentation run")
    return runs, recipe.get("export") or {}
