"""``adaptor-review export-anonymized [UID ... | --all] --out DIR [--db FILE]``

Copies instances (give SOP Instance, Series or Study UIDs, or --all) de-identified with the DICOM
PS3.15 Basic Application Level Confidentiality Profile (every attribute of Table E.1-1, in
nested sequences too; private tags removed): names and IDs replaced by a pseudonym, dates
shifted consistently per patient, UIDs remapped consistently. Images flagged with burned-in
annotation are refused unless --include-burned-in, and so are files that cannot be processed
safely; both are listed by remapped UID only. Check the result before sharing.
"""

from __future__ import annotations

import argparse
import json

from app.cli.common import NOTICE, add_db_argument
from core_model.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export-anonymized", help="export de-identified copies of instances", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("uids", nargs="*", metavar="UID", help="SOP Instance, Series or Study UIDs")
    parser.add_argument("--all", action="store_true", help="export every instance in the library")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--include-burned-in",
        action="store_true",
        help="also export images whose Burned In Annotation is YES (pixels may show names)",
    )
    add_db_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from app.library import open_library
    from app.library.anonymize import export_anonymized

    if bool(args.uids) == bool(args.all):
        raise UserError("give the UIDs to export or --all (not both)")
    library = open_library(args.db, create=False)
    try:
        summary = export_anonymized(
            library, None if args.all else args.uids, args.out, include_burned_in=args.include_burned_in
        )
    finally:
        library.close()
    if args.json:
        print(json.dumps(dict(summary.to_dict(), notice=NOTICE), indent=2))
        return 0
    print(NOTICE)
    print(f"Exported {summary.exported} instance(s) to {summary.out_dir}")
    if summary.skipped_burned_in:
        print(f"Refused {summary.skipped_burned_in} with burned-in annotation (use --include-burned-in to export them)")
    if summary.burned_in_not_declared:
        print(
            f"{summary.burned_in_not_declared} exported image(s) do not declare Burned In Annotation: "
            "their pixels were not checked for burned-in text"
        )
    if summary.unknown_uids:
        print("Not in the library: " + ", ".join(summary.unknown_uids))
    for r in summary.refused:
        print(f"Refused: instance {r['instance']}: {r['message']}")
    for f in summary.failed:
        print(f"Failed: instance {f['instance']}: {f['message']}")
    print("Reports are not exported. Review the files before sharing them.")
    return 0
