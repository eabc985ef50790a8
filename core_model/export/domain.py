"""The bundle's training domain, fitted at export (see :mod:`core_model.runtime.domain`).

The exported image graph (the final ``image.onnx``, after any quantization, so the statistics are
those the runtime computes) is run over the fine-tuning data's images: the training split fits
the domain model, the validation split its scales and threshold, the test split measures the
false out-of-domain rate that the model card reports. Nothing here is fitted on the test split.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from core_model.errors import UserError
from core_model.runtime.domain import (
    RADIOGRAPH_MODALITIES,
    fit_domain_model,
    header_view_modality,
    normalize_view,
)

log = logging.getLogger(__name__)

MAX_IMAGES = {"train": 2000, "val": 2000, "test": 2000}
VAL_QUANTILE = 0.99


def _records_by_split(cls_meta: dict | None, seg_meta: dict | None, meta: dict) -> tuple[dict, dict]:
    """-> ({split: [Record]}, the data config they come from). Prefers the classification run's
    data (what the probabilities are calibrated on), then the segmentation run's, then the
    pretraining data. Raises UserError when none is readable here."""
    import yaml

    from core_model.training.downstream_data import load_labeled

    errors = []
    for m, task in ((cls_meta, "classification"), (seg_meta, "segmentation")):
        if not m:
            continue
        cfg_file = Path(m["_run"]) / "config.yaml"
        try:
            data = (yaml.safe_load(cfg_file.read_text()) or {}).get("data") if cfg_file.exists() else None
            if not data:
                continue
            with tempfile.TemporaryDirectory(prefix="domain-") as scratch:  # some readers write masks
                labeled = load_labeled(data, task, Path(scratch))
            by = {s: [labeled.records[i] for i in labeled.by_split(s)] for s in ("train", "val", "test")}
            if by["train"] and by["val"]:
                return by, data
        except UserError as exc:
            errors.append(str(exc))
    data = (meta.get("config") or {}).get("data")
    if data:
        from core_model.training.datasets import load_records

        try:
            recs = load_records(data).records
            by = {s: [r for r in recs if r.split == s] for s in ("train", "val", "test")}
            if by["train"] and by["val"]:
                return by, data
        except UserError as exc:
            errors.append(str(exc))
    raise UserError(
        "no training data with train and validation splits is readable here" + (f" ({errors[0]})" if errors else "")
    )


def _subsample(records: list, limit: int, seed: int = 0) -> list:
    if len(records) <= limit:
        return list(records)
    keep = np.sort(np.random.default_rng(seed).choice(len(records), limit, replace=False))
    return [records[i] for i in keep]


def graph_outputs(session, images: list, spec, batch: int = 32) -> tuple[np.ndarray, np.ndarray, list, list[int]]:
    """Run the image graph over image paths or arrays -> (embeddings, patch tokens, original
    (h, w) shapes, indices of the images that could be read)."""
    from core_model.imaging.errors import ImageReadError
    from core_model.imaging.preprocess import prepare_input_with_shape

    embs, pats, shapes, ok = [], [], [], []
    for b in range(0, len(images), batch):
        xs = []
        for j, im in enumerate(images[b : b + batch]):
            try:
                x, shape = prepare_input_with_shape(im, spec)
            except ImageReadError as exc:
                log.warning("domain model: skipping an image that cannot be read (%s)", exc)
                continue
            xs.append(x)
            shapes.append(shape)
            ok.append(b + j)
        if not xs:
            continue
        out = session.run(None, {"pixel_values": np.stack(xs).astype(np.float32)})
        pats.append(out[3].astype(np.float32))
        embs.append(out[4].astype(np.float32))
    if not embs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0, 0), np.float32), [], []
    return np.concatenate(embs), np.concatenate(pats), shapes, ok


def fit_bundle_domain(
    folder: Path, config: dict, cls_meta: dict | None, seg_meta: dict | None, meta: dict, *, synthetic: bool
) -> tuple[dict | None, dict]:
    """Fit the domain model for the bundle being written in ``folder`` (image.onnx final).
    -> (config.json "domain" section or None, model_card.json "domain" section)."""
    import onnxruntime as ort

    from core_model.imaging.preprocess import PreprocessSpec

    card: dict = {"synthetic": bool(synthetic), "modalities": list(RADIOGRAPH_MODALITIES)}
    try:
        by_split, data = _records_by_split(cls_meta, seg_meta, meta)
    except UserError as exc:
        log.warning("no domain model in this bundle: %s; its analyses will say 'domain unknown'", exc)
        card["note"] = f"no domain model: {exc}"
        return None, card
    spec = PreprocessSpec.from_dict(config["preprocess"])
    session = ort.InferenceSession(str(folder / "image.onnx"), providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    feats, chosen = {}, {}
    for split in ("train", "val", "test"):
        recs = _subsample(by_split[split], MAX_IMAGES[split])
        emb, pat, shapes, ok = graph_outputs(session, [r.image_path for r in recs], spec)
        feats[split] = (emb, pat, shapes)
        chosen[split] = [recs[i] for i in ok]
    if len(chosen["train"]) < 2 or not chosen["val"]:
        log.warning("no domain model in this bundle: too few readable training/validation images")
        card["note"] = "no domain model: too few readable training or validation images"
        return None, card
    views = sorted({v for v in (normalize_view(r.view) for r in chosen["train"]) if v})
    model, report = fit_domain_model(
        feats["train"][:2],
        feats["val"][:2],
        views=views,
        modalities=RADIOGRAPH_MODALITIES,
        synthetic=synthetic,
        grid=config.get("patch_grid"),
        val_quantile=VAL_QUANTILE,
    )
    section = model.save(folder)
    hs = [s[0] for s in feats["train"][2]]
    ws = [s[1] for s in feats["train"][2]]
    card.update(
        {
            "views": list(model.views),
            "modalities": list(model.modalities),
            "image_size": {"height": [int(min(hs)), int(max(hs))], "width": [int(min(ws)), int(max(ws))]},
            "embedding_model": {**report, "files": sorted(section["files"].values())},
            "threshold": model.threshold,
            "val_quantile": VAL_QUANTILE,
            "data": {
                k: data.get(k)
                for k in ("kind", "path", "n", "seed", "dicom", "images", "classes", "task", "mask_label", "fraction")
                if k in data
            },
        }
    )
    if chosen["test"]:
        scores = model.scores(*feats["test"][:2])
        states = []
        for r, s in zip(chosen["test"], scores):
            h_view, h_mod = header_view_modality(r.image_path)
            states.append(model.assess(float(s), view=normalize_view(r.view) or h_view, modality=h_mod))
        card["test_images"] = len(states)
        card["test_false_ood_rate"] = float(np.mean([not st.ok for st in states]))
        card["test_false_ood_rate_score_only"] = float(np.mean(scores > model.threshold))
    else:
        card["test_images"] = 0
        card["test_false_ood_rate"] = None
    log.info(
        "domain model: %d training, %d validation images; threshold %.3f; test false out-of-domain rate %s (%.0f s)",
        len(chosen["train"]),
        len(chosen["val"]),
        model.threshold,
        card["test_false_ood_rate"],
        time.perf_counter() - t0,
    )
    return section, card


def domain_card_lines(card: dict) -> list[str]:
    """MODEL_CARD.md lines for the domain section."""
    d = card.get("domain") or {}
    lines = ["", "## Training domain (the domain guard)", ""]
    if d.get("synthetic"):
        lines.append("- **Trained on synthetic phantoms**: every real radiograph is outside this model's domain.")
    if not d.get("embedding_model"):
        lines.append(f"- No domain model: {d.get('note', 'not recorded')}. Analyses say 'domain unknown'.")
        return lines
    em = d["embedding_model"]
    lines.append(
        f"- views: {', '.join(d.get('views') or ['not recorded'])}; modalities accepted: "
        f"{', '.join(d.get('modalities') or [])}"
    )
    size = d.get("image_size") or {}
    if size:
        lines.append(
            f"- training image sizes: height {size['height'][0]}-{size['height'][1]} px, width "
            f"{size['width'][0]}-{size['width'][1]} px"
        )
    lines.append(
        f"- score: {em['score']} ({', '.join(em['components'])}; {em['covariance']}), fitted on "
        f"{em['train_images']} training images; threshold {d['threshold']:.3f} = the "
        f"{100 * d['val_quantile']:.0f}th percentile on {em['val_images']} validation images"
    )
    if d.get("test_false_ood_rate") is not None:
        lines.append(
            f"- test split: {100 * d['test_false_ood_rate']:.1f} % of {d['test_images']} images "
            f"flagged out of domain (false out-of-domain rate)"
        )
    return lines
