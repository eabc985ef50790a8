"""Downstream fine-tuning: frozen encoders + frozen Adaptor + a small trainable head.

Classification trains the paper's MLP head (or a linear probe) on the Adaptor's pooled image
features; segmentation trains a decoder on the Adaptor's patch tokens. The Adaptor's outputs are
computed in eval mode, so a prediction never depends on the rest of its batch; the chosen
epoch is the best on validation; thresholds and temperature are fitted on validation only.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core_model.errors import ConfigError, UserError
from core_model.features.cache import FeatureCache
from core_model.fileio import atomic_write_bytes, atomic_write_json, jsonable, sha256_file
from core_model.heads import SegDecoder, make_cls_head
from core_model.losses import seg_loss
from core_model.training.artifacts import code_version, load_adaptor
from core_model.training.batches import CachedPairs
from core_model.training.checkpoint import save_tensors
from core_model.training.config import CacheConfig, FinetuneTrainConfig, config_to_dict
from core_model.training.pipeline import ensure_pretrained
from core_model.training.tracking import tracker_for

log = logging.getLogger(__name__)

HEAD_FORMAT = 1


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ---- shared setup ------------------------------------------------------------------------------
def _start(cfg: dict, progress: bool):
    """Threads, device (deterministic on CPU), the pretrained Adaptor (built first if missing)."""
    t: FinetuneTrainConfig = cfg["train"]
    if t.threads:
        torch.set_num_threads(t.threads)
    device = _device(t.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    run = ensure_pretrained(cfg["pretrained"], cfg.get("pretrain_config"), progress)
    adaptor, _, meta = load_adaptor(run, device)
    return device, run, adaptor, meta


def cache_config_for(meta: dict, cfg: dict, *, input_size: int | None = None, patch_pool: int | None = None) -> dict:
    """A precompute config that reproduces the Adaptor's encoders and preprocessing."""
    pre = dict(meta["preprocess"])
    if input_size:
        pre["size"] = int(input_size)
    c = cfg["cache"]
    return {
        "data": cfg["data"],
        "encoders": {
            "image": meta["image_encoder"]["name"],
            "text": meta["text_encoder"]["name"],
            "text_max_length": meta.get("text_max_length", 112),
            "allow_download": False,
        },
        "preprocess": pre,
        "cache": CacheConfig(
            dir=c.dir,
            patch_pool=int(patch_pool or meta.get("patch_pool", 1)),
            image_tokens=meta["adaptor"]["mode"] in ("tokens", "identity"),
            text_tokens=True,
            batch_size=c.batch_size,
            workers=c.workers,
            shard_size=c.shard_size,
            device=c.device,
        ),
    }


def check_same_encoder(cache: FeatureCache, meta: dict) -> None:
    got = cache.manifest["image"]["encoder"]["weights_sha256"]
    want = meta["image_encoder"]["weights_sha256"]
    if got != want:
        raise UserError(
            f"the feature cache {cache.path} was built with other image-encoder weights than the "
            f"Adaptor ({got[:12]} vs {want[:12]}); use another cache folder"
        )


@torch.no_grad()
def adaptor_image_outputs(
    adaptor, pairs: CachedPairs, indices: np.ndarray, device, batch_size: int = 128, tokens: bool = False
):
    """Frozen Adaptor outputs for items: pooled features (N, d) and optionally patch tokens (N, P, d)."""
    adaptor.eval()
    feats, toks = [], []
    for b in range(0, len(indices), batch_size):
        batch = pairs.batch(indices[b : b + batch_size], device)
        out = adaptor.encode_image(batch["image_pooled"], batch.get("image_tokens"))
        feats.append(out.features.float().cpu())
        if tokens:
            toks.append(out.tokens.float().cpu())
    f = torch.cat(feats) if feats else torch.zeros(0)
    return f, (torch.cat(toks) if tokens and toks else None)


def _label_matrix(records, classes: list[str], task: str) -> np.ndarray:
    if task == "multiclass":
        y = np.full(len(records), -1, dtype=np.int64)
        for i, r in enumerate(records):
            hits = [k for k, c in enumerate(classes) if r.labels.get(c) == 1.0]
            if len(hits) == 1:
                y[i] = hits[0]
        return y
    y = np.full((len(records), len(classes)), np.nan, dtype=np.float32)
    for i, r in enumerate(records):
        for k, c in enumerate(classes):
            v = r.labels.get(c, math.nan)
            y[i, k] = v if v in (0.0, 1.0) else math.nan  # uncertain (-1) / missing -> ignored
    return y


