"""Export instances with identifying information removed, for sharing with collaborators.

Implements the DICOM PS3.15 Annex E *Basic Application Level Confidentiality Profile* (every
attribute of Table E.1-1, kept as data in :mod:`app.library.deid_profile`, at every nesting
level) with the *Retain Longitudinal Temporal Information with Modified Dates* and *Retain
Patient Characteristics* options (sex, age, size and weight are kept; ages over 89 become 090Y):

* Each attribute of the table gets its action (X remove, Z empty, D dummy, U remap UID);
  conditional actions take the strictest choice (remove), except X/Z/U* reference sequences
  (Referenced Image, Source Image), which are kept with their items de-identified.
* Patient Name and Patient ID -> the same pseudonym ``ANON-<12 hex>``; Patient Birth Date is
  emptied. Inside sequence items the name is removed and the ID emptied.
* Every date (DA, and the date part of DT) anywhere in the dataset is shifted by a per-patient
  number of days (between 1 and 10 years back), so intervals within a patient are preserved.
* Every UID that is not a registered DICOM UID or a class / transfer syntax UID is remapped to
  ``2.25.<128-bit HMAC>``; the same original UID always gives the same new one, so every file of
  a study gets the same new Study, Series and Frame of Reference UIDs and references resolve.
* Beyond the table, by value representation: person names (PN; also where the table says Z),
  free text (LT, ST, UT, UC), URLs (UR), AE titles, UN values, public attributes unknown to the data dictionary,
  private attributes (none is whitelisted: the Retain Safe Private option is not offered),
  command, overlay, curve and retired text groups are removed. Then any remaining text element
  that still contains the patient's original name, ID, birth date or accession number is
  emptied (safety net).
* The file is rebuilt: a zeroed preamble and a new File Meta header (files that had none
  export like any other).
* Sequences nested deeper than :data:`core_model.imaging.limits.MAX_SEQUENCE_DEPTH` (or more
  than :data:`MAX_ELEMENTS` elements) refuse the instance, checked without recursion before
  anything walks the dataset: such files are crafted, and walking them is unbounded work.
* Burned-in Annotation (0028,0301) = YES: the instance is refused (listed, not exported) unless
  ``include_burned_in`` is set (pixels may show names); when the attribute is absent the
  instance is exported and counted as "burned-in annotation not declared".
* Patient Identity Removed = YES, De-identification Method and its code sequence (113100,
  113107, 113108) and Longitudinal Temporal Information Modified = MODIFIED are set.

Pseudonyms, date shifts and UIDs come from an HMAC keyed with a secret stored in the library
database (never exported), so exports from one library are consistent with each other.
PNG/JPEG instances are re-encoded as PNG without any metadata. Files are written atomically.
Reports are not exported (free text may name the patient). ``export-manifest.json`` holds only
remapped identifiers, counts and fixed reason codes: nothing from the source files (no file
names, no values, no exception text).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import os
import secrets
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import select

from app.library.db import Library
from app.library.deid_profile import rule_for
from app.library.models import Instance, Patient, Setting
from app.library.queries import resolve_uids
from core_model.errors import UserError
from core_model.fileio import atomic_write_bytes, atomic_write_json
from core_model.imaging.errors import ImageReadError, SequenceTooDeepError
from core_model.imaging.limits import MAX_SEQUENCE_DEPTH, check_sequence_depth

log = logging.getLogger(__name__)

MANIFEST_NOTICE = "Research use only; not for diagnosis. De-identified export; verify before sharing."
# De-identification Method is LO (64 characters per value, several values allowed)
METHOD = (
    "CXR Adaptor export-anonymized",
    "PS3.15 Basic Application Confidentiality Profile",
    "Retain Longitudinal Temporal Info, Modified Dates",
    "Retain Patient Characteristics",
    "UIDs remapped, private tags removed",
)
CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)

MAX_ELEMENTS = 100_000  # a radiograph has a few hundred

# Retain Patient Characteristics: the subset of the option's K attributes this export keeps
RETAINED_CHARACTERISTICS = {0x00100040, 0x00101010, 0x00101020, 0x00101030}  # sex, age, size, weight
PATIENT_NAME, PATIENT_ID, PATIENT_AGE = 0x00100010, 0x00100020, 0x00101010
# UIs that name a class, a syntax or a coding scheme, not an instance: kept
UID_KEEP_KEYWORDS = {
    "TransferSyntaxUID",
    "CodingSchemeUID",
    "ContextGroupExtensionCreatorUID",
    "MappingResourceUID",
    "ContextUID",
}
REMOVED_GROUPS = {0x0000, 0x4000, 0x4008}  # command elements; retired text and results groups
STRING_VRS = {"AE", "AS", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"}
DUMMY = {
    "AE": "ANONYMIZED",
    "CS": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "DS": "0",
    "IS": "0",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
}

# Reasons an instance is not exported (fixed texts: never a file name or a value)
REASONS = {
    "burned_in_annotation": "Burned In Annotation is YES: its pixels may show names "
    "(export it with --include-burned-in after checking)",
    "too_deep": f"sequences nested deeper than {MAX_SEQUENCE_DEPTH} levels (a crafted file)",
    "too_large": "the file declares more pixel data than this app handles",
    "too_many_elements": f"more than {MAX_ELEMENTS} data elements",
    "missing": "the file is no longer where the library expects it",
    "unreadable": "the file could not be read",
    "not_dicom": "the file is not a readable DICOM file",
    "truncated": "the file is truncated",
    "bad_header": "a header element of the file cannot be parsed",
    "invalid_dataset": "the file's dataset could not be processed",
    "write_failed": "the anonymised copy could not be written",
}


class RefusedInstance(Exception):
    """This instance is not exported; ``reason`` is a key of :data:`REASONS`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ExportSummary:
    out_dir: str
    exported: int = 0
    skipped_burned_in: int = 0
    burned_in_not_declared: int = 0
    refused: list[dict] = field(default_factory=list)  # the file's content keeps it out
    failed: list[dict] = field(default_factory=list)  # the file could not be read or written
    unknown_uids: list[str] = field(default_factory=list)
    identifiers_scrubbed: int = 0  # text elements emptied by the safety net

    def to_dict(self) -> dict:
        return asdict(self)


