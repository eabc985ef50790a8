"""`adaptor-train export`: fine-tuning runs -> a self-contained, verifiable model bundle.

Bundle layout (format version 1)::

    manifest.json        format, version, id, SHA-256 of every other file
    config.json          classes, task, thresholds, temperature, mask label/threshold,
                         preprocessing, tokenizer settings, graph I/O names, report bank info
    model_card.json      encoders and licences, training data and config, code version,
                         metrics, intended use (research use only)
    MODEL_CARD.md        the same for people
    image.onnx           pixel_values -> probabilities, logits, mask_logits, patch_tokens, embedding
    text.onnx            input_ids, attention_mask -> token_embeddings, embedding
    heatmap.onnx         token_embeddings, word_weights, patch_tokens -> heatmap
    tokenizer/           tokenizer.json (+ configs) for the `tokenizers` library
    reports/reports.jsonl, reports/embeddings.npy (fp16, L2-normalised)
    reports/index.hnsw, reports/index.json   an HNSW index over the bank, when it holds at least
                         ``report_index_min_reports`` (default 50,000; core_model.export.report_index)

Nothing in a bundle is pickled. The runtime (:mod:`core_model.runtime`) checks the manifest and
every hash before loading.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from core_model.errors import UserError
from core_model.export.graphs import HeatmapGraph, ImageGraph, TextGraph
from core_model.fileio import atomic_path, atomic_write, atomic_write_json, jsonable, publish_dir, sha256_file
from core_model.heads import SegDecoder, make_cls_head
from core_model.runtime.format import BUNDLE_FORMAT, BUNDLE_VERSION, GRAPH_IO, MANIFEST, REPORT_INDEX_MIN_REPORTS
from core_model.training.artifacts import code_version, load_adaptor

log = logging.getLogger(__name__)

OPSET = 17
INTENDED_USE = (
    "Research use only. Not a medical device; not for diagnosis, triage or any clinical "
    "decision. Outputs are model estimates for research on chest X-ray vision-language models."
)


def _read_head(run: Path) -> dict:
    meta = run / "head.json"
    if not meta.exists() or not (run / "head.safetensors").exists():
        raise UserError(f"{run} is not a fine-tuning run (no head.json / head.safetensors)")
    m = json.loads(meta.read_text())
    m["_run"] = run
    return m


def _load_heads(runs: list[Path]) -> tuple[dict | None, dict | None]:
    cls = seg = None
    for run in runs:
        m = _read_head(Path(run))
        if m.get("kind") == "classification_head":
            if cls:
                raise UserError("give one classification run (got two)")
            cls = m
        elif m.get("kind") == "segmentation_head":
            if seg:
                raise UserError("give one segmentation run (got two)")
            seg = m
        else:
            raise UserError(f"{run}: unknown head kind {m.get('kind')!r}")
    if not cls and not seg:
        raise UserError("give at least one fine-tuning run (--run DIR)")
    shas = {m["adaptor_sha256"] for m in (cls, seg) if m}
    if len(shas) != 1:
        raise UserError("the classification and segmentation runs were fine-tuned on different pretrained Adaptors")
    return cls, seg


def _encoders(meta: dict):
    from core_model.encoders import create_image_encoder, create_text_encoder

    img = create_image_encoder(meta["image_encoder"]["name"])
    txt = create_text_encoder(meta["text_encoder"]["name"], max_length=int(meta.get("text_max_length", 112)))
    for enc, key in ((img, "image_encoder"), (txt, "text_encoder")):
        if enc.weights_sha256 != meta[key]["weights_sha256"]:
            raise UserError(
                f"the {key.replace('_', ' ')} {meta[key]['name']!r} available here has other weights "
                f"than the one the Adaptor was trained with"
            )
    return img, txt


def build_graphs(cls_meta: dict | None, seg_meta: dict | None):
    """Torch modules of the three graphs plus the pieces needed around them."""
    from safetensors.torch import load_file

    any_meta = cls_meta or seg_meta
    run = Path(any_meta["adaptor_run"])
    adaptor, _, meta = load_adaptor(run)
    if sha256_file(run / "adaptor.safetensors") != any_meta["adaptor_sha256"]:
        raise UserError(f"the Adaptor in {run} changed since the heads were fine-tuned on it")
    image_encoder, text_encoder = _encoders(meta)
    cls_head = None
    multiclass = False
    temperature = 1.0
    if cls_meta:
        h = cls_meta["head"]
        cls_head = make_cls_head(h["kind"], h["in_dim"], h["outputs"], h.get("dropout", 0.2))
        cls_head.load_state_dict(load_file(str(cls_meta["_run"] / "head.safetensors")))
        cls_head.eval()
        multiclass = cls_meta["task"] == "multiclass"
        temperature = float(cls_meta.get("temperature", 1.0))
    seg_decoder = None
    seg_pool = int(meta.get("patch_pool", 1))
    if seg_meta:
        h = seg_meta["head"]
        if int(h["input_size"]) != int(meta["preprocess"]["size"]):
            raise UserError(
                f"the segmentation head was trained at {h['input_size']} px but the Adaptor's input is "
                f"{meta['preprocess']['size']} px; a bundle has one input size (fine-tune at the same size)"
            )
        seg_decoder = SegDecoder(h["in_dim"], tuple(h["grid"]), int(h["input_size"]), h["kind"])
        seg_decoder.load_state_dict(load_file(str(seg_meta["_run"] / "head.safetensors")))
        seg_decoder.eval()
        seg_pool = int(seg_meta.get("patch_pool", 1))
    grid = tuple(meta.get("encoder_grid") or image_encoder.grid(int(meta["preprocess"]["size"])))
    image = ImageGraph(
        image_encoder,
        adaptor,
        encoder_grid=grid,
        cls_pool=int(meta.get("patch_pool", 1)),
        cls_head=cls_head,
        temperature=temperature,
        multiclass=multiclass,
        seg_decoder=seg_decoder,
        seg_pool=seg_pool,
    ).eval()
    text = TextGraph(text_encoder, adaptor).eval()
    heat = HeatmapGraph(adaptor).eval() if adaptor.config.mode == "tokens" else None
    return image, text, heat, adaptor, meta, text_encoder


def export_onnx(image: ImageGraph, text: TextGraph, heat: HeatmapGraph | None, size: int, folder: Path) -> None:
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            image,
            (x,),
            str(folder / "image.onnx"),
            input_names=list(GRAPH_IO["image"][0]),
            output_names=list(GRAPH_IO["image"][1]),
            dynamic_axes={
                "pixel_values": {0: "batch"},
                "probabilities": {0: "batch"},
                "logits": {0: "batch"},
                "mask_logits": {0: "batch"},
                "patch_tokens": {0: "batch"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        ids = torch.tensor([[101, 2053, 102, 0], [101, 2187, 2896, 102]], dtype=torch.long)
        mask = (ids != 0).long()
        torch.onnx.export(
            text,
            (ids, mask),
            str(folder / "text.onnx"),
            input_names=list(GRAPH_IO["text"][0]),
            output_names=list(GRAPH_IO["text"][1]),
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "token_embeddings": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        if heat is not None:
            d = heat.adaptor.config.dim
            p = image(x[:1])[3].shape[1]
            torch.onnx.export(
                heat,
                (torch.randn(1, 4, d), torch.tensor([[0.0, 1.0, 1.0, 0.0]]), torch.randn(1, p, d)),
                str(folder / "heatmap.onnx"),
                input_names=list(GRAPH_IO["heatmap"][0]),
                output_names=list(GRAPH_IO["heatmap"][1]),
                dynamic_axes={
                    "token_embeddings": {0: "batch", 1: "tokens"},
                    "word_weights": {0: "batch", 1: "tokens"},
                    "patch_tokens": {0: "batch"},
                    "heatmap": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )


@torch.no_grad()
def embed_reports(text: TextGraph, tokenizer_encoder, texts: list[str], batch: int = 64) -> np.ndarray:
    out = []
    for b in range(0, len(texts), batch):
        enc = tokenizer_encoder.tokenize(texts[b : b + batch])
        _, pooled = text(enc["input_ids"], enc["attention_mask"])
        out.append(pooled.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, text.adaptor.config.dim), np.float32)


def report_bank_texts(meta: dict, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, text) of the pretraining data's training reports, duplicates removed."""
    from core_model.training.datasets import load_records

    data = meta.get("config", {}).get("data")
    if not data:
        return []
    try:
        result = load_records(data)
    except UserError as exc:
        log.warning("no report bank: the pretraining data is not available here (%s)", exc)
        return []
    seen, out = set(), []
    for r in result.records:
        if r.split != "train" or not (r.report or "").strip():
            continue
        key = " ".join(r.report.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append((r.id, r.report.strip()))
        if limit and len(out) >= limit:
            break
    return out


def _trained_on_phantoms(meta: dict, cls_meta: dict | None, seg_meta: dict | None) -> bool:
    """True when the Adaptor or a head was trained on synthetic phantoms (the card and the runtime
    say so: ``bundle.synthetic``)."""
    import yaml

    kinds = [(meta.get("config", {}).get("data") or {}).get("kind")]
    for m in (cls_meta, seg_meta):
        cfg = Path(m["_run"]) / "config.yaml" if m else None
        if cfg and cfg.exists():
            kinds.append(((yaml.safe_load(cfg.read_text()) or {}).get("data") or {}).get("kind"))
        if m and m.get("dataset"):
            kinds.append(m.get("dataset"))
    return "phantoms" in kinds


def _metrics_of(run: Path) -> dict:
    p = run / "metrics.json"
    return json.loads(p.read_text()) if p.exists() else {}


def model_card(meta: dict, cls_meta: dict | None, seg_meta: dict | None, config: dict) -> dict:
    pre_metrics = meta.get("metrics", {})
    card = {
        "name": f"CXR Adaptor: {meta['image_encoder']['name']} + {meta['text_encoder']['name']}",
        "intended_use": INTENDED_USE,
        "research_use_only": True,
        "encoders": {
            "image": {
                k: meta["image_encoder"].get(k) for k in ("name", "source", "licence", "weights_sha256", "parameters")
            },
            "text": {
                k: meta["text_encoder"].get(k) for k in ("name", "source", "licence", "weights_sha256", "parameters")
            },
        },
        "adaptor": {"config": meta["adaptor"], "trainable_parameters": None, "temperature": meta.get("temperature")},
        "training_data": {
            "pretraining": meta.get("data", {}),
            "pretraining_config": meta.get("config", {}).get("data"),
            "classification": cls_meta
            and {
                "dataset": cls_meta.get("dataset"),
                "fraction": cls_meta.get("fraction"),
                "split_protocol": cls_meta.get("split_protocol"),
            },
            "segmentation": seg_meta
            and {
                "dataset": seg_meta.get("dataset"),
                "fraction": seg_meta.get("fraction"),
                "split_protocol": seg_meta.get("split_protocol"),
            },
        },
        "metrics": {
            "pretraining_validation": {k: v for k, v in pre_metrics.items() if not isinstance(v, (dict, list))},
            "classification_test": cls_meta and _metrics_of(cls_meta["_run"]).get("metrics"),
            "segmentation_test": seg_meta and _metrics_of(seg_meta["_run"]).get("metrics"),
        },
        "outputs": {
            "classes": config["classes"],
            "thresholds": config["thresholds"],
            "mask_label": config["mask_label"],
        },
        "code_version": code_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "limitations": [
            "Trained and evaluated only on the data named above; performance elsewhere is unknown.",
            "Probabilities are calibrated on the validation split of the fine-tuning data only.",
        ],
    }
    data_kind = (meta.get("config", {}).get("data") or {}).get("kind")
    if data_kind == "phantoms":
        card["limitations"].insert(
            0,
            "Trained on SYNTHETIC phantoms, not on radiographs: a software demonstration "
            "with no meaning for real images.",
        )
    if meta["image_encoder"]["source"].startswith("config:"):
        card["limitations"].insert(0, "The image encoder has random weights (a test/demo preset), not pretrained ones.")
    return card


def card_markdown(card: dict) -> str:
    def pct(v):
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f} %"

    lines = [f"# {card['name']}", "", f"**{card['intended_use']}**", "", "## Encoders (frozen)", ""]
    for side, e in card["encoders"].items():
        lines.append(
            f"- {side}: `{e['name']}` from {e['source']} (licence: {e['licence']}; "
            f"{e.get('parameters') or '?'} parameters)"
        )
    lines += ["", "## Training data", ""]
    td = card["training_data"]
    pre = td.get("pretraining") or {}
    lines.append(
        f"- pretraining: {pre.get('records', '?')} image-report pairs ({(td.get('pretraining_config') or {}).get('kind', '?')})"
    )
    for key in ("classification", "segmentation"):
        if td.get(key):
            lines.append(
                f"- {key}: {td[key]['dataset']}, {pct(td[key]['fraction'])} of training labels, "
                f"split: {td[key]['split_protocol']}"
            )
    lines += ["", "## Test metrics", ""]
    cm = card["metrics"].get("classification_test")
    if cm:
        for name, e in cm.get("per_class", {}).items():
            lines.append(
                f"- {name}: AUROC {pct(e.get('auroc'))} (95 % CI {pct(e.get('ci_low'))} to {pct(e.get('ci_high'))})"
            )
    sm = card["metrics"].get("segmentation_test")
    if sm:
        lines.append(
            f"- {card['outputs']['mask_label']} segmentation: Dice on positive images {pct(sm.get('dice_positive'))}, "
            f"MGCA-protocol Dice {pct(sm.get('dice_mgca'))} (all-empty predictor: "
            f"{pct((sm.get('empty_baseline') or {}).get('dice_mgca'))})"
        )
    if card.get("quantization"):
        q = card["quantization"]
        lines.append(f"- int8 quantization: {q.get('summary', '')}")
    if card.get("domain"):
        from core_model.export.domain import domain_card_lines

        lines += domain_card_lines(card)
    if card.get("grounding"):
        from core_model.export.grounding import grounding_card_lines

        lines += grounding_card_lines(card)
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in card["limitations"]]
    lines += ["", f"Code version {card['code_version']}, created {card['created']}.", ""]
    return "\n".join(lines)


