"""A paper table as one reproducible object: ``adaptor-train protocol --config P --out DIR``.

A protocol file (``configs/protocols/*.yaml``) names the pretraining config (or an existing
run), the rows (``methods``: pretraining variants, plus the built-in ``controls``), the heads,
the downstream ``tasks`` (each a fine-tuning config and the metric of its table column), the
label ``fractions`` and the ``seeds``. Every cell (task x fraction x row x head x seed) is built
through the one pipeline (:func:`core_model.training.pipeline.ensure_pretrained` /
:func:`~core_model.training.pipeline.ensure_finetuned`) in ``DIR/runs/...``; finished runs and
feature caches are reused, so a killed protocol resumes where it stopped.

Then ``DIR/results.json``, ``results.csv`` and ``results.md``: per cell the metric per seed,
mean +- sd over seeds and the 95 % bootstrap interval of the seed-mean (test images resampled,
the same resample applied to every seed's predictions), the published numbers beside ours only
where :func:`core_model.metrics.references.lookup` says dataset, split, metric and fraction
match, a paired bootstrap of the method against each control with the same head (the
difference, its interval, a p-value), the patients shared between splits, and the protocol
text. A cell whose data is absent says "not measured here" (never a number).

Columns: the label fractions, the k-shot probes of ``few_shot: {k: [16], folds: 5}``
(classification only: k training images per class, one seeded draw per fold, mean +- sd over
the folds) and, for a ``task: retrieval`` column (``metric: i2t_P@5_finding``, ``t2i_R@10``,
...), the pretrained Adaptor alone on the test split (queries resampled for the interval).
``ablations:`` adds rows (override sets on the first method, each paired against it);
``tensorboard: true`` / ``--tensorboard`` gives every run and the table TensorBoard event files.

Built-in controls (rows):

``frozen``
    no Adaptor (``adaptor.preset=none``): the heads on the frozen image encoder's pooled
    feature (CLS) and patch tokens, the control that says whether the Adaptor adds anything;
``random``
    the (first) method's Adaptor untrained (its overrides and ``train.epochs=0``: its seeded
    initialisation);
``paper``
    the paper's pooled preset (every ``adaptor.*`` key back to its default, then
    ``adaptor.preset=paper``: 768-d, two layers, 12 heads); it has no patch tokens, so its
    segmentation cells are "not applicable".
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core_model.errors import ConfigError
from core_model.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, jsonable
from core_model.training.config import PRETRAIN_DEFAULTS, load_config

RESEARCH_LINE = "Research use only: not a medical device; these numbers say nothing about clinical use."
NOT_MEASURED = "not measured here"

METRICS = {  # metric -> (task, what the cell shows)
    "auroc": ("classification", "macro AUROC"),
    "accuracy": ("classification", "top-1 accuracy"),
    "dice_mgca": ("segmentation", "Dice (MGCA protocol)"),
    "dice_positive": ("segmentation", "Dice on positive images"),
}
for _d, _what in (("i2t", "image -> report"), ("t2i", "report -> image")):
    for _k in (1, 5, 10):
        METRICS[f"{_d}_R@{_k}"] = ("retrieval", f"{_what} Recall@{_k}")
    for _k in (1, 5):
        METRICS[f"{_d}_P@{_k}_finding"] = ("retrieval", f"{_what} Precision@{_k} by finding")
TASK_KINDS = ("classification", "segmentation", "retrieval")

CONTROLS = ("frozen", "random", "paper")

PROTOCOL_DEFAULTS: dict = {
    "name": "protocol",
    "seeds": 3,  # number of fine-tuning seeds (0 .. n-1) or a list of seeds
    "fractions": [0.01, 0.1, 1.0],
    "bootstrap": 1000,  # resamples of each cell's interval and of each paired comparison
    "pretrain": {
        "config": None,  # the pretraining config of every row (each row adds its overrides)
        "overrides": [],  # section.key=value for every row
        "pretrain_per_seed": False,  # True: each seed also pretrains its own Adaptor (train.seed)
    },
    "methods": None,  # row name -> {overrides: [...], run: existing run folder}; default {adaptor: {}}
    "controls": list(CONTROLS),
    "heads": ["mlp", "linear"],  # classification heads (segmentation uses its task's decoder)
    "tasks": [],  # [{name, task, config, metric, overrides, dataset, split_protocol}]
    # k-shot probes (classification columns beside the fractions): k labelled training images per
    # class (balanced), each fold a seeded draw; mean +- sd over the folds (DLILP, IPMI 2025)
    "few_shot": {"k": [], "folds": 5},
    # ablation rows: each a pretraining variant of the (first) method, [{name, overrides, preset,
    # description}], e.g. Adaptor width / depth, token vs pooled (preset: paper), patch pooling 1 / 2
    # (cache.patch_pool), cross tokens regional / contextual (adaptor.cross_tokens)
    "ablations": [],
    "tensorboard": False,  # every run's train.tensorboard, and the cells' values in DIR/tensorboard
    "wandb": None,  # a W&B project for every run and the table (needs the wandb package)
}

_TASK_KEYS = {"name", "task", "config", "metric", "overrides", "dataset", "split_protocol", "description"}
_METHOD_KEYS = {"overrides", "run", "description"}
_ABLATION_KEYS = {"name", "overrides", "preset", "description"}


@dataclass
class Row:
    name: str
    overrides: list[str]
    run: str | None = None
    control: bool = False
    ablation: str | None = None  # what an ablation row changes (its description)

    def label(self) -> str:
        if self.ablation is not None:
            return f"ablation {self.name}: {self.ablation}"
        return {
            "frozen": "frozen encoder alone (no Adaptor)",
            "random": "random (untrained) Adaptor",
            "paper": "paper preset (pooled)",
        }.get(self.name, self.name)


@dataclass(frozen=True)
class Setting:
    """A table column: a label fraction, or ``shots`` labelled training images per class."""

    fraction: float | None = None
    shots: int | None = None

    def label(self) -> str:
        return f"{self.shots}-shot" if self.shots else f"{self.fraction:g} of labels"

    def dirname(self) -> str:
        return f"shots{self.shots}" if self.shots else _frac_dir(float(self.fraction))

    def replicate(self) -> str:  # what the replicates of a cell are
        return "fold" if self.shots else "seed"


@dataclass
class Task:
    name: str
    task: str
    config: str | None  # a fine-tuning config (None: the task's defaults + overrides)
    metric: str
    overrides: list[str] = field(default_factory=list)
    dataset: str | None = None
    split_protocol: str | None = None


def _preset_overrides(preset: str) -> list[str]:
    """Every ``adaptor.*`` key back to its default (the presets refuse tokens-only keys set to
    anything else), the paper preset's own keys to their published values, then the preset."""
    from core_model.adaptor import AdaptorConfig
    from core_model.training.pretrain import PRESET_KEYS

    keys = {k: v for k, v in PRETRAIN_DEFAULTS["adaptor"].items() if k != "preset"}
    if preset == "paper":
        published = AdaptorConfig.paper(1, 1)
        keys.update({k: getattr(published, k) for k in PRESET_KEYS["paper"]})
    return [f"adaptor.{k}={json.dumps(v)}" for k, v in keys.items()] + [f"adaptor.preset={preset}"]


