"""`adaptor-train phantoms`: write a SYNTHETIC chest X-ray phantom data set (not medical data)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core_model.errors import UserError

KEYS = {  # config / command-line keys -> type
    "n": int,
    "seed": int,
    "size": int,
    "dicom": str,
    "dicom_fraction": float,
    "val_fraction": float,
    "test_fraction": float,
    "workers": int,
}

_DESCRIPTION = (
    "Write SYNTHETIC chest X-ray phantoms: computer-generated radiograph-like images (not medical "
    "data, no patient involved) with one finding each (normal, pneumonia, covid19, pneumothorax in "
    "equal shares), masks, free-text reports, patient-level train/val/test splits, optional DICOM "
    "copies, and DIR/manifest.csv in the generic manifest format. For testing and demonstrating "
    "the software only. Research use only: never for diagnosis."
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "phantoms", help="write synthetic phantom images + reports (not medical data)", description=_DESCRIPTION
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML with any of the keys " + ", ".join(KEYS) + " (flat, or under 'phantoms:'); command-line values win",
    )
    p.add_argument("--out", metavar="DIR", required=True, help="output folder (its phantom files are replaced)")
    p.add_argument("--n", type=int, help="number of images (default 2000)")
    p.add_argument("--seed", type=int, help="random seed; the same seed gives identical files (default 0)")
    p.add_argument(
        "--size", type=int, help="nominal longest image side in pixels; images vary +-15%% around it (default 384)"
    )
    p.add_argument(
        "--dicom",
        choices=["all", "some", "none"],
        help="DICOM copies under DIR/dicom: all images, some (about 5%%, every encoding represented; default) or none",
    )
    p.add_argument(
        "--dicom-fraction",
        type=float,
        dest="dicom_fraction",
        help="share of images with a DICOM copy for --dicom some (default 0.05)",
    )
    p.add_argument("--val-fraction", type=float, dest="val_fraction", help="validation share (default 0.1)")
    p.add_argument("--test-fraction", type=float, dest="test_fraction", help="test share (default 0.1)")
    p.add_argument("--workers", type=int, help="processes (default 2; does not change the output)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def resolve_options(args: argparse.Namespace) -> dict:
    """Defaults <- YAML config <- command line."""
    from core_model.data.phantoms import PhantomOptions

    values = {k: v for k, v in vars(PhantomOptions()).items() if k in KEYS}
    if getattr(args, "config", None):
        from core_model.training.config import load_flat_config

        values = load_flat_config(values, args.config, KEYS, section="phantoms")
    for key in KEYS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    return values


def run(args) -> int:
    from core_model.data.phantoms import PhantomOptions, generate_phantoms

    values = resolve_options(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    opts = PhantomOptions(**values)
    show = not args.no_progress and sys.stderr.isatty()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if show and (now - last[0] > 0.2 or done == total):
            last[0] = now
            print(f"\rphantoms: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    print("Writing SYNTHETIC phantoms (not medical data; research use only) to", out)
    summary = generate_phantoms(out, opts, progress=progress)
    import yaml

    from core_model.fileio import atomic_write_text

    atomic_write_text(out / "config.yaml", yaml.safe_dump(values, sort_keys=False))
    c = summary["counts"]
    metrics = {
        "command": "phantoms",
        "synthetic": True,
        "research_use_only": True,
        "images": c["n"],
        "patients": c["patients"],
        "findings": c["findings"],
        "splits": c["splits"],
        "views": c["views"],
        "dicom_files": c["dicom"],
        "masks": c["masks"],
        "lesion_masks": c["lesion_masks"],
        "mean_lesion_fraction": c["mean_lesion_fraction"],
        "seconds": summary["seconds"],
        "images_per_second": round(c["n"] / max(summary["seconds"], 1e-9), 1),
        "workers": summary["workers"],
        "bytes": summary["bytes"],
        "options": summary["options"],
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(
        f"{c['n']} synthetic images ({', '.join(f'{k} {v}' for k, v in sorted(c['findings'].items()))}), "
        f"{c['dicom']} DICOM copies, splits {c['splits']}, {summary['bytes'] / 2**20:.1f} MiB "
        f"in {summary['seconds']:.1f} s -> {out / 'manifest.csv'}"
    )
    return 0
