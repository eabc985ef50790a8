"""Train / val / test splits that reproduce the MGCA / Adaptor protocol, split files, label fractions.

The Adaptor code fine-tunes on the splits written by MGCA's ``preprocess/*.py`` and samples label
fractions in MGCA's ``datasets/*.py``. This module reproduces them exactly, without pandas:

RSNA Pneumonia, classification (MGCA ``preprocess_rsna_data``)
    One row per patient, ordered by ``patientId`` (pandas ``groupby`` sorts), then
    ``train_test_split(test_size=0.15 * 2, random_state=0)`` -> train / rest, and
    ``train_test_split(rest, test_size=0.5, random_state=0)`` whose *first* part is the **test**
    set and second the validation set. Full stage-2 file (26,684 patients):
    **18,678 / 4,003 / 4,003** (train / val / test). Patient-level: no leakage.
RSNA Pneumonia, segmentation (MGCA ``prepare_detection_data``)
    The same patient table (all patients, positives and negatives; masks are the filled boxes,
    empty for negatives) with ``test_size=5337 * 2`` then 0.5: **16,010 / 5,337 / 5,337**.
COVIDx (MGCA ``preprocess_covidx``)
    The official train file's rows in file order, ``train_test_split(train_size=0.8,
    random_state=0)`` -> train / val; the official test file is the test set. MGCA splits rows,
    not patients: :func:`leaking_groups` reports patients present in both train and val.
SIIM-ACR (MGCA ``preprocess_pneumothorax_data`` + ``SIIMImageDataset``)
    MGCA splits the *rows* of ``train-rle.csv`` (file order) 70 / 15 / 15 with ``random_state=0``
    (same two-step call as RSNA: first part of the second call = test). An image with several
    lesion rows can therefore land in several splits. The training set is class-balanced: all
    images with a lesion row in train, plus as many negative images drawn with
    ``np.random.choice(unique negatives, n_pos, replace=False)``; then the label fraction draws
    ``np.random.choice(unique ids, int(n * frac), replace=False)`` from the *same* generator.
    MGCA's generator is the global NumPy one seeded with 42 at import; we use a fresh
    ``RandomState(42)`` (identical when nothing else drew from the global generator first).
    Validation and test are not balanced. ``protocol="mgca"`` reproduces this and then resolves
    images present in several splits (test > val > train), so the test image set equals MGCA's
    and no training image is also evaluated; the number moved is in ``notes``. (MGCA also labels
    ``-1`` rows by comparing with ``" -1"``; files without that blank would make every row
    positive there. We use the intended meaning.) ``protocol="image"`` splits unique images
    instead (first-appearance order, same seeds), the leakage-free choice for new work.
Label fractions (1 / 10 / 100 %)
    Classification (RSNA, COVIDx, CheXpert, MIMIC): pandas ``DataFrame.sample(frac=f,
    random_state=42)`` on the training split, skipped when ``f == 1``. pandas does
    ``RandomState(42).choice(n, size=round(f * n), replace=False)`` (``pandas/core/generic.py``
    ``sample`` -> ``pandas/core/sample.py`` ``sample``; ``com.random_state`` turns an int into
    ``np.random.RandomState(int)``), and legacy ``choice`` without replacement is
    ``permutation(n)[:size]``. :func:`pandas_sample` reproduces this, order included.
    RSNA segmentation: ``np.random.choice(n, int(f * n), replace=False)`` with the generator
    seeded 42, applied even at 100 % (it only reorders). SIIM: see above.

Order matters (samples are drawn by position), so every list here keeps the order the protocol
produces, and split files keep it.

Split files: CSV with header ``id,split`` (``train`` / ``val`` / ``test``; ``valid``,
``validate`` and ``validation`` are read as ``val``), one row per record used by the run, in
order. Records absent from a split file are not used. :func:`write_split_file` writes one
atomically; :func:`read_split_file` reads a user's own (``--split-file``).

Typical use::

    table = read_rsna_labels(labels_csv)                   # or read_rsna(labels_csv, image_dir)
    split = rsna_splits(table.all_patient_ids, "classification", fraction=0.01)
    write_split_file(out_dir / "splits.csv", split)       # split.protocol_id -> reports
    data = apply_splits(read_rsna(labels_csv, image_dir), split)   # or read_split_file(user_csv)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core_model.data._files import open_text
from core_model.data.records import ReadResult, Record, Skipped
from core_model.errors import DataError
from core_model.fileio import atomic_write_text

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
SPLIT_SEED = 0  # MGCA train_test_split random_state
FRACTION_SEED = 42  # MGCA sample / np.random seed
RSNA_CLS_HELD_OUT = 0.15 * 2
RSNA_SEG_HELD_OUT = 5337 * 2
COVIDX_TRAIN_SIZE = 0.8


@dataclass
class SplitAssignment:
    """Ordered id lists per split, plus what was done (protocol, notes)."""

    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    protocol: str = ""  # human-readable description
    notes: list[str] = field(default_factory=list)
    protocol_id: str = "custom"  # mgca-rsna-classification / mgca-rsna-segmentation / mgca-covidx / mgca-siim / ...

    def mapping(self) -> dict[str, str]:
        """``{id: split}`` in train, val, test order."""
        out: dict[str, str] = {}
        for name in SPLITS:
            for i in getattr(self, name):
                out.setdefault(i, name)
        return out

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], protocol: str = "split file") -> SplitAssignment:
        out = cls(protocol=protocol, protocol_id="split-file")
        for i, s in mapping.items():
            getattr(out, s).append(i)
        return out


# --------------------------------------------------------------------------- primitives


def sklearn_split(
    ids: Sequence[str], *, test_size=None, train_size=None, random_state: int = SPLIT_SEED
) -> tuple[list[str], list[str]]:
    """``sklearn.model_selection.train_test_split`` on a list (first part, second part), order kept."""
    from sklearn.model_selection import train_test_split

    ids = list(ids)
    idx = np.arange(len(ids))
    a, b = train_test_split(idx, test_size=test_size, train_size=train_size, random_state=random_state)
    return [ids[i] for i in a], [ids[i] for i in b]


def mgca_three_way(ids: Sequence[str], held_out, random_state: int = SPLIT_SEED) -> SplitAssignment:
    """MGCA's two calls: train / rest with ``test_size=held_out``, then rest -> (test, val) halves."""
    train, rest = sklearn_split(ids, test_size=held_out, random_state=random_state)
    test, val = sklearn_split(rest, test_size=0.5, random_state=random_state)
    return SplitAssignment(train=train, val=val, test=test)


