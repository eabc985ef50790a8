"""Shared command line of `adaptor-train finetune-cls` and `finetune-seg`."""

from __future__ import annotations

import json

from training_cli.common import RESEARCH_NOTE, add_common, add_train_shortcuts, prepare_out, shortcut_overrides


def add_finetune_parser(sub, name: str, summary: str, task: str) -> None:
    p = sub.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. Frozen encoders and Adaptor; the pretraining run is "
        "built first when it is missing and pretrain_config is set. Writes metrics.json, "
        "report.md, figures, splits.csv and head.safetensors in --out. " + RESEARCH_NOTE,
    )
    add_common(p, out_help="run folder")
    add_train_shortcuts(p)
    p.add_argument("--pretrained", metavar="DIR", help="pretraining run folder (adaptor.safetensors)")
    p.add_argument("--fraction", type=float, help="share of training labels used: 0.01, 0.1 or 1")
    p.add_argument("--split-file", metavar="CSV", help="your own split (columns id,split)")
    p.set_defaults(func=lambda args: run_finetune(args, task))


def run_finetune(args, task: str) -> int:
    from core_model.training.pipeline import finetune, load_finetune_config
    from training_cli.summaries import print_finetune_summary

    overrides = [o for o in shortcut_overrides(args) if not o.startswith("encoders.")]
    if args.pretrained:
        overrides.append(f"pretrained={json.dumps(args.pretrained)}")
    if args.fraction is not None:
        overrides.append(f"data.fraction={args.fraction}")
    if args.split_file:
        overrides.append(f"data.split_file={json.dumps(args.split_file)}")
    cfg = load_finetune_config(task, args.config, overrides + list(args.overrides))
    out = prepare_out(args.out)
    result = finetune(task, cfg, out, progress=not args.no_progress)
    print_finetune_summary(result, out)
    return 0
