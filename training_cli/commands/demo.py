"""`adaptor-train demo`: the whole chain on synthetic phantoms on a CPU, ending in a model bundle."""

from __future__ import annotations

from training_cli.common import RESEARCH_NOTE, prepare_out


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole chain on synthetic phantoms (CPU, minutes) and export a bundle",
        description="Generate synthetic phantoms, precompute features, pretrain an Adaptor (tiny-vit + the real "
        "all-MiniLM-L6-v2), fine-tune classification and segmentation heads, evaluate (zero-shot, "
        "retrieval), export an int8 bundle and write demo DICOM studies. --assets DIR also refreshes "
        "the committed demo assets (assets/demo). Synthetic data: a software demonstration. " + RESEARCH_NOTE,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="work folder (runs, bundle, studies, demo.json)")
    p.add_argument("--assets", metavar="DIR", help="also publish bundle/, studies/ and metrics.json here")
    p.add_argument("--n", type=int, default=2000, help="number of phantoms (default 2000)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from core_model.demo import run_demo

    out = prepare_out(args.out)
    doc = run_demo(out, assets=args.assets, n=args.n, progress=not args.no_progress)
    print("\n== demo finished ==")
    print(json.dumps(doc["metrics"], indent=2))
    print(
        f"bundle {out / 'bundle'} ({doc['bundle_bytes'] / 2**20:.1f} MiB); studies {out / 'studies'}; "
        f"{doc['seconds']['total']:.0f} s in all"
    )
    print(RESEARCH_NOTE)
    return 0