def pandas_sample(ids: Sequence[str], frac: float, random_state: int = FRACTION_SEED) -> list[str]:
    """``DataFrame.sample(frac=frac, random_state=random_state)`` on rows ``ids`` (sampled order).
    ``frac == 1`` returns ``ids`` unchanged, as MGCA skips the call at 100 %."""
    ids = list(ids)
    _check_frac(frac)
    if frac == 1:
        return ids
    size = round(frac * len(ids))  # Python's round, as pandas
    idx = np.random.RandomState(random_state).choice(len(ids), size=size, replace=False)
    return [ids[i] for i in idx]


def numpy_choice_fraction(ids: Sequence[str], frac: float, rng: np.random.RandomState) -> list[str]:
    """``np.random.choice(len(ids), int(frac * len(ids)), replace=False)`` -> ids in drawn order."""
    ids = list(ids)
    _check_frac(frac)
    idx = rng.choice(len(ids), size=int(frac * len(ids)), replace=False)
    return [ids[i] for i in idx]


def _check_frac(frac: float) -> None:
    if not 0 < frac <= 1:
        raise DataError(f"label fraction must be in (0, 1], not {frac}")


def _unique(seq: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(seq))


# --------------------------------------------------------------------------- datasets


def rsna_splits(
    patient_ids: Iterable[str],
    task: str = "classification",
    fraction: float = 1.0,
    *,
    fraction_seed: int = FRACTION_SEED,
) -> SplitAssignment:
    """MGCA's RSNA splits. ``patient_ids``: every patient of the label file, usable or not (use
    ``RsnaLabels.all_patient_ids``), so the split matches the published one; records skipped
    later are simply absent. ``task``: ``classification`` (70/15/15) or ``segmentation``
    (test and val 5,337 each)."""
    ids = sorted(set(patient_ids))
    if task == "classification":
        out = mgca_three_way(ids, RSNA_CLS_HELD_OUT)
        out.train = pandas_sample(out.train, fraction, fraction_seed)
        how = f"pandas sample(frac={fraction}, random_state={fraction_seed})"
    elif task == "segmentation":
        if len(ids) <= RSNA_SEG_HELD_OUT:
            raise DataError(f"RSNA segmentation split needs more than {RSNA_SEG_HELD_OUT} patients, got {len(ids)}")
        out = mgca_three_way(ids, RSNA_SEG_HELD_OUT)
        out.train = numpy_choice_fraction(out.train, fraction, np.random.RandomState(fraction_seed))
        how = f"np.random.choice(n, int({fraction}*n)) with seed {fraction_seed}"
    else:
        raise DataError(f"RSNA task must be 'classification' or 'segmentation', not {task!r}")
    out.protocol_id = f"mgca-rsna-{task}"
    out.protocol = f"{out.protocol_id}: patients sorted, train_test_split random_state={SPLIT_SEED}; train {how}"
    return out


