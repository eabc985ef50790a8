"""The per-file part of an import that worker processes run (issue 15): the sniffer's answer
for a plain file, its DICOM header read and checked by the imaging layer (the fast header walk
where it applies, pydicom otherwise), and the library fields of patient, study, series and
instance. Touches no database and imports no SQLAlchemy, so the worker processes start with
only this module and the imaging layer loaded (the fork server preloads it). Never logs file
contents. Research use only."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import BinaryIO

from core_model.imaging.dicom import QUICK_READ, _converted, check_header, quick_scan, scan_header
from core_model.imaging.errors import ImageReadError
from core_model.imaging.sniff import kind_of_bytes


def _uid_from(text: str) -> str:
    """A DICOM UID under the 2.25 root (ISO/IEC 9834-8 UUID form) derived from ``text``."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big"))


_TAG_OF: dict[str, int] = {}


def _get(ds, keyword: str):
    """``ds.get(keyword)`` for a top-level element, converted from its raw form by the imaging
    layer's one conversion, without pydicom's attribute and keyword look-up machinery (the
    importer's profile: ds.get was a third of the time per header). ``ds`` may also be the
    keyword -> value mapping of a :class:`~core_model.imaging.dicom.QuickScan`."""
    if isinstance(ds, dict):
        return ds.get(keyword)
    tag = _TAG_OF.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = _TAG_OF[keyword] = int(tag_for_keyword(keyword))  # type: ignore[arg-type]
    if ds.get_item(tag, keep_deferred=True) is None:
        return None
    return _converted(ds, tag).value


def _s(ds, keyword: str) -> str:
    value = ds.get(keyword) if type(ds) is dict else _get(ds, keyword)
    if value is None:
        return ""
    if type(value) is str:  # the walk's values, most of pydicom's
        return value.strip()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(value: str) -> str:
    value = (value or "").strip()
    return value if len(value) == 8 and value.isdigit() else ""


def _name_search(name: str) -> str:
    return " ".join(name.replace("^", " ").replace("=", " ").lower().split())


def patient_key(patient_id: str, issuer: str, name: str, birth_date: str) -> str:
    if patient_id:
        return "id:" + hashlib.sha1(f"{issuer}\0{patient_id}".encode()).hexdigest()
    if name:
        return "name:" + hashlib.sha1(f"{name}\0{birth_date}".encode()).hexdigest()
    return "unknown"


def _spacing(ds) -> tuple[float | None, float | None, str | None]:
    # PS3.3 10.7.1.3: PixelSpacing is calibrated (patient plane) where present; DX detectors give
    # ImagerPixelSpacing (detector plane) always. Keep which one it is.
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _get(ds, keyword)
        try:
            if value is not None and len(value) == 2:
                row, col = float(value[0]), float(value[1])
                if row > 0 and col > 0:
                    return row, col, keyword
        except (TypeError, ValueError):
            continue
    return None, None, None


