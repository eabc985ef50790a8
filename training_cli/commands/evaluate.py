"""`adaptor-train evaluate`: score a checkpoint on a dataset (classification, segmentation,
zero-shot, image-report retrieval, grounding) or a bundle's domain guard (domain)."""

from __future__ import annotations

from training_cli.common import RESEARCH_NOTE, prepare_out


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a checkpoint: classification, segmentation, zero-shot or retrieval",
        description="Score a pretraining run (zero-shot, retrieval) or a fine-tuning run (its classification "
        "or segmentation head, with its own temperature and thresholds) on any supported dataset. "
        "--config takes a YAML whose 'data' section names the dataset (as in the fine-tuning "
        "configs); without it the run's own data is used. --task domain scores an exported "
        "bundle's domain guard (--checkpoint BUNDLE, real radiographs with --ood). " + RESEARCH_NOTE,
    )
    p.add_argument(
        "--checkpoint",
        "--run",
        dest="run",
        required=True,
        metavar="DIR",
        help="pretraining or fine-tuning run folder (--task domain: a bundle folder or .zip)",
    )
    p.add_argument(
        "--task",
        default="auto",
        choices=["auto", "classification", "segmentation", "zeroshot", "retrieval", "grounding", "domain"],
    )
    p.add_argument("--config", metavar="FILE", help="YAML with a 'data' section (the dataset to score on)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--prompts",
        metavar="FILE",
        help="zero-shot / grounding prompts: a YAML file (configs/prompts/*.yaml, or class: [[positive...], "
        "[negative...]]) or a shipped set by name (chexpert-5x200, rsna-pneumonia, covidx, phantoms); "
        "also the --config file's 'prompts' key",
    )
    p.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="PATH",
        help="--task domain: real images (DICOM/PNG/JPEG files or folders) that must be out of the "
        "model's domain; crops and flips of each are tried too (repeatable)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for confidence intervals")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from core_model.errors import ConfigError
    from core_model.training.config import read_yaml_mapping
    from core_model.training.evaluate import evaluate, load_prompts

    data = None
    prompts = args.prompts
    if args.config:
        doc = read_yaml_mapping(args.config)
        if "data" not in doc:
            raise ConfigError(f"{args.config} has no 'data' section")
        data = doc["data"]
        if not prompts and doc.get("prompts"):  # a path relative to the config's folder, or a set name
            given = Path(str(doc["prompts"]))
            beside = Path(args.config).parent / given
            prompts = str(beside if not given.is_absolute() and beside.is_file() else given)
    out = prepare_out(args.out)
    if args.task == "domain":
        from core_model.training.evaluate_domain import evaluate_domain, summary_lines

        result = evaluate_domain(args.run, data, out, split=args.split, ood=args.ood)
        print(
            f"evaluate domain of bundle {result['bundle_id']} on {result['dataset']} ({result['split']} split, "
            f"{result['n']} images; {result['real_files']} real files given)"
        )
        for line in summary_lines(result):
            print("  " + line)
        print(f"  wrote {out / 'metrics.json'}, {out / 'report.md'}. {RESEARCH_NOTE}")
        return 0
    result = evaluate(
        Path(args.run),
        args.task,
        data,
        out,
        split=args.split,
        prompts=load_prompts(prompts),
        progress=not args.no_progress,
        n_boot=args.bootstrap,
    )
    m = result["metrics"]
    print(f"evaluate {result['task']} on {result['dataset']} ({result['split']} split, {result['n']} images)")
    if result["task"] in ("classification", "zeroshot"):
        for name, e in m["per_class"].items():
            print(f"  {name:>14}: AUROC {e.get('auroc', float('nan')):.3f}")
        print(f"  {'macro':>14}: AUROC {m['auroc_macro'].get('auroc', float('nan')):.3f}")
        if result["task"] == "zeroshot":
            if "accuracy" in m:
                ci = m["accuracy_ci"]
                print(f"  {'top-1':>14}: accuracy {m['accuracy']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]")
            print(f"  prompts: {m['prompt_set']}" + (f" ({m['prompts_file']})" if m.get("prompts_file") else ""))
    elif result["task"] == "segmentation":
        print(
            f"  Dice positive {m['dice_positive']:.3f} | aggregate {m['dice_aggregate']:.3f} | MGCA {m['dice_mgca']:.3f} "
            f"(all-empty {m['empty_baseline']['dice_mgca']:.3f})"
        )
        if m.get("warning"):
            print("  WARNING: " + m["warning"])
    elif result["task"] == "grounding":
        for f, e in m["per_finding"].items():
            print(
                f"  {f:>14}: pointing game {e['pointing_game_prompt']:.3f} (prompt), {e['pointing_game_report']:.3f} "
                f"(own report); chance {e['chance']:.3f}; {e['n']} images"
            )
    else:
        print("  " + " | ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, float)))
    print(f"  wrote {out / 'metrics.json'}, {out / 'report.md'}. {RESEARCH_NOTE}")
    return 0