class Anonymizer:
    def __init__(self, secret: bytes):
        self.secret = secret

    def _h(self, label: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{label}\0{value}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        return "2.25." + str(int.from_bytes(self._h("uid", uid)[:16], "big"))

    def pseudonym(self, patient_key: str) -> str:
        return "ANON-" + self._h("patient", patient_key).hex()[:12].upper()

    def day_shift(self, patient_key: str) -> int:
        """Days to subtract from every date of this patient: 365..3652 (1 to 10 years)."""
        return 365 + int.from_bytes(self._h("dates", patient_key)[:4], "big") % 3288

    # -- dataset --------------------------------------------------------------------------
    def anonymize(self, ds, patient_key: str) -> int:
        """Anonymise ``ds`` in place; returns how many text elements the safety net emptied.

        Raises :class:`RefusedInstance` (before changing anything) when the dataset nests
        sequences deeper than :data:`~core_model.imaging.limits.MAX_SEQUENCE_DEPTH` or holds
        more than :data:`MAX_ELEMENTS` elements."""
        try:
            check_sequence_depth(ds)  # without recursion, one level parsed at a time
        except SequenceTooDeepError:
            raise RefusedInstance("too_deep") from None
        except RecursionError:
            raise RefusedInstance("too_deep") from None
        needles = inspect_dataset(ds)
        job = _Job(self, self.day_shift(patient_key))
        job.process(ds, depth=0)
        scrubbed = _scrub(ds, needles)
        _set_identity(ds, self.pseudonym(patient_key))
        _rebuild_file_meta(ds)
        return scrubbed


def inspect_dataset(ds) -> set[str]:
    """Walk ``ds`` (depth already bounded) without recursion, bounding its size; return the
    identifying strings (person name parts, patient IDs, birth date, accession number) for the
    safety net."""
    needles: set[str] = set()
    stack = [(ds, 0)]
    count = 0
    while stack:
        dataset, depth = stack.pop()
        for elem in dataset:
            count += 1
            if count > MAX_ELEMENTS:
                raise RefusedInstance("too_many_elements")
            if elem.VR == "SQ":
                stack.extend((item, depth + 1) for item in elem.value or [])
            elif elem.tag.is_private or not elem.value:
                continue
            elif elem.VR == "PN":
                for value in _values(elem.value):
                    text = str(value)
                    needles.update(p for p in text.replace("=", "^").split("^") if len(p.strip()) >= 3)
            elif elem.keyword in (
                "PatientID",
                "OtherPatientIDs",
                "PatientBirthDate",
                "AccessionNumber",
                "MedicalRecordLocator",
                "OtherPatientNames",
                "PatientBirthName",
            ):
                needles.update(str(v) for v in _values(elem.value) if len(str(v).strip()) >= 3)
    return {n.strip().lower() for n in needles if n.strip()}


def _values(value) -> list:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _is_registered_uid(value: str) -> bool:
    from pydicom.uid import UID_dictionary

    return value in UID_dictionary


class _Job:
    """One dataset's de-identification (its depth already bounded, so recursion is safe)."""

    def __init__(self, anon: Anonymizer, shift: int):
        self.anon, self.shift = anon, shift

    def process(self, dataset, depth: int) -> None:
        for elem in list(dataset):
            action = self.action(elem, depth)
            if action == "X":
                del dataset[elem.tag]
            elif action == "Z":
                _set_empty(elem)
            elif action == "D":
                if elem.VR in DUMMY:
                    elem.value = DUMMY[elem.VR]
                else:  # sequences and binary values: no safe dummy, remove
                    del dataset[elem.tag]
            elif action == "U":
                self.remap(elem)
            elif action == "C":
                self.clean_date(elem)
            elif action in ("K", "U*") and elem.VR == "SQ":
                for item in elem.value or []:
                    self.process(item, depth + 1)
            elif action == "U*":  # a reference sequence encoded as something else: remove
                del dataset[elem.tag]
            elif elem.tag == PATIENT_AGE and elem.value:
                elem.value = _aggregate_age(str(elem.value))

    def action(self, elem, depth: int) -> str:
        tag, vr = elem.tag, elem.VR
        if (
            tag.is_private
            or tag.group in REMOVED_GROUPS
            or tag.element == 0x0000
            or (tag.group & 0xFF00) in (0x5000, 0x6000)
        ):
            return "X"  # private attributes, command, curve, overlay and retired groups, group lengths
        if depth == 0 and tag in (PATIENT_NAME, PATIENT_ID):
            return "K"  # replaced by the pseudonym afterwards
        rule = rule_for(int(tag))
        if rule is not None:
            if rule.modified_dates == "C" and vr in ("DA", "DT", "TM"):
                return "C"
            if rule.patient_characteristics == "K" and int(tag) in RETAINED_CHARACTERISTICS:
                return "K"
            if vr == "PN" and rule.action == "Z":
                return "X"  # person names are removed (the strictest choice); the patient's gets the pseudonym
            return rule.action
        if not elem.keyword or vr == "UN":
            return "X"  # unknown public attribute or undecoded value: cannot tell what it holds
        if vr in ("PN", "LT", "ST", "UT", "UC", "UR", "AE"):
            return "X"
        if vr == "UI":
            keep = elem.keyword.endswith("ClassUID") or elem.keyword in UID_KEEP_KEYWORDS
            return "K" if keep else "U"
        if vr in ("DA", "DT"):
            return "C"
        return "K"  # times, codes, measurements, pixel data; sequences are walked

    def remap(self, elem) -> None:
        if elem.VR != "UI":
            _set_empty(elem)
            return
        if not elem.value:
            return
        new = [v if _is_registered_uid(str(v)) else self.anon.uid(str(v)) for v in _values(elem.value)]
        elem.value = new if len(new) > 1 else new[0]

    def clean_date(self, elem) -> None:
        if not elem.value:
            return
        if elem.VR == "DA":
            elem.value = _shift_da(elem.value, self.shift)
        elif elem.VR == "DT":
            elem.value = _shift_dt(elem.value, self.shift)
        # TM: times of day are kept (the date they belong to moves by whole days)


def _aggregate_age(age: str) -> str:
    """Ages over 89 years become 090Y (they are rare enough to identify)."""
    age = age.strip()
    if age.endswith("Y") and age[:-1].isdigit() and int(age[:-1]) > 89:
        return "090Y"
    return age


def _set_empty(elem) -> None:
    if elem.VR == "SQ":
        from pydicom.sequence import Sequence

        elem.value = Sequence([])
    elif elem.VR in STRING_VRS or elem.VR in ("DA", "DT", "TM", "UI"):
        elem.value = ""
    else:
        elem.value = None


def _scrub(ds, needles: set[str]) -> int:
    """Empty any remaining text value containing one of ``needles`` (depth already bounded)."""
    if not needles:
        return 0
    scrubbed = 0
    stack = [(ds, 0)]
    while stack:
        dataset, depth = stack.pop()
        for elem in dataset:
            if elem.VR == "SQ":
                stack.extend((item, depth + 1) for item in elem.value or [])
            elif depth == 0 and elem.tag in (PATIENT_NAME, PATIENT_ID):
                continue  # replaced by the pseudonym next
            elif elem.VR in STRING_VRS and elem.value:
                values = [str(v).strip().lower() for v in _values(elem.value)]
                if elem.VR in ("AS", "DS", "IS"):  # numbers: only a whole value, not a digit run
                    hit = any(v in needles for v in values)
                else:
                    hit = any(n in v for v in values for n in needles)
                if hit:
                    elem.value = ""
                    scrubbed += 1
    return scrubbed


def _set_identity(ds, pseudonym: str) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
        "LongitudinalTemporalInformationModified",
    ):
        if keyword in ds:  # set afresh, whatever VR the file gave them
            delattr(ds, keyword)
    ds.PatientName = pseudonym
    ds.PatientID = pseudonym
    ds.PatientBirthDate = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(METHOD)
    codes = []
    for value, meaning in CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"


