"""``adaptor-review pacs servers|add|search|retrieve|send ...``: a DICOMweb server (PACS, Orthanc)

    pacs add NAME URL [--user USER | --bearer] [--store-secret]   save a server (no secret in the file)
    pacs servers                                                   list the saved servers
    pacs search   (--server NAME | --url URL) [--name N] [--id ID] [--from DATE] [--to DATE]
                  [--modality CR DX | --any-modality] [--accession A] [--json]
    pacs retrieve (--server NAME | --url URL) STUDY_UID... [--db FILE] [--workers 4] [--json]
    pacs send     (--server NAME | --url URL) FILE... [--json]     STOW-RS of SEG / SR result files

The password or token (basic / bearer authentication) comes from $CXR_ADAPTOR_PACS_SECRET, the
platform keyring (when the ``keyring`` package is installed and ``add --store-secret`` put it
there) or a prompt on the terminal; it is never written to a file, the library or a log.
Exit status: 0 done; 2 an error, or some studies / objects failed (each listed); 130
interrupted (studies retrieved completely before Ctrl-C are imported, the others not at all).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from app.cli.common import NOTICE, add_db_argument
from core_model.errors import UserError


def _server_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="NAME", help="a server saved with 'pacs add'")
    where.add_argument("--url", metavar="URL", help="the DICOMweb base URL, e.g. http://host:8042/dicom-web")
    parser.add_argument("--user", metavar="USER", default=None, help="HTTP basic authentication as USER")
    parser.add_argument("--bearer", action="store_true", help="send a bearer token (OAuth / OIDC access token)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="seconds without an answer before giving up (30)"
    )


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pacs",
        help="search a DICOMweb server (PACS, Orthanc), retrieve studies into the library, send results back",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="save a server (name, URL, user; the secret only in the keyring)")
    add.add_argument("name")
    add.add_argument("url")
    auth = add.add_mutually_exclusive_group()
    auth.add_argument("--user", metavar="USER", default=None, help="HTTP basic authentication as USER")
    auth.add_argument("--bearer", action="store_true", help="bearer token authentication")
    add.add_argument(
        "--store-secret",
        action="store_true",
        help="ask for the password / token now and keep it in the platform keyring (needs the keyring package)",
    )

    sub.add_parser("servers", help="list the saved servers")

    search = sub.add_parser("search", help="QIDO-RS: find studies")
    _server_options(search)
    search.add_argument("--name", default="", help="patient name (a prefix; * and ? are wildcards)")
    search.add_argument("--id", dest="patient_id", default="", help="patient ID")
    search.add_argument("--from", dest="date_from", default="", metavar="DATE", help="study date from (YYYYMMDD)")
    search.add_argument("--to", dest="date_to", default="", metavar="DATE", help="study date to (YYYYMMDD)")
    mods = search.add_mutually_exclusive_group()
    mods.add_argument(
        "--modality", nargs="+", default=["CR", "DX"], metavar="M", help="modalities in the study (default CR DX)"
    )
    mods.add_argument("--any-modality", action="store_true", help="do not filter on the modality")
    search.add_argument("--accession", default="", help="accession number")
    search.add_argument("--limit", type=int, default=500, help="at most this many studies per modality (500)")
    search.add_argument("--json", action="store_true", help="print the studies as JSON")

    retrieve = sub.add_parser("retrieve", help="WADO-RS: retrieve studies into the library")
    _server_options(retrieve)
    retrieve.add_argument("studies", nargs="+", metavar="STUDY_UID")
    add_db_argument(retrieve)
    retrieve.add_argument("--workers", type=int, default=4, help="requests in flight at once (4)")
    retrieve.add_argument("--json", action="store_true", help="print the summary as JSON")

    send = sub.add_parser("send", help="STOW-RS: send DICOM result objects (SEG, SR) to the server")
    _server_options(send)
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--json", action="store_true", help="print one result per object as JSON")

    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    action = {
        "add": _add,
        "servers": _servers,
        "search": _search,
        "retrieve": _retrieve,
        "send": _send,
    }[args.pacs_command]
    return action(args)


# -- servers and secrets ----------------------------------------------------------------------
def _ask(prompt: str) -> str:
    import getpass

    if not sys.stdin.isatty():
        return ""
    return getpass.getpass(prompt)


def _record(args: argparse.Namespace):
    from app.pacs.servers import ServerRecord, find_server

    if args.server:
        record = find_server(args.server)
        if args.user or args.bearer:  # the command line overrides the saved authentication
            auth = "bearer" if args.bearer else "basic"
            record = ServerRecord(record.name, record.url, auth, args.user or "")
        return record
    auth = "bearer" if args.bearer else "basic" if args.user else "none"
    return ServerRecord("command line", args.url, auth, args.user or "")


def _client(args: argparse.Namespace):
    from app.pacs import PacsClient
    from app.pacs.errors import PacsAuthError
    from app.pacs.servers import SECRET_ENV, get_secret, remember_secret

    record = _record(args)
    secret = None
    if record.needs_secret:
        secret = os.environ.get(SECRET_ENV) or get_secret(record)
        if not secret:
            what = "password" if record.auth == "basic" else "token"
            secret = _ask(f"{what} for {record.url}" + (f" (user {record.username})" if record.username else "") + ": ")
            if not secret:
                raise PacsAuthError(
                    f"the PACS {record.url} needs a {what}: set ${SECRET_ENV}, run on a terminal to be asked, "
                    "or keep it in the keyring (pacs add --store-secret)"
                )
            remember_secret(record, secret)
    return PacsClient(record, secret, timeout=args.timeout)


def _add(args: argparse.Namespace) -> int:
    from app.pacs.servers import ServerRecord, keyring_available, remember_secret, save_server

    auth = "bearer" if args.bearer else "basic" if args.user else "none"
    record = ServerRecord(args.name, args.url, auth, args.user or "")
    path = save_server(record)
    print(f"Saved PACS server {record.name}: {record.url} ({auth} authentication) in {path}")
    if record.needs_secret:
        if args.store_secret and keyring_available():
            secret = _ask("password: " if auth == "basic" else "token: ")
            if not secret:
                raise UserError("no secret given: nothing stored in the keyring")
            remember_secret(record, secret, persist=True)
            print("The secret is in the platform keyring.")
        else:
            why = "no keyring is available" if args.store_secret else "without --store-secret"
            print(f"The secret is not stored ({why}): it is asked for once per session.")
    return 0


def _servers(args: argparse.Namespace) -> int:
    from app.pacs.servers import default_servers_path, load_servers

    servers = load_servers()
    if not servers:
        print(f"No saved PACS servers ({default_servers_path()}); add one: adaptor-review pacs add NAME URL")
    for s in servers:
        user = f" as {s.username}" if s.username else ""
        print(f"{s.name}\t{s.url}\t{s.auth}{user}")
    return 0


# -- search / retrieve / send -----------------------------------------------------------------
def _search(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from app.pacs import StudyQuery

    query = StudyQuery(
        patient_name=args.name,
        patient_id=args.patient_id,
        date_from=args.date_from,
        date_to=args.date_to,
        modalities=() if args.any_modality else tuple(args.modality),
        accession=args.accession,
        limit=args.limit,
    )
    hits = _client(args).search_studies(query)
    if args.json:
        print(json.dumps({"studies": [asdict(h) for h in hits], "notice": NOTICE}, indent=2))
        return 0
    print(NOTICE)
    print(f"{len(hits)} {'study' if len(hits) == 1 else 'studies'}")
    if hits:
        print("date\tmodalities\tpatient ID\tpatient name\taccession\timages\tstudy UID")
    for h in hits:
        n = "" if h.instances is None else str(h.instances)
        print(
            f"{h.study_date or '-'}\t{'/'.join(h.modalities) or '-'}\t{h.patient_id}\t{h.patient_name}\t"
            f"{h.accession}\t{n}\t{h.study_uid}"
        )
    return 0


def _retrieve(args: argparse.Namespace) -> int:
    from app.library import open_library
    from app.pacs import PacsError, retrieve_studies

    client = _client(args)
    library = open_library(args.db)
    cancel = threading.Event()
    show = not args.json and sys.stderr.isatty()

    def on_sigint(_signum, _frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    def progress(p) -> None:
        if show:
            sys.stderr.write(f"\r  {p.stage}: {p.done}/{p.total} studies, {p.instances} objects, {p.failed} failed   ")
            sys.stderr.flush()

    previous = (
        signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        summary = retrieve_studies(
            library, client, args.studies, progress=progress, cancel=cancel, workers=args.workers
        )
    finally:
        if show:
            sys.stderr.write("\n")
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        library.close()
        client.close()
    if args.json:
        from dataclasses import asdict

        out = {
            "studies": [asdict(o) for o in summary.outcomes],
            "requested": summary.requested,
            "cancelled": summary.cancelled,
            "imported": summary.imported,
            "duplicates": summary.duplicates,
            "rejected": summary.rejected,
            "elapsed_s": round(summary.elapsed_s, 3),
            "db": str(library.db_path),
            "notice": NOTICE,
        }
        print(json.dumps(out, indent=2))
    else:
        print(NOTICE)
        for o in summary.outcomes:
            state = f"retrieved ({o.instances} images" + (
                f", {o.skipped} non-image objects skipped)" if o.skipped else ")"
            )
            print(f"  {o.study_uid}: {state if o.ok else 'FAILED: ' + o.error}")
        print(summary.line())
        print(f"Library: {library.db_path}")
    if summary.cancelled:
        return 130
    if summary.failed:
        first = summary.failed[0].error
        raise PacsError(f"{len(summary.failed)} of {summary.requested} studies failed (first: {first})")
    return 0


def _send(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from app.pacs import PacsError, send_objects

    client = _client(args)
    try:
        results = send_objects(client, args.files)
    finally:
        client.close()
    failed = [r for r in results if not r.accepted]
    if args.json:
        print(json.dumps({"objects": [asdict(r) for r in results], "notice": NOTICE}, indent=2))
    else:
        print(NOTICE)
        for r in results:
            state = "accepted" + (f" ({r.reason})" if r.reason else "") if r.accepted else f"FAILED: {r.reason}"
            print(f"  {r.path} [{r.sop_instance_uid or '-'}]: {state}")
        print(f"Sent to {client.url}: {len(results) - len(failed)} accepted, {len(failed)} failed")
    if failed:
        raise PacsError(f"{len(failed)} of {len(results)} objects were not stored (first: {failed[0].reason})")
    return 0