def covidx_splits(
    train_file_ids: Sequence[str],
    test_file_ids: Sequence[str],
    fraction: float = 1.0,
    *,
    fraction_seed: int = FRACTION_SEED,
) -> SplitAssignment:
    """MGCA's COVIDx split: train file rows 80/20 (random_state 0) + the official test file."""
    train, val = sklearn_split(list(train_file_ids), train_size=COVIDX_TRAIN_SIZE, random_state=SPLIT_SEED)
    out = SplitAssignment(
        train=pandas_sample(train, fraction, fraction_seed),
        val=val,
        test=list(test_file_ids),
        protocol_id="mgca-covidx",
    )
    out.protocol = (
        f"mgca-covidx: train file 80/20 random_state={SPLIT_SEED}, official test; "
        f"train pandas sample(frac={fraction}, random_state={fraction_seed})"
    )
    return out


def official_splits(
    ids_by_split: Mapping[str, Sequence[str]],
    fraction: float = 1.0,
    *,
    fraction_seed: int = FRACTION_SEED,
    protocol: str = "official",
) -> SplitAssignment:
    """A dataset's own splits (CheXpert, MIMIC-CXR) with MGCA's label fraction on train."""
    out = SplitAssignment(protocol=protocol, protocol_id=protocol)
    for name, ids in ids_by_split.items():
        key = SPLIT_ALIASES.get(name.lower())
        if key is None:
            raise DataError(f"unknown split name {name!r}")
        getattr(out, key).extend(ids)
    out.train = pandas_sample(out.train, fraction, fraction_seed)
    return out


