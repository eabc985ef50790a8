"""COVIDx CXR-2 / 3 / 4 reader (space-separated label files without header).

Each line is ``patient_id filename class source`` (NOTES.md section 2). Filenames may contain
spaces, so a line is read as: first token = patient id, last token = source, second to last =
class, everything between = filename.

Two class vocabularies exist:

- ``"A"`` (the three-class files MGCA and the Adaptor paper use): ``normal``, ``pneumonia``,
  ``COVID-19``, in that order (MGCA's ``set_label``: 0 / 1 / 2);
- ``"B"`` (the binary COVIDx CXR-2/3/4 files): ``negative``, ``positive`` (COVID-19 positive).

``version="auto"`` picks the vocabulary from the classes present in the file. Labels are one-hot
over the version's classes, keyed by finding names: A -> ``normal`` / ``pneumonia`` / ``covid19``;
B -> ``negative`` / ``covid19``. :data:`CLASSES` gives the order (the class index of a record is
``CLASSES[version].index(record.finding_key)``; see :func:`class_index`). A class outside the
vocabulary (or a line with fewer than four fields) becomes ``Skipped(..., "bad_label")``; a missing
image ``missing_image``; a filename listed twice ``duplicate``.

Images: ``<image_dir>/<filename>`` (COVIDx ships ``train/`` and ``test/`` folders; pass the one that
belongs to the label file).
"""

from __future__ import annotations

from core_model.data._files import open_text, require_dir
from core_model.data.records import ReadResult, Record, Skipped
from core_model.errors import DataError

# file class name -> label key, per vocabulary, in class-index order
VOCABULARIES: dict[str, dict[str, str]] = {
    "A": {"normal": "normal", "pneumonia": "pneumonia", "covid-19": "covid19"},
    "B": {"negative": "negative", "positive": "covid19"},
}
CLASSES: dict[str, tuple[str, ...]] = {v: tuple(m.values()) for v, m in VOCABULARIES.items()}


class CovidxReadResult(ReadResult):
    version: str
    classes: tuple[str, ...]


def _parse_line(line: str):
    parts = line.split()
    if len(parts) < 4:
        return None
    return parts[0], " ".join(parts[1:-2]), parts[-2], parts[-1]


def detect_version(class_names) -> str:
    """'A' or 'B' from the class names present in a file (case-insensitive)."""
    names = {c.lower() for c in class_names}
    hits = {v: len(names & set(m)) for v, m in VOCABULARIES.items()}
    if hits["A"] == hits["B"] == 0:
        raise DataError(
            f"COVIDx: none of the classes {sorted(names)[:5]} is a known COVIDx class "
            "(normal / pneumonia / COVID-19, or positive / negative)"
        )
    if hits["A"] and hits["B"]:
        raise DataError("COVIDx: the file mixes normal/pneumonia/COVID-19 with positive/negative classes")
    return "A" if hits["A"] else "B"


def class_index(record: Record, version: str = "A") -> int:
    """Index of a COVIDx record's class in :data:`CLASSES` ``[version]`` (from its one-hot labels)."""
    for i, key in enumerate(CLASSES[version]):
        if record.labels.get(key) == 1.0:
            return i
    raise ValueError(f"record {record.id} has no COVIDx {version} class label")


def read_covidx(
    label_path, image_dir, *, split: str | None = None, version: str = "auto", check_images: bool = True
) -> CovidxReadResult:
    """Records of one COVIDx label file (e.g. ``train.txt`` with ``image_dir=.../train``).

    ``split`` (train / val / test) is stored on every record when given (e.g. ``"test"`` for the
    official test file); MGCA's 80/20 train/valid split comes from :mod:`core_model.data.splits`.
    """
    image_root = require_dir(image_dir, "COVIDx image folder").resolve()
    parsed = []
    result = CovidxReadResult()
    with open_text(label_path, "COVIDx label file") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            p = _parse_line(line)
            if p is None:
                result.skipped.append(Skipped(f"line {lineno}", "bad_label", "fewer than 4 fields"))
                continue
            parsed.append((lineno, *p))
    if not parsed:
        raise DataError(f"COVIDx label file {label_path} has no usable line")
    if version == "auto":
        version = detect_version(p[3] for p in parsed)
    if version not in VOCABULARIES:
        raise DataError(f"COVIDx version must be 'A', 'B' or 'auto', not {version!r}")
    vocab = VOCABULARIES[version]
    classes = CLASSES[version]
    result.version, result.classes = version, classes
    seen: set[str] = set()
    for lineno, patient, filename, cls, _source in parsed:
        key = vocab.get(cls.lower())
        if key is None:
            result.skipped.append(Skipped(filename, "bad_label", f"line {lineno}: unknown class {cls!r}"))
            continue
        if filename in seen:
            result.skipped.append(Skipped(filename, "duplicate", f"line {lineno}: listed twice"))
            continue
        seen.add(filename)
        path = image_root / filename
        if check_images and not path.is_file():
            result.skipped.append(Skipped(filename, "missing_image", f"{filename} not in {image_root}"))
            continue
        result.records.append(
            Record(
                id=filename,
                image_path=str(path),
                split=split,
                patient_id=patient,
                labels={k: float(k == key) for k in classes},
                finding=None if key == "negative" else key,
            )
        )
    if not result.records:
        raise DataError(
            f"COVIDx label file {label_path}: nothing usable ({result.summary()}); images are looked "
            f"up as {image_root}/<filename>"
        )
    return result


def read_covidx_ids(label_path) -> list[str]:
    """Filenames of a label file in file order (every parsable line), for MGCA's row-level split."""
    ids = []
    with open_text(label_path, "COVIDx label file") as fh:
        for line in fh:
            p = _parse_line(line) if line.strip() else None
            if p is not None:
                ids.append(p[1])
    return ids


__all__ = [
    "CLASSES",
    "VOCABULARIES",
    "CovidxReadResult",
    "class_index",
    "detect_version",
    "read_covidx",
    "read_covidx_ids",
]
