"""`adaptor-train precompute`: run the frozen encoders once and cache their features."""

from __future__ import annotations

import dataclasses
import time

from core_model.fileio import atomic_write_json
from training_cli.common import RESEARCH_NOTE, add_common, add_train_shortcuts, prepare_out, shortcut_overrides


def add_parser(sub) -> None:
    p = sub.add_parser(
        "precompute",
        help="cache frozen-encoder features of a dataset",
        description="Run the frozen image and text encoders once over a dataset and store pooled and "
        "token features as fp16 memory-mapped shards in --out. Resumable; refuses to mix "
        "encoders or preprocessing. Multi-GPU: torchrun --nproc_per_node N -m training_cli.main precompute ... "
        + RESEARCH_NOTE,
    )
    add_common(p, out_help="the cache folder")
    add_train_shortcuts(p)
    p.add_argument("--patch-pool", type=int, help="average-pool the patch grid k x k (e.g. 2)")
    p.add_argument("--workers", type=int, help="parallel image decoding workers")
    p.add_argument("--images-only", action="store_true", help="image features only (downstream data)")
    p.add_argument("--overwrite", action="store_true", help="replace a cache built with other settings")
    p.add_argument(
        "--resize-cache",
        metavar="DIR",
        help="first write a one-time downsized copy of the images to DIR and encode from it",
    )
    p.add_argument("--resize-to", type=int, default=512, help="longest side of the resized copies (default 512)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core_model.training.config import PRETRAIN_DEFAULTS, load_config, save_config
    from core_model.training.datasets import ensure_cache, load_records, summary
    from core_model.training.distributed import distributed_session

    overrides = shortcut_overrides(args) + list(args.overrides)
    if args.patch_pool:
        overrides.append(f"cache.patch_pool={args.patch_pool}")
    if args.workers is not None:
        overrides.append(f"cache.workers={args.workers}")
    cfg = load_config(PRETRAIN_DEFAULTS, args.config, overrides)
    out = prepare_out(args.out)
    cfg["cache"] = dataclasses.replace(cfg["cache"], dir=str(out))
    with distributed_session() as (rank, _):
        result = load_records(cfg["data"])
        print(f"data: {result.summary()}")
        for s in result.skipped[:10]:
            print(f"  skipped {s}")
        records = result.records
        if args.resize_cache:
            from core_model.features.image_cache import resize_images

            records = resize_images(records, args.resize_cache, args.resize_to, workers=cfg["cache"].workers)
        t0 = time.perf_counter()
        cache = ensure_cache(
            cfg, records, out, overwrite=args.overwrite, text=not args.images_only, progress=not args.no_progress
        )
        seconds = time.perf_counter() - t0
        if rank == 0:
            save_config(cfg, out / "config.yaml")
            atomic_write_json(
                out / "metrics.json",
                {
                    "command": "precompute",
                    "research_use_only": True,
                    "items": cache.n,
                    "usable_items": int(cache.valid.sum()),
                    "seconds": round(seconds, 2),
                    "items_per_second": round(cache.n / max(seconds, 1e-9), 1),
                    "bytes_per_item": cache.manifest.get("bytes_per_item"),
                    "total_bytes": cache.nbytes(),
                    "skipped": cache.manifest.get("skipped_total", 0),
                    "data": summary(result),
                },
            )
    return 0