def write_manifest(folder: Path, bundle_id: str) -> dict:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST:
            files[p.relative_to(folder).as_posix()] = sha256_file(p)
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "id": bundle_id,
        "version": code_version(),
        "research_use_only": True,
        "files": files,
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def export_bundle(
    runs: list[Path],
    out: Path,
    *,
    quantize: str | None = None,
    make_zip: bool = False,
    bank_limit: int | None = None,
    bundle_id: str | None = None,
    report_index_min_reports: int | None = None,
    grounding: str | Path | None = None,
) -> Path:
    """Write a bundle folder (or .zip) at ``out`` from fine-tuning runs; atomic. ``grounding``: a
    validation grounding evaluation (see :mod:`core_model.export.grounding`) deciding which
    findings' heatmaps the app shows."""
    from core_model.export.grounding import grounding_section, read_grounding_eval

    grounding_doc = read_grounding_eval(grounding) if grounding is not None else None
    torch.set_grad_enabled(False)
    cls_meta, seg_meta = _load_heads([Path(r) for r in runs])
    image, text, heat, adaptor, meta, text_encoder = build_graphs(cls_meta, seg_meta)
    size = int(meta["preprocess"]["size"])
    out = Path(out)
    final = out if not make_zip else out.with_suffix(".zip")
    if final.exists():
        raise UserError(f"{final} exists; choose another --out or remove it")
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=str(final.parent.resolve())))
    try:
        export_onnx(image, text, heat, size, tmp)
        text_encoder.save_tokenizer(tmp / "tokenizer")
        bank = report_bank_texts(meta, bank_limit)
        (tmp / "reports").mkdir()
        emb = embed_reports(text, text_encoder, [t for _, t in bank])
        np.save(tmp / "reports" / "embeddings.npy", emb.astype(np.float16), allow_pickle=False)
        with open(tmp / "reports" / "reports.jsonl", "w") as f:
            for rid, t in bank:
                f.write(json.dumps({"id": rid, "text": t}) + "\n")
        index_meta = None
        min_reports = REPORT_INDEX_MIN_REPORTS if report_index_min_reports is None else report_index_min_reports
        if len(bank) and len(bank) >= min_reports:
            from core_model.export.report_index import build_report_index

            log.info("building the report index over %d reports", len(bank))
            index_meta = build_report_index(tmp / "reports")
        tok = text_encoder.tokenizer
        config = {
            "classes": cls_meta["classes"] if cls_meta else [],
            "task": cls_meta["task"] if cls_meta else None,
            "thresholds": cls_meta["thresholds"] if cls_meta else {},
            "temperature": cls_meta.get("temperature", 1.0) if cls_meta else 1.0,
            "mask_label": seg_meta["label"] if seg_meta else None,
            "mask_threshold": float(seg_meta.get("threshold", 0.5)) if seg_meta else None,
            "preprocess": meta["preprocess"],
            "patch_grid": list(adaptor.config.patch_grid) if adaptor.config.patch_grid else None,
            "embedding_dim": adaptor.config.dim,
            "text": {
                "max_length": int(meta.get("text_max_length", 112)),
                "special_ids": sorted(int(i) for i in tok.all_special_ids),
                "pad_id": int(tok.pad_token_id or 0),
            },
            "graphs": {"image": "image.onnx", "text": "text.onnx", "heatmap": "heatmap.onnx" if heat else None},
            "report_bank": {
                "count": len(bank),
                "source": "pretraining training split",
                "index": index_meta.to_json() if index_meta else None,
            },
            "research_use_only": True,
        }
        card = model_card(meta, cls_meta, seg_meta, config)
        card["grounding"] = grounding_section(
            grounding_doc if heat else None, (meta.get("data") or {}).get("weak_grounding_supervision")
        )
        if quantize:
            card["quantization"] = quantize_bundle(tmp, quantize, cls_meta, seg_meta, config)
        # the training domain, on the final image graph (after quantization): see core_model.export.domain
        from core_model.export.domain import fit_bundle_domain

        domain_section, card["domain"] = fit_bundle_domain(
            tmp, config, cls_meta, seg_meta, meta, synthetic=_trained_on_phantoms(meta, cls_meta, seg_meta)
        )
        if domain_section:
            config["domain"] = domain_section
        atomic_write_json(tmp / "config.json", jsonable(config))
        atomic_write_json(tmp / "model_card.json", jsonable(card))
        atomic_write(tmp / "MODEL_CARD.md", card_markdown(card))
        bid = (
            bundle_id
            or f"{meta['image_encoder']['name']}+{meta['text_encoder']['name']}-{meta['image_encoder']['weights_sha256'][:6]}"
        )
        write_manifest(tmp, bid)
        if make_zip:
            with atomic_path(final) as zpath, zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for p in sorted(tmp.rglob("*")):
                    if p.is_file():
                        z.write(p, p.relative_to(tmp).as_posix())
            shutil.rmtree(tmp)
        else:
            publish_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def quantize_bundle(folder: Path, mode: str, cls_meta: dict | None, seg_meta: dict | None, config: dict) -> dict:
    """int8 dynamic quantization (``int8``: image and text graphs; ``int8-text``: the text graph
    only); measures what it changes on the fine-tuning test images (probabilities, AUROC, mask
    Dice, embeddings)."""
    graphs = {"int8": ("image", "text"), "int8-text": ("text",)}.get(mode)
    if graphs is None:
        raise UserError("--quantize takes int8 (image and text graphs) or int8-text (text graph only)")
    ref = {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # onnxruntime's quantizer logs every tensor on the root logger
    try:
        _quantize(folder, graphs, ref)
    finally:
        root.setLevel(level)
    report = measure_quantization(folder, ref, cls_meta, seg_meta, config, mode)
    for p in ref.values():
        p.unlink()
    return report


def _quantize(folder: Path, graphs, ref: dict) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in graphs:
        src = folder / f"{name}.onnx"
        ref[name] = folder / f"{name}.fp32.onnx"
        os.replace(src, ref[name])
        # per-channel weights with the reduced range keep report embeddings close (cosine >= 0.95 on
        # MiniLM, against 0.74 with per-tensor weights)
        quantize_dynamic(str(ref[name]), str(src), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def _text_cosine(folder: Path, ref_text: Path, texts: list[str], max_length: int) -> float:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
    tok.enable_truncation(max_length)
    a = ort.InferenceSession(str(ref_text), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(folder / "text.onnx"), providers=["CPUExecutionProvider"])
    worst = 1.0
    for t in texts:
        ids = np.array([tok.encode(t).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        ea, eb = a.run(None, feed)[1][0], b.run(None, feed)[1][0]
        worst = min(worst, float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb))))
    return worst


def _test_images(meta: dict | None, classes: list[str], limit: int = 200) -> tuple[list[str], np.ndarray | None]:
    """Test-split images of a fine-tuning run (and their labels for ``classes``)."""
    if not meta:
        return [], None
    import csv

    import yaml

    from core_model.training.downstream_data import load_labeled

    splits = Path(meta["_run"]) / "splits.csv"
    if not splits.exists():
        return [], None
    with open(splits, newline="") as f:
        test_ids = [row["id"] for row in csv.DictReader(f) if row["split"] == "test"]
    cfg = yaml.safe_load((Path(meta["_run"]) / "config.yaml").read_text())
    try:
        labeled = load_labeled(
            cfg["data"], "classification" if meta["kind"] == "classification_head" else "segmentation"
        )
    except UserError:
        return [], None
    by_id = {r.id: r for r in labeled.records}
    recs = [by_id[i] for i in test_ids[:limit] if i in by_id]
    y = np.array([[r.labels.get(c, np.nan) for c in classes] for r in recs], dtype=np.float64) if classes else None
    return [r.image_path for r in recs], y


def measure_quantization(folder: Path, ref: dict, cls_meta, seg_meta, config, mode: str = "int8") -> dict:
    import onnxruntime as ort

    from core_model.imaging.preprocess import PreprocessSpec, prepare_batch

    spec = PreprocessSpec.from_dict(config["preprocess"])
    paths, y = _test_images(cls_meta or seg_meta, config.get("classes") or [])
    if not paths:
        return {"mode": mode, "summary": "no test images available to measure the change"}
    x = prepare_batch(paths, spec)
    s_ref = ort.InferenceSession(str(ref.get("image", folder / "image.onnx")), providers=["CPUExecutionProvider"])
    s_q = ort.InferenceSession(str(folder / "image.onnx"), providers=["CPUExecutionProvider"])
    a = s_ref.run(None, {"pixel_values": x})
    b = s_q.run(None, {"pixel_values": x})
    out = {
        "mode": mode,
        "graphs": sorted(ref),
        "images": len(paths),
        "max_abs_probability_change": float(np.abs(a[0] - b[0]).max()) if a[0].size else None,
        "embedding_cosine_min": float(np.min(np.sum(a[4] * b[4], axis=1))),
    }
    if y is not None and config.get("task") != "multiclass":
        from core_model.metrics.classification import auroc

        out["auroc"] = {}
        for k, c in enumerate(config["classes"]):
            keep = ~np.isnan(y[:, k])
            before, _ = auroc(y[keep, k], a[0][keep, k])
            after, _ = auroc(y[keep, k], b[0][keep, k])
            out["auroc"][c] = {"fp32": before, "int8": after, "change": after - before}
    if config.get("mask_label"):
        pa, pb = a[2] > 0, b[2] > 0
        inter, tot = (pa & pb).sum(), pa.sum() + pb.sum()
        out["mask_agreement_dice"] = float(2 * inter / tot) if tot else 1.0
    size = {k: (folder / f"{k}.onnx").stat().st_size for k in ref}
    size_ref = {k: ref[k].stat().st_size for k in ref}
    out["size_bytes"] = {"fp32": size_ref, "int8": size}
    out["summary"] = (
        f"on {len(paths)} test images, probabilities change by at most {out['max_abs_probability_change']:.4f}"
        if out["max_abs_probability_change"] is not None
        else ""
    )
    if out.get("auroc"):
        worst = max(out["auroc"].values(), key=lambda v: abs(v["change"]) if v["change"] == v["change"] else 0)
        out["summary"] += f", AUROC changes by at most {abs(worst['change']):.4f}"
    if "mask_agreement_dice" in out:
        out["summary"] += f", masks agree with Dice {out['mask_agreement_dice']:.3f}"
    out["summary"] += f"; graphs {sum(size_ref.values()) / 2**20:.1f} -> {sum(size.values()) / 2**20:.1f} MiB"
    if "text" in ref:  # the text side: report embeddings of the bank before and after
        texts = [json.loads(line)["text"] for line in open(folder / "reports" / "reports.jsonl")][:200]
        if texts:
            out["report_embedding_cosine_min"] = _text_cosine(
                folder, ref["text"], texts, int(config["text"]["max_length"])
            )
            out["summary"] += f", report embeddings keep cosine >= {out['report_embedding_cosine_min']:.3f}"
    print(f"{mode} quantization: " + out["summary"])
    return out