CONTROL_OVERRIDES = {
    "frozen": lambda: _preset_overrides("none"),
    "random": lambda: ["train.epochs=0"],
    "paper": lambda: _preset_overrides("paper"),
}


@dataclass
class Protocol:
    path: Path
    name: str
    seeds: list[int]
    fractions: list[float]
    bootstrap: int
    pretrain_config: str | None
    pretrain_overrides: list[str]
    pretrain_per_seed: bool
    rows: list[Row]
    heads: list[str]
    tasks: list[Task]
    description: str = ""
    few_shot_k: list[int] = field(default_factory=list)
    few_shot_folds: int = 5
    tensorboard: bool = False
    wandb: str | None = None

    def tracking_overrides(self) -> list[str]:
        """``train.*`` overrides that give every run of the protocol its tracker."""
        out = ["train.tensorboard=true"] if self.tensorboard else []
        return out + ([f"train.wandb={json.dumps(self.wandb)}"] if self.wandb else [])


def _strings(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of section.key=value strings")
    return list(value)


def _resolve(base: Path, value: str | None) -> str | None:
    """Paths in a protocol file are relative to the working folder (like every config), unless
    only the protocol's folder has them."""
    if not value:
        return None
    p = Path(value)
    if p.is_absolute() or p.exists() or not (base / p).exists():
        return str(p)
    return str(base / p)


def load_protocol(path: str | Path, overrides=()) -> Protocol:
    """Read and check a protocol file (unknown keys refused, with the known ones listed)."""
    path = Path(path)
    cfg = load_config(PROTOCOL_DEFAULTS, path, overrides)
    import yaml

    description = str((yaml.safe_load(path.read_text()) or {}).get("description", "") or "")
    seeds = cfg["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ConfigError("seeds must be at least 1")
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError("seeds must be a number of seeds or a list of integers")
    fractions = cfg["fractions"]
    if not isinstance(fractions, list) or not fractions:
        raise ConfigError("fractions must be a non-empty list, e.g. [0.01, 0.1, 1.0]")
    try:
        fractions = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise ConfigError(f"fractions must be numbers, got {cfg['fractions']!r}") from None
    if any(not 0 < f <= 1 for f in fractions):
        raise ConfigError("every fraction must be in (0, 1]")
    base = path.parent
    pre = cfg["pretrain"]
    rows: list[Row] = []
    methods = cfg["methods"] if cfg["methods"] is not None else {"adaptor": {}}
    if not isinstance(methods, dict) or not methods:
        raise ConfigError("methods must map row names to {overrides: [...], run: ...}")
    for name, spec in methods.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"methods.{name} must be a mapping")
        unknown = sorted(set(spec) - _METHOD_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) methods.{name}.{', '.join(unknown)}; known: {', '.join(sorted(_METHOD_KEYS))}"
            )
        if name in CONTROLS:
            raise ConfigError(f"method name {name!r} is a built-in control; choose another name")
        rows.append(
            Row(
                str(name), _strings(spec.get("overrides"), f"methods.{name}.overrides"), _resolve(base, spec.get("run"))
            )
        )
    rows += _ablation_rows(cfg["ablations"], rows)
    controls = cfg["controls"] or []
    for c in controls:
        if c not in CONTROLS:
            raise ConfigError(f"unknown control {c!r}; built-in controls: {', '.join(CONTROLS)}")
        # the random control is the (first) method's Adaptor untrained, not the config's preset
        base = rows[0].overrides if c == "random" and rows and rows[0].ablation is None else []
        rows.append(Row(c, base + CONTROL_OVERRIDES[c](), None, control=True))
    heads = cfg["heads"]
    if not isinstance(heads, list) or not heads or any(h not in ("mlp", "linear") for h in heads):
        raise ConfigError("heads must be a list of mlp / linear")
    tasks = []
    if not isinstance(cfg["tasks"], list) or not cfg["tasks"]:
        raise ConfigError("tasks must list at least one {name, task, metric, config and/or overrides}")
    for i, t in enumerate(cfg["tasks"]):
        if not isinstance(t, dict):
            raise ConfigError(f"tasks[{i}] must be a mapping")
        unknown = sorted(set(t) - _TASK_KEYS)
        if unknown:
            raise ConfigError(f"unknown key(s) tasks[{i}].{', '.join(unknown)}; known: {', '.join(sorted(_TASK_KEYS))}")
        for key in ("name", "task", "metric"):
            if not t.get(key):
                raise ConfigError(f"tasks[{i}] needs {key}")
        if t["task"] not in TASK_KINDS:
            raise ConfigError(f"tasks[{i}].task must be one of {', '.join(TASK_KINDS)}, not {t['task']!r}")
        if t["metric"] not in METRICS:
            raise ConfigError(f"tasks[{i}].metric must be one of {', '.join(METRICS)}")
        if METRICS[t["metric"]][0] != t["task"]:
            raise ConfigError(f"tasks[{i}]: metric {t['metric']} belongs to {METRICS[t['metric']][0]}, not {t['task']}")
        tasks.append(
            Task(
                str(t["name"]),
                t["task"],
                _resolve(base, t.get("config")),
                t["metric"],
                _strings(t.get("overrides"), f"tasks[{i}].overrides"),
                t.get("dataset"),
                t.get("split_protocol"),
            )
        )
    if len({t.name for t in tasks}) != len(tasks):
        raise ConfigError("task names must be unique")
    fs = cfg["few_shot"]
    if not isinstance(fs, dict) or set(fs) - {"k", "folds"}:
        raise ConfigError("few_shot must be a mapping {k: [16], folds: 5}")
    ks = fs.get("k") or []
    ks = [ks] if isinstance(ks, int) else ks
    if not isinstance(ks, list) or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise ConfigError(f"few_shot.k must be a list of positive integers (images per class), got {fs.get('k')!r}")
    folds = fs.get("folds", 5)
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 1:
        raise ConfigError(f"few_shot.folds must be a positive integer, got {folds!r}")
    return Protocol(
        path=path,
        name=str(cfg["name"]),
        seeds=seeds,
        fractions=fractions,
        bootstrap=int(cfg["bootstrap"]),
        pretrain_config=_resolve(base, pre["config"]),
        pretrain_overrides=_strings(pre["overrides"], "pretrain.overrides"),
        pretrain_per_seed=bool(pre["pretrain_per_seed"]),
        rows=rows,
        heads=heads,
        tasks=tasks,
        description=description.strip(),
        few_shot_k=sorted(set(ks)),
        few_shot_folds=folds,
        tensorboard=bool(cfg["tensorboard"]),
        wandb=cfg["wandb"] or None,
    )


