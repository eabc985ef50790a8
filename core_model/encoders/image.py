"""Frozen ViT image encoders (DINOv2, RAD-DINO, any transformers ViT with a CLS token)."""

from __future__ import annotations

import torch
from torch import nn

from core_model.encoders import hub
from core_model.encoders.frozen import FrozenEncoder
from core_model.encoders.registry import register_image_encoder


class FrozenImageEncoder(FrozenEncoder):
    """pixel_values (B, 3, H, W) -> (cls (B, D), patch tokens (B, H/p * W/p, D))."""

    kind = "image"

    def __init__(self, model: nn.Module, *, name: str, source: str, licence: str):
        super().__init__(model, name=name, source=source, licence=licence)
        cfg = model.config
        self.dim = int(cfg.hidden_size)
        self.patch_size = int(cfg.patch_size)
        self.prefix_tokens = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)

    def grid(self, image_size: int) -> tuple[int, int]:
        return image_size // self.patch_size, image_size // self.patch_size

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=pixel_values)
        hidden = out.last_hidden_state  # DINOv2: already layer-normed
        return hidden[:, 0], hidden[:, self.prefix_tokens :]

    def identity(self) -> dict:
        return {**super().identity(), "dim": self.dim, "patch_size": self.patch_size}


def load_image_encoder(
    name: str, *, preset: str | None = None, licence: str = "see model card", allow_download: bool | None = None
) -> FrozenImageEncoder:
    from transformers import AutoModel

    target, local = hub.resolve(name, preset)
    try:
        model = AutoModel.from_pretrained(
            target, local_files_only=not hub.downloads_allowed(allow_download), attn_implementation="sdpa"
        )
    except (OSError, ValueError) as exc:
        raise hub.not_found(name, preset, exc) from exc
    if not hasattr(model.config, "patch_size"):
        raise hub.ModelNotFoundError(f"{name!r} is not a ViT-style image encoder (no patch_size in its config)")
    return FrozenImageEncoder(model, name=preset or name, source=target if local else name, licence=licence)


def tiny_vit(
    *,
    seed: int = 0,
    hidden_size: int = 192,
    layers: int = 3,
    heads: int = 3,
    patch_size: int = 14,
    image_size: int = 224,
    allow_download: bool | None = None,
) -> FrozenImageEncoder:
    """A small random-weight DINOv2-architecture ViT built from a config (tests, demo)."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        patch_size=patch_size,
        image_size=image_size,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(cfg)
    return FrozenImageEncoder(model, name="tiny-vit", source=f"config:seed={seed}", licence="n/a (random weights)")


register_image_encoder(
    "tiny-vit",
    source="config",
    licence="n/a (random weights)",
    description="DINOv2-architecture ViT, 192-d, 3 layers, patch 14, random weights (tests and demos)",
)(tiny_vit)

_HUB_PRESETS = {
    "dinov2-small": ("facebook/dinov2-small", "DINOv2 ViT-S/14 (384-d)", "Apache-2.0"),
    "dinov2-base": ("facebook/dinov2-base", "DINOv2 ViT-B/14 (768-d)", "Apache-2.0"),
    "dinov2-large": ("facebook/dinov2-large", "DINOv2 ViT-L/14 (1024-d)", "Apache-2.0"),
    "rad-dino": ("microsoft/rad-dino", "RAD-DINO: DINOv2 ViT-B/14 trained on chest X-rays (768-d)", "MSRLA (research)"),
}


def _make_hub_factory(preset: str, model_id: str, licence: str):
    def factory(*, allow_download: bool | None = None):
        return load_image_encoder(model_id, preset=preset, licence=licence, allow_download=allow_download)

    return factory


for _preset, (_id, _desc, _lic) in _HUB_PRESETS.items():
    register_image_encoder(_preset, source=_id, description=_desc, licence=_lic)(_make_hub_factory(_preset, _id, _lic))
