"""Reports of fine-tuning runs: report.md, ROC / PR curves, segmentation example grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core_model.results.markdown import write_report
from core_model.results.plots import plot_curves, plot_segmentation_grid


def write_classification_report(out: Path, result: dict, y_test, probs, classes, task: str) -> Path:
    m = result["metrics"]
    y = np.asarray(y_test)
    if task == "multiclass":  # one-vs-rest curves
        y = np.eye(len(classes))[y.astype(int)]
    thresholds = m.get("thresholds") or {}
    cis = {c: (e.get("ci_low"), e.get("ci_high")) for c, e in m["per_class"].items()}
    paths = plot_curves(
        y,
        probs,
        classes,
        out,
        prefix="curves",
        thresholds=thresholds,
        cis=cis,
        subtitle=f"{result['dataset']}, {100 * result['fraction']:g} % labels, test split",
    )
    figures = [(f"ROC and precision-recall: {c}", p.name) for c, p in paths.items() if p is not None]
    return write_report(
        out / "report.md",
        title=f"Classification: {result['dataset']} ({', '.join(classes)})",
        dataset=result["dataset"],
        protocol=result["split"]["protocol_id"],
        fraction=result["fraction"],
        classification=m,
        split_sizes=result["split"]["sizes"],
        run_info={
            "head": result["head"],
            "best epoch (validation)": result["best_epoch"],
            "pretrained Adaptor": result["adaptor_run"],
        },
        figures=figures,
    )


def write_segmentation_report(out: Path, result: dict, images, truths, preds, titles) -> Path:
    figures = []
    if images:
        grid = plot_segmentation_grid(
            images,
            truths,
            preds,
            out / "segmentation_examples.png",
            titles=titles,
            title=f"{result['dataset']}: {result['label']} (test split)",
        )
        figures.append(("Test examples: best, median and worst with a lesion, and lesion-free images", grid.name))
    return write_report(
        out / "report.md",
        title=f"Segmentation: {result['dataset']} ({result['label']})",
        dataset=result["dataset"],
        protocol=result["split"]["protocol_id"],
        fraction=result["fraction"],
        segmentation=result["metrics"],
        split_sizes=result["split"]["sizes"],
        run_info={
            "decoder": result["decoder"],
            "input size": result["input_size"],
            "best epoch (validation)": result["best_epoch"],
            "pretrained Adaptor": result["adaptor_run"],
        },
        figures=figures,
    )