def _rebuild_file_meta(ds) -> None:
    """A new File Meta header (nothing of the old one but its transfer syntax) and a zeroed
    preamble: both may carry anything (application titles, private data, a TIFF header)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    old = getattr(ds, "file_meta", None)
    syntax = old.get("TransferSyntaxUID") if old is not None else None
    if not syntax:
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        syntax = ImplicitVRLittleEndian if implicit is not False else ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(ds.get("SOPClassUID", "") or "")
    meta.MediaStorageSOPInstanceUID = UID(ds.get("SOPInstanceUID", "") or "")
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.preamble = b"\0" * 128


def _shift_one_da(value: str, days: int) -> str:
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return ""  # unparseable dates are removed rather than kept
    try:
        d = date(int(value[:4]), int(value[4:6]), int(value[6:8])) - timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    return d.strftime("%Y%m%d")


def _shift_da(value, days: int):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_shift_one_da(str(v), days) for v in value]
    text = str(value)
    if "-" in text:  # a date range in a query-style value
        return "-".join(_shift_one_da(p, days) if p else "" for p in text.split("-"))
    return _shift_one_da(text, days)


def _shift_dt(value, days: int):
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_shift_dt(v, days) for v in value]
    text = str(value).strip()
    if len(text) >= 8 and text[:8].isdigit():
        shifted = _shift_one_da(text[:8], days)
        return shifted + text[8:] if shifted else ""
    return ""


def library_secret(library: Library) -> bytes:
    """The per-library HMAC key (created on first use, stored in the settings table)."""
    with library.write() as s:
        row = s.get(Setting, "anonymization_secret")
        if row is None:
            row = Setting(key="anonymization_secret", value=secrets.token_hex(32))
            s.add(row)
        return bytes.fromhex(row.value)


def _read(src: Path):
    """Read a DICOM file for export; a :class:`RefusedInstance` for anything unreadable."""
    from core_model.imaging.dicom import read_dataset

    try:
        return read_dataset(src)
    except ImageReadError as exc:  # its message names the file: only the reason code is kept
        if isinstance(exc, SequenceTooDeepError) or isinstance(exc.__cause__, RecursionError):
            raise RefusedInstance("too_deep") from None
        raise RefusedInstance(exc.reason if exc.reason in REASONS else "not_dicom") from None
    except RecursionError:  # undefined-length sequences are parsed while reading
        raise RefusedInstance("too_deep") from None


def export_anonymized(
    library: Library, uids: Iterable[str] | None, out_dir: str | os.PathLike, *, include_burned_in: bool = False
) -> ExportSummary:
    """Export the given SOP Instance / Series / Study UIDs (``None``: every instance).

    One instance that cannot be exported (refused for its content, or unreadable) is listed in
    the summary and the manifest by its remapped UID and a reason code; the others export."""
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    if out.resolve() == library.data_dir.resolve() or library.data_dir.resolve() in out.resolve().parents:
        raise UserError("the output folder must not be inside the library's data folder")
    anon = Anonymizer(library_secret(library))
    summary = ExportSummary(out_dir=str(out))
    with library.session() as s:
        if uids is None:
            instances = list(s.execute(select(Instance).order_by(Instance.id)).scalars())
        else:
            instances, summary.unknown_uids = resolve_uids(s, list(uids))
        keys = dict(s.execute(select(Patient.id, Patient.patient_key)).all())
    if uids is not None and not instances:
        raise UserError("none of the given UIDs is in the library: " + ", ".join(summary.unknown_uids[:5]))
    exported: list[dict] = []
    for inst in instances:
        key = keys[inst.patient_pk]
        pseudonym = anon.pseudonym(key)
        new_uid = anon.uid(inst.sop_instance_uid)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's warnings may quote element values
                entry = _export_one(library, inst, anon, key, out, include_burned_in=include_burned_in)
        except RefusedInstance as exc:
            record = dict(instance=new_uid, patient=pseudonym, reason=exc.reason, message=REASONS[exc.reason])
            if exc.reason == "burned_in_annotation":
                summary.skipped_burned_in += 1
            if exc.reason in ("missing", "unreadable", "write_failed"):
                summary.failed.append(record)
            else:
                summary.refused.append(record)
            log.warning("anonymised export: instance %s not exported (%s)", new_uid, exc.reason)
            continue
        except Exception as exc:
            summary.refused.append(
                dict(
                    instance=new_uid,
                    patient=pseudonym,
                    reason="invalid_dataset",
                    message=f"{REASONS['invalid_dataset']} ({type(exc).__name__})",
                )
            )
            log.warning("anonymised export: instance %s not exported (%s)", new_uid, type(exc).__name__)
            continue
        if entry["burned_in_annotation"] not in ("YES", "NO"):
            summary.burned_in_not_declared += 1
        summary.identifiers_scrubbed += entry.pop("scrubbed", 0)
        exported.append(entry)
        summary.exported += 1
    manifest_summary = summary.to_dict()
    for private in ("out_dir", "unknown_uids"):  # the caller's paths and UIDs stay out
        manifest_summary.pop(private, None)
    manifest = dict(notice=MANIFEST_NOTICE, method="; ".join(METHOD), summary=manifest_summary, files=exported)
    atomic_write_json(out / "export-manifest.json", manifest)
    log.info(
        "anonymised export: %d exported, %d refused, %d failed",
        summary.exported,
        len(summary.refused),
        len(summary.failed),
    )
    return summary


def _export_one(library: Library, inst, anon: Anonymizer, key: str, out: Path, *, include_burned_in: bool) -> dict:
    src = library.resolve(inst.file_path, inst.storage)
    pseudonym = anon.pseudonym(key)
    if not src.is_file():
        raise RefusedInstance("missing")
    if inst.source_format in ("png", "jpeg"):
        from io import BytesIO

        from PIL import Image

        from core_model.imaging.preprocess import load_display

        try:
            pixels = load_display(src)
        except ImageReadError as exc:
            raise RefusedInstance(exc.reason if exc.reason in REASONS else "unreadable") from None
        except OSError:
            raise RefusedInstance("unreadable") from None
        new_uid = anon.uid(inst.sop_instance_uid)
        dst = out / pseudonym / f"{new_uid}.png"
        buf = BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")  # no metadata chunks
        _write(dst, lambda: atomic_write_bytes(dst, buf.getvalue()))
        return dict(
            file=dst.relative_to(out).as_posix(),
            sop_instance_uid=new_uid,
            patient=pseudonym,
            burned_in_annotation="not declared",
        )
    try:
        ds = _read(src)
    except OSError:
        raise RefusedInstance("unreadable") from None
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()  # top level: no walk yet
    if burned == "YES" and not include_burned_in:
        raise RefusedInstance("burned_in_annotation")
    study = str(ds.get("StudyInstanceUID", "") or "") or "no-study\0" + key
    scrubbed = anon.anonymize(ds, key)
    # the library's identity of the instance (normally the file's own UID, remapped the same way)
    new_uid = anon.uid(inst.sop_instance_uid)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    dst = out / pseudonym / anon.uid(study) / f"{new_uid}.dcm"

    from core_model.imaging.dicom_write import save_atomic

    _write(dst, lambda: save_atomic(ds, dst))
    return dict(
        file=dst.relative_to(out).as_posix(),
        sop_instance_uid=new_uid,
        patient=pseudonym,
        burned_in_annotation=burned if burned in ("YES", "NO") else "not declared",
        scrubbed=scrubbed,
    )


def _write(dst: Path, write) -> None:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write()
    except OSError as exc:
        log.warning("anonymised export: writing failed (%s)", errno.errorcode.get(exc.errno or 0, "error"))
        raise RefusedInstance("write_failed") from None
