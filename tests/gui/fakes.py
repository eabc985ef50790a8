"""A stand-in for a model bundle that follows the documented runtime API (docs/DESIGN.md,
"Runtime API") in plain numpy: fast, deterministic, image-dependent. GUI tests use it for the
widget plumbing; tests marked ``real_bundle`` use a bundle exported by ``adaptor-train export``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from core_model.errors import UserError

BANK = [
    ("rep-001", "Focal consolidation in the left lower lobe. No pneumothorax. Heart size normal."),
    ("rep-002", "Bilateral peripheral ground glass opacities. No pleural effusion."),
    ("rep-003", "Large right apical pneumothorax with a visible pleural line."),
    ("rep-004", "The lungs are clear. No focal consolidation, effusion or pneumothorax."),
    ("rep-005", "Right middle lobe opacity, compatible with pneumonia."),
    ("rep-006", "Cardiomediastinal silhouette within normal limits. Lungs clear."),
]


@dataclass
class FakeHit:
    id: str
    text: str
    score: float


@dataclass
class FakeAnalysis:
    probabilities: dict
    mask: np.ndarray | None
    mask_threshold: float
    mask_area_fraction: float
    embedding: np.ndarray
    image_shape: tuple
    display: np.ndarray


class FakeBundle:
    def __init__(self, id: str = "fake-bundle", version: str = "1.0", delay: float = 0.0, segmentation: bool = True):
        self.id = id
        self.version = version
        self.delay = delay
        self.classes = ["normal", "pneumonia", "covid19"]
        self.thresholds = {"normal": 0.5, "pneumonia": 0.35, "covid19": 0.6}
        self.mask_label = "pneumothorax" if segmentation else None
        self.preprocess = None
        self.card = {"id": id, "intended_use": "research use only", "encoders": ["tiny-vit", "tiny-bert"]}
        self.card_markdown = (f"# {id} {version}\n\n**Intended use:** research use only.\n\n"
                              "## Encoders\n- image: tiny-vit (Apache-2.0)\n- text: tiny-bert (Apache-2.0)\n\n"
                              "## Training data\nSynthetic phantoms.\n\n## Metrics\n| metric | value |\n|---|---|\n"
                              "| AUROC | 0.91 |\n")
        self.calls = {"analyze": 0, "heatmap": 0, "similar": 0}
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def _display(self, image) -> np.ndarray:
        from core_model.imaging.preprocess import load_display

        return load_display(image) if not isinstance(image, np.ndarray) else image

    def analyze(self, image) -> FakeAnalysis:
        with self._lock:
            self.calls["analyze"] += 1
            self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        d = self._display(image).astype(np.float32) / 255.0
        m = float(d.mean())
        logits = np.array([2.0 - 4 * m, 4 * m - 1.0, 0.5 * np.sin(10 * m)])
        p = np.exp(logits) / np.exp(logits).sum()
        probs = {c: float(v) for c, v in zip(self.classes, p)}
        mask = None
        area = 0.0
        if self.mask_label:
            h, w = d.shape
            yy, xx = np.mgrid[:h, :w]
            mask = np.clip(1.2 - np.hypot((yy - 0.3 * h) / (0.18 * h), (xx - 0.7 * w) / (0.15 * w)), 0, 1)
            mask = mask.astype(np.float32)
            area = float((mask >= 0.5).mean())
        emb = np.resize(d[:: max(1, d.shape[0] // 8), :: max(1, d.shape[1] // 8)].ravel(), 16).astype(np.float32)
        emb /= max(float(np.linalg.norm(emb)), 1e-6)
        return FakeAnalysis(probs, mask, 0.5, area, emb, d.shape, d)

    def heatmap(self, image_or_analysis, text: str) -> np.ndarray:
        with self._lock:
            self.calls["heatmap"] += 1
        if self.delay:
            time.sleep(self.delay)
        if not text.strip():
            raise UserError("empty phrase")
        d = image_or_analysis.display if isinstance(image_or_analysis, FakeAnalysis) else self._display(image_or_analysis)
        h, w = d.shape[:2]
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        cy, cx = 0.25 + 0.5 * ((seed % 97) / 96), 0.25 + 0.5 * (((seed // 97) % 89) / 88)
        yy, xx = np.mgrid[:h, :w]
        heat = np.exp(-(((yy / h - cy) ** 2) + ((xx / w - cx) ** 2)) / 0.02)
        return heat.astype(np.float32)

    def similar_reports(self, query, k: int = 5) -> list[FakeHit]:
        with self._lock:
            self.calls["similar"] += 1
        if isinstance(query, str):
            key = query
        else:
            a = query if isinstance(query, FakeAnalysis) else self.analyze(query)
            key = ",".join(f"{v:.3f}" for v in a.probabilities.values())
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        order = sorted(range(len(BANK)), key=lambda i: (i * 7919 + seed) % 101)
        return [FakeHit(BANK[i][0], BANK[i][1], round(0.9 - 0.07 * r, 3)) for r, i in enumerate(order[:k])]
