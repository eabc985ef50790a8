"""Saved training artifacts: the pretrained Adaptor on disk, its metadata, the code version, and
the JSON helper every run's ``metrics.json`` / ``head.json`` / bundle config goes through.

A saved Adaptor is ``adaptor.safetensors`` (the Adaptor's and the loss's tensors, shared layers
stored once) plus ``adaptor.json`` (format, encoders, preprocessing, temperatures, the resolved
config, the final metrics, the data summary and the code version). Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core_model.adaptor import Adaptor, AdaptorConfig
from core_model.errors import UserError
from core_model.features.cache import FeatureCache
from core_model.fileio import atomic_write_json, jsonable
from core_model.losses import AdaptorLoss
from core_model.training.checkpoint import save_tensors

ADAPTOR_FORMAT = 1


def code_version() -> str:
    """The package version, plus the short git revision when run from a checkout."""
    from core_model import __version__

    try:
        import subprocess

        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            timeout=5,
        ).stdout.strip()
    except Exception:
        rev = ""
    return f"{__version__}+{rev}" if rev else __version__


def state_tensors(adaptor: Adaptor, loss: AdaptorLoss) -> dict[str, torch.Tensor]:
    """The Adaptor's and the loss's tensors under ``adaptor.`` / ``loss.``, aliases stored once."""
    out = {f"adaptor.{k}": v for k, v in adaptor.state_dict().items()}
    out.update({f"loss.{k}": v for k, v in loss.state_dict().items()})
    # shared layers appear under two names; safetensors refuses aliases
    seen, dedup = {}, {}
    for k, v in out.items():
        key = (v.data_ptr(), tuple(v.shape), v.dtype) if v.numel() else None
        if key is not None and key in seen:
            continue
        if key is not None:
            seen[key] = k
        dedup[k] = v
    return dedup


def load_state(adaptor: Adaptor, loss: AdaptorLoss, tensors: dict[str, torch.Tensor]) -> None:
    """The inverse of :func:`state_tensors` (restores the shared layers' aliases)."""
    a = {k[len("adaptor.") :]: v for k, v in tensors.items() if k.startswith("adaptor.")}
    if adaptor.config.share_layers:  # restore the aliases
        for k in list(a):
            if k.startswith("image_layers."):
                a.setdefault("text_layers." + k[len("image_layers.") :], a[k])
    adaptor.load_state_dict(a)
    loss.load_state_dict({k[len("loss.") :]: v for k, v in tensors.items() if k.startswith("loss.")})


def adaptor_metadata(
    adaptor: Adaptor, loss_fn: AdaptorLoss, cache: FeatureCache, cfg: dict, metrics: dict, data: dict
) -> dict:
    return {
        "format": ADAPTOR_FORMAT,
        "kind": "adaptor",
        "research_use_only": True,
        "adaptor": adaptor.config.to_dict(),
        "image_encoder": cache.manifest["image"]["encoder"],
        "text_encoder": cache.manifest["text"]["encoder"],
        "text_max_length": cache.manifest["text"]["max_length"],
        "preprocess": cache.manifest["image"]["preprocess"],
        "patch_pool": cache.manifest["image"].get("patch_pool", 1),
        "encoder_grid": cache.manifest["image"].get("encoder_grid"),
        "temperature": loss_fn.global_nce.temperature,
        "local_temperature": loss_fn.local_nce.temperature,
        "config": cfg,
        "metrics": jsonable(metrics),
        "data": data,
        "code_version": code_version(),
    }


def save_adaptor(path: Path, adaptor: Adaptor, loss_fn: AdaptorLoss, meta: dict) -> None:
    save_tensors(Path(path), state_tensors(adaptor, loss_fn))
    atomic_write_json(Path(path).with_suffix(".json"), jsonable(meta))


def load_adaptor(path: str | Path, device: str | torch.device = "cpu") -> tuple[Adaptor, AdaptorLoss, dict]:
    """Load a saved Adaptor (``adaptor.safetensors`` + ``adaptor.json``, or their run folder)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "adaptor.safetensors"
    meta_path = path.with_suffix(".json")
    if not path.exists() or not meta_path.exists():
        raise UserError(f"no pretrained Adaptor at {path} (expected adaptor.safetensors and adaptor.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != ADAPTOR_FORMAT or meta.get("kind") != "adaptor":
        raise UserError(f"{meta_path} is not an Adaptor of a supported format")
    adaptor = Adaptor(AdaptorConfig.from_dict(meta["adaptor"]))
    lc = meta.get("config", {}).get("loss", {})
    loss_fn = AdaptorLoss(
        temperature=max(
            min(meta.get("temperature", 0.07), lc.get("max_temperature", 1.0)), lc.get("min_temperature", 0.01)
        ),
        min_temperature=lc.get("min_temperature", 0.01),
        max_temperature=lc.get("max_temperature", 1.0),
    )
    load_state(adaptor, loss_fn, load_file(str(path)))
    adaptor.to(device).eval()
    return adaptor, loss_fn, meta


def pretrained_exists(run: str | Path) -> bool:
    """True when ``run`` holds a saved Adaptor (``adaptor.safetensors`` and ``adaptor.json``)."""
    run = Path(run)
    return (run / "adaptor.safetensors").exists() and (run / "adaptor.json").exists()
