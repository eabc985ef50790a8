"""``adaptor-review analyze [--all | INSTANCE...] --bundle PATH --csv OUT [--db FILE] [--force]``

Runs a model bundle over instances of the library without the GUI (no Qt, no torch): each
image's probabilities, segmentation mask and default heatmap are stored in the library exactly
as the app stores them (an analysis by the same bundle, by content hash, is reused unless --force),
and a CSV of the predictions is written. Give SOP Instance, Series or Study UIDs, or --all.
Exit status 0 when the run completed (images that failed are listed and marked in the CSV), 2
when it could not run, 130 when interrupted (analyses finished so far stay stored).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from app.cli.common import NOTICE, add_db_argument
from core_model.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "analyze",
        help="run a model bundle over library instances and write a CSV",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("uids", nargs="*", metavar="INSTANCE", help="SOP Instance, Series or Study UIDs")
    parser.add_argument("--all", action="store_true", help="analyse every instance in the library")
    parser.add_argument("--bundle", required=True, metavar="PATH", help="model bundle folder or .zip")
    parser.add_argument("--csv", required=True, metavar="OUT", help="CSV file to write")
    add_db_argument(parser)
    parser.add_argument(
        "--force", action="store_true", help="analyse again even when the library holds an analysis by this bundle"
    )
    parser.add_argument("--no-heatmap", action="store_true", help="skip the default heatmap (faster)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from app.library import open_library
    from app.library.queries import resolve_uids
    from app.logic.analysis import all_instance_uids, analyze_many
    from app.logic.bundles import describe, open_bundle
    from app.logic.predictions_csv import prediction_rows, write_predictions_csv

    if bool(args.uids) == bool(args.all):
        raise UserError("give the instance UIDs to analyse or --all (not both)")
    if not str(args.csv).lower().endswith(".csv"):
        raise UserError("--csv must name a .csv file")
    library = open_library(args.db, create=False)
    try:
        if args.all:
            uids, unknown = all_instance_uids(library), []
        else:
            with library.session() as s:
                found, unknown = resolve_uids(s, args.uids)
                uids = [i.sop_instance_uid for i in found]
        if unknown:
            raise UserError("not in the library: " + ", ".join(unknown))
        if not uids:
            raise UserError(f"the library {library.db_path} holds no images")
        bundle = open_bundle(args.bundle)
        cancel = threading.Event()
        interactive = not args.json and sys.stderr.isatty()

        def progress(done: int, total: int, _uid: str) -> None:
            if interactive:
                sys.stderr.write(f"\r  {done}/{total} images analysed   ")
                sys.stderr.flush()

        def on_sigint(_signum, _frame):
            if cancel.is_set():
                raise KeyboardInterrupt
            cancel.set()

        previous = (
            signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
        )
        try:
            summary = analyze_many(
                library,
                bundle,
                uids,
                force=args.force,
                heatmap=not args.no_heatmap,
                progress=progress,
                cancelled=cancel.is_set,
                keep_results=True,
            )
        finally:
            if interactive:
                sys.stderr.write("\n")
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        results = {r.uid: r for r in summary.results}
        errors = dict(summary.failed)
        done_uids = [u for u in uids if u in results or u in errors]
        rows, classes = prediction_rows(library, done_uids, results, errors)
        out = write_predictions_csv(args.csv, rows, classes)
    finally:
        library.close()
    domains = {
        k: sum(1 for r in results.values() if r.domain.status == k) for k in ("in_domain", "out_of_domain", "unknown")
    }
    if args.json:
        print(
            json.dumps(
                dict(
                    notice=NOTICE,
                    bundle=describe(bundle),
                    csv=str(out),
                    total=summary.total,
                    analysed=summary.analysed,
                    cached=summary.cached,
                    cancelled=summary.cancelled,
                    failed=[dict(uid=u, message=m) for u, m in summary.failed],
                    domain=domains,
                    synthetic_model=bool(bundle.synthetic),
                    elapsed_s=round(summary.elapsed_s, 3),
                ),
                indent=2,
            )
        )
    else:
        print(NOTICE)
        print(f"Model: {describe(bundle)}")
        state = "Analysis cancelled" if summary.cancelled else "Analysis finished"
        print(
            f"{state}: {summary.analysed} analysed, {summary.cached} reused from the library, "
            f"{len(summary.failed)} failed ({summary.elapsed_s:.1f} s)"
        )
        if bundle.synthetic:
            print("This is a demo model trained on synthetic phantoms: its results mean nothing for real images.")
        print(
            f"Domain: {domains['in_domain']} in the model's training domain, {domains['out_of_domain']} out of it "
            f"(results not meaningful), {domains['unknown']} unknown (see the CSV's domain_status)"
        )
        for uid, message in summary.failed:
            print(f"  failed {uid}: {message}")
        print(f"Wrote {out} ({len(rows)} rows)")
    return 130 if summary.cancelled else 0
