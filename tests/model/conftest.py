"""Fixtures for model tests: a small image-report dataset generated on the fly and tiny encoders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core_model.data.records import Record

FINDINGS = ["normal", "pneumonia", "covid19", "pneumothorax"]
REPORTS = {
    "normal": "Lungs are clear. No pneumothorax. No focal consolidation.",
    "pneumonia": "Focal consolidation in the right lower lobe, compatible with pneumonia.",
    "covid19": "Bilateral peripheral ground glass opacities.",
    "pneumothorax": "Large left apical pneumothorax with visible pleural line.",
}


def make_image(rng: np.random.Generator, finding: str, size: int = 160) -> np.ndarray:
    """A crude image whose content depends on the finding (enough for plumbing tests)."""
    img = rng.normal(100, 10, (size, size))
    yy, xx = np.mgrid[:size, :size] / size
    if finding == "pneumonia":
        img += 90 * np.exp(-(((yy - 0.7) ** 2 + (xx - 0.3) ** 2) / 0.01))
    elif finding == "covid19":
        img += 60 * (np.abs(xx - 0.5) > 0.3)
    elif finding == "pneumothorax":
        img -= 80 * ((yy < 0.4) & (xx > 0.65))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def small_records(tmp_path_factory) -> list[Record]:
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    records = []
    for i in range(96):
        finding = FINDINGS[i % 4]
        path = root / f"img{i:03d}.png"
        Image.fromarray(make_image(rng, finding)).save(path)
        records.append(
            Record(
                id=f"r{i:03d}",
                image_path=str(path),
                report=REPORTS[finding] + f" Exam {i % 5}.",
                split="val" if i % 6 == 0 else "train",
                patient_id=f"p{i}",
                finding=finding,
            )
        )
    return records


@pytest.fixture(scope="session")
def tiny_encoders():
    from core_model.encoders import create_image_encoder, create_text_encoder

    return create_image_encoder("tiny-vit"), create_text_encoder("tiny-bert")
