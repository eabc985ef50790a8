"""The common record every dataset reader produces (torch-free)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Record:
    """One image (and its report, when the dataset has reports)."""

    id: str  # unique within the dataset
    image_path: str  # absolute path to a DICOM / PNG / JPEG
    report: str | None = None
    split: str | None = None  # "train" | "val" | "test" | None
    patient_id: str | None = None
    study_id: str | None = None
    view: str | None = None  # PA / AP / LATERAL / ...
    labels: dict[str, float] = field(default_factory=dict)  # finding -> 1 / 0 / -1 (uncertain) / nan
    mask_path: str | None = None  # segmentation mask (PNG, nonzero = positive), when any
    finding: str | None = None  # single primary finding, when the dataset defines one
    lesion_mask_path: str | None = None  # region of the finding (any kind) for scoring heatmaps, when any

    def label(self, name: str) -> float:
        value = self.labels.get(name, math.nan)
        return float(value)


@dataclass
class Skipped:
    """A row a reader could not use, and why."""

    id: str
    reason: str  # short code: missing_image, empty_report, bad_label, ...
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.id}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def summary(self) -> str:
        parts = [f"{len(self.records)} usable"]
        if self.skipped:
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skip_counts().items()))
            parts.append(f"{len(self.skipped)} skipped ({counts})")
        return "; ".join(parts)

    def extend(self, other: ReadResult) -> None:
        self.records.extend(other.records)
        self.skipped.extend(other.skipped)

    def by_split(self, split: str) -> list[Record]:
        return [r for r in self.records if r.split == split]

    def _write_mask_pngs(self, out_dir, mask_of) -> int:
        """Render ``mask_of(record_id)`` of every record as ``<id>.png`` (0 / 255) under
        ``out_dir`` (atomically, existing files reused) and set ``mask_path``; returns the number
        written. The labelled readers (SIIM, RSNA) say how a record's mask is drawn."""
        import io

        import numpy as np
        from PIL import Image

        from core_model.fileio import atomic_write

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = 0
        for rec in self.records:
            path = out / f"{rec.id}.png"
            if not path.exists():
                buf = io.BytesIO()
                Image.fromarray(np.asarray(mask_of(rec.id)).astype(np.uint8) * 255).save(buf, format="PNG")
                atomic_write(path, buf.getvalue(), fsync=False)
                written += 1
            rec.mask_path = str(path.resolve())
        return written


def splits_of(records: Iterable[Record]) -> dict[str, int]:
    return dict(Counter(r.split or "none" for r in records))