def _dicom_fields(ds, sop: str, scan) -> dict:
    pid, issuer, name = _s(ds, "PatientID"), _s(ds, "IssuerOfPatientID"), _s(ds, "PatientName")
    birth = _date(_s(ds, "PatientBirthDate"))
    study_uid = _s(ds, "StudyInstanceUID") or _uid_from("study:" + sop)
    series_uid = _s(ds, "SeriesInstanceUID") or _uid_from("series:" + sop)
    study_date = next(
        (d for d in (_date(_s(ds, k)) for k in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")) if d),
        "",
    )
    row, col, kind = _spacing(ds)
    modality = _s(ds, "Modality")
    ts = scan.transfer_syntax
    return {
        "patient": dict(
            patient_key=patient_key(pid, issuer, name, birth),
            patient_id=pid,
            issuer=issuer,
            name=name,
            name_search=_name_search(name),
            birth_date=birth,
            sex=_s(ds, "PatientSex"),
        ),
        "study": dict(
            study_uid=study_uid,
            study_date=study_date,
            study_time=_s(ds, "StudyTime"),
            description=_s(ds, "StudyDescription"),
            accession_number=_s(ds, "AccessionNumber"),
        ),
        "series": dict(
            series_uid=series_uid,
            modality=modality,
            series_number=_int_or_none(_get(ds, "SeriesNumber")),
            description=_s(ds, "SeriesDescription"),
            body_part=_s(ds, "BodyPartExamined"),
        ),
        "instance": dict(
            sop_instance_uid=sop,
            sop_class_uid=_s(ds, "SOPClassUID"),
            study_date=study_date,
            instance_number=_int_or_none(_get(ds, "InstanceNumber")),
            source_format="dicom",
            modality=modality,
            view_position=_s(ds, "ViewPosition").upper(),
            photometric=_s(ds, "PhotometricInterpretation").upper(),
            rows=_int_or_none(_get(ds, "Rows")) or 0,
            columns=_int_or_none(_get(ds, "Columns")) or 0,
            frames=_int_or_none(_get(ds, "NumberOfFrames")) or 1,
            pixel_spacing_row=row,
            pixel_spacing_col=col,
            pixel_spacing_kind=kind,
            transfer_syntax_uid=str(ts or ""),
            file_size=scan.file_size,
            bits_allocated=_int_or_none(_get(ds, "BitsAllocated")) or 0,
            bits_stored=_int_or_none(_get(ds, "BitsStored")) or _int_or_none(_get(ds, "BitsAllocated")) or 0,
            pixel_representation=_int_or_none(_get(ds, "PixelRepresentation")) or 0,
            burned_in_annotation=_s(ds, "BurnedInAnnotation").upper(),
        ),
    }


# every element _dicom_fields reads (the fast header walk converts these and no others)
FIELD_KEYWORDS = (
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "Modality",
    "InstanceNumber",
    "ViewPosition",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelRepresentation",
    "BurnedInAnnotation",
)


def _read_dicom_header(
    path: Path,
    fields_fn=None,
    dedupe: set[str] | frozenset[str] = frozenset(),
    head: bytes = b"",
    quick: bool = True,
    fp: BinaryIO | None = None,
) -> tuple:
    """One DICOM file's header, read and checked (every hardening check of the imaging layer),
    and its library fields. Touches no library, so worker processes run it. Returns
    ``("ok", sop, fields)`` (fields None for a UID in ``dedupe``), ``("refused", reason, message)``,
    ``("missing_uid",)`` or ``("unreadable", why)``. The fast header walk reads the file where
    it can (:func:`~core_model.imaging.dicom.quick_scan`: the same values and checks, a third of
    the time); anything it leaves is read by pydicom (``scan_header``). ``head``: the file's
    first bytes where the caller has read them (``fp``: the file, still open); ``quick=False``:
    pydicom only (the reference the fast walk is tested against)."""
    try:
        scan = (quick_scan(path, FIELD_KEYWORDS, head, fp) if quick else None) or scan_header(path)
        check_header(scan)
    except ImageReadError as exc:
        return ("refused", exc.reason, str(exc))
    except OSError as exc:
        return ("unreadable", exc.strerror or type(exc).__name__)
    ds = scan.dataset
    with warnings.catch_warnings():  # pydicom's value warnings may quote patient data
        warnings.simplefilter("ignore")
        sop = _s(ds, "SOPInstanceUID") or _s(ds if isinstance(ds, dict) else ds.file_meta, "MediaStorageSOPInstanceUID")
        if not sop:
            return ("missing_uid",)
        if sop in dedupe:
            return ("ok", sop, None)
        return ("ok", sop, (fields_fn or _dicom_fields)(ds, sop, scan))


def _header_job(path_str: str) -> tuple:
    """A worker process's part for one plain file: the sniffer, then the DICOM header. Never
    raises (a bug comes back as ``("internal", exception type name)``); never logs file contents."""
    path = Path(path_str)
    try:
        f = open(path, "rb")
    except OSError as exc:
        return ("unreadable", exc.strerror or type(exc).__name__)
    try:
        with f:  # one open for the sniffer and the header
            try:
                head = f.read(QUICK_READ)  # the sniffer's 132 bytes, and most headers whole
            except OSError as exc:
                return ("unreadable", exc.strerror or type(exc).__name__)
            kind = kind_of_bytes(head[:132])
            return _read_dicom_header(path, head=head, fp=f) if kind == "dicom" else ("kind", kind)
    except Exception as exc:
        return ("internal", type(exc).__name__)