def siim_splits(
    rows: Sequence[tuple[str, str]],
    fraction: float = 1.0,
    *,
    protocol: str = "mgca",
    balance: bool = True,
    fraction_seed: int = FRACTION_SEED,
) -> SplitAssignment:
    """SIIM splits from the label rows ``(ImageId, rle)`` in file order (``SiimLabels.rows``;
    ``rle == "-1"`` for negatives). See the module docstring for ``protocol``."""
    rows = list(rows)
    positive_images = {i for i, r in rows if r.strip() != "-1"}
    out = SplitAssignment()
    if protocol == "mgca":
        split_rows = mgca_three_way(list(range(len(rows))), RSNA_CLS_HELD_OUT)  # row positions
        train_rows = [rows[k] for k in split_rows.train]
        val_ids = _unique(rows[k][0] for k in split_rows.val)
        test_ids = _unique(rows[k][0] for k in split_rows.test)
    elif protocol == "image":
        images = _unique(i for i, _ in rows)
        split_imgs = mgca_three_way(images, RSNA_CLS_HELD_OUT)
        train_set = set(split_imgs.train)
        train_rows = [(i, r) for i, r in rows if i in train_set]
        # keep the shuffled image order for the training rows, as the row protocol does
        order = {i: k for k, i in enumerate(split_imgs.train)}
        train_rows.sort(key=lambda ir: order[ir[0]])
        val_ids, test_ids = split_imgs.val, split_imgs.test
    else:
        raise DataError(f"SIIM split protocol must be 'mgca' or 'image', not {protocol!r}")
    rng = np.random.RandomState(fraction_seed)
    pos_rows = [i for i, r in train_rows if r.strip() != "-1"]
    neg_rows = [i for i, r in train_rows if r.strip() == "-1"]
    if balance:
        n_pos = len(set(pos_rows))
        neg_unique = np.array(_unique(neg_rows), dtype=object)
        if n_pos > len(neg_unique):
            raise DataError(f"SIIM: cannot balance {n_pos} positive with {len(neg_unique)} negative training images")
        chosen = set(rng.choice(neg_unique, size=n_pos, replace=False).tolist()) if n_pos else set()
        neg_rows = [i for i in neg_rows if i in chosen]
    train_ids = _unique(pos_rows + neg_rows)
    if fraction != 1:
        _check_frac(fraction)
        selected = set(
            rng.choice(np.array(train_ids, dtype=object), size=int(len(train_ids) * fraction), replace=False).tolist()
        )
        train_ids = [i for i in train_ids if i in selected]
    # one split per image: test > val > train
    test_set = set(test_ids)
    val_clean = [i for i in val_ids if i not in test_set]
    held = test_set | set(val_clean)
    train_clean = [i for i in train_ids if i not in held]
    out.train, out.val, out.test = train_clean, val_clean, list(test_ids)
    out.protocol_id = "mgca-siim" if protocol == "mgca" and balance else f"{protocol}-siim"
    moved_val = len(val_ids) - len(val_clean)
    moved_train = len(train_ids) - len(train_clean)
    out.protocol = (
        f"{'mgca' if protocol == 'mgca' else 'image'}-siim: {protocol}-level 70/15/15 "
        f"random_state={SPLIT_SEED}; train {'balanced, ' if balance else ''}"
        f"fraction {fraction} via RandomState({fraction_seed}).choice"
    )
    if moved_val or moved_train:
        out.notes.append(
            f"{moved_train} training and {moved_val} validation images also had rows in a held-out split "
            "(MGCA splits rows); they were kept only in the held-out split"
        )
    out.notes.append(
        f"training set: {sum(1 for i in out.train if i in positive_images)} positive, "
        f"{sum(1 for i in out.train if i not in positive_images)} negative images"
    )
    return out


# --------------------------------------------------------------------------- generic tools