def _write_csv(path: Path, header: list[str], rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


# ---- classification ----------------------------------------------------------------------------
def finetune_classification(cfg: dict, out: Path, progress: bool = True) -> dict:
    from core_model.metrics.classification import evaluate_classification
    from core_model.training.datasets import ensure_cache
    from core_model.training.downstream_data import load_labeled

    t: FinetuneTrainConfig = cfg["train"]
    device, run, adaptor, meta = _start(cfg, progress)
    labeled = load_labeled(cfg["data"], "classification", out)
    _write_splits(out, labeled)
    cache_cfg = cache_config_for(meta, cfg)
    cache = ensure_cache(cache_cfg, labeled.records, text=False, progress=progress)
    check_same_encoder(cache, meta)
    pairs = CachedPairs(cache, ram_limit_bytes=float(t.ram_limit_gb) * 1e9, text=False)

    records = labeled.records
    valid = cache.valid
    y = _label_matrix(records, labeled.classes, labeled.task)
    usable = valid & ((y >= 0) if labeled.task == "multiclass" else ~np.all(np.isnan(y), axis=1))
    idx = {s: np.array([i for i in labeled.by_split(s) if usable[i]], dtype=np.int64) for s in ("train", "val", "test")}
    for s in ("train", "val", "test"):
        if len(idx[s]) == 0:
            raise UserError(f"no usable {s} images with labels {labeled.classes} ({labeled.dataset})")
    _warn_overlap(records, labeled.dataset)
    feats, _ = adaptor_image_outputs(adaptor, pairs, np.arange(len(records)), device)
    x = {s: feats[idx[s]].to(device) for s in idx}
    multiclass = labeled.task == "multiclass"
    yt = {s: torch.from_numpy(y[idx[s]]).to(device) for s in idx}
    n_out = len(labeled.classes)

    torch.manual_seed(t.seed)
    head = make_cls_head(cfg["head"]["kind"], feats.shape[1], n_out, float(cfg["head"].get("dropout", 0.2))).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))
    pos_weight, class_weight = _class_weights(t.class_weights, y[idx["train"]], multiclass, n_out, device)
    best = {"score": -math.inf, "state": None, "epoch": 0}
    history = []
    tracker = tracker_for(t, out, "finetune-cls", config_to_dict(cfg))
    bs = t.batch_size
    n_train = len(idx["train"])
    t0 = time.perf_counter()
    for epoch in range(t.epochs):
        head.train()
        g = torch.Generator().manual_seed(t.seed * 1000 + epoch)
        perm = torch.randperm(n_train, generator=g)
        losses = []
        for b in range(0, n_train, bs):
            sel = perm[b : b + bs]
            if len(sel) < 2 and isinstance(head, torch.nn.Module) and cfg["head"]["kind"] == "mlp":
                continue  # BatchNorm needs two samples
            logits = head(x["train"][sel])
            loss = _cls_loss(logits, yt["train"][sel], multiclass, pos_weight, class_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        val_logits = _predict(head, x["val"])
        score = _selection_score(y[idx["val"]], val_logits, multiclass)
        history.append(
            {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else math.nan, "val_score": score}
        )
        tracker.log(epoch + 1, history[-1], "finetune-cls/")
        if score > best["score"]:
            best = {
                "score": score,
                "state": {k: v.detach().clone() for k, v in head.state_dict().items()},
                "epoch": epoch + 1,
            }
    head.load_state_dict(best["state"])
    seconds = time.perf_counter() - t0
    logits = {s: _predict(head, x[s]) for s in idx}
    ev = cfg["eval"]
    metrics = evaluate_classification(
        y[idx["test"]],
        logits["test"],
        class_names=labeled.classes,
        task=labeled.task,
        y_val=y[idx["val"]],
        logits_val=logits["val"],
        threshold_method=ev.get("threshold", "youden"),
        n_boot=int(ev.get("bootstrap", 1000)),
        seed=t.seed,
    )
    tracker.log(t.epochs, {**metrics, "auroc_macro": metrics.get("auroc_macro", {}).get("auroc")}, "test/")
    tracker.close()
    head_meta = {
        "format": HEAD_FORMAT,
        "kind": "classification_head",
        "research_use_only": True,
        "head": {
            "kind": cfg["head"]["kind"],
            "in_dim": int(feats.shape[1]),
            "outputs": n_out,
            "dropout": float(cfg["head"].get("dropout", 0.2)),
        },
        "task": labeled.task,
        "classes": labeled.classes,
        "thresholds": metrics["thresholds"],
        "temperature": metrics["temperature"],
        "adaptor_run": str(run.resolve()),
        "adaptor_sha256": sha256_file(run / "adaptor.safetensors"),
        "preprocess": meta["preprocess"],
        "dataset": labeled.dataset,
        "fraction": labeled.fraction,
        "split_protocol": labeled.split.protocol,
        "best_epoch": best["epoch"],
        "code_version": code_version(),
    }
    save_tensors(out / "head.safetensors", head.state_dict())
    atomic_write_json(out / "head.json", jsonable(head_meta))
    test_records = [records[i] for i in idx["test"]]
    probs = _probs(logits["test"], metrics["temperature"], multiclass)
    _write_csv(
        out / "predictions_test.csv",
        ["id", *[f"p_{c}" for c in labeled.classes], *[f"y_{c}" for c in labeled.classes]],
        [
            [r.id, *[f"{p:.6f}" for p in pr], *_ys(y[i], multiclass, n_out)]
            for r, pr, i in zip(test_records, probs, idx["test"])
        ],
    )
    result = {
        "command": "finetune-cls",
        "research_use_only": True,
        "dataset": labeled.dataset,
        "task": labeled.task,
        "classes": labeled.classes,
        "fraction": labeled.fraction,
        "head": cfg["head"]["kind"],
        "split": _split_summary(labeled, idx, records),
        "skipped": labeled.result.skip_counts() if labeled.result is not None else {},
        "best_epoch": best["epoch"],
        "train_seconds": seconds,
        "history": history,
        "metrics": metrics,
        "adaptor_run": str(run),
    }
    atomic_write_json(out / "metrics.json", jsonable(result))
    _write_cls_report(out, result, y[idx["test"]], probs, labeled)
    return result


def _ys(row, multiclass: bool, n: int) -> list[str]:
    if multiclass:
        return ["1" if k == int(row) else "0" for k in range(n)]
    return ["" if (isinstance(v, float) and math.isnan(v)) else str(int(v)) for v in row]


def _class_weights(mode: str, y_train: np.ndarray, multiclass: bool, n_out: int, device):
    if mode in (None, "none"):
        return None, None
    if mode != "balanced":
        raise ConfigError("train.class_weights must be none or balanced")
    if multiclass:
        counts = np.bincount(y_train[y_train >= 0], minlength=n_out).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1) / n_out
        return None, torch.tensor(w, dtype=torch.float32, device=device)
    pos = np.nansum(y_train, axis=0)
    neg = np.sum(~np.isnan(y_train), axis=0) - pos
    return torch.tensor(neg / np.maximum(pos, 1), dtype=torch.float32, device=device), None


