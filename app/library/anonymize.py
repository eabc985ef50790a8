"""Export instances with identifying information removed, for sharing with collaborators.

Guided by the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile with the
*Retain Longitudinal Temporal Information with Modified Dates* and *Retain Patient
Characteristics* options (sex, age, size and weight are kept; ages over 89 become 090Y):

* Patient Name and Patient ID -> the same pseudonym ``ANON-<12 hex>``; birth date/time, other
  IDs and names, addresses, phone numbers and the other patient attributes of Table E.1-1 are
  removed.
* Every date (DA, and the date part of DT) anywhere in the dataset is shifted by a per-patient
  number of days (between 1 and 10 years back), so intervals within a patient are preserved.
* Every UID that is not a registered DICOM UID (classes, transfer syntaxes, ...) is remapped to
  ``2.25.<128-bit HMAC>``; the same original UID always gives the same new one.
* All person names (PN), free text (LT/ST/UT), institution, device and physician attributes,
  study/series descriptions, accession number, study ID, private tags, overlays, curves and icon
  images are removed or emptied; then any remaining text element that still contains the
  patient's original name, ID or birth date is emptied (safety net).
* Burned-in Annotation (0028,0301) = YES: the instance is *not* exported unless
  ``include_burned_in`` is set (pixels may show names); when the attribute is absent the
  instance is exported and counted as "burned-in annotation not declared".
* Patient Identity Removed = YES, De-identification Method and its code sequence (113100,
  113107, 113108) and Longitudinal Temporal Information Modified = MODIFIED are set.

Pseudonyms, date shifts and UIDs come from an HMAC keyed with a secret stored in the library
database (never exported), so exports from one library are consistent with each other.
PNG/JPEG instances are re-encoded as PNG without any metadata. Files are written atomically.
Reports are not exported (free text may name the patient).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import warnings
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Iterable

from sqlalchemy import select

from app.library.db import Library
from app.library.models import Instance, Patient, Setting
from app.library.queries import resolve_uids
from core_model.errors import UserError
from core_model.imaging.dicom_write import save_atomic
from core_model.imaging.errors import ImageReadError

log = logging.getLogger(__name__)

# De-identification Method is LO (64 characters per value, several values allowed)
METHOD = ("CXR Adaptor export-anonymized", "PS3.15 Basic Application Confidentiality Profile",
          "Retain Longitudinal Temporal Info, Modified Dates",
          "Retain Patient Characteristics", "UIDs remapped, private tags removed")
CODES = (("113100", "Basic Application Confidentiality Profile"),
         ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
         ("113108", "Retain Patient Characteristics Option"))

# Attributes removed outright (PS3.15 Table E.1-1 entries with action X, and X/Z, X/D where
# removal is allowed), beyond the VR-wide rules (PN, LT/ST/UT, private tags, overlays).
REMOVE = (
    "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation",
    "PatientMotherBirthName", "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "EthnicGroup",
    "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientReligiousPreference",
    "CountryOfResidence", "RegionOfResidence", "PatientInsurancePlanCodeSequence", "MedicalAlerts", "Allergies",
    "PregnancyStatus", "SmokingStatus", "LastMenstrualDate", "SpecialNeeds", "PatientState",
    "ResponsiblePerson", "ResponsibleOrganization", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientSpeciesDescription", "ReferencedPatientSequence", "ReferencedPatientPhotoSequence",
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName",
    "InstitutionalDepartmentTypeCodeSequence", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "OperatorIdentificationSequence", "StationName", "DeviceSerialNumber", "DetectorID", "PlateID",
    "CassetteID", "GantryID", "DeviceUID", "StudyDescription", "SeriesDescription", "ProtocolName",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID", "RequestedProcedureDescription",
    "RequestedProcedureID", "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
    "RequestAttributesSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "AdmissionID",
    "IssuerOfAdmissionIDSequence", "ServiceEpisodeID", "ServiceEpisodeDescription", "VisitComments",
    "CurrentPatientLocation", "PatientInstitutionResidence", "ImageComments", "DerivationDescription",
    "AcquisitionComments", "StudyComments", "InterpretationText", "ResultsComments",
    "AcquisitionDeviceProcessingDescription", "IconImageSequence", "GraphicAnnotationSequence",
    "DataSetTrailingPadding", "OriginalAttributesSequence", "ModifiedAttributesSequence",
    "DigitalSignaturesSequence", "MACParametersSequence", "EncryptedAttributesSequence",
    "ContributingEquipmentSequence",
    "TimezoneOffsetFromUTC", "PersonName", "ContentCreatorName", "VerifyingObserverSequence",
    "ConsultingPhysicianName", "ReferringPhysicianName", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician",
    "ScheduledPerformingPhysicianName", "TextString", "TopicTitle", "TopicSubject", "TopicAuthor",
    "TopicKeywords",
)  # Patient's Sex, Age, Size and Weight are kept (Retain Patient Characteristics Option)
EMPTY = ("AccessionNumber", "StudyID")  # type 2 in most IODs: present but empty (action Z)
UID_KEEP_TAGS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
                 "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID"}


@dataclass
class ExportSummary:
    out_dir: str
    exported: int = 0
    skipped_burned_in: int = 0
    burned_in_not_declared: int = 0
    failed: list[dict] = field(default_factory=list)
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
        """Anonymise ``ds`` in place; returns how many text elements the safety net emptied."""
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence
        from pydicom.uid import UID_dictionary

        original = [v for v in (str(ds.get("PatientName", "") or ""), str(ds.get("PatientID", "") or ""),
                                str(ds.get("PatientBirthDate", "") or ""), str(ds.get("OtherPatientIDs", "") or ""))
                    if v]
        name_parts = [p for p in str(ds.get("PatientName", "") or "").replace("=", "^").split("^") if len(p) >= 3]
        needles = {v.lower() for v in original + name_parts if len(v) >= 3}
        shift = self.day_shift(patient_key)
        pseudonym = self.pseudonym(patient_key)

        ds.remove_private_tags()
        for keyword in REMOVE:
            if keyword and keyword in ds:
                delattr(ds, keyword)
        for tag in [t for t in ds.keys() if (t.group & 0xFF00) in (0x6000, 0x5000)]:
            del ds[tag]  # overlays (60xx) and curves (50xx) may carry drawn annotations
        for keyword in EMPTY:
            if keyword in ds:
                setattr(ds, keyword, "")
        age = str(ds.get("PatientAge", "") or "")
        if age.endswith("Y") and age[:-1].isdigit() and int(age[:-1]) > 89:
            ds.PatientAge = "090Y"

        scrubbed = 0

        def visit(dataset: Dataset) -> None:
            nonlocal scrubbed
            dataset.remove_private_tags()
            for elem in list(dataset):
                vr, kw = elem.VR, elem.keyword
                if vr == "SQ":
                    for item in elem.value or []:
                        visit(item)
                    continue
                if kw in ("PatientName", "PatientID"):
                    continue
                if vr == "PN":
                    elem.value = ""
                elif vr in ("LT", "ST", "UT"):
                    del dataset[elem.tag]
                elif vr == "UI" and kw not in UID_KEEP_TAGS and elem.value:
                    values = elem.value if isinstance(elem.value, (list, tuple)) or type(elem.value).__name__ == "MultiValue" else [elem.value]
                    new = [v if str(v) in UID_dictionary else self.uid(str(v)) for v in values]
                    elem.value = new if len(new) > 1 else new[0]
                elif vr == "DA" and elem.value:
                    elem.value = _shift_da(elem.value, shift)
                elif vr == "DT" and elem.value:
                    elem.value = _shift_dt(elem.value, shift)
                elif vr in ("LO", "SH", "CS", "AE", "UC", "DS", "IS", "AS", "TM") and elem.value and needles:
                    text = str(elem.value).lower()
                    if any(n in text for n in needles):
                        elem.value = ""
                        scrubbed += 1

        visit(ds)
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
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            if "ImplementationVersionName" in meta:
                del meta.ImplementationVersionName
            for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                       "PrivateInformationCreatorUID", "PrivateInformation"):
                if kw in meta:
                    delattr(meta, kw)
        return scrubbed


def _shift_one_da(value: str, days: int) -> str:
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return ""  # unparseable dates are removed rather than kept
    try:
        d = date(int(value[:4]), int(value[4:6]), int(value[6:8])) - timedelta(days=days)
    except ValueError:
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


def export_anonymized(library: Library, uids: Iterable[str] | None, out_dir: str | os.PathLike, *,
                      include_burned_in: bool = False) -> ExportSummary:
    """Export the given SOP Instance / Series / Study UIDs (``None``: every instance)."""
    import pydicom

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
        src = library.resolve(inst.file_path, inst.storage)
        key = keys[inst.patient_pk]
        pseudonym = anon.pseudonym(key)
        new_uid = anon.uid(inst.sop_instance_uid)
        try:
            if inst.source_format in ("png", "jpeg"):
                from core_model.imaging.preprocess import load_display
                from PIL import Image

                pixels = load_display(src)
                dst = out / pseudonym / f"{new_uid}.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                tmp = dst.with_name(dst.name + ".part")
                Image.fromarray(pixels).save(tmp, format="PNG")  # no metadata chunks
                os.replace(tmp, dst)
                exported.append(dict(file=str(dst.relative_to(out)), sop_instance_uid=new_uid, patient=pseudonym))
                summary.exported += 1
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(src)
            burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
            if burned == "YES" and not include_burned_in:
                summary.skipped_burned_in += 1
                continue
            if burned not in ("YES", "NO"):
                summary.burned_in_not_declared += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                summary.identifiers_scrubbed += anon.anonymize(ds, key)
            study = str(ds.get("StudyInstanceUID", "") or "unknown-study")
            dst = out / pseudonym / study / f"{ds.SOPInstanceUID}.dcm"
            save_atomic(ds, dst)
            exported.append(dict(file=str(dst.relative_to(out)), sop_instance_uid=str(ds.SOPInstanceUID),
                                 patient=pseudonym, burned_in_annotation=burned or "not declared"))
            summary.exported += 1
        except (OSError, ImageReadError, ValueError, TypeError, AttributeError) as exc:
            # only our own messages and OS errors are shown: others may quote element values
            detail = (str(exc) if isinstance(exc, ImageReadError)
                      else f"{src.name}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror
                      else f"{src.name}: {type(exc).__name__}")
            summary.failed.append(dict(instance=new_uid, reason=type(exc).__name__, message=detail))
            log.warning("anonymised export of instance %s failed: %s", inst.sop_instance_uid, type(exc).__name__)
    manifest = dict(notice="Research use only; not for diagnosis. De-identified export; verify before sharing.",
                    method="; ".join(METHOD), summary=summary.to_dict(), files=exported)
    manifest["summary"].pop("unknown_uids", None)
    tmp = out / "export-manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "export-manifest.json")
    log.info("anonymised export: %d exported, %d skipped (burned-in), %d failed",
             summary.exported, summary.skipped_burned_in, len(summary.failed))
    return summary
