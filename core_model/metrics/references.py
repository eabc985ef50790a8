"""Published reference numbers (NOTES.md section 1) as data, with a lookup for reports.

A reference is comparable with our number only when the dataset, the metric, the split protocol
(the ``protocol_id`` of :class:`core_model.data.splits.SplitAssignment`) and the label fraction
all match; :func:`lookup` enforces that, :func:`comparability` says why not.

Values are stored in percent, as published. ``note`` carries the caveats that must travel with a
number (e.g. the Adaptor row picks the best text encoder per column).
"""

from __future__ import annotations

from dataclasses import dataclass

FRACTIONS = (0.01, 0.1, 1.0)
SOURCE_ADAPTOR = "Adaptor paper (arXiv 2401.01179), Table of fine-tuning results"
SOURCE_SEG = "MGCA / M-FLAG papers, segmentation Dice (MGCA protocol)"

#: dataset -> the protocol its published numbers use
PROTOCOLS = {
    "rsna": {"auroc": "mgca-rsna-classification", "dice_mgca": "mgca-rsna-segmentation"},
    "covidx": {"accuracy": "mgca-covidx"},
    "siim": {"dice_mgca": "mgca-siim"},
}

#: test-set sizes of the published splits (full label files); a smaller test set (skipped rows,
#: missing images) is still shown beside the references, with a note
PROTOCOL_TEST_SIZES = {"mgca-rsna-classification": 4003, "mgca-rsna-segmentation": 5337}


@dataclass(frozen=True)
class Reference:
    method: str
    dataset: str  # rsna / covidx / siim
    metric: str  # auroc / accuracy / dice_mgca
    protocol: str  # protocol id
    fraction: float  # share of training labels
    value_percent: float
    note: str = ""
    source: str = ""

    @property
    def value(self) -> float:
        """As a fraction in [0, 1], like our metrics."""
        return self.value_percent / 100.0


def _rows(method, dataset, metric, values, note="", source=SOURCE_ADAPTOR):
    protocol = PROTOCOLS[dataset][metric]
    return [Reference(method, dataset, metric, protocol, f, v, note, source) for f, v in zip(FRACTIONS, values)]


REFERENCES: tuple[Reference, ...] = tuple(
    _rows("Adaptor, DINOv2-B", "rsna", "auroc", (84.4, 85.6, 86.8), "best text encoder picked per column")
    + _rows("Adaptor, DINOv2-B", "covidx", "accuracy", (71.0, 87.5, 92.3), "best text encoder picked per column")
    + _rows("ConVIRT", "rsna", "auroc", (77.4, 80.1, 81.3))
    + _rows("ConVIRT", "covidx", "accuracy", (72.5, 82.5, 92.0))
    + _rows("GLoRIA-MIMIC", "rsna", "auroc", (87.0, 89.4, 90.2))
    + _rows("GLoRIA-MIMIC", "covidx", "accuracy", (66.5, 80.5, 88.8))
    + _rows("MGCA ViT-B/16", "rsna", "auroc", (89.1, 89.9, 90.8))
    + _rows("MGCA ViT-B/16", "covidx", "accuracy", (74.8, 84.8, 92.3))
    + _rows("MedKLIP", "rsna", "auroc", (87.3, 88.0, 89.3))
    + _rows("MedKLIP", "covidx", "accuracy", (74.5, 85.2, 90.3))
    + _rows("MRM", "rsna", "auroc", (91.3, 92.7, 93.3))
    + _rows("MRM", "covidx", "accuracy", (66.9, 79.3, 90.8))
    + _rows("MGCA-R50", "siim", "dice_mgca", (49.7, 59.3, 64.2), "empty predictions on empty masks score 1", SOURCE_SEG)
    + _rows("M-FLAG", "siim", "dice_mgca", (52.5, 61.2, 64.8), "empty predictions on empty masks score 1", SOURCE_SEG)
    + _rows("MGCA-R50", "rsna", "dice_mgca", (63.0, 68.3, 69.8), "empty predictions on empty masks score 1", SOURCE_SEG)
    + _rows("M-FLAG", "rsna", "dice_mgca", (64.6, 69.7, 70.5), "empty predictions on empty masks score 1", SOURCE_SEG)
)


def _same_fraction(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


def lookup(dataset: str, metric: str, protocol: str | None, fraction: float) -> list[Reference]:
    """References comparable with a result: same dataset, metric, protocol and label fraction."""
    dataset = (dataset or "").lower()
    return [
        r
        for r in REFERENCES
        if r.dataset == dataset
        and r.metric == metric
        and r.protocol == protocol
        and _same_fraction(r.fraction, fraction)
    ]


def comparability(dataset: str, metric: str, protocol: str | None, fraction: float) -> tuple[bool, str]:
    """``(True, "")`` when published numbers can stand beside ours, else ``(False, why)``."""
    dataset = (dataset or "").lower()
    published = PROTOCOLS.get(dataset)
    if not published:
        return False, f"no published reference numbers for dataset {dataset!r}"
    if metric not in published:
        return False, (f"published {dataset} numbers use {', '.join(sorted(published))}, not {metric}")
    want = published[metric]
    if protocol != want:
        return False, (
            f"published {dataset} {metric} numbers use the {want} split; this run used "
            f"{protocol or 'another split'}, so they are not shown beside ours"
        )
    if not any(_same_fraction(fraction, f) for f in FRACTIONS):
        return False, f"published numbers exist for 1 / 10 / 100 % labels, not {fraction:.3g}"
    return True, ""