def _ablation_rows(spec, methods: list[Row]) -> list[Row]:
    """``ablations:`` -> rows: the first method's overrides, then the preset's (``preset: paper``
    resets every tokens-only key, as the ``paper`` control does), then the ablation's own."""
    if spec in (None, []):
        return []
    if not isinstance(spec, list):
        raise ConfigError("ablations must be a list of {name, overrides, preset, description}")
    base = methods[0].overrides if methods else []
    taken = {r.name for r in methods} | set(CONTROLS)
    out = []
    for i, a in enumerate(spec):
        if not isinstance(a, dict) or not a.get("name"):
            raise ConfigError(f"ablations[{i}] must be a mapping with a name")
        unknown = sorted(set(a) - _ABLATION_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) ablations[{i}].{', '.join(unknown)}; known: {', '.join(sorted(_ABLATION_KEYS))}"
            )
        name = str(a["name"])
        if name in taken:
            raise ConfigError(f"ablation name {name!r} is taken by another row; choose another name")
        taken.add(name)
        own = _strings(a.get("overrides"), f"ablations[{i}].overrides")
        preset = a.get("preset")
        if preset is not None and preset not in ("tokens", "paper"):
            raise ConfigError(f"ablations[{i}].preset must be tokens or paper, not {preset!r}")
        if not own and preset is None:
            raise ConfigError(f"ablations[{i}] ({name}) changes nothing: give overrides or a preset")
        overrides = base + (_preset_overrides(preset) if preset == "paper" else []) + own
        out.append(
            Row(name, overrides, None, ablation=str(a.get("description") or "; ".join(own) or f"preset {preset}"))
        )
    return out


# ---- data presence -------------------------------------------------------------------------------
_PATH_KEYS = ("path", "images", "reports", "test_path", "val_path", "mask_dir", "split_file")


