"""Case planning: everything about a phantom except its pixels (findings, patients, splits,
per-image seeds, locations and sizes, the report). Cheap; runs in the main process.
SYNTHETIC DATA, NOT MEDICAL DATA."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from core_model.data.phantoms.report_text import make_report
from core_model.errors import DataError

GENERATOR_VERSION = 2  # bump whenever the pictures or reports change (ensure_phantoms regenerates)
FINDINGS = ("normal", "pneumonia", "covid19", "pneumothorax")
DICOM_MODES = ("all", "some", "none")
DEFAULT_SIZE = 384
DEFAULT_DICOM_FRACTION = 0.05

# Where each named location lies, in thorax coordinates of one hemithorax: q = lateral distance
# from the midline (0 .. ~1), y = 0 at the lung apex .. 1 at the costophrenic angle.
# (q range, y range, fissure: None | ("below", y) | ("above", y))
LOBES = {
    "right upper lobe": ("right", (0.30, 0.70), (0.12, 0.32), ("below", 0.44)),
    "right middle lobe": ("right", (0.40, 0.65), (0.55, 0.70), ("above", 0.46)),
    "right lower lobe": ("right", (0.40, 0.75), (0.64, 0.80), None),
    "left upper lobe": ("left", (0.35, 0.70), (0.14, 0.36), None),
    "lingula": ("left", (0.62, 0.85), (0.48, 0.64), None),
    "left lower lobe": ("left", (0.55, 0.80), (0.66, 0.82), None),
}
ZONES = {
    "upper zone": ((0.30, 0.70), (0.14, 0.34)),
    "mid zone": ((0.35, 0.75), (0.38, 0.56)),
    "lower zone": ((0.45, 0.80), (0.62, 0.80)),
}

# Strength of the findings and of the nuisance variation (exposure, contrast, noise); tuned so that
# frozen random-weight ViT features still separate the findings at 224 px (see the tests).
TUNE = {
    "pneumonia_fill": 1.0,
    "pneumonia_size": 1.6,
    "covid_fill": 1.2,
    "pneumothorax_size": 1.4,
    "pneumothorax_dark": 1.8,
    "nuisance": 0.3,
    "geometry": 0.25,
    "devices": 0.3,
}


@dataclass
class Case:
    index: int
    id: str
    patient_index: int
    patient_id: str
    study_id: str
    split: str
    finding: str
    view: str  # PA | AP
    side: str = ""  # left | right | both | ""
    location: str = ""  # what the report says: "right lower lobe", "left apical", ...
    region: str = ""  # pneumonia: the lobe or zone key used for drawing
    size: str = ""  # small | moderate | large | mild | extensive | ""
    height: int = 0
    width: int = 0
    render_seed: int = 0
    patient_seed: int = 0
    report: str = ""
    dicom_variant: int = -1  # -1: no DICOM copy


@dataclass
class PhantomOptions:
    n: int = 2000
    seed: int = 0
    size: int = DEFAULT_SIZE  # nominal long side in pixels; each image varies around it
    dicom: str = "some"  # all | some | none
    dicom_fraction: float = DEFAULT_DICOM_FRACTION  # share of images with a DICOM copy for "some"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    workers: int = 2  # processes; the output does not depend on it

    def validate(self) -> None:
        if int(self.n) < 1:
            raise DataError(f"n must be at least 1 (got {self.n})")
        if not 64 <= int(self.size) <= 4096:
            raise DataError(f"size must be between 64 and 4096 pixels (got {self.size})")
        if self.dicom not in DICOM_MODES:
            raise DataError(f"dicom must be one of {', '.join(DICOM_MODES)} (got {self.dicom!r})")
        if not 0.0 <= float(self.dicom_fraction) <= 1.0:
            raise DataError(f"dicom_fraction must be between 0 and 1 (got {self.dicom_fraction})")
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise DataError("val_fraction and test_fraction must be >= 0 and sum to less than 1")

    def identity(self) -> dict:
        """The parameters the output depends on (not ``workers``)."""
        d = asdict(self)
        d.pop("workers")
        d["generator_version"] = GENERATOR_VERSION
        return d


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint32)[0])


def plan_cases(opts: PhantomOptions) -> list[Case]:
    """Findings (balanced), patients, splits, per-image seeds and reports for ``opts``."""
    n, seed = int(opts.n), int(opts.seed)
    rng = np.random.default_rng([seed, 101])
    findings = [FINDINGS[i % 4] for i in range(n)]
    rng.shuffle(findings)
    # Patients: about one in five has a second study (with its own finding).
    patient_of = []
    p = 0
    i = 0
    while i < n:
        k = 2 if (rng.random() < 0.2 and i + 1 < n) else 1
        patient_of.extend([p] * k)
        p += 1
        i += k
    n_patients = p
    split_of_patient = _patient_splits(patient_of, n_patients, opts, rng)
    dicom_variants = _dicom_plan(n, opts)
    cases = []
    for i in range(n):
        crng = np.random.default_rng([seed, 202, i])
        pid = patient_of[i]
        finding = findings[i]
        view = "AP" if crng.random() < 0.35 else "PA"
        long_side = opts.size * crng.uniform(0.85, 1.15)
        aspect = crng.choice([crng.uniform(1.0, 1.3), crng.uniform(0.82, 1.0)], p=[0.7, 0.3])  # height / width
        aspect = 1.12 + (aspect - 1.12) * TUNE["geometry"]
        if aspect >= 1.0:
            h, w = long_side, long_side / aspect
        else:
            w, h = long_side, long_side * aspect
        case = Case(
            index=i,
            id=f"phantom-{i:05d}",
            patient_index=pid,
            patient_id=f"PHANTOM-P{pid:05d}",
            study_id=f"PHANTOM-S{i:05d}",
            split=split_of_patient[pid],
            finding=finding,
            view=view,
            height=int(round(h / 2) * 2),
            width=int(round(w / 2) * 2),
            render_seed=_seed_int(seed, 303, i),
            patient_seed=_seed_int(seed, 404, pid),
            dicom_variant=dicom_variants[i],
        )
        _plan_finding(case, crng)
        case.report = make_report(case, np.random.default_rng([seed, 505, i]))
        cases.append(case)
    return cases


def _patient_splits(patient_of: list[int], n_patients: int, opts: PhantomOptions, rng) -> list[str]:
    """Shuffle patients; fill test, then val, until each holds at least its share of images."""
    counts = np.bincount(np.asarray(patient_of), minlength=n_patients)
    order = rng.permutation(n_patients)
    n = len(patient_of)
    want = {"test": math.ceil(n * opts.test_fraction - 1e-9), "val": math.ceil(n * opts.val_fraction - 1e-9)}
    split = ["train"] * n_patients
    have = {"test": 0, "val": 0}
    pos = 0
    for name in ("test", "val"):
        while have[name] < want[name] and pos < n_patients:
            split[order[pos]] = name
            have[name] += int(counts[order[pos]])
            pos += 1
    return split


N_DICOM_VARIANTS = 6


def _dicom_plan(n: int, opts: PhantomOptions) -> list[int]:
    if opts.dicom == "none":
        return [-1] * n
    if opts.dicom == "all":
        return [i % N_DICOM_VARIANTS for i in range(n)]
    k = max(min(n, N_DICOM_VARIANTS), int(round(n * opts.dicom_fraction)))
    chosen = np.unique(np.linspace(0, n - 1, k).round().astype(int))
    out = [-1] * n
    for j, i in enumerate(chosen):
        out[int(i)] = j % N_DICOM_VARIANTS
    return out


def _plan_finding(case: Case, rng) -> None:
    f = case.finding
    if f == "pneumonia":
        if rng.random() < 0.6:
            lobe = str(rng.choice(list(LOBES)))
            case.region, case.location, case.side = lobe, lobe, LOBES[lobe][0]
        else:
            zone = str(rng.choice(list(ZONES)))
            side = str(rng.choice(["left", "right"]))
            case.region, case.location, case.side = zone, f"{side} {zone}", side
        case.size = str(rng.choice(["small", "moderate", "large"], p=[0.25, 0.5, 0.25]))
    elif f == "covid19":
        case.side = "both"
        case.location = "bilateral lower zones"
        case.size = str(rng.choice(["mild", "moderate", "extensive"], p=[0.3, 0.45, 0.25]))
    elif f == "pneumothorax":
        case.side = str(rng.choice(["left", "right"]))
        case.size = str(rng.choice(["small", "moderate", "large"], p=[0.35, 0.35, 0.3]))
        case.location = f"{case.side} apical" if case.size == "small" else f"{case.side}"
