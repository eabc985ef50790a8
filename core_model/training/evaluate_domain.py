"""`adaptor-train evaluate --task domain`: does a bundle's domain guard separate its own test
images from images it knows nothing about?

In-domain set: the test split of the data the domain model was fitted on (recorded in the model
card, or ``--config``), analysed with each record's view. Out-of-domain sets: the real files given
(``--ood``, DICOM/PNG/JPEG files or folders), crops / flips / a rotation of each, and generated
non-chest images (a dead-leaves "natural image" texture, 1/f noise, a grid). Reports the AUROC of
the domain score (in-domain vs all out-of-domain images), the in-domain rate on the test split, the
out-of-domain rate of each set (by any reason and by the score alone) and what the scorer costs per
image. Torch-free: it runs the bundle through the runtime, as the app does.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from core_model.errors import ConfigError, UserError

IMAGE_SUFFIXES = {".dcm", ".dicom", ".png", ".jpg", ".jpeg"}
MAX_TEST_IMAGES = 2000


# ---- out-of-domain images ------------------------------------------------------------------------
def dead_leaves(size: int = 384, seed: int = 0, n: int = 600) -> np.ndarray:
    """A dead-leaves image: occluding discs with power-law radii and random grey levels, the classic
    model of natural-image statistics (edges at all scales, flat regions)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), rng.uniform(0, 255))
    yy, xx = np.mgrid[:size, :size]
    rmin, rmax = 2.0, size / 4
    u = rng.random(n)
    radii = (rmin**-2 + u * (rmax**-2 - rmin**-2)) ** -0.5  # density ~ r^-3
    for r in np.sort(radii)[::-1]:  # large leaves first, small ones on top
        cy, cx = rng.uniform(-r, size + r, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.uniform(0, 255)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def pink_noise(size: int = 384, seed: int = 0, exponent: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None] ** 2)
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / np.maximum(
        f, 1.0 / size
    ) ** exponent
    t = np.real(np.fft.ifft2(spectrum))
    return np.rint((t - t.min()) / max(t.max() - t.min(), 1e-12) * 255).astype(np.uint8)