def missing_data(data: dict) -> str | None:
    """Why a (non-phantom) dataset cannot be read here, or None: a named file or folder is absent.
    Phantoms are generated when missing, so they are always present."""
    if data.get("kind") == "phantoms":
        return None
    for key in _PATH_KEYS:
        value = data.get(key)
        if value and not Path(str(value)).exists():
            return f"data.{key} {value} not found"
    return None


# ---- running ---------------------------------------------------------------------------------------
def _frac_dir(f: float) -> str:
    return f"frac{f:g}"


def _seed_suffix(protocol: Protocol, seed: int) -> str:
    return f"-seed{seed}" if protocol.pretrain_per_seed else ""


def pretrained_run(protocol: Protocol, out: Path, row: Row, seed: int) -> tuple[Path | None, str | None]:
    """Build (or reuse) the row's pretraining run; ``(None, reason)`` when its data is absent."""
    from core_model.training.artifacts import pretrained_exists
    from core_model.training.pipeline import ensure_pretrained

    if row.run and not protocol.pretrain_per_seed:
        run = Path(row.run)
        if pretrained_exists(run):
            return run, None
        if not protocol.pretrain_config:
            return None, f"pretraining run {run} not found"
    else:
        run = out / "pretrained" / f"{row.name}{_seed_suffix(protocol, seed)}"
    if pretrained_exists(run):
        return run, None
    if not protocol.pretrain_config:
        raise ConfigError(f"row {row.name!r}: pretrain.config is needed to build its Adaptor")
    overrides = protocol.pretrain_overrides + row.overrides + protocol.tracking_overrides()
    if protocol.pretrain_per_seed:
        overrides = overrides + [f"train.seed={seed}"]
    cfg = load_config(PRETRAIN_DEFAULTS, protocol.pretrain_config, overrides)
    why = missing_data(cfg["data"])
    if why:
        return None, f"pretraining data absent ({why})"
    ensure_pretrained(run, protocol.pretrain_config, progress=False, overrides=overrides)
    return run, None


def static_reason(task: Task, row: Row) -> str | None:
    """Why a cell can never have a number (whatever the data), or None."""
    preset = _preset_of(row)
    if task.task == "segmentation" and preset == "paper":
        return "not applicable: the paper preset has no patch tokens"
    if task.task == "retrieval" and preset == "none":
        return "not applicable: without an Adaptor images and reports are not in one space"
    return None


def _preset_of(row: Row) -> str | None:
    """The Adaptor preset a row's pretraining overrides end with (None: the config's own)."""
    presets = [o.split("=", 1)[1].strip().strip("\"'") for o in row.overrides if o.startswith("adaptor.preset=")]
    return presets[-1] if presets else None


def _setting(fraction) -> Setting:
    return fraction if isinstance(fraction, Setting) else Setting(fraction=float(fraction))


def cell_dir(out: Path, task: Task, row: Row, head: str, fraction, seed: int) -> Path:
    """``fraction``: a label fraction or a :class:`Setting`; ``seed``: the seed (or the fold)."""
    s = _setting(fraction)
    return out / "runs" / task.name / row.name / head / s.dirname() / f"{s.replicate()}{seed}"


def heads_of(protocol: Protocol, task: Task) -> list[str]:
    if task.task == "retrieval":
        return ["embedding"]
    return protocol.heads if task.task == "classification" else ["decoder"]


def settings_of(protocol: Protocol, task: Task) -> list[Setting]:
    """The columns of a task's table: the label fractions (and the k-shot probes for
    classification); retrieval scores the pretrained Adaptor alone, so it has one column."""
    if task.task == "retrieval":
        return [Setting(fraction=1.0)]
    out = [Setting(fraction=f) for f in protocol.fractions]
    if task.task == "classification":
        out += [Setting(shots=k) for k in protocol.few_shot_k]
    return out


def replicates_of(protocol: Protocol, task: Task, setting: Setting) -> list[int]:
    """The seeds of a cell (or its folds, for a k-shot column)."""
    if setting.shots:
        return list(range(protocol.few_shot_folds))
    if task.task == "retrieval" and not protocol.pretrain_per_seed:
        return protocol.seeds[:1]  # one pretraining run per row: other seeds would repeat it
    return protocol.seeds


def _finetune_kind(task: Task) -> str:  # retrieval reads its data like a classification task
    return "segmentation" if task.task == "segmentation" else "classification"


