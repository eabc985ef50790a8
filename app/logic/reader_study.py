"""The reader study (Qt-free): the worklist, the case timer, the labels' CSV.

A reader labels each image of a worklist (the browser's filtered images, in its order or
shuffled with a seed): per finding of the loaded model, and free findings, a verdict on "the
finding is present" (agree / disagree / uncertain), an optional confidence 1-5 and a comment.
Each label is its own committed row (:func:`app.library.queries.add_reader_label`). In blinded
mode the AI's results stay hidden until the case is labelled (``ai_shown`` = 0 in the label),
the usual design for measuring what AI assistance changes.

The CSV (:func:`write_labels_csv`, through :func:`core_model.fileio.atomic_write_text`) has one
row per label with identifiers that map back to files (file name, study date, accession, study /
series / instance UIDs), no patient name or ID; its first lines are comments: the research-use
line and the browser filter the export was made under (each row also has the filter its
worklist was made under).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.library.models import READER_VERDICTS
from app.logic.predictions_csv import _fmt, read_predictions_csv

NOTICE_LINE = (
    "# Research use only; not for diagnosis. Reader-study labels; ai_probability is a research "
    "model's output (ai_shown 0: the reader had not seen it, blinded)."
)
LABEL_COLUMNS = [
    "file_name",
    "study_date",
    "accession_number",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "view",
    "reviewer",
    "finding",
    "free_finding",
    "verdict",
    "confidence",
    "comment",
    "time_spent_s",
    "ai_shown",
    "ai_probability",
    "model_id",
    "model_version",
    "model_hash",
    "filter",
    "labelled_at",
]
VERDICTS = READER_VERDICTS


@dataclass(frozen=True)
class Label:
    """One finding's label as the reader entered it."""

    finding: str
    verdict: str
    confidence: int | None = None
    comment: str = ""
    free: bool = False


def describe_filter(filters: dict) -> str:
    """The browser filter as stable text (JSON, sorted keys; "{}" for none)."""
    return json.dumps({k: v for k, v in filters.items() if v not in (None, "")}, sort_keys=True)


@dataclass
class Worklist:
    """The cases of a reader study, in reading order, and which of them are labelled."""

    uids: list[str]
    done: set[str] = field(default_factory=set)
    seed: int | None = None
    filter_text: str = "{}"

    @classmethod
    def build(
        cls, uids: Sequence[str], done: set[str], *, seed: int | None = None, filter_text: str = "{}"
    ) -> Worklist:
        """``uids`` in the browser's order, or shuffled reproducibly by ``seed``."""
        order = list(dict.fromkeys(uids))
        if seed is not None:
            random.Random(int(seed)).shuffle(order)
        return cls(order, set(done) & set(order), seed, filter_text)

    def __post_init__(self) -> None:
        self._index = {u: i for i, u in enumerate(self.uids)}

    def __len__(self) -> int:
        return len(self.uids)

    def __contains__(self, uid: object) -> bool:
        return uid in self._index

    def mark_done(self, uid: str) -> None:
        if uid in self:
            self.done.add(uid)

    def reviewed(self) -> int:
        return len(self.done)

    def progress_text(self) -> str:
        return f"{self.reviewed()} of {len(self)} reviewed"

    def next_unreviewed(self, current: str | None, step: int = 1) -> str | None:
        """The next (``step`` 1) or previous (-1) unlabelled case after ``current`` in reading
        order, wrapping around; None when every case is labelled."""
        n = len(self.uids)
        if n == 0:
            return None
        start = self._index.get(current, -1 if step > 0 else n) if current is not None else (-1 if step > 0 else n)
        for k in range(1, n + 1):
            uid = self.uids[(start + step * k) % n]
            if uid not in self.done and uid != current:
                return uid
        return None

    def neighbour(self, current: str | None, step: int = 1) -> str | None:
        """The next / previous case in reading order (labelled or not), no wrap."""
        if not self.uids:
            return None
        i = self._index.get(current) if current is not None else None
        j = (0 if step > 0 else len(self.uids) - 1) if i is None else i + step
        return self.uids[j] if 0 <= j < len(self.uids) else None


class CaseTimer:
    """Seconds spent on each case: from when it is shown to when it is labelled, summed over
    visits (``clock``: a monotonic clock, replaceable in tests)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.current: str | None = None
        self.started: float | None = None
        self.spent: dict[str, float] = {}

    def show(self, uid: str | None) -> None:
        self._stop()
        self.current = uid
        self.started = self.clock() if uid is not None else None

    def _stop(self) -> None:
        if self.current is not None and self.started is not None:
            self.spent[self.current] = self.spent.get(self.current, 0.0) + (self.clock() - self.started)
        self.started = None

    def take(self, uid: str) -> float:
        """Seconds spent on ``uid`` so far (the visit in progress included); restarts its count."""
        total = self.spent.pop(uid, 0.0)
        if uid == self.current and self.started is not None:
            now = self.clock()
            total += now - self.started
            self.started = now
        return round(total, 3)


def write_labels_csv(path: str | os.PathLike, rows: list[dict], filter_text: str) -> Path:
    """The labels as CSV, written atomically; returns the path (``.csv`` added if missing)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    buf = io.StringIO()
    buf.write(NOTICE_LINE + "\n")
    buf.write(f"# exported under the browser filter: {filter_text}\n")
    writer = csv.DictWriter(buf, fieldnames=LABEL_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in LABEL_COLUMNS})
    from core_model.fileio import atomic_write_text

    return atomic_write_text(path, buf.getvalue(), fsync=False, mkdir=True)


def read_labels_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV written by :func:`write_labels_csv` (comment lines skipped)."""
    return read_predictions_csv(path)


def export_labels(library, path: str | os.PathLike, uids: Sequence[str] | None, filter_text: str) -> tuple[Path, int]:
    """``(path, rows)``: the labels of ``uids`` (None: all) as CSV."""
    from app.library.queries import reader_label_rows

    with library.session() as s:
        rows = reader_label_rows(s, uids)
    return write_labels_csv(path, rows, filter_text), len(rows)


def save_labels(library, uid: str, labels: Sequence[Label], facts: dict, lock_timeout: float | None = None) -> int:
    """Commit each label of ``uid`` (one transaction per label); ``facts``: reviewer, model_id,
    model_version, model_hash, probabilities {finding: p}, ai_shown, filter_json, time_spent_s.
    Every row carries the case's time. Returns how many were saved."""
    from app.library.queries import add_reader_label

    probabilities = facts.get("probabilities") or {}
    n = 0
    for label in labels:
        add_reader_label(
            library,
            uid,
            label.finding,
            label.verdict,
            confidence=label.confidence,
            comment=label.comment,
            reviewer=facts.get("reviewer", ""),
            free=label.free,
            model_id=facts.get("model_id", ""),
            model_version=facts.get("model_version", ""),
            model_hash=facts.get("model_hash"),
            ai_probability=probabilities.get(label.finding),
            ai_shown=bool(facts.get("ai_shown", True)),
            filter_json=facts.get("filter_json", ""),
            time_spent_s=facts.get("time_spent_s"),
            lock_timeout=lock_timeout,
        )
        n += 1
    return n
