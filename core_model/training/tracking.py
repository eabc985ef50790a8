"""Experiment tracking beside the CSV logs: TensorBoard event files and, when asked, W&B.

One small interface for pretraining, fine-tuning and protocols::

    with open_tracker(out, tensorboard=True, wandb=None, run_name="pretrain", config=cfg) as tracker:
        tracker.log(step, {"train_loss": 0.4, "i2t_R@5": 0.8})

``train.tensorboard: true`` (or ``--tensorboard``) writes event files to ``<out>/tensorboard/``
through ``torch.utils.tensorboard.SummaryWriter`` (``tensorboard --logdir <out>``);
``train.wandb: <project>`` logs the same scalars to that W&B project (offline unless W&B is
configured on the machine). Neither is installed by default for W&B; asking for one whose package
is missing is a one-line :class:`~core_model.errors.ConfigError` before anything is trained.
Only finite numbers are logged (strings and lists stay in the CSV / JSON). The CSV logs and
``metrics.json`` stay the record of a run; trackers are a view of it.
"""

from __future__ import annotations

import math
from pathlib import Path

from core_model.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"


def _scalars(values: dict) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        v = float(v)
        if math.isfinite(v):
            out[str(k)] = v
    return out


class Tracker:
    """Logs scalars to every backend it holds (none: a no-op)."""

    def __init__(self, backends: list | None = None):
        self.backends = backends or []

    @property
    def active(self) -> bool:
        return bool(self.backends)

    def log(self, step: int, values: dict, prefix: str = "") -> None:
        scalars = {f"{prefix}{k}": v for k, v in _scalars(values).items()}
        if scalars:
            for b in self.backends:
                b.log(int(step), scalars)

    def text(self, tag: str, text: str) -> None:
        for b in self.backends:
            b.text(tag, text)

    def close(self) -> None:
        for b in self.backends:
            b.close()
        self.backends = []

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _TensorBoard:
    def __init__(self, logdir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard needs the 'tensorboard' package: pip install tensorboard "
                "(or leave train.tensorboard off; the CSV logs are written either way)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(logdir))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, project: str, out: Path, run_name: str, config: dict | None):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                f"train.wandb: {project} needs the 'wandb' package: pip install wandb (or drop train.wandb)"
            ) from None
        from core_model.fileio import jsonable

        self.run = wandb.init(project=project, dir=str(out), name=run_name, config=jsonable(config or {}))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def text(self, tag: str, text: str) -> None:
        self.run.summary[tag] = text

    def close(self) -> None:
        self.run.finish()


def open_tracker(
    out: str | Path,
    *,
    tensorboard: bool = False,
    wandb: str | None = None,
    run_name: str | None = None,
    config: dict | None = None,
    enabled: bool = True,
) -> Tracker:
    """The tracker a run asked for (``enabled=False``, e.g. on a non-zero rank: a no-op)."""
    out = Path(out)
    backends: list = []
    if enabled and tensorboard:
        backends.append(_TensorBoard(out / TENSORBOARD_DIR))
    if enabled and wandb:
        if not isinstance(wandb, str):
            raise ConfigError(f"train.wandb must be a W&B project name, not {wandb!r}")
        backends.append(_WandB(wandb, out, run_name or out.name, config))
    return Tracker(backends)


def tracker_for(train_cfg, out: str | Path, run_name: str, config: dict | None = None, *, enabled: bool = True):
    """The tracker of a run from its typed ``train`` section (``tensorboard``, ``wandb``)."""
    return open_tracker(
        out,
        tensorboard=bool(getattr(train_cfg, "tensorboard", False)),
        wandb=getattr(train_cfg, "wandb", None),
        run_name=run_name,
        config=config,
        enabled=enabled,
    )