def run_protocol(protocol: Protocol, out: str | Path, *, progress: bool = True, log=print) -> dict:
    """Run every missing cell, then write ``results.json`` / ``.csv`` / ``.md`` in ``out``."""
    from core_model.training.pipeline import ensure_finetuned, load_finetune_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[tuple, str] = {}  # (task, row, head, fraction, seed) -> reason it has no run
    built = reused = 0
    for task in protocol.tasks:
        base_cfg = load_finetune_config(_finetune_kind(task), task.config, task.overrides)
        data_missing = missing_data(base_cfg["data"])
        for row in protocol.rows:
            runs: dict[int, tuple] = {}  # pretraining seed -> (run, reason it has none)
            row_reason = f"data absent ({data_missing})" if data_missing else static_reason(task, row)
            for head in heads_of(protocol, task):
                for setting in settings_of(protocol, task):
                    for rep in replicates_of(protocol, task, setting):
                        key = (task.name, row.name, head, setting, rep)
                        # a k-shot fold probes the first seed's Adaptor (folds vary the labelled images)
                        pseed = protocol.seeds[0] if setting.shots else rep
                        if pseed not in runs:
                            runs[pseed] = (
                                (None, row_reason) if row_reason else pretrained_run(protocol, out, row, pseed)
                            )
                        run, reason = runs[pseed]
                        if reason:
                            status[key] = reason
                            continue
                        cdir = cell_dir(out, task, row, head, setting, rep)
                        announce = (
                            f"cell {task.name} / {row.name} / {head} / {setting.label()} / {setting.replicate()} {rep}"
                        )
                        if task.task == "retrieval":
                            was_built = _retrieval_cell(run, base_cfg, cdir, protocol, progress, announce, log)
                        else:
                            overrides = [
                                *task.overrides,
                                f"pretrained={json.dumps(str(run))}",
                                "pretrain_config=null",
                                f"train.seed={rep}",
                                f"eval.bootstrap={protocol.bootstrap}",
                                *protocol.tracking_overrides(),
                            ]
                            if setting.shots:
                                overrides += [f"data.shots={setting.shots}", f"data.shot_seed={rep}"]
                            else:
                                overrides.append(f"data.fraction={setting.fraction}")
                            if task.task == "classification":
                                overrides.append(f"head.kind={head}")
                            was_built = ensure_finetuned(
                                task.task, task.config, cdir, overrides, progress=progress, announce=announce
                            )
                        built += int(was_built)
                        reused += int(not was_built)
    results = collect_results(protocol, out, status)
    results["cells_built"] = built
    results["cells_reused"] = reused
    write_results(results, out)
    track_results(protocol, results, out)
    log(f"protocol {protocol.name}: {built} cell run(s) built, {reused} reused; wrote {out / 'results.md'}")
    return results


def _retrieval_cell(
    run: Path, base_cfg: dict, cdir: Path, protocol: Protocol, progress: bool, announce: str, log
) -> bool:
    """Score a pretrained Adaptor's test-split retrieval (with per-query values); False when done."""
    from core_model.training.evaluate import evaluate

    if (cdir / "metrics.json").exists() and (cdir / "per_query_test.csv").exists():
        return False
    log(announce)
    cdir.mkdir(parents=True, exist_ok=True)
    evaluate(run, "retrieval", dict(base_cfg["data"]), cdir, split="test", progress=progress, n_boot=protocol.bootstrap)
    return True


def track_results(protocol: Protocol, results: dict, out: Path) -> None:
    """The table in TensorBoard / W&B when asked: each measured cell's mean (and interval) as a
    scalar ``<task>/<row>/<head>/<column>``, the comparisons' differences, and results.md as text."""
    from core_model.training.tracking import open_tracker

    if not (protocol.tensorboard or protocol.wandb):
        return
    with open_tracker(
        out, tensorboard=protocol.tensorboard, wandb=protocol.wandb, run_name=f"protocol-{protocol.name}"
    ) as tracker:
        for c in results["cells"]:
            if c["status"] == "measured":
                tag = f"{c['task']}/{c['row']}/{c['head']}/{c['column'].replace(' ', '_')}/"
                tracker.log(
                    0, {"mean": c["mean"], "sd": c["sd"], "ci_low": c.get("ci_low"), "ci_high": c.get("ci_high")}, tag
                )
        for k in results["comparisons"]:
            tag = f"{k['task']}/{k['method']}-vs-{k['control']}/{k['head']}/{k['column'].replace(' ', '_')}/"
            tracker.log(0, {"difference": k["difference"], "p_value": k["p_value"]}, tag)
        tracker.text("results", (out / "results.md").read_text())


# ---- reading the runs back ---------------------------------------------------------------------
def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


class CellScores:
    """A run's per-image test outputs and the metric of its table column over any image subset."""

    def __init__(self, run: Path, task: str, metric: str):
        self.metric = metric
        if task == "classification":
            header, rows = _read_csv(run / "predictions_test.csv")
            pcols = [i for i, h in enumerate(header) if h.startswith("p_")]
            ycols = [i for i, h in enumerate(header) if h.startswith("y_")]
            self.ids = [r[0] for r in rows]
            self.p = np.array([[float(r[i]) for i in pcols] for r in rows], dtype=np.float64).reshape(len(rows), -1)
            self.y = np.array(
                [[float(r[i]) if r[i] != "" else math.nan for i in ycols] for r in rows], dtype=np.float64
            ).reshape(len(rows), -1)
        elif task == "retrieval":
            header, rows = _read_csv(run / "per_query_test.csv")
            if metric not in header:
                raise ConfigError(f"{run / 'per_query_test.csv'} has no {metric} column (no finding labels?)")
            col = header.index(metric)
            self.ids = [r[0] for r in rows]
            self.hits = np.array([float(r[col]) if r[col] != "" else math.nan for r in rows], dtype=np.float64)
        else:
            header, rows = _read_csv(run / "per_image_test.csv")
            self.ids = [r[0] for r in rows]
            self.counts = np.array([[float(v) for v in r[1:4]] for r in rows], dtype=np.float64).reshape(len(rows), 3)

    def strata(self) -> np.ndarray | None:
        from core_model.metrics.classification import _strata

        if self.metric == "auroc":
            return _strata(self.y)
        if self.metric == "accuracy":
            return self.y.argmax(axis=1)
        return None

    def __call__(self, idx: np.ndarray) -> float:
        from core_model.metrics.classification import auroc_per_class, top1_accuracy

        if self.metric == "auroc":
            values, _ = auroc_per_class(self.y[idx], self.p[idx])
            finite = [v for v in values if v == v]
            return float(np.mean(finite)) if finite else math.nan
        if self.metric == "accuracy":
            return top1_accuracy(self.y[idx].argmax(axis=1), self.p[idx])
        if METRICS[self.metric][0] == "retrieval":
            h = self.hits[idx]
            h = h[~np.isnan(h)]
            return float(h.mean()) if h.size else math.nan
        from core_model.metrics.segmentation import count_scores

        c = self.counts[idx]
        return float(count_scores(c[:, 0], c[:, 1], c[:, 2])[self.metric])


