"""The Adaptor: a small trainable module that aligns frozen image and report encoders.

Two presets:

``tokens`` (default; the method as the paper meant it)
    Image patch tokens and report word tokens are projected (bias-free) to a shared width and
    contextualised by a few transformer layers whose weights serve both modalities. Pooled
    image and report embeddings (L2-normalised) come from each side alone, so a report bank can
    be embedded once and searched. A cross-attention step then lets report words attend to image
    patches and patches attend to words (one shared projection, so both directions come from
    one attention-logit tensor). It gives (a) a pairwise image-report *local* similarity used in
    the contrastive loss, which is what trains words to find their regions, and (b) the
    word-to-patch attention maps shown as heatmaps. By default (``cross_tokens="regional"``)
    words attend to the patch tokens *before* the self-attention layers (after the projection
    and the convolutional local mixing), which only know their neighbourhood: on phantoms this
    raised the pointing game from chance to 3-4x chance for COVID-like opacities and about 2x for
    pneumothorax (``adaptor-train evaluate --task grounding``), at the same retrieval quality.

``pooled`` (the ``paper`` preset; the published configuration for comparison)
    One pooled vector per modality, bias-free projections to 768, two post-norm transformer
    layers (12 heads, FFN 2048, ReLU, dropout 0.1) shared by both modalities: about 12.2 M
    trainable parameters with 768-d encoders. With one token per modality, attention has a
    single key, so this is a per-sample nonlinear map: the published code's cross-attention
    fused nothing. It is kept only to compare with the paper; it has no heatmaps.

``identity`` (the ``none`` preset; a control, not a method)
    No Adaptor at all: the frozen image encoder's pooled feature (its CLS) and patch tokens go to
    the heads unchanged, so ``finetune-cls`` / ``finetune-seg`` / ``evaluate`` measure what the
    frozen encoder alone gives (a linear probe or the same MLP head). It has no parameters, no
    shared image-report space (the two encoders' widths differ) and no heatmaps.

Every output for a sample depends only on that sample (no attention across the batch; padding
is masked), which ``tests/test_adaptor.py`` checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class AdaptorConfig:
    image_dim: int
    text_dim: int
    mode: str = "tokens"  # "tokens" | "pooled" | "identity" (no Adaptor: the frozen features as they are)
    dim: int = 256
    heads: int = 4
    layers: int = 1
    ffn_dim: int = 1024
    dropout: float = 0.1
    activation: str = "gelu"
    norm_first: bool = True
    share_layers: bool = True  # the same layer weights serve images and reports (as the paper)
    image_pool: str = "first"  # "first" (the encoder's CLS position) | "mean" (of patches)
    text_pool: str = "mean"  # "mean" over real tokens | "first" ([CLS])
    cross_heads: int = 4
    patch_grid: tuple[int, int] | None = None  # (rows, cols) of the patch tokens, for heatmaps/segmentation
    local_mixing: int = 0  # conv blocks over the patch grid before attention (locality + position)
    cross_tokens: str = "regional"  # patch tokens words attend to: "contextual" (after the
    # self-attention layers) or "regional" (before them: each token only sees its neighbourhood)
    # pooled only, for a faithful reproduction of the published numbers (docs/PAPER_DEVIATIONS.md):
    # the released code L2-normalises the projected vectors and hands [B, D] to
    # nn.MultiheadAttention(batch_first=False), so each image (report) attends over the whole batch
    # and its output depends on the batch it is in. Off: each item attends to itself only.
    paper_released_code: bool = False

    def __post_init__(self):
        if self.mode not in ("tokens", "pooled", "identity"):
            raise ValueError("adaptor mode must be 'tokens', 'pooled' or 'identity'")
        if self.dim % self.heads or self.dim % self.cross_heads:
            raise ValueError("adaptor dim must be divisible by heads and cross_heads")
        if self.patch_grid is not None:
            self.patch_grid = tuple(int(v) for v in self.patch_grid)
        if self.cross_tokens not in ("contextual", "regional"):
            raise ValueError("cross_tokens must be 'contextual' or 'regional'")
        if self.paper_released_code and self.mode != "pooled":
            raise ValueError("paper_released_code applies to the pooled (paper) preset only")

    @classmethod
    def paper(cls, image_dim: int, text_dim: int) -> AdaptorConfig:
        return cls(
            image_dim=image_dim,
            text_dim=text_dim,
            mode="pooled",
            dim=768,
            heads=12,
            layers=2,
            ffn_dim=2048,
            dropout=0.1,
            activation="relu",
            norm_first=False,
            share_layers=True,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch_grid"] = list(self.patch_grid) if self.patch_grid else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AdaptorConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @classmethod
    def identity(cls, image_dim: int, text_dim: int, patch_grid: tuple[int, int] | None = None) -> AdaptorConfig:
        """No Adaptor (``adaptor.preset=none``): heads see the frozen image encoder's own features."""
        return cls(
            image_dim=image_dim,
            text_dim=text_dim,
            mode="identity",
            dim=image_dim,
            heads=1,
            layers=0,
            cross_heads=1,
            local_mixing=0,
            patch_grid=patch_grid,
        )


