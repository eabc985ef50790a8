"""Human-readable summaries printed at the end of a command."""

from __future__ import annotations

from pathlib import Path

from training_cli.common import RESEARCH_NOTE


def _pct(v) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}"


def print_finetune_summary(result: dict, out: Path) -> None:
    m = result["metrics"]
    sizes = result["split"]["sizes"]
    print(
        f"\n{result['command']} on {result['dataset']} ({100 * result['fraction']:g} % of training labels; "
        f"train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']})"
    )
    if result["command"] == "finetune-cls":
        for name, e in m["per_class"].items():
            op = e.get("operating_point", {})
            print(
                f"  {name:>14}: AUROC {_pct(e.get('auroc'))} (95% CI {_pct(e.get('ci_low'))}-{_pct(e.get('ci_high'))})"
                f" | sens {_pct(op.get('sensitivity'))} spec {_pct(op.get('specificity'))} F1 {_pct(op.get('f1'))}"
                f" at threshold {op.get('threshold', float('nan')):.3f}"
            )
        macro = m["auroc_macro"]
        print(
            f"  {'macro':>14}: AUROC {_pct(macro.get('auroc'))} (95% CI {_pct(macro.get('ci_low'))}-{_pct(macro.get('ci_high'))})"
            f" | accuracy {_pct(m.get('accuracy'))} | ECE {m['ece']:.3f} (before temperature {m['ece_uncalibrated']:.3f},"
            f" T={m['temperature']:.2f})"
        )
    else:
        b = m["empty_baseline"]
        print(
            f"  Dice, positive images {_pct(m['dice_positive'])} | aggregate {_pct(m['dice_aggregate'])} | "
            f"MGCA protocol {_pct(m['dice_mgca'])} (all-empty predictor: {_pct(b['dice_mgca'])}) | "
            f"IoU positive {_pct(m['iou_positive'])}"
        )
        if m.get("warning"):
            print("  WARNING: " + m["warning"])
    print(f"  wrote {out / 'metrics.json'}, {out / 'report.md'}")
    print("  " + RESEARCH_NOTE)
