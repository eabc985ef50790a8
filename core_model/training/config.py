"""YAML run configurations with command-line overrides (after timm's train.py).

A config is a two-level mapping (section -> key -> value). ``load_config`` starts from a
command's defaults, merges the YAML file, then ``--set section.key=value`` overrides (values
parsed as YAML), and rejects unknown sections or keys with the list of known ones, so a typo
never silently does nothing. The resolved config is written back next to the results.

Sections given in the defaults as a dataclass instance (``loss``: :class:`LossConfig`, ``train``:
:class:`PretrainTrainConfig` / :class:`FinetuneTrainConfig`, ``cache``: :class:`CacheConfig` /
:class:`FinetuneCacheConfig`) come back as that dataclass, built
and type-checked once here (``cfg["train"].lr``); the other sections stay mappings. The key
rules are the same for both: unknown keys are refused, numbers given as strings become numbers.
``config_to_dict`` gives the plain mapping that is saved (same keys, same order).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core_model.errors import ConfigError


@dataclass(frozen=True)
class LossConfig:
    """``loss``: the pretraining loss (InfoNCE + the word-patch local term)."""

    temperature: float = 0.07
    min_temperature: float = 0.01
    max_temperature: float = 1.0
    image_to_text_weight: float = 0.75
    local_weight: float = 1.0
    local_candidates: int = 16
    # weak grounding supervision (see core_model.training.grounding): the weight of the lesion
    # term and the seeded share of the training images with a lesion mask that lend it (0 = off)
    grounding_weight: float = 0.0
    grounding_fraction: float = 0.0


@dataclass(frozen=True)
class FinetuneCacheConfig:
    """``cache`` of the fine-tuning commands: where and how the frozen image features of the
    labelled images are computed (the encoders and preprocessing come from the Adaptor)."""

    dir: str | None = None  # default: <data folder>/features/<encoders + preprocessing>
    patch_pool: int | None = None  # default: the Adaptor's
    batch_size: int = 32
    workers: int = 2
    shard_size: int = 256
    device: str = "auto"


@dataclass(frozen=True)
class CacheConfig:
    """``cache`` of ``adaptor-train pretrain`` / ``precompute``: also which token features are
    kept (the saved config keeps this key order)."""

    dir: str | None = None
    patch_pool: int = 2
    image_tokens: bool = True
    text_tokens: bool = True
    batch_size: int = 32
    workers: int = 2
    shard_size: int = 256
    device: str = "auto"
    # pretraining reads the cache as sequential shard streams (core_model/features/stream.py):
    # auto = when it is larger than stream_memory_share of the available memory; on; off
    stream: str | bool = "auto"  # YAML reads a bare on / off as true / false
    stream_memory_share: float = 0.5
    stream_buffer_shards: int = 4  # samples are shuffled within a buffer of this many shards


@dataclass(frozen=True)
class PretrainTrainConfig:
    """``train`` of ``adaptor-train pretrain``."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.02  # share of all steps with linear warm-up, then linear decay to 0
    grad_clip: float | None = 1.0  # max gradient norm (0 / null: no clipping)
    seed: int = 42
    checkpoint_every: int | None = 0  # steps between checkpoints (0: end of each epoch only)
    device: str = "auto"
    threads: int | None = 0  # torch CPU threads (0: torch's default)
    ram_limit_gb: float = 8  # caches smaller than this are loaded into memory
    tensorboard: bool = False  # TensorBoard event files in <out>/tensorboard (core_model.training.tracking)
    wandb: str | None = None  # a W&B project to log to (needs the wandb package)


