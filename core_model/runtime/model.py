"""A loaded model bundle: analyse images, phrase heatmaps, similar reports (torch-free)."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from core_model.imaging.preprocess import PreprocessSpec, from_square, prepare_input_with_shape
from core_model.runtime.domain import DomainState, unknown
from core_model.runtime.bundle import BundleError, BundleFormatError, SessionSet, open_bundle_folder
from core_model.runtime.retrieval import ReportBank, ReportHit

ImageLike = Union[str, os.PathLike, np.ndarray]


@dataclass
class Analysis:
    probabilities: dict[str, float]
    mask: np.ndarray | None  # float32 (H, W) probabilities on the original image grid
    mask_threshold: float | None
    mask_area_fraction: float | None
    embedding: np.ndarray  # (d,) L2-normalised
    image_shape: tuple[int, int]
    patch_tokens: np.ndarray = field(repr=False, default=None)  # (P, d), for heatmaps
    mask_square: np.ndarray | None = field(repr=False, default=None)  # (S, S) model-space probabilities
    domain: DomainState = field(default_factory=unknown)  # see core_model.runtime.domain

    def above_threshold(self, thresholds: dict[str, float]) -> dict[str, bool]:
        return {k: v >= thresholds.get(k, 0.5) for k, v in self.probabilities.items()}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class Bundle:
    """See docs/DESIGN.md, "Runtime API". Methods are safe to call from worker threads."""

    def __init__(self, folder: Path, manifest: dict, *, threads: int = 0):
        self.folder = folder
        self.manifest = manifest
        from core_model.fileio import sha256_file

        self._content_hash = sha256_file(folder / "manifest.json")
        try:
            self.config = json.loads((folder / "config.json").read_text())
            self.card = json.loads((folder / "model_card.json").read_text())
        except ValueError as exc:
            raise BundleFormatError(f"{folder}: config.json or model_card.json is not valid JSON ({exc})") from exc
        md = folder / "MODEL_CARD.md"
        self.card_markdown = md.read_text() if md.exists() else json.dumps(self.card, indent=2)
        self.id = str(manifest.get("id", folder.name))
        self.version = str(manifest.get("version", ""))
        c = self.config
        self.classes: list[str] = list(c.get("classes") or [])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in (c.get("thresholds") or {}).items()}
        self.mask_label: str | None = c.get("mask_label")
        self.mask_threshold = float(c.get("mask_threshold") or 0.5)
        self.preprocess = PreprocessSpec.from_dict(c["preprocess"])
        self.patch_grid = tuple(c["patch_grid"]) if c.get("patch_grid") else None
        self.sessions = SessionSet(folder, c.get("graphs") or {"image": "image.onnx", "text": "text.onnx"}, threads)
        self._tok_lock = threading.Lock()
        from tokenizers import Tokenizer

        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exceptions
            raise BundleFormatError(f"{folder}: the tokenizer cannot be loaded ({exc})") from exc
        t = c.get("text") or {}
        self.max_length = int(t.get("max_length", 112))
        self.special_ids = set(int(i) for i in t.get("special_ids", []))
        self.pad_id = int(t.get("pad_id", 0))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.bank = ReportBank.load(folder / "reports")

    @property
    def research_use_only(self) -> bool:
        return True

    @property
    def content_hash(self) -> str:
        """SHA-256 of manifest.json, which lists the SHA-256 of every file: two bundles with the same
        content hash hold the same graphs, config and report bank. Cached results are keyed by it."""
        return self._content_hash

    @property
    def synthetic(self) -> bool:
        """True when the model was trained on synthetic data (the demo's phantoms): its output means
        nothing for real images."""
        d = self.card.get("domain") if isinstance(self.card, dict) else None
        if isinstance(d, dict) and "synthetic" in d:
            return bool(d["synthetic"])
        return bool(self.config.get("synthetic", False))

    # ---- image ------------------------------------------------------------------------------
    def _image_session(self):
        session = self.sessions.get("image")
        shape = session.get_inputs()[0].shape  # [batch, 3, S, S]
        size = self.preprocess.size
        if len(shape) != 4 or any(isinstance(d, int) and d != want for d, want in zip(shape[1:], (self.preprocess.channels, size, size))):
            raise BundleFormatError(f"the bundle's image graph takes input {shape} but its preprocessing makes "
                                    f"{self.preprocess.channels}x{size}x{size} images; the bundle is inconsistent, re-export it")
        return session

    def _run_image(self, batch: np.ndarray):
        return self._image_session().run(None, {"pixel_values": batch.astype(np.float32)})

    def analyze(self, image: ImageLike) -> Analysis:
        return self.analyze_batch([image])[0]

    def analyze_batch(self, images: list[ImageLike]) -> list[Analysis]:
        prepared = [prepare_input_with_shape(im, self.preprocess) for im in images]
        x = np.stack([p[0] for p in prepared])
        probs, _logits, mask_logits, patches, emb = self._run_image(x)
        out = []
        for i, (_, shape) in enumerate(prepared):
            mask = mask_sq = area = None
            if self.mask_label:
                mask_sq = _sigmoid(mask_logits[i, 0]).astype(np.float32)
                mask = from_square(mask_sq, shape[0], shape[1], self.preprocess).astype(np.float32)
                area = float((mask >= self.mask_threshold).mean())
            out.append(Analysis(
                probabilities={c: float(probs[i, k]) for k, c in enumerate(self.classes)},
                mask=mask, mask_threshold=self.mask_threshold if self.mask_label else None,
                mask_area_fraction=area, embedding=emb[i].astype(np.float32), image_shape=shape,
                patch_tokens=patches[i], mask_square=mask_sq,
            ))
        return out

    # ---- text -------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[str]]]:
        """-> token embeddings (B, T, d), word weights (B, T), pooled embeddings (B, d), tokens."""
        with self._tok_lock:
            encs = [self.tokenizer.encode(t if t.strip() else ".") for t in texts]
        t_max = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), t_max), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), t_max), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        tokens, pooled = self.sessions.get("text").run(None, {"input_ids": ids, "attention_mask": mask})
        weights = np.array([[1.0 if (m and tid not in self.special_ids) else 0.0 for tid, m in zip(row, mrow)]
                            for row, mrow in zip(ids, mask)], dtype=np.float32)
        for i in range(len(encs)):  # only special tokens: use them all
            if weights[i].sum() == 0:
                weights[i] = mask[i]
        return tokens, weights, pooled, [e.tokens for e in encs]

    # ---- heatmaps ---------------------------------------------------------------------------
    def has_heatmaps(self) -> bool:
        return bool((self.config.get("graphs") or {}).get("heatmap"))

    def patch_heatmap(self, analysis: Analysis, phrase: str) -> np.ndarray:
        """Attention of the phrase's words over the image patches: (rows, cols), sums to 1."""
        if not self.has_heatmaps():
            raise BundleError("this bundle has no heatmap graph (the paper-preset Adaptor has no patch tokens)")
        tokens, weights, _, _ = self.encode_text([phrase])
        heat = self.sessions.get("heatmap").run(None, {
            "token_embeddings": tokens.astype(np.float32), "word_weights": weights,
            "patch_tokens": analysis.patch_tokens[None].astype(np.float32)})[0][0]
        rows, cols = self.patch_grid or (int(round(len(heat) ** 0.5)),) * 2
        return heat.reshape(rows, cols).astype(np.float32)

    def heatmap_square(self, analysis: Analysis, phrase: str) -> np.ndarray:
        """The patch heatmap upsampled to the model's square input grid (S, S)."""
        grid = self.patch_heatmap(analysis, phrase)
        size = self.preprocess.size
        return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR))

    def heatmap(self, image_or_analysis: ImageLike | Analysis, phrase: str) -> np.ndarray:
        """Where the model looks for ``phrase``: float32 (H, W) on the original grid, stretched
        min-max to [0, 1] over the image (attention is relative: the raw map sums to 1 over the
        patches, see :meth:`patch_heatmap`). Padding outside the image is 0."""
        a = image_or_analysis if isinstance(image_or_analysis, Analysis) else self.analyze(image_or_analysis)
        grid = self.patch_heatmap(a, phrase)
        lo, hi = float(grid.min()), float(grid.max())
        unit = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
        size = self.preprocess.size
        sq = np.asarray(Image.fromarray(unit.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
        h = from_square(sq, a.image_shape[0], a.image_shape[1], self.preprocess)
        return np.clip(h, 0.0, 1.0).astype(np.float32)

    # ---- retrieval --------------------------------------------------------------------------
    def similar_reports(self, query: Analysis | ImageLike, k: int = 5) -> list[ReportHit]:
        if isinstance(query, Analysis):
            q = query.embedding
        elif isinstance(query, np.ndarray) or _looks_like_path(query):
            q = self.analyze(query).embedding
        else:
            q = self.encode_text([str(query)])[2][0]
        return self.bank.search(q, k)


def _looks_like_path(q) -> bool:
    if isinstance(q, os.PathLike):
        return True
    s = str(q)
    return "\n" not in s and len(s) < 4096 and os.path.exists(s)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def sentences(text: str) -> list[str]:
    """Split a report into sentences (section headings like 'FINDINGS:' dropped)."""
    text = re.sub(r"\b[A-Z][A-Z /]+:\s*", " ", text or "")
    return [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if len(s.strip()) > 2]


def load_bundle(path: str | os.PathLike, *, threads: int = 0, cache_root: Path | None = None) -> Bundle:
    """Open a bundle folder or .zip, verifying it completely (see :mod:`core_model.runtime.bundle`)."""
    folder, manifest = open_bundle_folder(path, cache_root)
    return Bundle(folder, manifest, threads=threads)