def generated_non_chest_images() -> list[tuple[str, np.ndarray]]:
    """Deterministic non-chest images (name, 8-bit grey array)."""
    yy, xx = np.mgrid[:320, :320]
    grid = (((yy // 20) + (xx // 20)) % 2 * 200 + 30).astype(np.uint8)
    return (
        [(f"dead-leaves-{k}", dead_leaves(384, seed=k)) for k in range(4)]
        + [(f"pink-noise-{k}", pink_noise(384, seed=10 + k, exponent=0.75 + 0.5 * k)) for k in range(2)]
        + [("checkerboard", grid)]
    )


def variants(gray: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Crops, flips and a rotation of an image (each still shows part of it)."""
    h, w = gray.shape[:2]
    return [
        ("hflip", gray[:, ::-1]),
        ("vflip", gray[::-1]),
        ("crop-centre-70", gray[int(0.15 * h) : int(0.85 * h), int(0.15 * w) : int(0.85 * w)]),
        ("crop-upper-half", gray[: h // 2]),
        ("crop-left-half", gray[:, : w // 2]),
        ("rot90", np.rot90(gray).copy()),
    ]


def image_files(paths: list[str | os.PathLike]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise UserError(f"--ood {p} does not exist")
    return out


# ---- the evaluation -------------------------------------------------------------------------------
def _test_records(data: dict, split: str) -> list:
    import tempfile

    from core_model.training.downstream_data import load_labeled

    with tempfile.TemporaryDirectory(prefix="domain-eval-") as scratch:
        try:
            labeled = load_labeled(data, "classification", Path(scratch))
            idx = range(len(labeled.records)) if split == "all" else labeled.by_split(split)
            recs = [labeled.records[i] for i in idx]
        except UserError:
            from core_model.training.datasets import load_records

            recs = [r for r in load_records(data).records if split == "all" or r.split == split]
    return recs[:MAX_TEST_IMAGES]


def _analyze(bundle, images: list, views: list, modalities: list | None = None, batch: int = 32) -> list:
    out = []
    for b in range(0, len(images), batch):
        out += bundle.analyze_batch(
            images[b : b + batch],
            view=views[b : b + batch],
            modality=None if modalities is None else modalities[b : b + batch],
        )
    return out


def _rate(states, score_only: bool = False) -> float | None:
    if not states:
        return None
    if score_only:
        return float(np.mean([s.score is not None and not (s.score <= s.threshold) for s in states]))
    return float(np.mean([not s.ok for s in states]))


def _set_summary(states) -> dict:
    return {"n": len(states), "out_of_domain_rate": _rate(states), "out_of_domain_rate_score_only": _rate(states, True)}


def scorer_cost_ms(model, analyses: list, repeats: int = 3) -> dict:
    """What the domain scorer adds per image (the image graph excluded): one image at a time, and
    in one batch."""
    emb = np.stack([a.embedding for a in analyses])
    pat = np.stack([a.patch_tokens for a in analyses])
    best_single = best_batch = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(len(emb)):
            s = model.scores(emb[i : i + 1], pat[i : i + 1])
            model.assess(float(s[0]), view="PA", modality="DX")
        best_single = min(best_single, (time.perf_counter() - t) / len(emb))
        t = time.perf_counter()
        model.scores(emb, pat)
        best_batch = min(best_batch, (time.perf_counter() - t) / len(emb))
    return {"ms_per_image_single": 1000 * best_single, "ms_per_image_batched": 1000 * best_batch, "images": len(emb)}


def evaluate_domain(
    bundle_path: str | os.PathLike, data: dict | None, out: Path, *, split: str = "test", ood: list | None = None
) -> dict:
    from core_model.fileio import atomic_write_bytes, atomic_write_json
    from core_model.imaging.preprocess import load_display
    from core_model.metrics.classification import auroc
    from core_model.runtime import load_bundle
    from core_model.runtime.domain import header_view_modality

    bundle = load_bundle(bundle_path)
    model = bundle.domain_model
    if model is None:
        raise UserError(
            f"{bundle_path} records no domain model (exported before the domain guard, or its training "
            f"data was not available at export); re-export it"
        )
    card = bundle.card.get("domain") or {}
    data = data or card.get("data")
    if not data:
        raise ConfigError("give the data the domain model was fitted on (--config); the model card does not record it")
    recs = _test_records(data, split)
    if not recs:
        raise UserError(f"no images in the {split!r} split of the {data.get('kind')} data")
    inside = _analyze(bundle, [r.image_path for r in recs], [r.view for r in recs])
    in_states = [a.domain for a in inside]

    sets: dict[str, list] = {"real": [], "real_variants": [], "generated": []}
    names: dict[str, list[str]] = {k: [] for k in sets}
    files = image_files(ood or [])
    for k, f in enumerate(files, 1):
        view, modality = header_view_modality(f)
        sets["real"] += _analyze(bundle, [f], [None])  # as the app would: the file itself, its header
        names["real"].append(f"real-{k}{f.suffix.lower()}")
        gray = load_display(f)
        vs = variants(gray)
        sets["real_variants"] += _analyze(bundle, [v for _, v in vs], [view] * len(vs), [modality] * len(vs))
        names["real_variants"] += [f"real-{k}-{n}" for n, _ in vs]
    gen = generated_non_chest_images()
    # a view hint of PA, so that only the score can flag them
    sets["generated"] = _analyze(bundle, [g for _, g in gen], ["PA"] * len(gen))
    names["generated"] = [n for n, _ in gen]

    outside = [a.domain for k in sets for a in sets[k]]
    scores_in = [s.score for s in in_states]
    scores_out = [s.score for s in outside]
    auc = None
    if outside:
        auc, _ = auroc(np.r_[np.zeros(len(scores_in)), np.ones(len(scores_out))], np.r_[scores_in, scores_out])
    metrics = {
        "threshold": model.threshold,
        "synthetic": model.synthetic,
        "views": list(model.views),
        "in_domain": {
            "n": len(in_states),
            "in_domain_rate": float(np.mean([s.ok for s in in_states])),
            "in_domain_rate_score_only": 1.0 - _rate(in_states, True),
            "score_median": float(np.median(scores_in)),
            "score_max": float(np.max(scores_in)),
        },
        "auroc_score": auc,
        "out_of_domain": {k: _set_summary([a.domain for a in v]) for k, v in sets.items()},
        "per_image": {
            k: [
                {"name": n, "score": a.domain.score, "status": a.domain.status, "codes": list(a.domain.codes)}
                for n, a in zip(names[k], v)
            ]
            for k, v in sets.items()
        },
        "scorer_cost": scorer_cost_ms(model, inside[:200]),
        "card_test_false_ood_rate": card.get("test_false_ood_rate"),
    }
    result = {
        "command": "evaluate",
        "task": "domain",
        "research_use_only": True,
        "run": str(bundle_path),
        "bundle_id": bundle.id,
        "dataset": data.get("kind"),
        "split": split,
        "n": len(in_states),
        "real_files": len(files),
        "metrics": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", result)
    atomic_write_bytes(out / "report.md", "\n".join(summary_lines(result, markdown=True)).encode())
    return result


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def summary_lines(result: dict, markdown: bool = False) -> list[str]:
    m = result["metrics"]
    ins = m["in_domain"]
    labels = {
        "real": "real radiographs",
        "real_variants": "crops/flips/rotations of them",
        "generated": "generated non-chest images",
    }
    lines: list[str] = []
    lines.append(
        f"threshold {m['threshold']:.3f} (validation 99th percentile)"
        + ("; trained on SYNTHETIC phantoms" if m["synthetic"] else "")
    )
    lines.append(
        f"in domain on the {result['split']} split: {_pct(ins['in_domain_rate'])} of {ins['n']} images "
        f"(by the score alone {_pct(ins['in_domain_rate_score_only'])})"
    )
    n_out = sum(v["n"] for v in m["out_of_domain"].values())
    auc = m["auroc_score"]
    lines.append(
        f"AUROC of the domain score, {result['split']} split vs {n_out} out-of-domain images: "
        + ("n/a" if auc is None or auc != auc else f"{auc:.3f}")
    )
    for k, v in m["out_of_domain"].items():
        if v["n"]:
            lines.append(
                f"out of domain, {labels[k]}: {_pct(v['out_of_domain_rate'])} of {v['n']} "
                f"(by the score alone {_pct(v['out_of_domain_rate_score_only'])})"
            )
        elif k == "real":
            lines.append("no real radiographs given (--ood FILE_OR_FOLDER): only generated images were tried")
    c = m["scorer_cost"]
    lines.append(
        f"domain scorer cost: {c['ms_per_image_single']:.3f} ms per image one at a time, "
        f"{c['ms_per_image_batched']:.4f} ms per image batched (image graph excluded; {c['images']} images)"
    )
    if markdown:
        lines = [f"# Domain guard: {result['bundle_id']}", "", "**Research use only - not for diagnosis.**", ""] + [
            "- " + x for x in lines
        ]
        lines += ["", "| set | image | score | status | reasons |", "|---|---|---|---|---|"]
        for k, rows in m["per_image"].items():
            for r in rows:
                lines.append(f"| {k} | {r['name']} | {r['score']:.3f} | {r['status']} | {', '.join(r['codes'])} |")
        lines.append("")
    return lines