def grouped_split(
    ids: Sequence[str],
    groups: Sequence[str] | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = SPLIT_SEED,
) -> SplitAssignment:
    """A leakage-free split for one's own data: whole groups (patients) go to one split. Groups
    are sorted, permuted with ``RandomState(seed)`` and cut at the cumulative fractions (rounded
    on the number of groups). ``groups=None`` makes every id its own group."""
    ids = list(ids)
    groups = list(groups) if groups is not None else ids
    if len(groups) != len(ids):
        raise DataError("ids and groups must have the same length")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions must be >= 0 and sum to 1, not {fractions}")
    uniq = sorted(set(groups))
    perm = np.random.RandomState(seed).permutation(len(uniq))
    n_train = int(round(fractions[0] * len(uniq)))
    n_val = int(round(fractions[1] * len(uniq)))
    split_of_group = {}
    for rank, gi in enumerate(perm):
        split_of_group[uniq[gi]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    out = SplitAssignment(protocol=f"grouped {fractions} seed {seed}", protocol_id="grouped")
    for i, g in zip(ids, groups):
        getattr(out, split_of_group[g]).append(i)
    return out


def leaking_groups(mapping: Mapping[str, str], group_of: Mapping[str, str | None]) -> dict[str, set[str]]:
    """Groups (patients) whose ids fall in more than one split: ``{group: {splits}}``."""
    seen: dict[str, set[str]] = {}
    for i, s in mapping.items():
        g = group_of.get(i)
        if g:
            seen.setdefault(g, set()).add(s)
    return {g: s for g, s in seen.items() if len(s) > 1}


def apply_splits(
    records: ReadResult | Iterable[Record],
    mapping: Mapping[str, str] | SplitAssignment,
    *,
    drop_unassigned: bool = True,
) -> ReadResult:
    """Set ``Record.split`` from a mapping; records come back in the mapping's order (sampling
    is positional, so order is part of the protocol). Unassigned records are skipped as
    ``not_in_split`` (or kept with ``split=None``); ids of the mapping without a record become
    ``not_found``. Raises DataError when no record is assigned."""
    if isinstance(mapping, SplitAssignment):
        mapping = mapping.mapping()
    recs = list(records.records if isinstance(records, ReadResult) else records)
    by_id = {r.id: r for r in recs}
    out = ReadResult()
    if isinstance(records, ReadResult):
        out.skipped.extend(records.skipped)
    for i, s in mapping.items():
        rec = by_id.get(i)
        if rec is None:
            out.skipped.append(Skipped(i, "not_found", f"in the split ({s}) but not among the records"))
            continue
        rec.split = s
        out.records.append(rec)
    assigned = set(mapping)
    for rec in recs:
        if rec.id not in assigned:
            if drop_unassigned:
                out.skipped.append(Skipped(rec.id, "not_in_split"))
            else:
                rec.split = None
                out.records.append(rec)
    if not any(r.split for r in out.records):
        raise DataError(f"no record matches the split ({len(mapping)} ids, {len(recs)} records): wrong split file?")
    return out


def write_split_file(path, split: SplitAssignment | Mapping[str, str]) -> None:
    """CSV ``id,split`` in order, written atomically."""
    mapping = split.mapping() if isinstance(split, SplitAssignment) else dict(split)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "split"])
    for i, s in mapping.items():
        if s not in SPLITS:
            raise DataError(f"split of {i!r} is {s!r}; expected one of {SPLITS}")
        w.writerow([i, s])
    atomic_write_text(path, buf.getvalue(), fsync=False, mkdir=True)


def read_split_file(path) -> dict[str, str]:
    """A split file (``id,split``; extra columns ignored) as an ordered ``{id: split}``."""
    out: dict[str, str] = {}
    with open_text(path, "split file") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        names = [h.strip().lower() for h in header or []]
        if "id" not in names or "split" not in names:
            raise DataError(f"split file {path} needs the columns 'id' and 'split' (found {header})")
        ci, cs = names.index("id"), names.index("split")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            i = row[ci].strip() if ci < len(row) else ""
            raw = row[cs].strip() if cs < len(row) else ""
            s = SPLIT_ALIASES.get(raw.lower())
            if not i or s is None:
                raise DataError(
                    f"split file {path} line {lineno}: need an id and a split of train/val/test, got {row!r}"
                )
            if out.get(i, s) != s:
                raise DataError(f"split file {path} line {lineno}: {i!r} is in both {out[i]} and {s}")
            out[i] = s
    if not out:
        raise DataError(f"split file {path} lists no record")
    return out
