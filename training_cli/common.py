"""Arguments and plumbing shared by the `adaptor-train` subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core_model.errors import UserError

RESEARCH_NOTE = "Research use only: not a medical device, not for diagnosis."


def add_common(parser: argparse.ArgumentParser, *, out_help: str = "output folder") -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    parser.add_argument("--out", metavar="DIR", required=True, help=out_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable), e.g. --set train.lr=1e-4",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def add_train_shortcuts(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("shortcuts for common overrides")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--image-encoder", help="encoder preset, transformers id or local folder")
    g.add_argument("--text-encoder", help="encoder preset, transformers id or local folder")
    g.add_argument(
        "--tensorboard",
        action="store_const",
        const=True,
        help="also write TensorBoard event files to <out>/tensorboard (train.tensorboard=true)",
    )


def shortcut_overrides(args) -> list[str]:
    mapping = {
        "epochs": "train.epochs",
        "batch_size": "train.batch_size",
        "lr": "train.lr",
        "seed": "train.seed",
        "device": "train.device",
        "image_encoder": "encoders.image",
        "text_encoder": "encoders.text",
        "tensorboard": "train.tensorboard",
    }
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={json.dumps(value) if isinstance(value, str) else value}")
    return out


def prepare_out(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out
