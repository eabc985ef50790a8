"""The three inference graphs of a model bundle as torch modules (exported to ONNX, and used
eagerly as the reference the runtime is checked against).

image   pixel_values (B, 3, S, S) -> probabilities (B, C) calibrated, logits (B, C),
        mask_logits (B, 1, S, S), patch_tokens (B, P, d), embedding (B, d)
text    input_ids, attention_mask (B, T) -> token_embeddings (B, T, d), embedding (B, d)
heatmap token_embeddings (B, T, d), word_weights (B, T), patch_tokens (B, P, d) -> heatmap (B, P)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core_model.adaptor import Adaptor, ImageOut, TextOut


def pool_patches(patches: torch.Tensor, k: int, grid: tuple[int, int]) -> torch.Tensor:
    """Average-pool (B, P, D) patch tokens k x k on their grid, as precompute stores them."""
    if k <= 1:
        return patches
    b, p, d = patches.shape
    g = patches.transpose(1, 2).reshape(b, d, grid[0], grid[1])
    return F.avg_pool2d(g, k).flatten(2).transpose(1, 2)


class ImageGraph(nn.Module):
    def __init__(
        self,
        encoder,
        adaptor: Adaptor,
        *,
        encoder_grid: tuple[int, int],
        cls_pool: int,
        cls_head: nn.Module | None = None,
        temperature: float = 1.0,
        multiclass: bool = False,
        seg_decoder: nn.Module | None = None,
        seg_pool: int = 1,
    ):
        super().__init__()
        self.encoder = encoder
        self.adaptor = adaptor
        self.cls_head = cls_head
        self.seg_decoder = seg_decoder
        self.encoder_grid = tuple(encoder_grid)
        self.cls_pool = int(cls_pool)
        self.seg_pool = int(seg_pool)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.multiclass = multiclass

    def forward(self, pixel_values: torch.Tensor):
        cls, patches = self.encoder(pixel_values)
        out = self.adaptor.encode_image(cls, pool_patches(patches, self.cls_pool, self.encoder_grid))
        b = pixel_values.shape[0]
        if self.cls_head is not None:
            logits = self.cls_head(out.features)
            scaled = logits / self.temperature
            probs = scaled.softmax(-1) if self.multiclass else torch.sigmoid(scaled)
        else:
            logits = probs = torch.zeros(b, 0, dtype=pixel_values.dtype)
        if self.seg_decoder is not None:
            if self.seg_pool == self.cls_pool:
                seg_tokens = out.tokens
            else:
                seg_tokens = self.adaptor.encode_image(
                    cls, pool_patches(patches, self.seg_pool, self.encoder_grid)
                ).tokens
            mask_logits = self.seg_decoder(seg_tokens)
        else:
            mask_logits = torch.zeros(b, 1, 1, 1, dtype=pixel_values.dtype)
        return probs, logits, mask_logits, out.regions, out.pooled  # regions: what phrases attend to


class TextGraph(nn.Module):
    def __init__(self, encoder, adaptor: Adaptor):
        super().__init__()
        self.encoder = encoder
        self.adaptor = adaptor

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pooled, tokens = self.encoder(input_ids, attention_mask)
        out = self.adaptor.encode_text(pooled, tokens, attention_mask.bool())
        return out.tokens, out.pooled


class HeatmapGraph(nn.Module):
    def __init__(self, adaptor: Adaptor):
        super().__init__()
        self.adaptor = adaptor

    def forward(self, token_embeddings: torch.Tensor, word_weights: torch.Tensor, patch_tokens: torch.Tensor):
        mask = word_weights > 0
        image = ImageOut(
            pooled=patch_tokens[:, 0], tokens=patch_tokens, features=patch_tokens[:, 0], regions=patch_tokens
        )
        text = TextOut(pooled=token_embeddings[:, 0], tokens=token_embeddings, mask=mask)
        return self.adaptor.heatmap(image, text, word_weights)
