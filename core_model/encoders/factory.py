"""Create frozen encoders by name (after timm's ``_factory.py`` / ``create_model``).

A name is either a registered preset (``dinov2-small``, ``minilm``, ``tiny-vit``...: see
:mod:`core_model.encoders.registry`), a transformers model id (``facebook/dinov2-base``) or a local
directory with a transformers model. Loading never touches the network unless
``allow_download=True`` (or the environment variable ``CXR_ADAPTOR_ALLOW_DOWNLOAD=1``).
"""

from __future__ import annotations

from core_model.encoders.image import load_image_encoder
from core_model.encoders.registry import get_info
from core_model.encoders.text import load_text_encoder


def create_image_encoder(name: str, *, allow_download: bool | None = None, **kwargs):
    """A frozen :class:`~core_model.encoders.image.FrozenImageEncoder` by preset, id or path."""
    info = get_info(name, "image")
    if info is not None:
        return info.factory(allow_download=allow_download, **{**info.options, **kwargs})
    return load_image_encoder(name, allow_download=allow_download, **kwargs)


def create_text_encoder(name: str, *, allow_download: bool | None = None, **kwargs):
    """A frozen :class:`~core_model.encoders.text.FrozenTextEncoder` by preset, id or path."""
    info = get_info(name, "text")
    if info is not None:
        return info.factory(allow_download=allow_download, **{**info.options, **kwargs})
    return load_text_encoder(name, allow_download=allow_download, **kwargs)
