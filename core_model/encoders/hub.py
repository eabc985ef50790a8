"""Offline-first resolution of model weights."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core_model.errors import ModelNotFoundError

MODELS_ENV = "CXR_ADAPTOR_MODELS"


def models_dir() -> Path:
    """Where users put encoder weights: $CXR_ADAPTOR_MODELS, else the platform data dir."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("cxr-adaptor")) / "models"


def downloads_allowed(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    return os.environ.get("CXR_ADAPTOR_ALLOW_DOWNLOAD", "") in ("1", "true", "yes")


def quiet_transformers() -> None:
    """No per-load progress bars from transformers (our commands print their own progress)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def resolve(name_or_path: str, preset: str | None = None) -> tuple[str, bool]:
    """Return (what to pass to from_pretrained, is_local_dir).

    Looks, in order, at: an existing directory; <models_dir>/<preset>; <models_dir>/<id with / -> __>.
    Otherwise returns the id itself (loaded from the Hugging Face cache, offline).
    """
    quiet_transformers()
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return str(p), True
    base = models_dir()
    for candidate in filter(None, [preset, name_or_path.replace("/", "__")]):
        d = base / candidate
        if (d / "config.json").exists():
            return str(d), True
    return name_or_path, False


def not_found(name: str, preset: str | None, exc: Exception) -> ModelNotFoundError:
    folder = models_dir() / (preset or name.replace("/", "__"))
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_like_path:
        return ModelNotFoundError(f"model directory {name!r} does not exist or holds no transformers model ({exc})")
    return ModelNotFoundError(
        f"encoder {name!r} is not available offline. Put its files (config.json, model.safetensors, "
        f"and tokenizer files for text encoders) in {folder} (or any folder and pass its path), "
        f"or fetch it once into the Hugging Face cache with network access "
        f"(`huggingface-cli download {name}`), or allow downloads with --allow-download / "
        f"CXR_ADAPTOR_ALLOW_DOWNLOAD=1."
    )


def state_dict_sha256(module) -> str:
    """Hash of all parameters and buffers (names, shapes, dtypes and bytes), order-independent."""
    import torch

    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
