"""Open-I / Indiana University chest X-ray reports (``NLMCXR_reports.tgz``) and their images.

The archive holds one XML file per report (``ecgen-radiology/<n>.xml``; 3,955 in the public
release) with ``AbstractText`` elements labelled COMPARISON, INDICATION, FINDINGS and IMPRESSION,
MeSH ``major`` terms, and one ``parentImage id="CXR<n>_<k>_IM-...">`` per image. The archive is
read in place with :mod:`tarfile` (nothing is extracted); only regular ``.xml`` members up to
2 MB are parsed, and XML with a DTD or entity declarations is refused (``bad_xml``).

:func:`read_openi` gives one record per image (``id`` = the parentImage id, ``patient_id`` =
``study_id`` = the report's uId, e.g. ``CXR1``) when an image folder is given: files named
``<parentImage id>.png`` / ``.jpg`` / ``.dcm`` anywhere below it (also the Kaggle naming
``1_IM-0001-4001.dcm.png``). Reports whose images are not there are skipped as ``missing_image``
(with no folder, every row is). ``reports_only=True`` gives one record per report instead, with
``image_path = ""``, for text work.

Text: the paper's IMPRESSION + " " + FINDINGS (:func:`core_model.data.reports.report_text`);
Open-I's ``XXXX`` de-identification tokens are removed by default (``deid="token"`` maps them to
``[deid]``). Reports with neither section are skipped as ``empty_report``.

Labels from the MeSH major terms: ``normal`` (1 when the only term is "normal"), ``pneumonia`` and
``pneumothorax`` (1 when a term starts with that word), else 0; all NaN when the report has no
terms or "No Indexing". ``finding`` = ``normal``, ``pneumonia`` or ``pneumothorax`` when exactly
one of them is positive. An optional projections CSV (Kaggle's ``indiana_projections.csv``:
``uid, filename, projection`` with Frontal / Lateral) sets ``view`` (FRONTAL / LATERAL) and, with
``frontal_only=True``, skips lateral images as ``not_frontal``. Open-I has no official split:
``split`` stays None.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core_model.data.records import ReadResult, Record, Skipped
from core_model.data.reports import clean_text, report_text
from core_model.errors import DataError

MAX_XML_BYTES = 2 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
_FORBIDDEN = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass
class OpenIReport:
    uid: str  # "CXR1"
    member: str  # path inside the archive
    sections: dict[str, str] = field(default_factory=dict)  # label (upper case) -> raw text
    image_ids: list[str] = field(default_factory=list)
    mesh_major: list[str] = field(default_factory=list)

    @property
    def findings(self) -> str:
        return self.sections.get("FINDINGS", "")

    @property
    def impression(self) -> str:
        return self.sections.get("IMPRESSION", "")

    def text(self, deid: str = "remove") -> str | None:
        return report_text(findings=self.findings, impression=self.impression, deid=deid)


def _parse_xml(data: bytes, member: str) -> OpenIReport:
    if _FORBIDDEN.search(data):
        raise ValueError("DTD or entity declarations are not allowed")
    root = ET.fromstring(data)
    uid_el = root.find("uId")
    uid = (uid_el.get("id") if uid_el is not None else "") or ""
    if not uid:
        stem = Path(member).stem
        uid = f"CXR{stem}" if stem.isdigit() else stem
    rep = OpenIReport(uid=uid, member=member)
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().upper()
        text = "".join(el.itertext()).strip()
        if label and text:
            rep.sections[label] = f"{rep.sections[label]} {text}" if label in rep.sections else text
    for el in root.iter("parentImage"):
        pid = (el.get("id") or "").strip()
        if pid and pid not in rep.image_ids:
            rep.image_ids.append(pid)
    mesh = root.find("MeSH")
    if mesh is not None:
        rep.mesh_major = [(m.text or "").strip() for m in mesh.findall("major") if (m.text or "").strip()]
    return rep


def iter_openi_reports(archive: str | os.PathLike) -> Iterator[OpenIReport | Skipped]:
    """Each report of the archive (or a Skipped for an XML member that cannot be used)."""
    path = Path(archive).expanduser()
    if not path.is_file():
        raise DataError(f"Open-I report archive not found: {path}")
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable tar archive ({exc})") from exc
    with tar:
        try:
            for member in tar:
                name = member.name
                if not name.lower().endswith(".xml"):
                    continue
                sid = Path(name).stem
                if not member.isreg():
                    yield Skipped(sid, "bad_xml", f"{name}: not a regular file")
                    continue
                if member.size > MAX_XML_BYTES:
                    yield Skipped(sid, "bad_xml", f"{name}: {member.size} bytes (limit {MAX_XML_BYTES})")
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    yield Skipped(sid, "bad_xml", f"{name}: no data")
                    continue
                data = fh.read(MAX_XML_BYTES + 1)
                try:
                    yield _parse_xml(data, name)
                except (ET.ParseError, ValueError) as exc:
                    yield Skipped(sid, "bad_xml", f"{name}: {exc}")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path.name}: archive is damaged or truncated ({exc})") from exc


def mesh_labels(terms: list[str]) -> dict[str, float]:
    if not terms or any(t.lower().startswith("no indexing") for t in terms):
        return {"normal": math.nan, "pneumonia": math.nan, "pneumothorax": math.nan}
    heads = [t.split("/")[0].strip().lower() for t in terms]
    return {
        "normal": 1.0 if all(h == "normal" for h in heads) else 0.0,
        "pneumonia": 1.0 if any(h.startswith("pneumonia") for h in heads) else 0.0,
        "pneumothorax": 1.0 if any(h.startswith("pneumothorax") for h in heads) else 0.0,
    }


def _single_finding(labels: dict[str, float]) -> str | None:
    positive = [k for k in ("normal", "pneumonia", "pneumothorax") if labels.get(k) == 1.0]
    return positive[0] if len(positive) == 1 else None


_ID = re.compile(r"^(?:CXR)?(\d+)_(?:\d+_)?(IM-.*)$", re.IGNORECASE)


def _key(name: str) -> str:
    """Normalise an image file name or id so that the official names (``CXR1_1_IM-0001-3001.png``,
    the parentImage id ``CXR1_1_IM-0001-3001``) and Kaggle's (``1_IM-0001-3001.dcm.png``) meet:
    image suffixes dropped, then ``<uid>_IM-...``."""
    s = name
    while True:
        low = s.lower()
        for suf in IMAGE_SUFFIXES:
            if low.endswith(suf):
                s = s[: -len(suf)]
                break
        else:
            break
    m = _ID.match(s)
    return f"{m.group(1)}_{m.group(2)}" if m else s


def _index_images(folder: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.lower().endswith(IMAGE_SUFFIXES):
                found.setdefault(_key(fn), os.path.join(dirpath, fn))
    return found


def _read_projections(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"Open-I projections file not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        for col in ("filename", "projection"):
            if col not in header:
                raise DataError(f"{path.name}: required column {col!r} is missing; columns found: {', '.join(header)}")
        return {_key(r["filename"].strip()): (r.get("projection") or "").strip().upper() for r in reader}


def read_openi(
    archive: str | os.PathLike,
    images: str | os.PathLike | None = None,
    *,
    reports_only: bool = False,
    projections: str | os.PathLike | None = None,
    frontal_only: bool = True,
    deid: str = "remove",
) -> ReadResult:
    """Open-I reports (and images, when a folder is given) as records; see the module docs."""
    index: dict[str, str] | None = None
    if images is not None and not reports_only:
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise DataError(f"Open-I image folder not found: {folder}")
        index = _index_images(folder)
    views = _read_projections(Path(projections).expanduser()) if projections else {}
    result = ReadResult()
    seen: set[str] = set()
    for item in iter_openi_reports(archive):
        if isinstance(item, Skipped):
            result.skipped.append(item)
            continue
        rep = item
        if rep.uid in seen:
            result.skipped.append(Skipped(rep.uid, "duplicate_id", rep.member))
            continue
        seen.add(rep.uid)
        text = rep.text(deid=deid)
        labels = mesh_labels(rep.mesh_major)
        finding = _single_finding(labels)
        if not text:
            result.skipped.append(Skipped(rep.uid, "empty_report", "no FINDINGS or IMPRESSION"))
            continue
        if reports_only:
            result.records.append(
                Record(
                    id=rep.uid,
                    image_path="",
                    report=text,
                    patient_id=rep.uid,
                    study_id=rep.uid,
                    labels=dict(labels),
                    finding=finding,
                )
            )
            continue
        if not rep.image_ids:
            result.skipped.append(Skipped(rep.uid, "missing_image", "the report lists no images"))
            continue
        for image_id in rep.image_ids:
            view = views.get(_key(image_id)) or None
            if views and frontal_only and view != "FRONTAL":
                result.skipped.append(Skipped(image_id, "not_frontal", view or "not in the projections file"))
                continue
            p = index.get(_key(image_id)) if index is not None else None
            if p is None:
                detail = "no image folder given" if index is None else "not found in the image folder"
                result.skipped.append(Skipped(image_id, "missing_image", detail))
                continue
            result.records.append(
                Record(
                    id=image_id,
                    image_path=os.path.abspath(p),
                    report=text,
                    patient_id=rep.uid,
                    study_id=rep.uid,
                    view=view,
                    labels=dict(labels),
                    finding=finding,
                )
            )
    return result


def section_counts(archive: str | os.PathLike) -> dict[str, int]:
    """How many reports have each section (non-empty after cleaning), and how many images."""
    counts = {"reports": 0, "bad_xml": 0, "images": 0, "text": 0}
    for item in iter_openi_reports(archive):
        if isinstance(item, Skipped):
            counts["bad_xml"] += 1
            continue
        counts["reports"] += 1
        counts["images"] += len(item.image_ids)
        counts["text"] += bool(item.text())
        for label, text in item.sections.items():
            if clean_text(text):
                counts[label.lower()] = counts.get(label.lower(), 0) + 1
    return counts
