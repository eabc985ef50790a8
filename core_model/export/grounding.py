"""The model card's grounding section: which findings' heatmaps the app may show.

A heatmap always has a hot spot, so a map that does not point at the finding looks as sure as
one that does. The export takes a grounding evaluation of the *validation* split
(``adaptor-train evaluate --task grounding --split val``: the pointing game of each finding's
prompt, the positional prior fitted on the training masks, the paired bootstrap of their
difference) and records, per finding, whether the model's heatmap beat the positional prior
there. The runtime (:meth:`core_model.runtime.bundle.Bundle.grounding`) reads it back; without
the section no finding's heatmap is vouched for.

The rule: a finding is *validated* when its pointing game on validation is above the positional
prior's (the point estimates; the card keeps the paired bootstrap interval of the difference so a
reader can judge how sure that is). The test split stays for reporting.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from core_model.errors import UserError

RULE = "a finding's heatmap is shown only when its pointing game on the validation split beat the positional prior"


def read_grounding_eval(path: str | Path) -> dict:
    """The metrics of a grounding evaluation folder (or its metrics.json), checked to be one."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p}: no grounding evaluation there (run adaptor-train evaluate --task grounding)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: not a readable evaluation result ({exc})") from None
    if not isinstance(doc, dict) or doc.get("task") != "grounding":
        raise UserError(
            f"{p} is not a grounding evaluation (its task is {doc.get('task') if isinstance(doc, dict) else '?'})"
        )
    if doc.get("split") != "val":
        raise UserError(
            f"{p} scores the {doc.get('split')!r} split; what the app shows is decided on the validation split "
            "(evaluate --task grounding --split val), the test split stays for reporting"
        )
    return doc


def grounding_section(doc: dict | None, weak_supervision: dict | None = None) -> dict:
    """The card's ``grounding`` section from a validation grounding evaluation (None: not evaluated)."""
    if doc is None:
        return {"evaluated": False, "rule": RULE, "per_finding": {}}
    per = {}
    for finding, e in (doc.get("metrics", {}).get("per_finding") or {}).items():
        pg, prior = e.get("pointing_game_prompt"), e.get("positional_prior")
        ok = isinstance(pg, (int, float)) and isinstance(prior, (int, float)) and math.isfinite(pg) and pg > prior
        per[finding] = {
            "validated": bool(ok),
            "pointing_game": pg,
            "pointing_game_ci": e.get("pointing_game_prompt_ci"),
            "positional_prior": prior,
            "positional_prior_ci": e.get("positional_prior_ci"),
            "difference_ci": e.get("prompt_minus_prior"),
            "images": e.get("n"),
            "prompt": e.get("prompt"),
        }
    return {
        "evaluated": True,
        "split": "val",
        "dataset": doc.get("dataset"),
        "rule": RULE,
        "hit_share": (doc.get("metrics") or {}).get("hit_share"),
        "weak_supervision": weak_supervision,
        "per_finding": per,
    }


def grounding_card_lines(card: dict) -> list[str]:
    """MODEL_CARD.md lines for the section."""
    g = card.get("grounding") or {}
    lines = ["", "## Heatmaps (grounding)", ""]
    if not g.get("evaluated"):
        return lines + ["- Not evaluated: the app shows no finding's heatmap as reliable."]
    lines.append(f"- Rule: {g['rule']} ({g.get('dataset')}, pointing game on the patch grid).")
    for f, e in sorted(g["per_finding"].items()):
        verdict = "shown" if e["validated"] else "withheld (no reliable heatmap)"
        lines.append(
            f"- {f}: pointing game {100 * e['pointing_game']:.1f} % vs positional prior "
            f"{100 * (e['positional_prior'] or 0):.1f} % on {e['images']} validation images: {verdict}"
        )
    ws = g.get("weak_supervision")
    if ws:
        lines.append(
            f"- Weak grounding supervision in pretraining: the lesion masks of {ws['images']} of "
            f"{ws['of_training_images_with_lesion_masks']} training images with masks ({100 * ws['fraction']:.0f} %)."
        )
    return lines
