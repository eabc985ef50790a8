"""Exported bundle vs the torch model it came from: same probabilities, masks and heatmaps."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import torch

from core_model.export.bundle import _load_heads, build_graphs
from core_model.imaging.preprocess import prepare_input
from core_model.runtime import load_bundle
from tests.real_data import real_file


@pytest.fixture(scope="module")
def reference(tiny_pipeline):
    cls_meta, seg_meta = _load_heads([tiny_pipeline / "cls", tiny_pipeline / "seg"])
    image, text, heat, adaptor, meta, text_encoder = build_graphs(cls_meta, seg_meta)
    return image, text, heat, text_encoder


def _images(tiny_pipeline) -> list[str]:
    phantoms = sorted(glob.glob(str(tiny_pipeline / "phantoms" / "images" / "*.png")))[:6]
    dicoms = sorted(glob.glob(str(tiny_pipeline / "phantoms" / "dicom" / "*.dcm")))[:3]
    real = [
        str(real_file("00000001_000.png")),
        str(real_file("1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")),
    ]
    return phantoms + dicoms + real


@torch.no_grad()
def test_runtime_matches_torch(tiny_pipeline, tiny_bundle, reference):
    image, text, heat, text_encoder = reference
    bundle = load_bundle(tiny_bundle)
    spec = bundle.preprocess
    phrases = ["right lower lobe consolidation", "large left pneumothorax", "no acute disease"]
    for path in _images(tiny_pipeline):
        x = torch.from_numpy(prepare_input(path, spec))[None]
        probs, _, mask_logits, patches, emb = image(x)
        a = bundle.analyze(path)
        got = np.array([a.probabilities[c] for c in bundle.classes])
        assert np.abs(got - probs[0].numpy()).max() < 1e-4, path
        ref_mask = mask_logits[0, 0].numpy() > 0
        run_mask = a.mask_square >= 0.5
        inter, total = (ref_mask & run_mask).sum(), ref_mask.sum() + run_mask.sum()
        assert (2 * inter / total if total else 1.0) >= 0.99, path
        assert np.allclose(a.embedding, emb[0].numpy(), atol=1e-4)
        for phrase in phrases:
            enc = text_encoder.tokenize([phrase])
            tokens, _ = text(enc["input_ids"], enc["attention_mask"])
            ids = enc["input_ids"][0]
            weights = torch.tensor([[0.0 if int(t) in text_encoder.tokenizer.all_special_ids else 1.0 for t in ids]])
            ref_heat = heat(tokens, weights, patches).numpy()[0]
            run_heat = bundle.patch_heatmap(a, phrase).ravel()
            corr = np.corrcoef(ref_heat, run_heat)[0, 1]
            assert corr >= 0.99, (path, phrase, corr)
            assert np.abs(ref_heat - run_heat).max() < 1e-4
            full = bundle.heatmap(a, phrase)
            assert full.shape == a.image_shape and full.min() >= 0.0 and 0.9 < full.max() <= 1.0


def test_batch_results_equal_single_results(tiny_pipeline, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    paths = _images(tiny_pipeline)[:4]
    together = bundle.analyze_batch(paths)
    for p, t in zip(paths, together):
        alone = bundle.analyze(p)
        for c in bundle.classes:
            assert abs(alone.probabilities[c] - t.probabilities[c]) < 1e-5
        assert np.abs(alone.mask - t.mask).max() < 1e-4
