"""``adaptor-review render INSTANCE_UID_OR_PATH --out PNG [--preset N] [--db FILE]``

Writes exactly what the viewer shows by default (or window preset N, 1-based like the viewer's
keys 1-5) as an 8-bit PNG at the image's native resolution.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.common import NOTICE, add_db_argument
from core_model.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "render", help="write the viewer's display of an instance or file as PNG", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("target", metavar="INSTANCE_UID_OR_PATH", help="a SOP Instance UID in the library, or a file")
    parser.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    parser.add_argument(
        "--preset",
        type=int,
        default=None,
        metavar="N",
        help="window preset N (1 = the file's first window or VOI LUT; default: the viewer's default)",
    )
    add_db_argument(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from app.logic.image import display_file
    from core_model.fileio import atomic_write

    if args.preset is not None and args.preset < 1:
        raise UserError("--preset counts from 1 (as the viewer's keys 1-5)")
    target = Path(args.target).expanduser()
    if target.exists():
        source = target
    else:
        from app.library import LibraryError, open_library
        from app.library.queries import get_instance

        try:
            library = open_library(args.db, create=False)
        except LibraryError as exc:
            raise UserError(f"{args.target} is not a file, and the instance UID cannot be looked up: {exc}") from exc
        try:
            with library.session() as s:
                inst = get_instance(s, args.target)
                if inst is None:
                    raise UserError(f"{args.target} is neither a file nor an instance UID in {library.db_path}")
                source = library.resolve(inst.file_path, inst.storage)
        finally:
            library.close()
        if not source.exists():
            raise UserError(f"the file of instance {args.target} is missing: {source}")
    display = display_file(source, None if args.preset is None else args.preset - 1)
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".png":
        raise UserError("--out must be a .png file")
    atomic_write(
        out, lambda f: Image.fromarray(display.pixels, mode="L").save(f, format="PNG"), fsync=False, mkdir=True
    )
    rows, cols = display.pixels.shape
    what = ""
    if display.preset_index is not None:
        what = f", preset {display.preset_index + 1}: {display.presets[display.preset_index].label()}"
    print(NOTICE)
    print(f"Wrote {out} ({cols} x {rows}{what})")
    return 0
