"""Base class that keeps a wrapped backbone frozen."""

from __future__ import annotations

from torch import nn

from core_model.encoders.hub import state_dict_sha256


class FrozenEncoder(nn.Module):
    """A backbone that stays in eval mode with no gradients, whatever ``.train()`` is called with."""

    kind = "encoder"

    def __init__(self, model: nn.Module, *, name: str, source: str, licence: str):
        super().__init__()
        self.model = model
        self.name = name
        self.source = source
        self.licence = licence
        self._sha256: str | None = None
        self.freeze()

    def freeze(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True):
        super().train(False)
        self.model.eval()
        return self

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = state_dict_sha256(self.model)
        return self._sha256

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def identity(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "licence": self.licence,
            "weights_sha256": self.weights_sha256,
            "parameters": self.num_parameters(),
        }