def _seed_mean(scores: list[CellScores]):
    return lambda idx: float(np.mean([s(idx) for s in scores]))


def _aligned(scores: list[CellScores]) -> bool:
    return all(s.ids == scores[0].ids for s in scores)


def collect_results(protocol: Protocol, out: Path, status: dict | None = None) -> dict:
    """Read every cell's runs back into the protocol's results (nothing is trained here)."""
    from core_model.metrics.bootstrap import bootstrap_ci, paired_bootstrap
    from core_model.metrics.references import comparability, lookup

    status = status or {}
    cells, comparisons, hygiene, protocol_text = [], [], {}, {}
    scores_of: dict[tuple, list[CellScores]] = {}
    for task in protocol.tasks:
        for row in protocol.rows:
            for head in heads_of(protocol, task):
                for setting in settings_of(protocol, task):
                    fraction = setting.fraction
                    seeds, values, runs, reasons = [], [], [], []
                    scores: list[CellScores] = []
                    result = None
                    for seed in replicates_of(protocol, task, setting):
                        cdir = cell_dir(out, task, row, head, setting, seed)
                        mpath = cdir / "metrics.json"
                        if not mpath.exists():
                            key = (task.name, row.name, head, setting, seed)
                            reasons.append(status.get(key) or static_reason(task, row) or "not run")
                            continue
                        result = json.loads(mpath.read_text())
                        s = CellScores(cdir, task.task, task.metric)
                        scores.append(s)
                        seeds.append(seed)
                        values.append(s(np.arange(len(s.ids))))
                        runs.append(str(cdir))
                    cell = {
                        "task": task.name,
                        "metric": task.metric,
                        "row": row.name,
                        "row_label": row.label(),
                        "control": row.control,
                        "head": head,
                        "fraction": fraction,
                        "shots": setting.shots,
                        "column": setting.label(),
                        "replicate": setting.replicate(),
                        "seeds": seeds,
                        "values": values,
                        "runs": runs,
                    }
                    if setting.shots:
                        cell["folds"] = seeds
                    if not values:
                        cell.update(status=NOT_MEASURED, reason=reasons[0] if reasons else "not run")
                        cell["references"] = (
                            []
                            if setting.shots
                            else _refs(lookup, task.dataset, task.metric, task.split_protocol, fraction)
                        )
                        cells.append(cell)
                        continue
                    mean = float(np.mean(values))
                    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                    cell.update(status="measured", mean=mean, sd=sd, n_seeds=len(values))
                    if _aligned(scores):
                        ci = bootstrap_ci(
                            _seed_mean(scores),
                            len(scores[0].ids),
                            n_boot=protocol.bootstrap,
                            seed=0,
                            strata=scores[0].strata(),
                        )
                        cell.update(ci_low=ci["ci_low"], ci_high=ci["ci_high"], n_test=ci["n"])
                        cell["ci_method"] = (
                            f"95 % percentile bootstrap of the {setting.replicate()} mean, "
                            f"{protocol.bootstrap} resamples of the test images"
                            + (" (queries)" if task.task == "retrieval" else "")
                        )
                        scores_of[(task.name, row.name, head, setting)] = scores
                    else:
                        cell.update(ci_low=math.nan, ci_high=math.nan, ci_method="seeds have different test sets")
                    split = result.get("split") if isinstance(result.get("split"), dict) else {}  # evaluate: a name
                    dataset = result.get("dataset")
                    if setting.shots:
                        ok, why = False, "k-shot probes: no published reference with the same draws"
                    elif task.task == "retrieval":
                        ok, why = False, "retrieval: no published reference on this data"
                    else:
                        ok, why = comparability(dataset, task.metric, split.get("protocol_id"), fraction)
                    cell["dataset"] = dataset
                    cell["split_protocol_id"] = split.get("protocol_id")
                    cell["references"] = (
                        _refs(lookup, dataset, task.metric, split.get("protocol_id"), fraction) if ok else []
                    )
                    cell["references_note"] = why
                    cells.append(cell)
                    if task.task == "retrieval":
                        continue
                    hygiene.setdefault(task.name, split.get("patient_overlap"))
                    protocol_text.setdefault(
                        task.name,
                        {
                            "dataset": dataset,
                            "split": split.get("protocol"),
                            "split_sizes_at_this_fraction": {},
                            "split_notes": split.get("notes"),
                            "threshold": result.get("metrics", {}).get("threshold_method"),
                        },
                    )
                    protocol_text[task.name]["split_sizes_at_this_fraction"][setting.label()] = split.get("sizes")
    # paired comparisons: each method against each control and each ablation, same head, same cell
    methods = [r for r in protocol.rows if not r.control and r.ablation is None]
    controls = [r for r in protocol.rows if r.control or r.ablation is not None]
    for task in protocol.tasks:
        for m in methods:
            for c in controls:
                for head in heads_of(protocol, task):
                    for setting in settings_of(protocol, task):
                        a = scores_of.get((task.name, m.name, head, setting))
                        b = scores_of.get((task.name, c.name, head, setting))
                        if not a or not b or a[0].ids != b[0].ids:
                            continue
                        pb = paired_bootstrap(
                            _seed_mean(a),
                            _seed_mean(b),
                            len(a[0].ids),
                            n_boot=protocol.bootstrap,
                            seed=1,
                            strata=a[0].strata(),
                        )
                        comparisons.append(
                            {
                                "task": task.name,
                                "metric": task.metric,
                                "method": m.name,
                                "control": c.name,
                                "head": head,
                                "fraction": setting.fraction,
                                "shots": setting.shots,
                                "column": setting.label(),
                                **pb,
                            }
                        )
    return {
        "protocol": protocol.name,
        "protocol_file": str(protocol.path),
        "research_use_only": True,
        "research_note": RESEARCH_LINE,
        "description": protocol.description,
        "seeds": protocol.seeds,
        "fractions": protocol.fractions,
        "few_shot": {"k": protocol.few_shot_k, "folds": protocol.few_shot_folds},
        "bootstrap": protocol.bootstrap,
        "pretrain_config": protocol.pretrain_config,
        "pretrain_per_seed": protocol.pretrain_per_seed,
        "rows": [
            {
                "name": r.name,
                "label": r.label(),
                "control": r.control,
                "ablation": r.ablation is not None,
                "overrides": r.overrides,
            }
            for r in protocol.rows
        ],
        "tasks": [t.__dict__ for t in protocol.tasks],
        "cells": cells,
        "comparisons": comparisons,
        "split_hygiene": hygiene,
        "protocol_text": protocol_text,
    }