def _cls_loss(logits, target, multiclass: bool, pos_weight, class_weight):
    if multiclass:
        return F.cross_entropy(logits, target, weight=class_weight)
    known = ~torch.isnan(target)
    loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none", pos_weight=pos_weight)
    return (loss * known).sum() / known.sum().clamp_min(1)


@torch.no_grad()
def _predict(head, x: torch.Tensor) -> np.ndarray:
    head.eval()
    return head(x).float().cpu().numpy()


def _probs(logits: np.ndarray, temperature: float, multiclass: bool) -> np.ndarray:
    from core_model.metrics.classification import apply_temperature

    return apply_temperature(logits, temperature, multiclass=multiclass)


def _selection_score(y: np.ndarray, logits: np.ndarray, multiclass: bool) -> float:
    """Validation score that picks the epoch: macro AUROC (top-1 accuracy for multi-class)."""
    from core_model.metrics.classification import auroc_per_class, top1_accuracy

    if multiclass:
        return top1_accuracy(y, logits)
    values, _ = auroc_per_class(y, logits)
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else -math.inf


def patient_overlap(records) -> dict:
    """Patients whose images fall in more than one split (``splits.leaking_groups``), per pair of
    splits: train/val, train/test (for COVIDx: the official test file) and val/test."""
    from core_model.data.splits import leaking_groups

    mapping = {r.id: r.split for r in records if r.split}
    groups = {r.id: r.patient_id for r in records if r.patient_id}
    if not groups:
        return {"checked": False, "reason": "the records carry no patient ids"}
    leaks = leaking_groups(mapping, groups)
    shared = {
        f"{a}_{b}": sum(1 for splits in leaks.values() if {a, b} <= splits)
        for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
    }
    return {
        "checked": True,
        "patients": len(set(groups.values())),
        "shared_patients": shared,
        "leaks": bool(leaks),
    }


def _warn_overlap(records, dataset: str) -> None:
    ov = patient_overlap(records)
    if ov.get("leaks"):
        print(f"WARNING: {dataset}: patients shared between splits {ov['shared_patients']} (see metrics.json split)")


