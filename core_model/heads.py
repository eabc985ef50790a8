"""Small downstream heads on top of the frozen Adaptor.

Classification
    ``mlp``: the paper's head (Dropout, Linear(d -> 512, no bias), BatchNorm, ReLU, Dropout,
    Linear(512 -> C)); ``linear``: a linear probe.
Segmentation
    ``progressive``: the paper's plain progressive-upsampling decoder (4 x [conv3x3, BN, ReLU,
    upsample x2] with 512/256/128/64 channels, then a 1x1 conv to one logit map);
    ``light``: a 1x1 projection to 64 channels, two [conv3x3, BN, ReLU, upsample x2] stages
    (about 20x fewer parameters). Both end with a bilinear resize to the model input size.
The segmentation loss (focal + Dice) is in :mod:`core_model.losses`.

BatchNorm runs on running statistics in eval mode, so a prediction never depends on the other
images in its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, num_outputs: int, hidden: int = 512, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, num_outputs: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x))


def make_cls_head(kind: str, in_dim: int, num_outputs: int, dropout: float = 0.2) -> nn.Module:
    if kind == "mlp":
        return MLPHead(in_dim, num_outputs, dropout=dropout)
    if kind == "linear":
        return LinearHead(in_dim, num_outputs, dropout=0.0)
    raise ValueError(f"unknown classification head {kind!r}: mlp or linear")


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )


class SegDecoder(nn.Module):
    """(B, P, d) patch tokens on a (rows, cols) grid -> (B, 1, S, S) mask logits."""

    def __init__(self, in_dim: int, grid: tuple[int, int], out_size: int, kind: str = "progressive"):
        super().__init__()
        self.grid = tuple(grid)
        self.out_size = int(out_size)
        self.kind = kind
        if kind == "progressive":
            chans = [in_dim, 512, 256, 128, 64]
            self.body = nn.Sequential(*[_stage(a, b) for a, b in zip(chans[:-1], chans[1:])])
            last = 64
        elif kind == "light":
            self.body = nn.Sequential(nn.Conv2d(in_dim, 64, 1), _stage(64, 64), _stage(64, 32))
            last = 32
        else:
            raise ValueError(f"unknown segmentation decoder {kind!r}: progressive or light")
        self.out = nn.Conv2d(last, 1, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, p, d = tokens.shape
        rows, cols = self.grid
        if p != rows * cols:
            raise ValueError(f"expected {rows}x{cols}={rows * cols} patch tokens, got {p}")
        x = tokens.transpose(1, 2).reshape(b, d, rows, cols)
        x = self.out(self.body(x))
        return F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
