"""``adaptor-review analyze [--all | INSTANCE...] --bundle PATH [--csv OUT] [--out-dicom DIR] [--out-json DIR]``

Runs a model bundle over instances of the library without the GUI (no Qt, no torch): each
image's probabilities, segmentation mask and default heatmap are stored in the library exactly
as the app stores them (an analysis by the same bundle, by content hash, is reused unless --force),
and a CSV of the predictions is written (--csv); --out-dicom writes each image's results as DICOM
SEG + SR (+ the default heatmap as a Secondary Capture) and --out-json as mask PNG + NIfTI + JSON,
one folder per image plus an index.json (at least one of the three outputs). Give SOP Instance,
Series or Study UIDs, or --all.
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
        help="run a model bundle over library instances; write a CSV and/or DICOM SEG + SR and JSON results",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("uids", nargs="*", metavar="INSTANCE", help="SOP Instance, Series or Study UIDs")
    parser.add_argument("--all", action="store_true", help="analyse every instance in the library")
    parser.add_argument("--bundle", required=True, metavar="PATH", help="model bundle folder or .zip")
    parser.add_argument("--csv", metavar="OUT", help="CSV file to write")
    parser.add_argument(
        "--out-dicom", metavar="DIR", help="write DICOM SEG + SR (+ heatmap Secondary Capture) per image into DIR"
    )
    parser.add_argument("--out-json", metavar="DIR", help="write mask PNG + NIfTI + results JSON per image into DIR")
    parser.add_argument(
        "--fractional", action="store_true", help="with --out-dicom: a FRACTIONAL SEG of the mask probabilities"
    )
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
    if not (args.csv or args.out_dicom or args.out_json):
        raise UserError("give at least one output: --csv FILE, --out-dicom DIR or --out-json DIR")
    if args.csv and not str(args.csv).lower().endswith(".csv"):
        raise UserError("--csv must name a .csv file")
    if args.fractional and not args.out_dicom:
        raise UserError("--fractional applies to --out-dicom")
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
        exporter = None
        if args.out_dicom or args.out_json:
            from app.logic.results_export import ResultsExporter

            exporter = ResultsExporter(
                library, bundle, dicom_dir=args.out_dicom, plain_dir=args.out_json, fractional=args.fractional
            )
        domains = {k: 0 for k in ("in_domain", "out_of_domain", "unknown")}

        def on_result(result) -> None:
            domains[result.domain.status] = domains.get(result.domain.status, 0) + 1
            if exporter is not None:
                exporter(result)

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
                keep_results=bool(args.csv),
                on_result=on_result,
            )
        finally:
            if interactive:
                sys.stderr.write("\n")
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        results = {r.uid: r for r in summary.results}
        errors = dict(summary.failed)
        out = rows = None
        if args.csv:
            done_uids = [u for u in uids if u in results or u in errors]
            rows, classes = prediction_rows(library, done_uids, results, errors)
            out = write_predictions_csv(args.csv, rows, classes)
        exported = (
            exporter.finish(total=summary.total, cancelled=summary.cancelled, failed=summary.failed)
            if exporter is not None
            else None
        )
    finally:
        library.close()
    if args.json:
        print(
            json.dumps(
                dict(
                    notice=NOTICE,
                    bundle=describe(bundle),
                    csv=str(out) if out is not None else None,
                    results=_export_json(exported),
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
            f"(results not meaningful), {domains['unknown']} unknown (the CSV's domain_status and the results say which)"
        )
        for uid, message in summary.failed:
            print(f"  failed {uid}: {message}")
        if out is not None:
            print(f"Wrote {out} ({len(rows or [])} rows)")
        if exported is not None:
            for line in _export_lines(exported):
                print(line)
    return 130 if summary.cancelled else 0


def _export_json(exported) -> dict | None:
    if exported is None:
        return None
    return dict(
        dicom_dir=str(exported.dicom_dir) if exported.dicom_dir else None,
        json_dir=str(exported.plain_dir) if exported.plain_dir else None,
        images=len(exported.written),
        dicom_objects=exported.dicom_objects,
        failed=[dict(uid=u, message=m) for u, m in exported.failed],
        notes=[dict(uid=u, note=n) for u, n in exported.notes],
        index=[str(p) for p in exported.index_files],
    )


def _export_lines(exported) -> list[str]:
    where = ", ".join(
        f"{what} in {folder}"
        for what, folder in (("DICOM", exported.dicom_dir), ("JSON/PNG/NIfTI", exported.plain_dir))
        if folder is not None
    )
    lines = [
        f"Results of {len(exported.written)} images written ({exported.dicom_objects} DICOM objects): {where}"
        + (f"; index: {', '.join(str(p) for p in exported.index_files)}" if exported.index_files else "")
    ]
    notes: dict[str, int] = {}
    for _uid, note in exported.notes:
        notes[note] = notes.get(note, 0) + 1
    lines += [f"  {n} image(s): {note}" for note, n in notes.items()]
    lines += [f"  not exported {uid}: {message}" for uid, message in exported.failed]
    return lines
