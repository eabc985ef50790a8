"""Contrastive losses for image-report alignment.

InfoNCE (CLIP-style) over a similarity matrix, with

- a learnable temperature, initialised at 0.07 and clamped to [min, max] (the paper's code left it
  unclamped, which lets the logit scale run away);
- configurable weights of the two softmax directions (the paper: 0.75 image->report,
  0.25 report->image);
- duplicate-aware targets: reports with identical text (common in real collections: "No acute
  cardiopulmonary process.") are not pushed apart as negatives; the target probability is
  shared among them.

Segmentation losses, computed on probabilities: focal (gamma 2) + soft Dice, as in the paper
(weights 10 : 1) (``seg_loss``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCE(nn.Module):
    def __init__(
        self,
        temperature: float = 0.07,
        learnable: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        image_to_text_weight: float = 0.5,
    ):
        super().__init__()
        if not 0.0 <= image_to_text_weight <= 1.0:
            raise ValueError("image_to_text_weight must be within [0, 1]")
        if not 0 < min_temperature <= temperature <= max_temperature:
            raise ValueError("need 0 < min_temperature <= temperature <= max_temperature")
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.min_log = math.log(1.0 / max_temperature)
        self.max_log = math.log(1.0 / min_temperature)
        self.w_i2t = image_to_text_weight

    @property
    def temperature(self) -> float:
        return float(1.0 / self.scale().detach())

    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(self.min_log, self.max_log).exp()

    def forward(self, sim: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """sim (N, N): image i vs report j, pairs on the diagonal. ``groups`` (N,) ids of
        identical reports (same id = interchangeable)."""
        logits = sim * self.scale()
        n = sim.shape[0]
        if groups is None:
            target = torch.eye(n, device=sim.device, dtype=logits.dtype)
        else:
            target = (groups[:, None] == groups[None, :]).to(logits.dtype)
        t_i2t = target / target.sum(1, keepdim=True)
        t_t2i = target.t() / target.t().sum(1, keepdim=True)
        loss_i2t = -(t_i2t * F.log_softmax(logits, dim=1)).sum(1).mean()
        loss_t2i = -(t_t2i * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
        return self.w_i2t * loss_i2t + (1.0 - self.w_i2t) * loss_t2i


def candidate_loss(scores: torch.Tensor, scale: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over K candidates per query; ``positive`` (Bt, K) bool marks correct ones."""
    logits = scores * scale
    target = positive.to(logits.dtype)
    target = target / target.sum(1, keepdim=True).clamp_min(1.0)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


class AdaptorLoss(nn.Module):
    """Global InfoNCE on pooled embeddings + ``local_weight`` x InfoNCE on the word<->patch
    cross-attention similarity (tokens Adaptor). ``local_candidates`` K > 0 compares each report
    with its own image and K-1 others from the batch (bounded cost); 0 = all pairs."""

    def __init__(
        self,
        temperature: float = 0.07,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        image_to_text_weight: float = 0.5,
        local_weight: float = 1.0,
        local_candidates: int = 16,
        grounding_weight: float = 0.0,
    ):
        super().__init__()
        self.global_nce = InfoNCE(temperature, True, min_temperature, max_temperature, image_to_text_weight)
        self.local_nce = InfoNCE(temperature, True, min_temperature, max_temperature, image_to_text_weight)
        self.local_weight = local_weight
        self.local_candidates = local_candidates
        self.grounding_weight = grounding_weight

    def local(
        self, adaptor, image, text, groups: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor | None:
        """The cross-attention term alone (None when disabled or not a tokens Adaptor)."""
        if not (self.local_weight > 0 and adaptor.cross is not None and image.regions is not None):
            return None
        n = image.pooled.shape[0]
        k = self.local_candidates
        if k and k < n:
            idx = _candidate_index(n, k, image.pooled.device, generator)
            scores = adaptor.local_similarity(image, text, image_index=idx)  # (Bt, K)
            if groups is None:
                positive = idx == torch.arange(n, device=idx.device)[:, None]
            else:
                positive = groups[idx] == groups[:, None]
            return candidate_loss(scores, self.local_nce.scale(), positive)
        return self.local_nce(adaptor.local_similarity(image, text), groups)

    def forward(
        self,
        adaptor,
        image,
        text,
        groups: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        global_sim: torch.Tensor | None = None,
        global_groups: torch.Tensor | None = None,
        grounding: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Total loss and its parts. ``global_sim``/``global_groups`` replace the local batch's
        similarity matrix for the global term (embeddings gathered across processes).
        ``grounding`` = (rows (G,) of the batch, lesion patches (G, P) bool): weak supervision of
        those pairs' report heatmaps (``grounding_weight``)."""
        if global_sim is None:
            global_sim, global_groups = image.pooled @ text.pooled.t(), groups
        loss = self.global_nce(global_sim, global_groups)
        parts = {"global": float(loss.detach())}
        loss_l = self.local(adaptor, image, text, groups, generator)
        if loss_l is not None:
            parts["local"] = float(loss_l.detach())
            loss = loss + self.local_weight * loss_l
        if grounding is not None and self.grounding_weight > 0 and adaptor.cross is not None and len(grounding[0]):
            rows, target = grounding
            sub_i = type(image)(image.pooled[rows], None, image.features[rows], image.regions[rows])
            sub_t = type(text)(text.pooled[rows], text.tokens[rows], text.mask[rows], None)
            loss_g = grounding_loss(adaptor.heatmap(sub_i, sub_t, inner_words(sub_t.mask)), target)
            parts["grounding"] = float(loss_g.detach())
            loss = loss + self.grounding_weight * loss_g
        return loss, parts


def inner_words(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) weights of a report's words without the tokenizer's first and last token (the
    [CLS] / [SEP] or <s> / </s> every encoder of the registry adds), like the app's heatmaps."""
    w = mask.to(torch.float32).clone()
    w[:, 0] = 0.0
    last = mask.long().sum(1) - 1
    w[torch.arange(len(w), device=w.device), last.clamp_min(0)] = 0.0
    return w


def grounding_loss(heat: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Multiple-instance grounding term: heat (G, P) heatmaps summing to 1, target (G, P) bool
    lesion patches; -log of the heatmap mass that falls on the lesion, averaged. It asks where a
    report looks, not which patch: any spread inside the lesion is fine."""
    mass = (heat.float() * target.to(torch.float32)).sum(1)
    return -(mass + eps).log().mean()


def _candidate_index(n: int, k: int, device, generator: torch.Generator | None) -> torch.Tensor:
    """(n, k) image indices per report: column 0 is its own image, then k-1 distinct others."""
    scores = torch.rand(n, n, generator=generator).to(device)
    scores.fill_diagonal_(-1.0)  # own image sorts first
    return scores.argsort(dim=1)[:, :k]


# ---- segmentation ------------------------------------------------------------------------------
def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Binary focal loss on probabilities (per pixel mean)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice on probabilities, per image, averaged."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def seg_loss(
    logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 10.0, dice_weight: float = 1.0
) -> torch.Tensor:
    return focal_weight * focal_loss(logits, target) + dice_weight * soft_dice_loss(logits, target)
