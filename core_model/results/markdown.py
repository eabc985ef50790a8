"""Markdown run reports and ``metrics.json`` (stdlib only; figures come from :mod:`.plots`).

:func:`render_report` turns the metric dicts of :mod:`core_model.metrics` into a report:

- a header with the "research use only" line and the run's facts (dataset, split protocol, label
  fraction, split sizes, anything in ``run_info``);
- the result table with 95 % CIs;
- the published reference numbers beside ours **only** when dataset, metric, split protocol and
  label fraction match (:func:`core_model.metrics.references.comparability`), otherwise a note
  saying why they are not shown;
- for segmentation, the all-empty baseline as its own row and a visible warning when the model
  does not beat it;
- warnings collected by the metrics, then the figures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from core_model.fileio import jsonable
from core_model.metrics.references import PROTOCOL_TEST_SIZES, comparability, lookup

RESEARCH_LINE = "**Research use only - not for diagnosis.** These numbers describe a model on a dataset split; they say nothing about any individual patient."


# --------------------------------------------------------------------------- JSON


def write_metrics_json(path, metrics: Mapping) -> Path:
    from core_model.fileio import atomic_write_text

    return atomic_write_text(
        path, json.dumps(jsonable(metrics), indent=2, sort_keys=False) + "\n", fsync=False, mkdir=True
    )


# --------------------------------------------------------------------------- formatting


def _pct(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.{digits}f}"


def _ci(entry: Mapping, key: str = "auroc") -> str:
    v = entry.get(key)
    lo, hi = entry.get("ci_low"), entry.get("ci_high")
    s = _pct(v)
    if lo is not None and hi is not None and all(isinstance(x, float) and math.isfinite(x) for x in (lo, hi)):
        s += f" ({_pct(lo)}-{_pct(hi)})"
    elif entry.get("reason"):
        s += f" ({entry['reason']})"
    return s


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _references_block(
    dataset, metric, protocol, fraction, ours: float | None, label: str, n_test: int | None = None
) -> list[str]:
    ok, why = comparability(dataset, metric, protocol, fraction)
    lines = ["", f"### Published numbers ({label})", ""]
    if not ok:
        lines.append(f"_Not shown: {why}._")
        return lines
    refs = lookup(dataset, metric, protocol, fraction)
    rows = [["**this run**", f"**{_pct(ours)}**", "", ""]]
    for r in sorted(refs, key=lambda r: -r.value_percent):
        delta = "" if ours is None or not math.isfinite(ours) else f"{100 * ours - r.value_percent:+.1f}"
        rows.append([r.method, f"{r.value_percent:.1f}", delta, r.note])
    lines += _table(["method", f"{label} (%)", "this run minus it", "note"], rows)
    lines.append("")
    lines.append(
        f"_Same dataset, split protocol `{protocol}` and label fraction {fraction:g}; published "
        "numbers are single runs without intervals._"
    )
    expected = PROTOCOL_TEST_SIZES.get(protocol or "")
    if expected and n_test is not None and n_test != expected:
        lines += [
            "",
            f"_Note: this test set has {n_test:,} images, the published split {expected:,} "
            "(rows skipped or images missing here), so the comparison is close but not exact._",
        ]
    return lines


# --------------------------------------------------------------------------- sections


def classification_section(m: Mapping, *, dataset, protocol, fraction) -> list[str]:
    lines = ["## Classification", ""]
    rows = []
    for name, e in m["per_class"].items():
        op = e.get("operating_point", {})
        rows.append(
            [
                name,
                e.get("n", ""),
                e.get("n_positive", ""),
                _ci(e),
                _pct(op.get("sensitivity")),
                _pct(op.get("specificity")),
                _pct(op.get("f1")),
                f"{op.get('threshold', float('nan')):.3f}",
            ]
        )
    macro = m["auroc_macro"]
    if len(m["per_class"]) > 1:
        rows.append(["**macro**", "", "", f"**{_ci(macro)}**", "", "", "", ""])
    lines += _table(
        ["class", "n", "positives", "AUROC % (95% CI)", "sensitivity %", "specificity %", "F1 %", "threshold"], rows
    )
    b = m.get("bootstrap", {})
    lines += [
        "",
        f"AUROC intervals: {b.get('method', 'percentile')} bootstrap, {b.get('n_boot')} resamples, "
        f"seed {b.get('seed')}, {'stratified by label' if b.get('stratified') else 'plain'}. "
        f"Thresholds chosen on validation ({m.get('threshold_method')}) and applied to the "
        "temperature-scaled test probabilities.",
        "",
    ]
    extra = [
        ["accuracy (at the thresholds)" if m["task"] != "multiclass" else "top-1 accuracy", _pct(m.get("accuracy"))],
        [
            f"ECE ({m.get('ece_bins', 15)} equal-width bins), before -> after temperature scaling",
            f"{_pct(m.get('ece_uncalibrated'), 2)} -> {_pct(m.get('ece'), 2)}",
        ],
        ["temperature (fitted on validation)", f"{m.get('temperature', 1.0):.3f}"],
        ["NLL before -> after", f"{m.get('nll_uncalibrated', float('nan')):.4f} -> {m.get('nll', float('nan')):.4f}"],
    ]
    lines += _table(["metric", "value"], extra)
    if m["task"] == "multiclass":
        lines += _references_block(
            dataset, "accuracy", protocol, fraction, m.get("accuracy"), "accuracy", m.get("n_test")
        )
    else:
        lines += _references_block(dataset, "auroc", protocol, fraction, macro.get("auroc"), "AUROC", m.get("n_test"))
    return lines


def segmentation_section(m: Mapping, *, dataset, protocol, fraction) -> list[str]:
    lines = ["## Segmentation", ""]
    if not m.get("beats_empty_baseline", True):
        lines += [f"> **Warning:** {m.get('warning') or 'the model does not beat the all-empty predictor.'}", ""]
    keys = ["dice_mgca", "dice_positive", "dice_aggregate", "iou_positive", "iou_aggregate", "empty_image_fp_rate"]
    header = [
        "predictor",
        "Dice, MGCA protocol %",
        "Dice, positive images %",
        "Dice, aggregate %",
        "IoU, positive images %",
        "IoU, aggregate %",
        "false positives on empty images %",
    ]
    base = m["empty_baseline"]
    lines += _table(
        header,
        [
            ["**this model**"] + [_pct(m.get(k)) for k in keys],
            ["all-empty baseline"] + [_pct(base.get(k)) for k in keys],
        ],
    )
    lines += [
        "",
        f"{m['n_images']} test images, {m['n_positive']} with a lesion "
        f"({_pct(m.get('positive_fraction'))} %). The MGCA-protocol Dice scores an empty prediction "
        "on an empty mask as 1, so the all-empty predictor already reaches "
        f"{_pct(base.get('dice_mgca'))}; the Dice over positive images and the aggregate Dice do "
        "not reward predicting nothing.",
        "",
    ]
    lines += _references_block(
        dataset, "dice_mgca", protocol, fraction, m.get("dice_mgca"), "Dice, MGCA protocol", m.get("n_images")
    )
    return lines


def zeroshot_section(m: Mapping) -> list[str]:
    lines = ["## Zero-shot classification", ""]
    rows = [[name, _ci(e)] for name, e in m["per_class"].items()]
    if len(rows) > 1:
        rows.append(["**macro**", f"**{_ci(m['auroc_macro'])}**"])
    lines += _table(["class", "AUROC % (95% CI)"], rows)
    if m.get("accuracy_ci"):
        lines += ["", f"Top-1 accuracy % (95% CI): {_ci(m['accuracy_ci'], 'value')} ({m.get('accuracy_note', '')})"]
    lines += [
        "",
        "_Scores: softmax over the similarities to the positive and the negative prompt of each class; "
        "no labels used for training. Published zero-shot numbers use other datasets/prompts and are not shown._",
    ]
    if m.get("prompts"):
        source = f" (`{m['prompts_file']}`)" if m.get("prompts_file") else ""
        lines += ["", f"Prompts used: set **{m.get('prompt_set', 'default')}**{source}", ""]
        for name, p in m["prompts"].items():
            lines.append(f"- {name}: positive {p['positive']}; negative {p['negative']}")
    return lines


def retrieval_section(m: Mapping) -> list[str]:
    lines = ["## Image-report retrieval", ""]

    def cell(key: str) -> str:  # the value, with its bootstrap interval when computed
        ci = m.get(f"{key}_ci")
        return _ci(ci, "value") if ci else _pct(m.get(key))

    ks = sorted(int(k.split("@")[1]) for k in m if k.startswith("i2t_R@") and not k.endswith("_ci"))
    header = ["metric", "image -> report %", "report -> image %", "chance %"]
    if any(k.endswith("_ci") for k in m):
        header[1:3] = ["image -> report % (95% CI)", "report -> image % (95% CI)"]
    rows = [[f"R@{k}", cell(f"i2t_R@{k}"), cell(f"t2i_R@{k}"), _pct(m.get(f"chance_R@{k}"), 2)] for k in ks]
    lines += _table(header, rows)
    pks = sorted(int(k.split("@")[1].split("_")[0]) for k in m if k.startswith("i2t_P@") and not k.endswith("_ci"))
    if pks:
        lines += [""] + _table(
            header,
            [
                [
                    f"P@{k} (same finding)",
                    cell(f"i2t_P@{k}_finding"),
                    cell(f"t2i_P@{k}_finding"),
                    _pct(m.get("chance_P_finding"), 2),
                ]
                for k in pks
            ],
        )
    lines += ["", f"_{m.get('n', '?')} image-report pairs; the candidate pool is the whole test set._"]
    if m.get("bootstrap"):
        lines += ["", f"_Intervals: {m['bootstrap']['method']}, {m['bootstrap']['n_boot']} resamples._"]
    return lines


# --------------------------------------------------------------------------- the report


def render_report(
    *,
    title: str,
    dataset: str,
    protocol: str | None,
    fraction: float,
    classification: Mapping | None = None,
    segmentation: Mapping | None = None,
    zeroshot: Mapping | None = None,
    retrieval: Mapping | None = None,
    split_sizes: Mapping[str, int] | None = None,
    run_info: Mapping | None = None,
    figures: Sequence[tuple[str, str]] = (),
    warnings: Sequence[str] = (),
) -> str:
    """The Markdown text. ``figures``: ``(caption, path relative to the report)`` pairs."""
    lines = [f"# {title}", "", RESEARCH_LINE, ""]
    facts = [
        ["dataset", dataset],
        ["split protocol", f"`{protocol or 'custom'}`"],
        ["training labels used", f"{100 * fraction:g} %"],
    ]
    if split_sizes:
        facts.append(
            [
                "split sizes (train / val / test)",
                " / ".join(f"{split_sizes.get(s, 0):,}" for s in ("train", "val", "test")),
            ]
        )
    for k, v in (run_info or {}).items():
        facts.append([str(k), str(v)])
    lines += _table(["", ""], facts) + [""]
    all_warnings = list(warnings)
    if classification:
        lines += classification_section(classification, dataset=dataset, protocol=protocol, fraction=fraction) + [""]
        all_warnings += list(classification.get("warnings", []))
    if segmentation:
        lines += segmentation_section(segmentation, dataset=dataset, protocol=protocol, fraction=fraction) + [""]
    if zeroshot:
        lines += zeroshot_section(zeroshot) + [""]
    if retrieval:
        lines += retrieval_section(retrieval) + [""]
    if all_warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in all_warnings] + [""]
    if figures:
        lines += ["## Figures", ""]
        for caption, rel in figures:
            lines += [f"![{caption}]({rel})", "", f"_{caption}_", ""]
    lines += ["---", "", RESEARCH_LINE, ""]
    return "\n".join(lines)


def write_report(path, **kwargs) -> Path:
    """:func:`render_report` written atomically to ``path`` (e.g. ``DIR/report.md``)."""
    from core_model.fileio import atomic_write_text

    return atomic_write_text(path, render_report(**kwargs), fsync=False, mkdir=True)