@dataclass(frozen=True)
class FinetuneTrainConfig:
    """``train`` of ``adaptor-train finetune-cls`` / ``finetune-seg``."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 42
    class_weights: str | None = "none"  # none | balanced
    device: str = "auto"
    threads: int | None = 0
    ram_limit_gb: float = 8
    tensorboard: bool = False
    wandb: str | None = None


PRETRAIN_DEFAULTS: dict[str, Any] = {
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
    "cache": CacheConfig(),
    "adaptor": {
        "preset": "tokens",  # tokens | paper | none (no Adaptor: the frozen encoder alone, a control)
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
        "paper_released_code": False,  # preset paper only: the released code's batch-wide attention
    },
    "loss": LossConfig(),
    "train": PretrainTrainConfig(),
}


FINETUNE_DEFAULTS: dict = {
    "pretrained": "runs/phantoms-tiny",  # a pretrain run folder (adaptor.safetensors + adaptor.json)
    "pretrain_config": None,  # a pretrain config to run first when `pretrained` is missing
    "data": {
        "kind": "phantoms",  # phantoms | manifest | rsna | siim | covidx | chexpert
        "path": "runs/phantoms",
        "test_path": None,  # covidx: the official test label file
        "images": None,
        "val_path": None,  # chexpert: valid.csv
        "n": 2000,
        "seed": 0,
        "dicom": "none",  # phantoms
        "classes": None,  # label names (label_<name> columns / dataset classes)
        "task": "multilabel",  # binary | multilabel | multiclass (classification)
        "mask_label": "pneumothorax",  # segmentation: which finding the masks show
        "fraction": 1.0,  # share of the training split with labels (1 / 10 / 100 %)
        "shots": None,  # few-shot: k labelled training images per class instead of a fraction
        "shot_seed": 0,  # few-shot: the draw (fold) of those images
        "split_file": None,
        "split_protocol": None,
        "uncertainty": "as_is",
        "mask_dir": None,
        "limit": None,
    },
    "head": {"kind": "mlp", "dropout": 0.2},  # classification: mlp | linear; segmentation: progressive | light
    "input_size": None,  # segmentation: model input size (224 ... 896); default: the Adaptor's
    "cache": FinetuneCacheConfig(),
    "train": FinetuneTrainConfig(),
    "eval": {"threshold": "youden", "bootstrap": 1000, "examples": 8, "seg_threshold": 0.5},
}


def _merge(base: dict, update: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        path = f"{where}.{key}" if where else key
        if key not in out:
            known = ", ".join(sorted(out))
            raise ConfigError(f"unknown config key {path!r}; known keys here: {known}")
        if dataclasses.is_dataclass(out[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping")
            out[key] = _section(type(out[key]), _merge(_fields(out[key]), value, path), path)
        elif isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping")
            out[key] = _merge(out[key], value, path)
        else:
            out[key] = _coerce(out[key], value, path)
    return out


def _fields(section) -> dict:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}


_KINDS = {"int": int, "float": float, "str": str, "bool": bool}


def _section(cls, values: dict, where: str):
    """The typed section ``cls`` from merged ``values``, each checked against its field's type."""
    checked = {}
    for f in dataclasses.fields(cls):
        value, path = values[f.name], f"{where}.{f.name}"
        kinds = [k.strip() for k in str(f.type).split("|")]
        if value is None:
            if "None" not in kinds:
                raise ConfigError(f"config key {path!r} needs a value")
        elif kinds[0] == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"config key {path!r} must be an integer, got {value!r}")
        elif kinds[0] == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config key {path!r} must be a number, got {value!r}")
        elif not isinstance(value, tuple(_KINDS[k] for k in kinds if k in _KINDS)):
            raise ConfigError(f"config key {path!r} must be a {kinds[0]}, got {value!r}")
        checked[f.name] = value
    return cls(**checked)


def config_to_dict(cfg: dict) -> dict:
    """The plain mapping of a loaded config (typed sections as mappings, field order kept)."""
    return {
        k: (_fields(v) if dataclasses.is_dataclass(v) else dict(v) if isinstance(v, Section) else v)
        for k, v in cfg.items()
    }


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


class Section(dict):
    """A mapping section of a loaded config that also knows which of its keys the file or a
    ``--set`` gave (``explicit``), so a preset can tell "set to the default value" from "not
    set" (``adaptor.preset=paper`` applies every key given, whatever its value). Saved as a
    plain mapping."""

    explicit: frozenset = frozenset()


#: sections whose explicitly given keys are tracked (see :class:`Section`)
TRACKED_SECTIONS = ("adaptor",)


def load_config(defaults: dict, path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    cfg = copy.deepcopy(defaults)
    given: dict[str, set] = {s: set() for s in TRACKED_SECTIONS}
    if path:
        data = read_yaml_mapping(path)
        cfg = _merge(cfg, data)
        for sec in given:
            if isinstance(data.get(sec), dict):
                given[sec].update(data[sec])
    for text in overrides or ():
        keys, value = parse_override(text)
        nested: dict = value
        for k in reversed(keys):
            nested = {k: nested}
        cfg = _merge(cfg, nested)
        if keys[0] in given:
            given[keys[0]].update(keys[1:2] if len(keys) > 1 else (value or {}))
    for sec, keys in given.items():
        if isinstance(cfg.get(sec), dict):
            section = Section(cfg[sec])
            section.explicit = frozenset(keys)
            cfg[sec] = section
    return cfg


def load_flat_config(defaults: dict, path: str | Path, types: dict[str, type], *, section: str | None = None) -> dict:
    """A one-level config file (its keys flat, or all under ``section:``) over ``defaults``: unknown
    keys refused with the known ones listed, each value cast with ``types`` (``adaptor-train
    phantoms``)."""
    data = read_yaml_mapping(path)
    if section and isinstance(data.get(section), dict) and len(data) == 1:
        data = data[section]
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(types)}")
    values = dict(defaults)
    for key, value in data.items():
        try:
            values[key] = types[key](value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {key!r} must be {types[key].__name__}, got {value!r}") from None
    return values


def save_config(cfg: dict, path: str | Path) -> None:
    from core_model.fileio import atomic_write_bytes

    atomic_write_bytes(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