def make_config(preset: str, image_dim: int, text_dim: int, **overrides) -> AdaptorConfig:
    if preset == "none":
        return AdaptorConfig.identity(image_dim, text_dim, overrides.get("patch_grid"))
    if preset == "paper":
        cfg = AdaptorConfig.paper(image_dim, text_dim)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        cfg.__post_init__()
        return cfg
    if preset != "tokens":
        raise ValueError(f"unknown adaptor preset {preset!r}: tokens, paper or none")
    return AdaptorConfig(image_dim=image_dim, text_dim=text_dim, **overrides)


class Block(nn.Module):
    """Transformer encoder layer (self-attention + FFN) with key padding masks, SDPA inside."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, activation: str, norm_first: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff1 = nn.Linear(dim, ffn_dim)
        self.ff2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = dropout
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.norm_first = norm_first

    def _attn(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff2(self.drop(self.act(self.ff1(x))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop(self._attn(self.norm1(x), mask))
            return x + self.drop(self._ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self._attn(x, mask)))
        return self.norm2(x + self.drop(self._ff(x)))


@dataclass
class ImageOut:
    pooled: torch.Tensor  # (B, D) L2-normalised
    tokens: torch.Tensor | None  # (B, P, D) patch tokens (no CLS), tokens mode only
    features: torch.Tensor  # (B, D) pooled before normalisation (for heads)
    regions: torch.Tensor | None = None  # (B, P, D) patch tokens words attend to (cross-attention)


@dataclass
class TextOut:
    pooled: torch.Tensor  # (B, D) L2-normalised
    tokens: torch.Tensor | None  # (B, T, D)
    mask: torch.Tensor | None  # (B, T) bool, True = real token
    features: torch.Tensor = field(default=None)


class CrossAttention(nn.Module):
    """Word <-> patch attention with one shared projection: logits[t, p] = <W w_t, W x_p> / sqrt(d_h).

    Softmax over patches gives each word's attention map (the heatmap); softmax over words gives
    each patch's attention over the report. Context vectors are attention-weighted sums of the
    other side's tokens, compared with the query token by cosine similarity.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.scale = 1.0 / math.sqrt(dim // heads)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return self.proj(self.norm(x)).view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def logits(self, words: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Pairwise logits: words (Bt, T, D), patches (Bi, P, D) -> (Bi, Bt, H, T, P)."""
        qw, kp = self._split(words), self._split(patches)
        return torch.einsum("jhtd,ihpd->ijhtp", qw, kp) * self.scale

    def paired_logits(self, words: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Logits for aligned pairs: words (B, T, D), patches (B, P, D) -> (B, H, T, P)."""
        qw, kp = self._split(words), self._split(patches)
        return torch.einsum("bhtd,bhpd->bhtp", qw, kp) * self.scale

    def word_to_patch(self, words: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Attention of each word over the patches of its paired image: (B, T, P), heads averaged."""
        return self.paired_logits(words, patches).softmax(dim=-1).mean(dim=1)


class LocalMixing(nn.Module):
    """Residual depthwise 3x3 conv + pointwise MLP over the patch grid (a convolutional positional
    encoding, as in CPVT / ConvNeXt blocks): gives the patch tokens their neighbourhood and
    position, which frozen ViT outputs carry only weakly. Works on any grid size."""

    def __init__(self, dim: int):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 2 * dim)
        self.pw2 = nn.Linear(2 * dim, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, p, d = x.shape
        g = x.transpose(1, 2).reshape(b, d, grid[0], grid[1])
        y = self.dw(g).flatten(2).transpose(1, 2)
        return x + self.pw2(self.act(self.pw1(self.norm(y))))


def grid_of(num_patches: int, hint: tuple[int, int] | None) -> tuple[int, int]:
    if hint and hint[0] * hint[1] == num_patches:
        return tuple(hint)
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"cannot lay {num_patches} patch tokens on a grid; give patch_grid")
    return side, side


