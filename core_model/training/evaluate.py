"""`adaptor-train evaluate`: score a checkpoint on a dataset.

Tasks
    classification  a fine-tuning run's head, with its stored temperature and operating thresholds
                    (nothing is refitted on the data being scored)
    segmentation    a segmentation run's decoder; the three Dice scores, IoU, the all-empty baseline
    zeroshot        a pretrained Adaptor alone: prompt pairs per class (positive / negative wording)
    retrieval       a pretrained Adaptor alone: image <-> report Recall@K and Precision@K by finding
    grounding       a pretrained Adaptor alone, on images with lesion masks: the pointing game
                    (does the heatmap's peak fall on the lesion?) for the finding's prompt and for
                    the image's own report, with the chance level (share of patches on the lesion)
    domain          an exported bundle's domain guard (see :mod:`core_model.training.evaluate_domain`)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core_model.errors import ConfigError, UserError
from core_model.fileio import atomic_write_json, jsonable
from core_model.training.artifacts import load_adaptor
from core_model.training.batches import CachedPairs
from core_model.training.finetune import (
    _device,
    _label_matrix,
    adaptor_image_outputs,
    cache_config_for,
    check_same_encoder,
)

DEFAULT_PROMPTS = {
    "normal": (
        ["Normal chest radiograph.", "The lungs are clear.", "No acute cardiopulmonary process."],
        ["Abnormal chest radiograph.", "There is an acute abnormality in the lungs."],
    ),
    "pneumonia": (
        ["Focal consolidation consistent with pneumonia.", "There is pneumonia."],
        ["No focal consolidation.", "No evidence of pneumonia."],
    ),
    "covid19": (
        ["Bilateral peripheral opacities consistent with COVID-19 pneumonia.", "Multifocal ground glass opacities."],
        ["No bilateral opacities.", "The lungs are clear."],
    ),
    "pneumothorax": (
        ["There is a pneumothorax.", "Visible pleural line with absent lung markings."],
        ["No pneumothorax.", "There is no pneumothorax."],
    ),
}


def _run_kind(run: Path) -> str:
    if (run / "head.json").exists():
        return json.loads((run / "head.json").read_text())["kind"]
    if (run / "adaptor.safetensors").exists():
        return "adaptor"
    raise UserError(f"{run} is neither a pretraining run (adaptor.safetensors) nor a fine-tuning run (head.json)")


def _subset(labeled, split: str) -> list[int]:
    if split == "all":
        return list(range(len(labeled.records)))
    return labeled.by_split(split)


def evaluate(
    run: Path,
    task: str,
    data_cfg: dict | None,
    out: Path,
    *,
    split: str = "test",
    prompts: dict | None = None,
    progress: bool = True,
    n_boot: int = 1000,
) -> dict:
    from core_model.training.datasets import ensure_cache
    from core_model.training.downstream_data import load_labeled

    run = Path(run)
    if task == "domain":
        from core_model.training.evaluate_domain import evaluate_domain

        return evaluate_domain(run, data_cfg, out, split=split)
    kind = _run_kind(run)
    if task == "auto":
        task = {"classification_head": "classification", "segmentation_head": "segmentation"}.get(kind, "retrieval")
    head_meta = json.loads((run / "head.json").read_text()) if kind != "adaptor" else None
    adaptor_run = Path(head_meta["adaptor_run"]) if head_meta else run
    if task in ("classification", "segmentation") and not head_meta:
        raise UserError(f"{task} needs a fine-tuning run (with head.json); {run} is a pretraining run")
    device = _device("auto")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    adaptor, loss_fn, meta = load_adaptor(adaptor_run, device)
    if data_cfg is None:
        cfg_file = run / "config.yaml"
        if not cfg_file.exists():
            raise ConfigError(f"give the data to evaluate on (--config); {run} has no config.yaml to take it from")
        from core_model.training.config import read_yaml_mapping

        data_cfg = read_yaml_mapping(cfg_file).get("data")
        if data_cfg is None:
            raise ConfigError(f"{cfg_file} has no data section")
    from core_model.training.config import FINETUNE_DEFAULTS

    data = {**FINETUNE_DEFAULTS["data"], **data_cfg}
    if task == "classification":
        data["classes"] = head_meta["classes"]
        data["task"] = head_meta["task"]
    labeled = load_labeled(data, "segmentation" if task == "segmentation" else "classification", out)
    chosen = _subset(labeled, split)
    if not chosen:
        raise UserError(f"no records in the {split!r} split of {labeled.dataset}")
    records = [labeled.records[i] for i in chosen]
    cfg = {"data": data, "cache": FINETUNE_DEFAULTS["cache"]}
    size = None
    pool = None
    if task == "segmentation":
        size = int(head_meta["head"]["input_size"])
        pool = int(head_meta.get("patch_pool", 1))
    cache_cfg = cache_config_for(meta, cfg, input_size=size, patch_pool=pool)
    want_text = task in ("retrieval", "grounding")
    cache = ensure_cache(cache_cfg, records, text=want_text, progress=progress)
    check_same_encoder(cache, meta)
    pairs = CachedPairs(cache, text=want_text)
    ok = np.flatnonzero(cache.valid)
    result: dict = {
        "command": "evaluate",
        "task": task,
        "research_use_only": True,
        "run": str(run),
        "dataset": labeled.dataset,
        "split": split,
        "n": int(len(ok)),
        "skipped": int(len(records) - len(ok)),
    }

    if task == "classification":
        result["metrics"] = _eval_classification(run, head_meta, adaptor, pairs, records, ok, device, n_boot)
    elif task == "segmentation":
        result["metrics"] = _eval_segmentation(run, head_meta, adaptor, pairs, cache, records, ok, device)
    elif task == "zeroshot":
        result["metrics"] = _eval_zeroshot(
            adaptor, loss_fn, meta, pairs, records, ok, labeled.classes, prompts, device, n_boot
        )
    elif task == "retrieval":
        result["metrics"] = _eval_retrieval(adaptor, pairs, records, ok, device, n_boot, out)
    elif task == "grounding":
        train = [labeled.records[i] for i in labeled.by_split("train")]
        result["metrics"] = _eval_grounding(
            adaptor, meta, pairs, cache, records, ok, prompts, device, n_boot=n_boot, train_records=train
        )
    else:
        raise ConfigError(f"unknown task {task!r}: classification, segmentation, zeroshot, retrieval or grounding")
    atomic_write_json(out / "metrics.json", jsonable(result))
    _write_report(out, result, labeled)
    return result


def _eval_classification(run, head_meta, adaptor, pairs, records, ok, device, n_boot) -> dict:
    from safetensors.torch import load_file

    from core_model.heads import make_cls_head
    from core_model.metrics.classification import apply_temperature, evaluate_classification, operating_point

    h = head_meta["head"]
    head = make_cls_head(h["kind"], h["in_dim"], h["outputs"], h.get("dropout", 0.2)).to(device)
    head.load_state_dict(load_file(str(run / "head.safetensors")))
    head.eval()
    feats, _ = adaptor_image_outputs(adaptor, pairs, ok, device)
    with torch.no_grad():
        logits = head(feats.to(device)).float().cpu().numpy()
    classes, task = head_meta["classes"], head_meta["task"]
    y = _label_matrix([records[i] for i in ok], classes, task)
    multiclass = task == "multiclass"
    t = float(head_meta.get("temperature", 1.0))
    m = evaluate_classification(
        y, logits / t, class_names=classes, task=task, calibrate=False, threshold_method=0.5, n_boot=n_boot
    )
    probs = apply_temperature(logits, t, multiclass=multiclass)
    yy = np.eye(len(classes))[y] if multiclass else y
    for k, c in enumerate(classes):
        m["per_class"][c]["operating_point"] = operating_point(yy[:, k], probs[:, k], head_meta["thresholds"][c])
    m["thresholds"] = head_meta["thresholds"]
    m["temperature"] = t
    m["note"] = "temperature and thresholds are the run's own (fitted on its validation split), not refitted here"
    return m


def _eval_segmentation(run, head_meta, adaptor, pairs, cache, records, ok, device) -> dict:
    from safetensors.torch import load_file

    from core_model.heads import SegDecoder
    from core_model.imaging.preprocess import PreprocessSpec
    from core_model.metrics.segmentation import SegmentationAccumulator
    from core_model.training.finetune import _mask_for

    h = head_meta["head"]
    dec = SegDecoder(h["in_dim"], tuple(h["grid"]), int(h["input_size"]), h["kind"]).to(device)
    dec.load_state_dict(load_file(str(run / "head.safetensors")))
    dec.eval()
    spec = PreprocessSpec.from_dict(cache.manifest["image"]["preprocess"])
    acc = SegmentationAccumulator(float(head_meta.get("threshold", 0.5)))
    for b in range(0, len(ok), 32):
        sel = ok[b : b + 32]
        _, tokens = adaptor_image_outputs(adaptor, pairs, sel, device, tokens=True)
        with torch.no_grad():
            prob = torch.sigmoid(dec(tokens.to(device)))[:, 0].cpu().numpy()
        acc.update(prob, np.stack([_mask_for(records[i], spec, int(h["input_size"])) for i in sel]))
    return acc.result()


@torch.no_grad()
def embed_prompts(adaptor, meta: dict, texts: list[str], device) -> np.ndarray:
    from core_model.encoders import create_text_encoder

    enc = create_text_encoder(meta["text_encoder"]["name"], max_length=int(meta.get("text_max_length", 112)))
    if enc.weights_sha256 != meta["text_encoder"]["weights_sha256"]:
        raise UserError("the text encoder available here has other weights than the Adaptor was trained with")
    enc.to(device)
    t = enc.tokenize(texts)
    ids, mask = t["input_ids"].to(device), t["attention_mask"].to(device)
    pooled, tokens = enc(ids, mask)
    return adaptor.encode_text(pooled, tokens, mask.bool()).pooled.float().cpu().numpy()


def _eval_zeroshot(adaptor, loss_fn, meta, pairs, records, ok, classes, prompts, device, n_boot) -> dict:
    from core_model.metrics.zeroshot import zero_shot_evaluate

    prompts = prompts or DEFAULT_PROMPTS
    missing = [c for c in classes if c not in prompts]
    if missing:
        raise ConfigError(
            f"no prompts for {missing}; give a prompts file (YAML: class: [[positive...], [negative...]])"
        )
    feats, _ = adaptor_image_outputs(adaptor, pairs, ok, device)
    img = F.normalize(feats, dim=-1).numpy()
    emb = {}
    for c in classes:
        pos, neg = prompts[c]
        e = embed_prompts(adaptor, meta, list(pos) + list(neg), device)
        emb[c] = (e[: len(pos)], e[len(pos) :])
    y = _label_matrix([records[i] for i in ok], classes, "multilabel")
    tau = float(loss_fn.global_nce.temperature)
    out = zero_shot_evaluate(img, emb, y, tau=tau, n_boot=n_boot)
    scores = out.pop("scores")
    single = np.nansum(y == 1, axis=1) == 1
    if len(classes) > 1 and single.all():  # one finding per image (CheXpert 5x200, COVIDx): top-1 too
        from core_model.metrics.bootstrap import accuracy_ci

        ci = accuracy_ci(np.nanargmax(y, axis=1), scores, n_boot=n_boot, seed=0)
        out["accuracy"] = ci["value"]
        out["accuracy_ci"] = ci
        out["accuracy_note"] = "top-1 over the classes' positive-vs-negative scores; each image has one class"
    out["prompt_set"] = getattr(prompts, "name", "default")
    out["prompts_file"] = getattr(prompts, "source", None)
    out["prompts"] = {c: {"positive": list(prompts[c][0]), "negative": list(prompts[c][1])} for c in classes}
    out["temperature"] = tau
    return out


def _eval_retrieval(adaptor, pairs, records, ok, device, n_boot: int = 1000, out: Path | None = None) -> dict:
    """Recall@K / Precision@K by finding with bootstrap intervals over the queries; the
    per-query values go to ``per_query_test.csv`` (a protocol's cells resample and pair them)."""
    from core_model.metrics.retrieval import per_query_hits, retrieval_metrics
    from core_model.training.finetune import _write_csv
    from core_model.training.pretrain import embed

    if adaptor.config.mode == "identity":
        raise UserError(
            "retrieval needs an Adaptor: without one (adaptor.preset=none) images and reports are not in one space"
        )
    img, txt = embed(adaptor, pairs, ok, 256, device)
    labels = np.array([records[i].finding or "" for i in ok], dtype=object)
    labels = labels if any(labels) else None
    m = retrieval_metrics(img, txt, labels=labels, n_boot=n_boot)
    if out is not None:
        hits = per_query_hits(img, txt, labels)
        names = list(hits)
        _write_csv(
            out / "per_query_test.csv",
            ["id", *names],
            [
                [records[i].id, *("" if np.isnan(hits[k][j]) else f"{hits[k][j]:.6g}" for k in names)]
                for j, i in enumerate(ok)
            ],
        )
    return m


@torch.no_grad()
def _eval_grounding(
    adaptor,
    meta,
    pairs,
    cache,
    records,
    ok,
    prompts,
    device,
    hit_share: float = 0.1,
    *,
    n_boot: int = 1000,
    train_records=(),
) -> dict:
    """Pointing game on the patch grid: a hit when the heatmap's peak patch has >= 10 % lesion;
    beside it the positional prior (the most frequent training lesion patch, see
    :func:`positional_prior`) and chance, each with a 95 % bootstrap interval, and the paired
    bootstrap of the prompt's pointing game minus the prior's."""
    from core_model.encoders import create_text_encoder
    from core_model.imaging.preprocess import PreprocessSpec
    from core_model.metrics.bootstrap import mean_ci, paired_bootstrap
    from core_model.training.grounding import lesion_cells, positional_prior

    if adaptor.cross is None:
        raise UserError("grounding needs a tokens Adaptor (the paper preset has no heatmaps)")
    prompts = prompts or DEFAULT_PROMPTS
    enc = create_text_encoder(meta["text_encoder"]["name"], max_length=int(meta.get("text_max_length", 112))).to(device)
    special = set(enc.tokenizer.all_special_ids)
    spec = PreprocessSpec.from_dict(cache.manifest["image"]["preprocess"])
    rows, cols = tuple(cache.manifest["image"]["grid"])
    prior = positional_prior(train_records, set(prompts), spec, rows, cols, hit_share)
    hits: dict[str, dict[str, list]] = {}
    prompt_words: dict[str, tuple] = {}  # finding -> its prompt's (words, weights), encoded once
    chosen = [int(i) for i in ok if records[i].lesion_mask_path and records[i].finding in prompts]
    for start in range(0, len(chosen), 64):
        part = chosen[start : start + 64]
        batch = pairs.batch(part, device)
        image = adaptor.encode_image(batch["image_pooled"], batch.get("image_tokens"))
        reports = adaptor.encode_text(batch["text_pooled"], batch["text_tokens"], batch["text_mask"])
        ids = batch["text_ids"]
        report_w = torch.tensor(
            [[0.0 if int(x) in special else 1.0 for x in row] for row in ids.tolist()], device=device
        )
        report_heat = adaptor.heatmap(image, reports, report_w).reshape(len(part), rows, cols).cpu().numpy()
        for k, i in enumerate(part):
            r = records[i]
            if r.finding not in prompt_words:
                t = enc.tokenize([prompts[r.finding][0][0]])
                pid, pmask = t["input_ids"].to(device), t["attention_mask"].to(device)
                pooled, tokens = enc(pid, pmask)
                w = torch.tensor([[0.0 if int(x) in special else 1.0 for x in pid[0]]], device=device)
                prompt_words[r.finding] = (adaptor.encode_text(pooled, tokens, pmask.bool()), w)
            words, w = prompt_words[r.finding]
            one = type(image)(image.pooled[k : k + 1], None, image.features[k : k + 1], image.regions[k : k + 1])
            heat_p = adaptor.heatmap(one, words, w)[0].reshape(rows, cols).cpu().numpy()
            cell = lesion_cells(r.lesion_mask_path, spec, rows, cols, hit_share)
            entry = hits.setdefault(r.finding, {"prompt": [], "report": [], "chance": [], "prior": []})
            if r.finding in prior:
                entry["prior"].append(bool(cell[prior[r.finding][0], prior[r.finding][1]]))
            for kind, heat in (("prompt", heat_p), ("report", report_heat[k])):
                y, x = np.unravel_index(int(heat.argmax()), heat.shape)
                entry[kind].append(bool(cell[y, x]))
            entry["chance"].append(float(cell.mean()))
    if not hits:
        raise UserError("grounding needs images with lesion masks (a 'lesion_mask' column, e.g. phantoms)")

    def entry(f: str, v: dict) -> dict:
        prompt = np.asarray(v["prompt"], dtype=np.float64)
        e = {
            "n": len(v["chance"]),
            "pointing_game_prompt": float(prompt.mean()),
            "pointing_game_prompt_ci": mean_ci(prompt, n_boot=n_boot, seed=0),
            "pointing_game_report": float(np.mean(v["report"])),
            "pointing_game_report_ci": mean_ci(v["report"], n_boot=n_boot, seed=0),
            "chance": float(np.mean(v["chance"])),
            "prompt": prompts[f][0][0],
            "positional_prior": None,
        }
        if len(v["prior"]) == len(prompt):
            pr = np.asarray(v["prior"], dtype=np.float64)
            e["positional_prior"] = float(pr.mean())
            e["positional_prior_ci"] = mean_ci(pr, n_boot=n_boot, seed=0)
            e["positional_prior_cell"] = list(prior[f])
            e["prompt_minus_prior"] = paired_bootstrap(
                lambda i: prompt[i].mean(), lambda i: pr[i].mean(), len(pr), n_boot=n_boot, seed=1
            )
        return e

    return {
        "hit_share": hit_share,
        "grid": [rows, cols],
        "positional_prior": "a constant map peaking at the patch most often inside a lesion in the training masks",
        "per_finding": {f: entry(f, v) for f, v in sorted(hits.items())},
    }


def _write_report(out: Path, result: dict, labeled) -> None:
    from core_model.results.markdown import write_report

    m = result["metrics"]
    if result["task"] == "grounding":
        from core_model.fileio import atomic_write_bytes

        lines = [
            f"# Grounding (pointing game): {result['dataset']}, {result['split']} split",
            "",
            "**Research use only - not for diagnosis.**",
            "",
            "| finding | images | prompt hit % [95 % CI] | own report hit % | positional prior % [95 % CI] "
            "| prompt - prior [95 % CI] | chance % | prompt |",
            "|---|---|---|---|---|---|---|---|",
        ]

        def pct(ci: dict | None) -> str:
            if not ci:
                return "n/a"
            return f"{100 * ci['value']:.1f} [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"

        for f, e in m["per_finding"].items():
            d = e.get("prompt_minus_prior")
            diff = (
                "n/a" if not d else f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]"
            )
            lines.append(
                f"| {f} | {e['n']} | {pct(e['pointing_game_prompt_ci'])} | {100 * e['pointing_game_report']:.1f} "
                f"| {pct(e.get('positional_prior_ci'))} | {diff} | {100 * e['chance']:.1f} | {e['prompt']} |"
            )
        lines += [
            "",
            f"A hit: the heatmap's peak patch ({m['grid'][0]}x{m['grid'][1]} grid) holds at least "
            f"{100 * m['hit_share']:.0f} % lesion. Chance: the share of such patches. Positional prior: "
            "a constant map at the patch most often inside a lesion in the training split's masks (the "
            "baseline to beat). Intervals: 95 % percentile bootstrap over the images.",
            "",
        ]
        atomic_write_bytes(out / "report.md", "\n".join(lines).encode())
        return
    kwargs = {result["task"]: m}
    write_report(
        out / "report.md",
        title=f"Evaluation ({result['task']}): {result['dataset']}, {result['split']} split",
        dataset=result["dataset"],
        protocol=labeled.split.protocol_id,
        fraction=labeled.fraction,
        split_sizes={s: len(labeled.by_split(s)) for s in ("train", "val", "test")},
        run_info={"checkpoint": result["run"], "images scored": result["n"]},
        **kwargs,
    )