def _split_summary(labeled, idx: dict, records) -> dict:
    """The ``split`` entry of a fine-tuning run's metrics: protocol, sizes, notes and the patients
    shared between splits (counts only, never the ids)."""
    return {
        "protocol": labeled.split.protocol,
        "protocol_id": labeled.split.protocol_id,
        "sizes": {s: int(len(v)) for s, v in idx.items()},
        "notes": labeled.split.notes,
        "patient_overlap": patient_overlap(records),
    }


def _write_splits(out: Path, labeled) -> None:
    from core_model.data.splits import write_split_file

    write_split_file(out / "splits.csv", {r.id: r.split for r in labeled.records})


def _write_cls_report(out: Path, result: dict, y_test, probs, labeled) -> None:
    from core_model.results.runs import write_classification_report

    write_classification_report(out, result, y_test, probs, labeled.classes, labeled.task)


# ---- segmentation ------------------------------------------------------------------------------
def _mask_for(record, spec, size: int) -> np.ndarray:
    from PIL import Image

    from core_model.imaging.preprocess import to_square

    if not record.mask_path:
        return np.zeros((size, size), dtype=bool)
    with Image.open(record.mask_path) as im:
        m = np.asarray(im.convert("L")) > 127
    return to_square(m.astype(np.uint8) * 255, spec, resample=Image.NEAREST) > 127


