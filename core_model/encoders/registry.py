"""Registry of named encoder presets (after timm's ``register_model`` / ``create_model``).

A name is either a registered preset (``dinov2-small``, ``minilm``, ``tiny-vit``...), a
transformers model id (``facebook/dinov2-base``) or a local directory with a transformers model.
Loading never touches the network unless ``allow_download=True`` (or the environment variable
``CXR_ADAPTOR_ALLOW_DOWNLOAD=1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

_IMAGE: dict[str, "EncoderInfo"] = {}
_TEXT: dict[str, "EncoderInfo"] = {}


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    kind: str  # "image" | "text"
    source: str  # transformers id, "package:<name>" or "config" (random weights)
    description: str
    licence: str
    factory: Callable = field(repr=False, compare=False, default=None)
    options: dict = field(default_factory=dict, compare=False)


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


def _ensure_presets_loaded():
    # Importing the modules registers their presets.
    from core_model.encoders import image, text  # noqa: F401


def list_encoders(kind: str | None = None) -> list[EncoderInfo]:
    _ensure_presets_loaded()
    items = []
    if kind in (None, "image"):
        items += list(_IMAGE.values())
    if kind in (None, "text"):
        items += list(_TEXT.values())
    return items


def get_info(name: str, kind: str) -> EncoderInfo | None:
    _ensure_presets_loaded()
    return (_IMAGE if kind == "image" else _TEXT).get(name)


def create_image_encoder(name: str, *, allow_download: bool | None = None, **kwargs):
    """A frozen :class:`~core_model.encoders.image.FrozenImageEncoder` by preset, id or path."""
    _ensure_presets_loaded()
    from core_model.encoders.image import load_image_encoder

    info = _IMAGE.get(name)
    if info is not None:
        return info.factory(allow_download=allow_download, **{**info.options, **kwargs})
    return load_image_encoder(name, allow_download=allow_download, **kwargs)


def create_text_encoder(name: str, *, allow_download: bool | None = None, **kwargs):
    """A frozen :class:`~core_model.encoders.text.FrozenTextEncoder` by preset, id or path."""
    _ensure_presets_loaded()
    from core_model.encoders.text import load_text_encoder

    info = _TEXT.get(name)
    if info is not None:
        return info.factory(allow_download=allow_download, **{**info.options, **kwargs})
    return load_text_encoder(name, allow_download=allow_download, **kwargs)
