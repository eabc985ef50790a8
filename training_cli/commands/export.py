"""`adaptor-train export`: fine-tuning runs -> a verifiable ONNX model bundle for the app."""

from __future__ import annotations

from pathlib import Path

from training_cli.common import RESEARCH_NOTE


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a model bundle (ONNX graphs, tokenizer, report bank, model card)",
        description="Make a model bundle from fine-tuning runs (a classification and/or a segmentation run on "
        "the same pretrained Adaptor), or, with --config, build whatever runs are missing first. "
        "The bundle runs in adaptor-review without torch. " + RESEARCH_NOTE,
    )
    p.add_argument("--run", action="append", default=[], metavar="DIR", help="fine-tuning run folder (repeatable)")
    p.add_argument("--config", metavar="FILE", help="bundle recipe (see configs/phantoms-bundle.yaml)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to create (or .zip with --zip)")
    p.add_argument(
        "--quantize",
        choices=["int8", "int8-text"],
        help="int8 dynamic quantization: of the image and text graphs, or of the text graph only",
    )
    p.add_argument("--zip", action="store_true", help="write a single .zip instead of a folder")
    p.add_argument("--report-bank-limit", type=int, help="at most this many reports in the retrieval bank")
    p.add_argument(
        "--grounding",
        metavar="EVAL_DIR",
        help="a grounding evaluation of the validation split (evaluate --task grounding --split val): "
        "the card then says which findings' heatmaps beat the positional prior, and the app shows only "
        "those (without it no heatmap is vouched for)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from core_model.errors import UserError
    from core_model.export.bundle import export_bundle
    from core_model.export.recipe import build_runs_from_recipe

    runs = [Path(r) for r in args.run]
    quantize, make_zip, limit = args.quantize, args.zip, args.report_bank_limit
    index_min = None  # reports from which the bank ships an HNSW index (export config key)
    if args.config:
        recipe_runs, opts = build_runs_from_recipe(args.config, progress=not args.no_progress)
        runs = runs or recipe_runs
        quantize = quantize or opts.get("quantize")
        make_zip = make_zip or bool(opts.get("zip"))
        limit = limit or opts.get("report_bank_limit")
        index_min = opts.get("report_index_min_reports")
    if not runs:
        raise UserError("give --run DIR (fine-tuning runs) or --config FILE")
    path = export_bundle(
        runs,
        Path(args.out),
        quantize=quantize,
        make_zip=make_zip,
        bank_limit=limit,
        report_index_min_reports=index_min,
        grounding=args.grounding,
    )
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    print(f"wrote bundle {path} ({size / 2**20:.1f} MiB). {RESEARCH_NOTE}")
    return 0