class Adaptor(nn.Module):
    def __init__(self, config: AdaptorConfig):
        super().__init__()
        self.config = config
        c = config
        if c.mode == "identity":  # no trainable part: the frozen features pass through
            self.image_proj = self.text_proj = None
            self.image_layers = self.text_layers = nn.ModuleList()
            self.image_norm, self.text_norm = nn.Identity(), nn.Identity()
            self.cross = None
            self.local = nn.ModuleList()
            return
        self.image_proj = nn.Linear(c.image_dim, c.dim, bias=False)
        self.text_proj = nn.Linear(c.text_dim, c.dim, bias=False)

        def layers():
            return nn.ModuleList(
                Block(c.dim, c.heads, c.ffn_dim, c.dropout, c.activation, c.norm_first) for _ in range(c.layers)
            )

        self.image_layers = layers()
        self.text_layers = self.image_layers if c.share_layers else layers()
        if c.norm_first:
            self.image_norm, self.text_norm = nn.LayerNorm(c.dim), nn.LayerNorm(c.dim)
        else:
            self.image_norm, self.text_norm = nn.Identity(), nn.Identity()
        self.cross = CrossAttention(c.dim, c.cross_heads) if c.mode == "tokens" else None
        self.local = nn.ModuleList(LocalMixing(c.dim) for _ in range(c.local_mixing if c.mode == "tokens" else 0))

    # ---- unimodal sides -------------------------------------------------------------------
    def _pooled(self, x: torch.Tensor, layers: nn.ModuleList, norm: nn.Module) -> torch.Tensor:
        """The pooled preset's layers over projected vectors ``x`` (B, D): one token per item, or,
        with ``paper_released_code``, the released code's L2-normalised batch as one sequence."""
        if self.config.paper_released_code:
            x = F.normalize(x, dim=-1).unsqueeze(0)  # (1, B, D): every item attends over the batch
            for layer in layers:
                x = layer(x)
            return norm(x[0])
        x = x.unsqueeze(1)
        for layer in layers:
            x = layer(x)
        return norm(x[:, 0])

    def encode_image(self, pooled: torch.Tensor, patches: torch.Tensor | None = None) -> ImageOut:
        """pooled (B, Di) = the encoder's CLS; patches (B, P, Di) (tokens mode)."""
        if self.config.mode == "identity":
            return ImageOut(F.normalize(pooled, dim=-1), patches, pooled)
        if self.config.mode == "pooled":
            feat = self._pooled(self.image_proj(pooled), self.image_layers, self.image_norm)
            return ImageOut(F.normalize(feat, dim=-1), None, feat)
        if patches is None:
            raise ValueError("the tokens Adaptor needs image patch tokens (precompute with tokens on)")
        x = self.image_proj(torch.cat([pooled.unsqueeze(1), patches], dim=1))
        if len(self.local):
            grid = grid_of(patches.shape[1], self.config.patch_grid)
            cls, tok = x[:, :1], x[:, 1:]
            for block in self.local:
                tok = block(tok, grid)
            x = torch.cat([cls, tok], dim=1)
        regional = x[:, 1:]
        for layer in self.image_layers:
            x = layer(x)
        x = self.image_norm(x)
        feat = x[:, 0] if self.config.image_pool == "first" else x[:, 1:].mean(dim=1)
        regions = regional if self.config.cross_tokens == "regional" else x[:, 1:]
        return ImageOut(F.normalize(feat, dim=-1), x[:, 1:], feat, regions)

    def encode_text(
        self, pooled: torch.Tensor, tokens: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> TextOut:
        """pooled (B, Dt); tokens (B, T, Dt) with mask (B, T) True for real tokens (tokens mode)."""
        if self.config.mode == "identity":
            return TextOut(F.normalize(pooled, dim=-1), tokens, None if mask is None else mask.bool(), pooled)
        if self.config.mode == "pooled":
            feat = self._pooled(self.text_proj(pooled), self.text_layers, self.text_norm)
            return TextOut(F.normalize(feat, dim=-1), None, None, feat)
        if tokens is None or mask is None:
            raise ValueError("the tokens Adaptor needs report token states and their mask")
        mask = mask.bool()
        x = self.text_proj(tokens)
        for layer in self.text_layers:
            x = layer(x, mask)
        x = self.text_norm(x)
        if self.config.text_pool == "first":
            feat = x[:, 0]
        else:
            m = mask.unsqueeze(-1).to(x.dtype)
            feat = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return TextOut(F.normalize(feat, dim=-1), x, mask, feat)

    # ---- cross-attention ------------------------------------------------------------------
    def local_similarity(self, image: ImageOut, text: TextOut, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Word<->patch similarity of every image with every report: (Bi, Bt).

        ``image_index`` (Bt, K) restricts each report to K candidate images (its pair and some
        negatives) to bound the cost; the result is then (Bt, K).
        s(i, j) = 1/2 [ mean over words t of cos(w_t, sum_p a_tp x_p)
                       + mean over patches p of cos(x_p, sum_t b_pt w_t) ]
        """
        if self.cross is None or image.regions is None:
            raise ValueError("local similarity needs the tokens Adaptor")
        words, patches, mask = text.tokens, image.regions, text.mask
        if image_index is not None:
            # (Bt, K, P, D): each report with its own candidate images
            cand = patches[image_index]
            bt, k, p, d = cand.shape
            qw = self.cross._split(words)  # (Bt, H, T, dh)
            kp = self.cross._split(cand.reshape(bt * k, p, d)).view(bt, k, self.cross.heads, p, -1)
            logits = torch.einsum("jhtd,jkhpd->jkhtp", qw, kp) * self.cross.scale  # (Bt, K, H, T, P)
            return self._scores(logits, words.unsqueeze(1), cand, mask.unsqueeze(1))
        logits = self.cross.logits(words, patches).transpose(0, 1)  # (Bt, Bi, H, T, P)
        return self._scores(logits, words.unsqueeze(1), patches.unsqueeze(0), mask.unsqueeze(1)).transpose(0, 1)

    @staticmethod
    def _scores(logits, words, patches, mask):
        """logits (Bt, K, H, T, P); words (Bt, 1, T, D); patches (Bt|1, K, P, D); mask (Bt, 1, T)."""
        neg = torch.finfo(logits.dtype).min
        # words attend to patches (softmax over P), heads averaged
        a = logits.softmax(dim=-1).mean(dim=2)  # (Bt, K, T, P)
        ctx_w = torch.einsum("jktp,jkpd->jktd", a, patches.expand(a.shape[0], -1, -1, -1))
        cos_w = F.cosine_similarity(words.expand_as(ctx_w), ctx_w, dim=-1)  # (Bt, K, T)
        wmask = mask.to(cos_w.dtype)
        s_w = (cos_w * wmask).sum(-1) / wmask.sum(-1).clamp_min(1.0)
        # patches attend to words (softmax over T, padding masked), heads averaged
        lt = logits.transpose(-1, -2).masked_fill(~mask[:, :, None, None, :], neg)  # (Bt, K, H, P, T)
        b = lt.softmax(dim=-1).mean(dim=2)  # (Bt, K, P, T)
        ctx_p = torch.einsum("jkpt,jktd->jkpd", b, words.expand(-1, b.shape[1], -1, -1))
        pt = patches.expand(b.shape[0], -1, -1, -1)
        s_p = F.cosine_similarity(pt, ctx_p, dim=-1).mean(-1)  # (Bt, K)
        return 0.5 * (s_w + s_p)

    def word_attention(self, image: ImageOut, text: TextOut) -> torch.Tensor:
        """Word-to-patch attention for aligned pairs: (B, T, P) (padding words are zero)."""
        a = self.cross.word_to_patch(text.tokens, image.regions)
        return a * text.mask[:, :, None].to(a.dtype)

    def heatmap(self, image: ImageOut, text: TextOut, word_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Where a report/phrase looks in its image: (B, P), averaged over the real words
        (or weighted by ``word_weights`` (B, T), e.g. zero for [CLS]/[SEP]); sums to 1."""
        a = self.word_attention(image, text)
        w = text.mask.to(a.dtype) if word_weights is None else word_weights.to(a.dtype) * text.mask.to(a.dtype)
        h = (a * w[:, :, None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)
        return h

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
