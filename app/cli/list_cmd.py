"""``adaptor-review list [--db FILE] [--json]``: patients, studies, series and instances."""

from __future__ import annotations

import argparse
import json

from app.cli.common import NOTICE, add_db_argument


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "list", help="list the patients, studies and instances in the library", description=__doc__
    )
    add_db_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the library as JSON")
    parser.set_defaults(func=run)
    return parser


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 else (value or "no date")


def run(args: argparse.Namespace) -> int:
    from app.library import open_library
    from app.library.queries import counts, library_tree

    library = open_library(args.db, create=False)
    try:
        with library.session() as s:
            tree = library_tree(s)
            totals = counts(s)
    finally:
        library.close()
    if args.json:
        print(json.dumps(dict(notice=NOTICE, db=str(library.db_path), counts=totals, patients=tree), indent=2))
        return 0
    print(NOTICE)
    print(
        f"Library {library.db_path}: {totals['patients']} patients, {totals['studies']} studies, "
        f"{totals['instances']} instances"
    )
    for p in tree:
        who = p["name"] or "(no name)"
        extra = ", ".join(
            x
            for x in (
                f"ID {p['patient_id']}" if p["patient_id"] else "",
                f"born {_date(p['birth_date'])}" if p["birth_date"] else "",
                p["sex"],
            )
            if x
        )
        print(f"{who}" + (f"  ({extra})" if extra else ""))
        for st in p["studies"]:
            print(f"  {_date(st['date'])}  {st['description'] or 'study'}  {st['study_uid']}")
            for se in st["series"]:
                print(
                    f"    {se['modality'] or '--'} series {se['number'] if se['number'] is not None else '-'}"
                    f"  ({len(se['instances'])} instance{'s' if len(se['instances']) != 1 else ''})"
                )
                for i in se["instances"]:
                    tags = []
                    if i["review_status"]:
                        tags.append(i["review_status"])
                    if i["top_finding"]:
                        tags.append(f"top: {i['top_finding']} {i['top_probability']:.2f}")
                    print(
                        f"      {i['view'] or i['format'].upper():5s} {i['columns']}x{i['rows']}  "
                        f"{i['sop_instance_uid']}" + (f"  [{'; '.join(tags)}]" if tags else "")
                    )
    return 0
