"""Registry of named encoder presets: names -> specs (after timm's ``_registry.py``).

The preset modules (:mod:`~core_model.encoders.image`, :mod:`~core_model.encoders.text`) register
their presets here when imported (``core_model.encoders`` imports them); creating an encoder from
a name is :mod:`core_model.encoders.factory`'s job. This module imports no other part of the
package, so there is no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

_IMAGE: dict[str, EncoderInfo] = {}
_TEXT: dict[str, EncoderInfo] = {}


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    kind: str  # "image" | "text"
    source: str  # transformers id, "package:<name>" or "config" (random weights)
    description: str
    licence: str
    factory: Callable = field(repr=False, compare=False, default=None)
    options: dict = field(default_factory=dict, compare=False)

    @property
    def gated(self) -> bool:
        """True when the hub asks you to accept terms (log in) before it serves the weights."""
        return self.source in GATED_SOURCES

    @property
    def aliases(self) -> list[str]:
        return sorted(a for a, target in ALIASES.items() if target == self.name)


#: hub ids whose weights are gated (none of the registered presets today: DINOv2, RAD-DINO,
#: BioBERT, Bio_ClinicalBERT, BiomedBERT, CXR-BERT and MiniLM download without accepting terms;
#: RAD-DINO's licence (MSRLA) allows research use only)
GATED_SOURCES: frozenset[str] = frozenset()

#: other names of registered presets: hub ids that were renamed and the names papers use
ALIASES = {
    "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract-fulltext": "pubmedbert",  # renamed to BiomedBERT (2023)
    "PubMedBERT": "pubmedbert",
    "BiomedBERT": "pubmedbert",
    "biomedbert": "pubmedbert",
}


def register_image_encoder(name: str, *, source: str, description: str, licence: str, **options):
    def wrap(fn):
        _IMAGE[name] = EncoderInfo(name, "image", source, description, licence, fn, options)
        return fn

    return wrap


def register_text_encoder(name: str, *, source: str, description: str, licence: str, **options):
    def wrap(fn):
        _TEXT[name] = EncoderInfo(name, "text", source, description, licence, fn, options)
        return fn

    return wrap


def list_encoders(kind: str | None = None) -> list[EncoderInfo]:
    items = []
    if kind in (None, "image"):
        items += list(_IMAGE.values())
    if kind in (None, "text"):
        items += list(_TEXT.values())
    return items


def get_info(name: str, kind: str) -> EncoderInfo | None:
    """The preset ``name`` (or the preset an alias names), or None for other ids and folders."""
    table = _IMAGE if kind == "image" else _TEXT
    return table.get(name) or table.get(ALIASES.get(name, ""))