PROMPTS_DIR = Path(__file__).resolve().parents[2] / "configs" / "prompts"


class PromptSet(dict):
    """``{class: ([positive...], [negative...])}`` with the set's ``name`` and ``source`` file."""

    name: str = "default"
    source: str | None = None
    description: str = ""


def shipped_prompt_sets() -> list[str]:
    """The prompt sets in ``configs/prompts`` (``--prompts NAME`` takes one by name)."""
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def _prompt_list(value, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise ConfigError(f"{where} must be a non-empty list of prompt texts")
    return list(items)


def load_prompts(path: str | None) -> PromptSet | None:
    """A prompts file: ``class: [[positive...], [negative...]]`` per class, or a named set
    (``name``, ``description``, ``classes: {class: {positive: [...], negative: [...]}}``, the
    format of ``configs/prompts/*.yaml``); a name without a path is a shipped set."""
    if not path:
        return None
    from core_model.training.config import read_yaml_mapping

    p = Path(path)
    if not p.is_file() and not p.suffix and (PROMPTS_DIR / f"{path}.yaml").is_file():
        p = PROMPTS_DIR / f"{path}.yaml"
    if not p.is_file():
        raise ConfigError(f"prompts file {path} not found; shipped prompt sets: {', '.join(shipped_prompt_sets())}")
    data = read_yaml_mapping(p, "prompts file")
    out = PromptSet()
    out.source = str(p)
    out.name = p.stem
    if "classes" in data:
        unknown = sorted(set(data) - {"name", "description", "classes"})
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {', '.join(unknown)}; known: name, description, classes")
        out.name = str(data.get("name") or p.stem)
        out.description = " ".join(str(data.get("description") or "").split())
        classes = data["classes"]
        if not isinstance(classes, dict) or not classes:
            raise ConfigError(f"{p}: classes must map class names to {{positive: [...], negative: [...]}}")
        for c, v in classes.items():
            if not isinstance(v, dict) or set(v) != {"positive", "negative"}:
                raise ConfigError(f"{p}: classes.{c} must have exactly 'positive' and 'negative' prompt lists")
            out[str(c)] = (
                _prompt_list(v["positive"], f"{p}: classes.{c}.positive"),
                _prompt_list(v["negative"], f"{p}: classes.{c}.negative"),
            )
        return out
    for c, v in data.items():
        if not (isinstance(v, (list, tuple)) and len(v) == 2):
            raise ConfigError(f"prompts for {c!r} must be [[positive...], [negative...]]")
        out[c] = (_prompt_list(v[0], f"prompts for {c!r}"), _prompt_list(v[1], f"prompts for {c!r}"))
    return out
