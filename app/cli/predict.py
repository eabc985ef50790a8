"""`adaptor-review predict`: analyse image files with a model bundle, no library (torch-free).

For batch runs by researchers and for tests. Per image: probabilities (calibrated), whether each
is above the bundle's operating threshold, the segmentation mask area, the top-3 similar reports,
the domain state (whether the model can vouch for the image: in / out of its training domain,
with the score, the threshold and the reasons), and optionally a heatmap PNG for a phrase.
Patient names and IDs are never printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESEARCH = "Research use only: not a medical device, not for diagnosis."


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="analyse DICOM/PNG/JPEG files with a model bundle (no library)",
        description=__doc__.split("\n\n")[1] + " " + RESEARCH,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM, PNG or JPEG files")
    p.add_argument("--bundle", required=True, metavar="PATH", help="model bundle folder or .zip")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--heatmap", metavar="PHRASE", help="also write a heatmap PNG per image for this phrase")
    p.add_argument("--out-dir", metavar="DIR", help="where heatmap PNGs go (required with --heatmap)")
    p.add_argument("-k", type=int, default=3, help="similar reports per image (default 3)")
    p.set_defaults(func=run)


def hot_lut():
    """256-entry black-red-yellow-white table (RGBA, opaque), without Qt or matplotlib."""
    import numpy as np

    t = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=1)
    return np.concatenate([np.rint(rgb * 255), np.full((256, 1), 255)], axis=1).astype(np.uint8)


def _heatmap_png(gray, heat, path: Path) -> None:
    from PIL import Image

    from app.logic.overlay import DEFAULT_HEATMAP_OPACITY, DEFAULT_HEATMAP_THRESHOLD, Layer, composite, heatmap_rgba
    from core_model.fileio import atomic_write

    rgba = heatmap_rgba(heat, hot_lut(), DEFAULT_HEATMAP_THRESHOLD)
    rgb = composite(gray, [Layer(rgba, DEFAULT_HEATMAP_OPACITY)])
    atomic_write(path, lambda f: Image.fromarray(rgb).save(f, format="PNG"), fsync=False)


def run(args) -> int:
    from core_model.errors import UserError
    from core_model.imaging.errors import ImageReadError
    from core_model.imaging.preprocess import load_display
    from core_model.runtime import load_bundle

    if args.heatmap and not args.out_dir:
        raise UserError("--heatmap needs --out-dir DIR for the PNGs")
    bundle = load_bundle(args.bundle)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    results, failures = [], 0
    for i, image in enumerate(args.images):
        entry = {"image": image}
        try:
            a = bundle.analyze(image)
        except ImageReadError as exc:
            failures += 1
            entry["error"] = str(exc)
            results.append(entry)
            if not args.json:
                print(f"{image}: cannot analyse: {exc}", file=sys.stderr)
            continue
        entry["probabilities"] = {k: round(v, 6) for k, v in a.probabilities.items()}
        entry["above_threshold"] = a.above_threshold(bundle.thresholds)
        entry["domain"] = a.domain.to_dict()
        if bundle.mask_label:
            entry["mask"] = {
                "label": bundle.mask_label,
                "area_fraction": round(a.mask_area_fraction, 6),
                "area_pixels": int((a.mask >= a.mask_threshold).sum()),
            }
        entry["similar_reports"] = [
            {"id": h.id, "score": round(h.score, 4), "text": h.text} for h in bundle.similar_reports(a, args.k)
        ]
        if args.heatmap:
            heat = bundle.heatmap(a, args.heatmap)
            png = out_dir / f"{i:04d}_{Path(image).stem}_heatmap.png"
            _heatmap_png(load_display(image), heat, png)
            entry["heatmap_png"] = str(png)
            from app.logic.analysis import grounding_caveat

            entry["heatmap_grounding"] = grounding_caveat(bundle)
        results.append(entry)
        if not args.json:
            _print_entry(entry, bundle)
    if args.json:
        json.dump(
            {
                "bundle": {
                    "id": bundle.id,
                    "version": bundle.version,
                    "content_hash": bundle.content_hash,
                    "synthetic": bundle.synthetic,
                },
                "research_use_only": True,
                "notice": _notice(bundle),
                "thresholds": bundle.thresholds,
                "results": results,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(_notice(bundle))
    return 0 if failures < len(args.images) else 1


def print_analysis(bundle, image: str, analysis, k: int = 3) -> None:
    """Print one image's analysis the way `predict` does (used by `--demo` without a display)."""
    entry = {
        "image": image,
        "probabilities": analysis.probabilities,
        "above_threshold": analysis.above_threshold(bundle.thresholds),
        "domain": analysis.domain.to_dict(),
        "similar_reports": [
            {"id": h.id, "score": h.score, "text": h.text} for h in bundle.similar_reports(analysis, k)
        ],
    }
    if bundle.mask_label:
        entry["mask"] = {"label": bundle.mask_label, "area_fraction": analysis.mask_area_fraction}
    _print_entry(entry, bundle)


SYNTHETIC = "Demo model trained on synthetic phantoms: its output means nothing for real images."


def _notice(bundle) -> str:
    return RESEARCH + (" " + SYNTHETIC if bundle.synthetic else "")


def _print_entry(entry: dict, bundle) -> None:
    from core_model.runtime.domain import DomainState

    print(entry["image"])
    domain = DomainState.from_dict(entry.get("domain"))
    if not domain.ok:  # said first: every number below is one the model cannot vouch for
        print(f"  {'NOT VOUCHED':>14}: {domain.summary()}; results are not meaningful")
    elif domain.score is not None:
        print(f"  {'domain':>14}: in the training domain (score {domain.score:.2f}, threshold {domain.threshold:.2f})")
    for k, v in entry["probabilities"].items():
        flag = "  above threshold" if entry["above_threshold"][k] else ""
        print(f"  {k:>14}: {v:.3f} (threshold {bundle.thresholds.get(k, float('nan')):.3f}){flag}")
    if "mask" in entry:
        print(f"  {entry['mask']['label']:>14}: mask area {100 * entry['mask']['area_fraction']:.2f} % of the image")
    for h in entry["similar_reports"]:
        text = h["text"] if len(h["text"]) < 110 else h["text"][:107] + "..."
        print(f"  similar report {h['id']} ({h['score']:.3f}): {text}")
    if "heatmap_png" in entry:
        print(f"  heatmap: {entry['heatmap_png']} ({entry['heatmap_grounding']})")
