"""Build a run when it is missing: the one place that knows how a pretraining run and a
fine-tuning run are made from a config, used by ``adaptor-train pretrain / finetune-*``, by a
fine-tuning run whose Adaptor is missing (``pretrain_config``), by bundle recipes
(:mod:`core_model.export.recipe`) and by the demo (:mod:`core_model.demo`).

Exporting is not here: :mod:`core_model.training` never imports :mod:`core_model.export`; the
export side calls this module to build the runs it needs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable
from pathlib import Path

from core_model.errors import UserError
from core_model.training.artifacts import pretrained_exists
from core_model.training.config import FINETUNE_DEFAULTS, PRETRAIN_DEFAULTS, load_config, save_config

TASKS = ("classification", "segmentation")

# the segmentation default head (FINETUNE_DEFAULTS' head is the classification MLP); the one copy
SEGMENTATION_HEAD = {"kind": "progressive", "dropout": 0.0}


def finetune_defaults(task: str, head: dict | None = None) -> dict:
    """The fine-tuning defaults of ``task``; ``head`` replaces the default head section."""
    if task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {task!r}")
    if head is None and task == "segmentation":
        head = SEGMENTATION_HEAD
    if head is None:
        return FINETUNE_DEFAULTS
    return {**FINETUNE_DEFAULTS, "head": copy.deepcopy(head)}


def load_finetune_config(
    task: str, path: str | Path | None, overrides: Iterable[str] = (), *, head: dict | None = None
) -> dict:
    """A fine-tuning config: the task's defaults <- the YAML file <- ``section.key=value`` overrides."""
    return load_config(finetune_defaults(task, head), path, overrides)


# ---- pretraining -------------------------------------------------------------------------------
def pretrain(
    cfg: dict, out: str | Path, *, result=None, cache=None, progress: bool = True, resume: bool = False
) -> dict:
    """Pretrain an Adaptor into ``out`` (its config.yaml written first); records and the feature
    cache are loaded / built when not given. Returns the final validation metrics."""
    from core_model.training.datasets import ensure_cache, load_records, summary
    from core_model.training.distributed import dist_info
    from core_model.training.pretrain import Pretrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg["adaptor"].get("preset") == "none" and cfg["train"].epochs:
        # the identity control has nothing to train: save it as it is (the config says epochs 0)
        cfg = {**cfg, "train": dataclasses.replace(cfg["train"], epochs=0)}
    if result is None:
        result = load_records(cfg["data"])
    if dist_info()[0] == 0:
        save_config(cfg, out / "config.yaml")
    if cache is None:
        cache = ensure_cache(cfg, result.records, progress=progress)
    recs = result.records
    trainer = Pretrainer(
        cfg,
        out,
        cache,
        [r.report for r in recs],
        [r.finding for r in recs],
        [r.split for r in recs],
        progress=progress,
        data_summary=summary(result),
        lesion_masks=[r.lesion_mask_path for r in recs],
    )
    return trainer.run(resume=resume)


def ensure_pretrained(
    run: str | Path, pretrain_config: str | Path | None = None, progress: bool = True, overrides: Iterable[str] = ()
) -> Path:
    """The pretraining run ``run``; pretrained first from ``pretrain_config`` (with ``--set`` style
    ``overrides``) when it is missing. A run killed part-way continues from its last checkpoint."""
    run = Path(run)
    if pretrained_exists(run):
        return run
    if not pretrain_config:
        raise UserError(
            f"no pretrained Adaptor in {run}; run `adaptor-train pretrain --out {run}` first "
            f"or set pretrain_config so it is built automatically"
        )
    print(f"pretrained Adaptor {run} is missing: pretraining it first with {pretrain_config}")
    cfg = load_config(PRETRAIN_DEFAULTS, pretrain_config, overrides)
    pretrain(cfg, run, progress=progress, resume=(run / "checkpoint").is_dir())
    return run


# ---- fine-tuning -------------------------------------------------------------------------------
def finetune(task: str, cfg: dict, out: str | Path, progress: bool = True) -> dict:
    """Fine-tune a ``task`` head into ``out`` (its config.yaml written first; the pretraining run
    is built first when it is missing and ``pretrain_config`` is set). Returns the run's result."""
    from core_model.training.finetune import finetune_classification, finetune_segmentation

    run = {"classification": finetune_classification, "segmentation": finetune_segmentation}[task]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return run(cfg, out, progress=progress)


def finetuned_exists(out: str | Path) -> bool:
    """True when ``out`` holds a finished fine-tuning run (head.json, then the test predictions,
    then metrics.json are written; a run killed before its metrics.json is built again)."""
    return (Path(out) / "head.json").exists() and (Path(out) / "metrics.json").exists()


def ensure_finetuned(
    task: str,
    config: str | Path,
    out: str | Path,
    overrides: Iterable[str] = (),
    *,
    head: dict | None = None,
    progress: bool = True,
    announce: str | None = None,
) -> bool:
    """Fine-tune ``out`` from the config file ``config`` unless it is already there; True when it
    was built now. ``announce`` is printed before a build."""
    if finetuned_exists(out):
        return False
    cfg = load_finetune_config(task, config, overrides, head=head)
    if announce:
        print(announce)
    finetune(task, cfg, out, progress=progress)
    return True
