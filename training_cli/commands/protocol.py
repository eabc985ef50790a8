"""`adaptor-train protocol`: a paper table (every cell, the controls, seeds and CIs) in one command."""

from __future__ import annotations

from training_cli.common import RESEARCH_NOTE, prepare_out


def add_parser(sub) -> None:
    p = sub.add_parser(
        "protocol",
        help="run a table protocol (configs/protocols/*.yaml): every cell, controls, seeds, CIs",
        description="Run every cell of a protocol file (task x label fraction x row x head x seed) through "
        "the one training pipeline, reusing finished runs and feature caches (a killed protocol resumes), "
        "then write results.md, results.csv and results.json in --out: mean +- sd over seeds, the 95 % "
        "bootstrap interval per cell, paired bootstrap of the method against each control, published "
        "numbers where dataset, split, metric and fraction match. Cells whose data is absent say "
        "'not measured here'. " + RESEARCH_NOTE,
    )
    p.add_argument("--config", metavar="FILE", required=True, help="protocol file (configs/protocols/)")
    p.add_argument("--out", metavar="DIR", required=True, help="protocol folder (runs/, results.*)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a protocol value (repeatable), e.g. --set seeds=1",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="TensorBoard event files: every run's in its folder, the table's cells in --out/tensorboard",
    )
    p.add_argument("--report-only", action="store_true", help="train nothing: rewrite results.* from the runs there")
    p.set_defaults(func=run)


def run(args) -> int:
    from core_model.training.protocol import collect_results, load_protocol, run_protocol, write_results

    overrides = list(args.overrides) + (["tensorboard=true"] if args.tensorboard else [])
    protocol = load_protocol(args.config, overrides)
    out = prepare_out(args.out)
    if args.report_only:
        results = collect_results(protocol, out)
        write_results(results, out)
    else:
        results = run_protocol(protocol, out, progress=not args.no_progress)
    measured = sum(c["status"] == "measured" for c in results["cells"])
    print(
        f"{measured} of {len(results['cells'])} cells measured; wrote {out / 'results.md'}, results.csv, results.json"
    )
    print(RESEARCH_NOTE)
    return 0
