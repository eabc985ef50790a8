"""`adaptor-train`: precompute, pretrain, fine-tune, evaluate, export (research use only)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from core_model.commands import add_commands, run_command

# Each command lives in training_cli/commands/<name>.py with `add_parser(subparsers)` and `run(args)`.
COMMANDS = [
    "phantoms",
    "precompute",
    "pretrain",
    "finetune_cls",
    "finetune_seg",
    "evaluate",
    "export",
    "demo",
    "protocol",
    "encoders",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adaptor-train",
        description="Train Adaptors on frozen chest X-ray image and report encoders. Research use only.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(sub, "training_cli.commands", COMMANDS)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("openjpeg", "PIL", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    code = run_command(
        parser, args, interrupted="interrupted; rerun with the same --out (and --resume where offered) to continue"
    )
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "LOCAL_RANK" in os.environ:
        _leave_worker(code)
    return code


def _leave_worker(code: int) -> None:
    """End a torchrun worker without the interpreter's teardown. The process group is already
    left (core_model.training.distributed.distributed_session), but gloo's C++ threads can still
    be torn down after Python's, aborting a rank at exit ("terminate called without an active
    exception", SIGABRT: 1 run in 6 under load before the explicit leave, about 1 in 25 after it),
    and torchrun then fails the whole job although every output was written. Every output is
    written atomically before this point; logs and stdio are flushed here."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
