"""Free-text reports of phantom cases (INDICATION, COMPARISON, TECHNIQUE, FINDINGS, IMPRESSION),
worded from the case's planned finding, location and size. SYNTHETIC, not medical reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core_model.data.phantoms.plan import Case


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


_NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
    "No active disease in the chest.",
    "No radiographic evidence of acute disease.",
    "Clear lungs. No acute findings.",
    "No evidence of pneumonia or pneumothorax.",
    "Unremarkable chest radiograph.",
]
_HEART = [
    "The heart size is normal.",
    "Heart size is within normal limits.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Normal cardiomediastinal contours.",
    "Cardiac and mediastinal contours are normal.",
    "The cardiac silhouette is not enlarged.",
]
_HEART_AP = [
    "Heart size is difficult to assess on this AP view but appears grossly normal.",
    "The cardiomediastinal silhouette is accentuated by the AP technique.",
]
_BONES = [
    "No acute osseous abnormality.",
    "The osseous structures are intact.",
    "Visualized bones are unremarkable.",
    "Mild degenerative changes of the thoracic spine.",
    "No displaced rib fracture.",
    "",
    "",
]
_EXTRA = [
    "The trachea is midline.",
    "No free air under the diaphragm.",
    "The visualized upper abdomen is unremarkable.",
    "Hila are unremarkable.",
    "Soft tissues are unremarkable.",
    "ECG leads overlie the chest.",
    "",
    "",
    "",
]
_INDICATIONS = [
    "Cough.",
    "Shortness of breath.",
    "Chest pain.",
    "Fever and cough.",
    "Dyspnea.",
    "Preoperative evaluation.",
    "Follow-up.",
    "Hypoxia.",
    "Pleuritic chest pain.",
    "Rule out infection.",
    "Trauma.",
    "Routine screening.",
    "Evaluate for acute process.",
]
_COMPARISONS = ["None.", "None available.", "Prior study from last year.", "No prior studies.", ""]

_NEG_CONSOLIDATION = [
    "No focal consolidation.",
    "There is no focal airspace consolidation.",
    "The lungs are clear.",
    "No focal airspace disease.",
    "Lungs are clear without focal consolidation.",
]
_NEG_PNEUMOTHORAX = [
    "No pneumothorax.",
    "There is no pneumothorax.",
    "No evidence of pneumothorax.",
    "No pneumothorax is seen.",
]
_NEG_EFFUSION = [
    "No pleural effusion.",
    "There is no pleural effusion.",
    "No pleural effusions.",
    "Costophrenic angles are sharp.",
]
_NEG_PLEURAL_BOTH = [
    "No pleural effusion or pneumothorax.",
    "No pneumothorax or pleural effusion.",
    "There is no pleural effusion or pneumothorax.",
]


def _lobe_phrase(case: Case, rng) -> str:
    loc = case.location
    if loc.endswith("zone"):
        return _pick(rng, [f"the {loc}", f"the {loc}", f"the {loc.split()[0]} lung {loc.split()[1]} zone"])
    return f"the {loc}"


def _findings_lung(case: Case, rng) -> tuple[list[str], str]:
    """(lung sentences for FINDINGS, IMPRESSION)."""
    f = case.finding
    if f == "normal":
        lung = [_pick(rng, _NEG_CONSOLIDATION)]
        pleural = _pick(
            rng, [[_pick(rng, _NEG_PLEURAL_BOTH)], [_pick(rng, _NEG_EFFUSION), _pick(rng, _NEG_PNEUMOTHORAX)]]
        )
        return lung + pleural, _pick(rng, _NORMAL_IMPRESSIONS)
    if f == "pneumonia":
        where = _lobe_phrase(case, rng)
        size = case.size
        adj = {
            "small": _pick(rng, ["small", "patchy", "small focal"]),
            "moderate": _pick(rng, ["focal", "moderate", "dense"]),
            "large": _pick(rng, ["large", "dense", "extensive"]),
        }[size]
        lung = [
            _pick(
                rng,
                [
                    f"There is {adj} airspace consolidation in {where}.",
                    f"{adj.capitalize()} consolidation is present in {where}.",
                    f"Focal {adj if adj != 'focal' else 'dense'} opacity in {where}, consistent with consolidation.",
                    f"New {adj} airspace opacity in {where}.",
                ],
            )
        ]
        if rng.random() < 0.3:
            lung.append("Air bronchograms are noted.")
        lung.append(_pick(rng, [_pick(rng, _NEG_PLEURAL_BOTH), _pick(rng, _NEG_PNEUMOTHORAX)]))
        if rng.random() < 0.5:
            lung.append(
                _pick(
                    rng, ["The remaining lung is clear.", "The other lung is clear.", "No other focal consolidation."]
                )
            )
        loc = case.location
        imp = _pick(
            rng,
            [
                f"{loc[0].upper() + loc[1:]} pneumonia.",
                f"Consolidation in {where} consistent with pneumonia.",
                f"Findings compatible with {loc} pneumonia in the appropriate clinical setting.",
                f"{loc[0].upper() + loc[1:]} consolidation, likely pneumonia.",
                f"Focal pneumonia in {where}. No pneumothorax.",
            ],
        )
        return lung, imp
    if f == "covid19":
        extent = {
            "mild": _pick(rng, ["mild", "patchy", "faint"]),
            "moderate": _pick(rng, ["moderate", "multifocal", "patchy"]),
            "extensive": _pick(rng, ["extensive", "widespread", "confluent"]),
        }[case.size]
        lung = [
            _pick(
                rng,
                [
                    f"There are {extent} bilateral peripheral ground-glass opacities, predominantly in the lower zones.",
                    f"{extent.capitalize()} bilateral hazy opacities with a peripheral and basal distribution.",
                    f"Bilateral {extent} peripheral airspace opacities, lower zone predominant.",
                    f"{extent.capitalize()} multifocal ground-glass opacities in both lungs, peripheral and basal.",
                ],
            )
        ]
        lung.append(_pick(rng, _NEG_PLEURAL_BOTH + _NEG_PNEUMOTHORAX))
        if rng.random() < 0.3:
            lung.append("No lobar consolidation.")
        imp = _pick(
            rng,
            [
                "Bilateral peripheral ground-glass opacities, typical appearance for COVID-19 pneumonia.",
                "Findings consistent with COVID-19 pneumonia.",
                "Multifocal bilateral opacities compatible with viral pneumonia such as COVID-19.",
                f"{extent.capitalize()} bilateral basal peripheral opacities, suspicious for COVID-19.",
                "Typical appearance of COVID-19 pneumonia. No pneumothorax.",
            ],
        )
        return lung, imp
    # pneumothorax
    side, size = case.side, case.size
    apical = " apical" if size == "small" and rng.random() < 0.7 else ""
    sz = {
        "small": _pick(rng, ["small", "small", "tiny"]),
        "moderate": _pick(rng, ["moderate", "moderate-sized", "medium"]),
        "large": _pick(rng, ["large", "large", "sizable"]),
    }[size]
    lung = [
        _pick(
            rng,
            [
                f"There is a {sz} {side}{apical} pneumothorax.",
                f"A {sz} {side}-sided{apical} pneumothorax is present.",
                f"{sz.capitalize()} {side}{apical} pneumothorax with a visible pleural line.",
                f"Visible {side} pleural line with absent lung markings peripherally, consistent with a {sz} pneumothorax.",
            ],
        )
    ]
    if size == "large" and rng.random() < 0.5:
        lung.append(f"The {side} lung is partially collapsed.")
    lung.append(_pick(rng, ["No mediastinal shift.", "No tension.", "No pleural effusion.", ""]))
    lung.append(_pick(rng, _NEG_CONSOLIDATION))
    imp = _pick(
        rng,
        [
            f"{sz.capitalize()} {side}{apical} pneumothorax.",
            f"{sz.capitalize()} {side}-sided pneumothorax. No focal consolidation.",
            f"{side.capitalize()}{apical} pneumothorax, {sz}.",
            f"{sz.capitalize()} {side} pneumothorax; no evidence of tension.",
        ],
    )
    return lung, imp


def make_report(case: Case, rng) -> str:
    """A free-text report (INDICATION, COMPARISON, FINDINGS, IMPRESSION) for one case."""
    lung, impression = _findings_lung(case, rng)
    heart = _pick(rng, _HEART_AP if case.view == "AP" and rng.random() < 0.4 else _HEART)
    sentences = [heart] + lung
    if rng.random() < 0.5:
        sentences = lung + [heart]
    for pool in (_EXTRA, _BONES):
        s = _pick(rng, pool)
        if s:
            sentences.append(s)
    findings = " ".join(s for s in sentences if s)
    style = int(rng.integers(4))
    heads = [
        ("FINDINGS:", "IMPRESSION:"),
        ("Findings:", "Impression:"),
        ("FINDINGS", "IMPRESSION"),
        ("FINDINGS:", "CONCLUSION:"),
    ][style]
    parts = []
    if rng.random() < 0.7:
        parts.append(f"INDICATION: {_pick(rng, _INDICATIONS)}")
    comparison = _pick(rng, _COMPARISONS)
    if comparison and rng.random() < 0.5:
        parts.append(f"COMPARISON: {comparison}")
    view_text = "PA" if case.view == "PA" else _pick(rng, ["AP portable", "portable AP", "AP"])
    if rng.random() < 0.4:
        parts.append(f"TECHNIQUE: {view_text} view of the chest.")
    if style == 2:
        parts.append(f"{heads[0]}\n{findings}")
        parts.append(f"{heads[1]}\n{impression}")
    else:
        parts.append(f"{heads[0]} {findings}")
        parts.append(f"{heads[1]} {impression}")
    return "\n".join(parts)