def finetune_segmentation(cfg: dict, out: Path, progress: bool = True) -> dict:
    from core_model.imaging.preprocess import PreprocessSpec
    from core_model.metrics.segmentation import SegmentationAccumulator
    from core_model.training.datasets import ensure_cache
    from core_model.training.downstream_data import load_labeled

    t: FinetuneTrainConfig = cfg["train"]
    device, run, adaptor, meta = _start(cfg, progress)
    if adaptor.config.mode == "pooled":
        raise UserError("segmentation needs a tokens Adaptor (the paper preset has no patch tokens)")
    labeled = load_labeled(cfg["data"], "segmentation", out)
    _write_splits(out, labeled)
    size = int(cfg.get("input_size") or meta["preprocess"]["size"])
    if not 112 <= size <= 1024:
        raise ConfigError("input_size must be between 112 and 1024 pixels")
    pool = cfg["cache"].patch_pool or 1
    cache_cfg = cache_config_for(meta, cfg, input_size=size, patch_pool=pool)
    cache = ensure_cache(cache_cfg, labeled.records, text=False, progress=progress)
    check_same_encoder(cache, meta)
    grid = tuple(cache.manifest["image"]["grid"])
    spec = PreprocessSpec.from_dict(cache.manifest["image"]["preprocess"])
    pairs = CachedPairs(cache, ram_limit_bytes=float(t.ram_limit_gb) * 1e9, text=False)
    records = labeled.records
    idx = {
        s: np.array([i for i in labeled.by_split(s) if cache.valid[i]], dtype=np.int64)
        for s in ("train", "val", "test")
    }
    for s in idx:
        if len(idx[s]) == 0:
            raise UserError(f"no usable {s} images for segmentation ({labeled.dataset})")
    _warn_overlap(records, labeled.dataset)
    masks = np.zeros((len(records), size, size), dtype=bool)
    for i in np.concatenate(list(idx.values())):
        masks[i] = _mask_for(records[i], spec, size)

    torch.manual_seed(t.seed)
    decoder = SegDecoder(
        adaptor.config.dim,
        grid,
        size,
        cfg["head"]["kind"] if cfg["head"]["kind"] in ("progressive", "light") else "progressive",
    ).to(device)
    opt = torch.optim.AdamW(decoder.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))
    bs = t.batch_size
    thr = float(cfg["eval"].get("seg_threshold", 0.5))

    def tokens_of(sel: np.ndarray) -> torch.Tensor:
        batch = pairs.batch(sel, device)
        with torch.no_grad():
            return adaptor.encode_image(batch["image_pooled"], batch.get("image_tokens")).tokens.float()

    def predict(sel: np.ndarray) -> np.ndarray:
        decoder.eval()
        with torch.no_grad():
            return torch.sigmoid(decoder(tokens_of(sel)))[:, 0].float().cpu().numpy()

    def evaluate(split: str):
        acc = SegmentationAccumulator(thr)
        for b in range(0, len(idx[split]), bs):
            sel = idx[split][b : b + bs]
            acc.update(predict(sel), masks[sel])
        return acc

    best = {"score": -math.inf, "state": None, "epoch": 0}
    history = []
    tracker = tracker_for(t, out, "finetune-seg", config_to_dict(cfg))
    t0 = time.perf_counter()
    n_train = len(idx["train"])
    for epoch in range(t.epochs):
        decoder.train()
        g = torch.Generator().manual_seed(t.seed * 1000 + epoch)
        perm = idx["train"][torch.randperm(n_train, generator=g).numpy()]
        losses = []
        for b in range(0, n_train, bs):
            sel = perm[b : b + bs]
            if len(sel) < 2:
                continue
            target = torch.from_numpy(masks[sel]).float().unsqueeze(1).to(device)
            loss = seg_loss(decoder(tokens_of(sel)), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        val = evaluate("val").result()
        score = val["dice_positive"] if val["dice_positive"] == val["dice_positive"] else val["dice_mgca"]
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else math.nan,
                "val_dice_positive": val["dice_positive"],
                "val_dice_mgca": val["dice_mgca"],
            }
        )
        tracker.log(epoch + 1, history[-1], "finetune-seg/")
        if progress:
            print(
                f"epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f} | val Dice (positive) "
                f"{val['dice_positive']:.3f} | val Dice (MGCA) {val['dice_mgca']:.3f}"
            )
        if score > best["score"]:
            best = {
                "score": score,
                "state": {k: v.detach().clone() for k, v in decoder.state_dict().items()},
                "epoch": epoch + 1,
            }
    decoder.load_state_dict(best["state"])
    seconds = time.perf_counter() - t0
    val_metrics = evaluate("val").result()
    test_acc = evaluate("test")
    test_metrics = test_acc.result()
    from core_model.metrics.segmentation import dice_bootstrap

    test_metrics["bootstrap"] = dice_bootstrap(
        *test_acc.counts(), n_boot=int(cfg["eval"].get("bootstrap", 1000)), seed=t.seed
    )
    tracker.log(t.epochs, test_metrics, "test/")
    tracker.close()
    if test_metrics.get("warning"):
        print("WARNING: " + test_metrics["warning"])
    head_meta = {
        "format": HEAD_FORMAT,
        "kind": "segmentation_head",
        "research_use_only": True,
        "head": {"kind": decoder.kind, "in_dim": adaptor.config.dim, "grid": list(grid), "input_size": size},
        "label": labeled.classes[0],
        "threshold": thr,
        "adaptor_run": str(run.resolve()),
        "adaptor_sha256": sha256_file(run / "adaptor.safetensors"),
        "preprocess": spec.to_dict(),
        "patch_pool": int(pool),
        "dataset": labeled.dataset,
        "fraction": labeled.fraction,
        "split_protocol": labeled.split.protocol,
        "best_epoch": best["epoch"],
        "code_version": code_version(),
    }
    save_tensors(out / "head.safetensors", decoder.state_dict())
    atomic_write_json(out / "head.json", jsonable(head_meta))
    inter, pred_px, true_px = test_acc.counts()
    _write_csv(
        out / "per_image_test.csv",
        ["id", "intersection_px", "predicted_px", "true_px"],
        [[records[i].id, int(a), int(b), int(c)] for i, a, b, c in zip(idx["test"], inter, pred_px, true_px)],
    )
    result = {
        "command": "finetune-seg",
        "research_use_only": True,
        "dataset": labeled.dataset,
        "label": labeled.classes[0],
        "fraction": labeled.fraction,
        "decoder": decoder.kind,
        "input_size": size,
        "grid": list(grid),
        "split": _split_summary(labeled, idx, records),
        "best_epoch": best["epoch"],
        "train_seconds": seconds,
        "history": history,
        "metrics": test_metrics,
        "val_metrics": val_metrics,
        "adaptor_run": str(run),
    }
    atomic_write_json(out / "metrics.json", jsonable(result))
    _write_seg_report(
        out, result, records, idx["test"], test_acc, predict, masks, spec, int(cfg["eval"].get("examples", 8))
    )
    return result


def _write_seg_report(out: Path, result: dict, records, test_idx, acc, predict, masks, spec, n: int) -> None:
    from core_model.imaging.preprocess import load_display, to_square
    from core_model.results.plots import pick_examples
    from core_model.results.runs import write_segmentation_report

    inter, pred, true = acc.counts()
    denom = pred + true
    dice = np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)
    picks = pick_examples(dice, true > 0, n=n, pred_area=pred, seed=0)
    sel = test_idx[picks]
    probs = predict(sel) if len(sel) else []
    images = [to_square(load_display(records[i].image_path), spec) for i in sel]
    write_segmentation_report(out, result, images, [masks[i] for i in sel], list(probs), [records[i].id for i in sel])
