"""`adaptor-train pretrain`: contrastive Adaptor pretraining on frozen, cached features."""

from __future__ import annotations

from training_cli.common import RESEARCH_NOTE, add_common, add_train_shortcuts, prepare_out, shortcut_overrides


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain an Adaptor (features are precomputed first when missing)",
        description="Align frozen image and report encoders with a small Adaptor trained by InfoNCE on "
        "cached features. Data (phantoms) and features are generated first when missing. "
        "Multi-GPU: torchrun --nproc_per_node N -m training_cli.main pretrain ... " + RESEARCH_NOTE,
    )
    add_common(p, out_help="run folder (config.yaml, metrics.json, log.csv, adaptor.safetensors, checkpoint/)")
    add_train_shortcuts(p)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from core_model.training.config import PRETRAIN_DEFAULTS, load_config
    from core_model.training.datasets import load_records
    from core_model.training.distributed import distributed_session
    from core_model.training.pipeline import pretrain

    cfg = load_config(PRETRAIN_DEFAULTS, args.config, shortcut_overrides(args) + list(args.overrides))
    out = prepare_out(args.out)
    with distributed_session() as (rank, _):
        result = load_records(cfg["data"])
        if rank == 0:
            print(f"data: {result.summary()}")
            for s in result.skipped[:10]:
                print(f"  skipped {s}")
        pretrain(cfg, out, result=result, progress=not args.no_progress, resume=args.resume)
    if rank == 0:
        print(f"wrote {out / 'adaptor.safetensors'} and {out / 'metrics.json'}")
    return 0
