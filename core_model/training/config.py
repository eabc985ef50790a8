"""YAML run configurations with command-line overrides (after timm's train.py).

A config is a two-level mapping (section -> key -> value). ``load_config`` starts from a
command's defaults, merges the YAML file, then ``--set section.key=value`` overrides (values
parsed as YAML), and rejects unknown sections or keys with the list of known ones, so a typo
never silently does nothing. The resolved config is written back next to the results.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from core_model.errors import ConfigError

PRETRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {
        "kind": "phantoms",  # phantoms | manifest | mimic | openi
        "path": "runs/phantoms",  # phantoms: output folder (generated when missing); manifest: the CSV/JSONL
        "n": 2000,  # phantoms only
        "seed": 0,  # phantoms only
        "dicom": "none",  # phantoms only: DICOM copies (all | some | none)
        "images": None,  # mimic: MIMIC-CXR-JPG root; openi: image folder
        "reports": None,  # mimic: MIMIC-CXR reports root
        "frontal_only": True,
        "val_fraction": 0.1,  # when the data has no split: patient-level random validation share
        "limit": None,  # use only the first N usable records (quick tries)
    },
    "encoders": {
        "image": "tiny-vit",
        "text": "tiny-bert",
        "text_max_length": 112,
        "allow_download": False,
    },
    "preprocess": {"size": 224, "mean": 0.5, "std": 0.5, "resize": "letterbox", "resize_to": None},
    "cache": {
        "dir": None,  # default: <data folder>/features/<encoders + preprocessing>
        "patch_pool": 2,
        "image_tokens": True,
        "text_tokens": True,
        "batch_size": 32,
        "workers": 2,
        "shard_size": 256,
        "device": "auto",
    },
    "adaptor": {
        "preset": "tokens",  # tokens | paper
        "dim": 256,
        "heads": 4,
        "layers": 1,
        "ffn_dim": 1024,
        "dropout": 0.1,
        "cross_heads": 4,
        "share_layers": True,
        "image_pool": "first",
        "text_pool": "mean",
        "local_mixing": 0,  # conv blocks over the patch grid before attention (0: none)
        "cross_tokens": "regional",  # patch tokens report words attend to: regional | contextual
    },
    "loss": {
        "temperature": 0.07,
        "min_temperature": 0.01,
        "max_temperature": 1.0,
        "image_to_text_weight": 0.75,
        "local_weight": 1.0,
        "local_candidates": 16,
    },
    "train": {
        "epochs": 10,
        "batch_size": 128,
        "lr": 5e-4,
        "weight_decay": 0.01,
        "warmup": 0.02,  # share of all steps with linear warm-up, then linear decay to 0
        "grad_clip": 1.0,
        "seed": 42,
        "checkpoint_every": 0,  # steps between checkpoints (0: end of each epoch only)
        "device": "auto",
        "threads": 0,  # torch CPU threads (0: torch's default)
        "ram_limit_gb": 8,  # caches smaller than this are loaded into memory
    },
}


def _merge(base: dict, update: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{where}.{key}" if where else key
        if key not in out:
            known = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key {path!r}; known keys here: {known}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping")
            out[key] = _merge(out[key], value, path)
        else:
            out[key] = _coerce(out[key], value, path)
    return out


def _coerce(default: Any, value: Any, path: str) -> Any:
    """Numbers given as strings (PyYAML reads ``2e-5`` as a string) become numbers."""
    if isinstance(default, bool) or value is None:
        return value
    if isinstance(default, float) and isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"config key {path!r} must be a number, got {value!r}") from None
    if isinstance(default, int) and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"config key {path!r} must be an integer, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """A YAML file holding a mapping (its free-text ``description`` dropped), or a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {p} must hold a mapping")
    data.pop("description", None)
    return data


def load_config(defaults: dict, path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    cfg = copy.deepcopy(defaults)
    if path:
        cfg = _merge(cfg, read_yaml_mapping(path))
    for text in overrides or ():
        keys, value = parse_override(text)
        nested: dict = value
        for k in reversed(keys):
            nested = {k: nested}
        cfg = _merge(cfg, nested)
    return cfg


def save_config(cfg: dict, path: str | Path) -> None:
    from core_model.features.cache import atomic_write_bytes

    atomic_write_bytes(Path(path), yaml.safe_dump(cfg, sort_keys=False).encode())