def _refs(lookup, dataset, metric, protocol_id, fraction) -> list[dict]:
    if not dataset:
        return []
    return [
        {"method": r.method, "value": r.value, "value_percent": r.value_percent, "note": r.note, "source": r.source}
        for r in lookup(dataset, metric, protocol_id, fraction)
    ]


# ---- writing ---------------------------------------------------------------------------------------
CSV_COLUMNS = [
    "task",
    "metric",
    "row",
    "control",
    "head",
    "fraction",
    "shots",
    "status",
    "n_seeds",
    "mean",
    "sd",
    "ci_low",
    "ci_high",
    "n_test",
    "values",
    "references",
    "reason",
]


def _fmt(v, digits: int = 3) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def results_csv(results: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for c in results["cells"]:
        w.writerow(
            [
                c["task"],
                c["metric"],
                c["row"],
                int(c["control"]),
                c["head"],
                "" if c["fraction"] is None else f"{c['fraction']:g}",
                c.get("shots") or "",
                c["status"],
                c.get("n_seeds", 0),
                _fmt(c.get("mean"), 4),
                _fmt(c.get("sd"), 4),
                _fmt(c.get("ci_low"), 4),
                _fmt(c.get("ci_high"), 4),
                c.get("n_test", ""),
                ";".join(_fmt(v, 4) for v in c["values"]),
                ";".join(f"{r['method']}={r['value_percent']}" for r in c.get("references", [])),
                c.get("reason", ""),
            ]
        )
    return buf.getvalue()


def _cell_text(c: dict) -> str:
    if c["status"] != "measured":
        return NOT_MEASURED if c["reason"].startswith(("data absent", "pretraining data absent")) else c["reason"]
    text = f"{c['mean']:.3f} +- {c['sd']:.3f}"
    if c.get("ci_low") == c.get("ci_low") and c.get("ci_low") is not None:
        text += f" [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"
    return text


def _columns(cells: list[dict]) -> list[str]:
    cols: list[str] = []
    for c in cells:
        if c["column"] not in cols:
            cols.append(c["column"])
    return cols


def results_markdown(results: dict) -> str:
    lines = [f"# Protocol {results['protocol']}", "", f"> **{results['research_note']}**", ""]
    if results.get("description"):
        lines += [results["description"], ""]
    lines += [
        f"Each cell: mean +- sd over {len(results['seeds'])} fine-tuning seed(s) {results['seeds']} and, in brackets, "
        f"the 95 % percentile bootstrap interval of the seed mean ({results['bootstrap']} resamples of the test "
        "images). Published numbers stand beside ours only where dataset, split, metric and label fraction match.",
        "",
    ]
    fs = results.get("few_shot") or {}
    if fs.get("k"):
        lines += [
            f"k-shot columns: k labelled training images per class (balanced; the validation and test splits "
            f"whole), {fs['folds']} folds (fold f draws with seed f and fine-tunes with train.seed f, on the "
            f"first seed's Adaptor): mean +- sd over the folds and the bootstrap interval of the fold mean.",
            "",
        ]
    by_task: dict[str, list[dict]] = {}
    for c in results["cells"]:
        by_task.setdefault(c["task"], []).append(c)
    for task in results["tasks"]:
        cells = by_task.get(task["name"], [])
        fr = _columns(cells)
        lines += [f"## {task['name']}: {METRICS[task['metric']][1]} ({task['task']})", ""]
        if task["task"] == "retrieval":
            lines += ["The pretrained Adaptor alone on the test split (queries resampled for the interval).", ""]
            fr_names = ["test split"]
        else:
            fr_names = fr
        lines.append("| row | head | " + " | ".join(fr_names) + " |")
        lines.append("|---|---|" + "---|" * len(fr))
        keys = []
        for c in cells:
            if (c["row"], c["head"]) not in keys:
                keys.append((c["row"], c["head"]))
        for row, head in keys:
            by_f = {c["column"]: c for c in cells if c["row"] == row and c["head"] == head}
            label = next(c["row_label"] for c in cells if c["row"] == row)
            lines.append(
                f"| {label} | {head} | " + " | ".join(_cell_text(by_f[f]) if f in by_f else "" for f in fr) + " |"
            )
        refs: dict[str, dict] = {}
        for c in cells:
            for r in c.get("references", []):
                refs.setdefault(r["method"], {})[c["column"]] = r["value"]
        for method, vals in refs.items():
            lines.append(f"| {method} (published) | | " + " | ".join(_fmt(vals.get(f)) for f in fr) + " |")
        if results.get("figures", {}).get(task["name"]):
            lines += ["", f"![{task['name']} against the label fraction]({results['figures'][task['name']]})"]
        notes = {c.get("references_note") for c in cells if c.get("references_note")}
        for n in sorted(notes):
            lines.append(f"\nPublished numbers not shown: {n}.")
        comps = [k for k in results["comparisons"] if k["task"] == task["name"]]
        if comps:
            lines += [
                "",
                "Paired bootstrap, method minus control on the same test images (difference [95 % interval], "
                f"two-sided p, at least 1 / {results['bootstrap']}); 'beats it' only when the whole interval is above 0:",
                "",
                "| method vs control | head | " + " | ".join(fr_names) + " |",
                "|---|---|" + "---|" * len(fr),
            ]
            pairs = []
            for k in comps:
                if (k["method"], k["control"], k["head"]) not in pairs:
                    pairs.append((k["method"], k["control"], k["head"]))
            for m, ctl, head in pairs:
                by_f = {k["column"]: k for k in comps if k["method"] == m and k["control"] == ctl and k["head"] == head}
                cells_txt = []
                for f in fr:
                    k = by_f.get(f)
                    cells_txt.append(
                        ""
                        if k is None
                        else f"{k['difference']:+.3f} [{_fmt(k['ci_low'])}, {_fmt(k['ci_high'])}], p {k['p_value']:.3g}"
                        + (" (beats it)" if k["a_better"] else "")
                    )
                lines.append(f"| {m} vs {ctl} | {head} | " + " | ".join(cells_txt) + " |")
        lines.append("")
    lines += ["## Protocol", ""]
    lines.append(f"- protocol file: `{results['protocol_file']}`; pretraining config: `{results['pretrain_config']}`")
    lines.append(
        f"- seeds {results['seeds']} (fine-tuning `train.seed`"
        + ("; each seed pretrains its own Adaptor" if results["pretrain_per_seed"] else "; one pretraining run per row")
        + f"); label fractions {', '.join(f'{f:g}' for f in results['fractions'])} of the training split"
    )
    for r in results["rows"]:
        lines.append(f"- row `{r['name']}` ({r['label']}): pretraining overrides {r['overrides'] or 'none'}")
    for name, t in results["protocol_text"].items():
        lines.append(
            f"- {name}: dataset {t['dataset']}; split: {t['split']}; threshold fitted on validation: {t['threshold'] or 'n/a'}"
        )
        for f, sizes in t["split_sizes_at_this_fraction"].items():
            lines.append(f"  - at {f}: split sizes {sizes}")
        for n in t.get("split_notes") or []:
            lines.append(f"  - {n}")
    for name, h in results["split_hygiene"].items():
        lines.append(f"- split hygiene, {name}: {_hygiene_text(h)}")
    lines += ["", f"_{results['research_note']}_", ""]
    return "\n".join(lines)


def _hygiene_text(h: dict | None) -> str:
    if not h:
        return "no patient ids to check"
    if not h.get("checked"):
        return h.get("reason", "not checked")
    pairs = ", ".join(f"{k.replace('_', '/')} {v}" for k, v in h["shared_patients"].items())
    return f"patients in more than one split: {pairs}" + (" (LEAK)" if h["leaks"] else " (none)")


def write_results(results: dict, out: Path) -> None:
    from core_model.results.plots import plot_metric_vs_fraction

    results["figures"] = {}
    for task in results["tasks"]:
        name = f"figures/{task['name']}_vs_fraction.png"
        if task["task"] == "retrieval":
            continue
        cells = [c for c in results["cells"] if c["task"] == task["name"] and not c.get("shots")]
        label = METRICS[task["metric"]][1]
        if plot_metric_vs_fraction(cells, out / name, title=f"{task['name']}: {label}", ylabel=label):
            results["figures"][task["name"]] = name
    atomic_write_json(out / "results.json", jsonable(results))
    atomic_write_bytes(out / "results.csv", results_csv(results).encode())
    atomic_write_text(out / "results.md", results_markdown(results))
