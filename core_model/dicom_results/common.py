"""What every writer of :mod:`core_model.dicom_results` shares: the facts taken from an analysis
and its bundle (:class:`ResultFacts`), the source image (:class:`Source`), deterministic UIDs,
the codes of the SR / SEG, and file keys built from our own values."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core_model.errors import UserError
from core_model.imaging.decoders import ensure_gdcm_importable

ensure_gdcm_importable()  # before pydicom: see core_model.imaging.decoders

from pydicom.dataset import Dataset  # noqa: E402

RESEARCH_USE = "Research use only - not for diagnostic use."
SYNTHETIC_MODEL = "Demo model trained on synthetic phantoms: its results mean nothing for real images."
NEEDS_DICOM = (
    "DICOM SEG and SR need a DICOM source image (this image is a {kind} file); only the mask PNG, "
    "NIfTI and JSON were written"
)
MANUFACTURER = "CXR Adaptor"
SOFTWARE = "cxr-adaptor"
PRIVATE_SCHEME = "99CXRADAPTOR"  # our private coding scheme (PS3.16 8.2: "99" prefix)
SEG_SERIES_NUMBER = 9101
SR_SERIES_NUMBER = 9102
SC_SERIES_NUMBER = 9103


class ResultsError(UserError):
    """Results cannot be written as asked (no DICOM source, an analysis of another image, ...)."""


class NotDicomSourceError(ResultsError):
    """DICOM SEG / SR / Secondary Capture need a DICOM source image."""


def finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class ModelIdentity:
    bundle_id: str
    version: str
    content_hash: str
    name: str
    synthetic: bool

    @classmethod
    def of(cls, bundle) -> ModelIdentity:
        card = getattr(bundle, "card", None)
        name = card.get("name") if isinstance(card, dict) else None
        return cls(
            bundle_id=str(bundle.id),
            version=str(bundle.version or "unversioned"),
            content_hash=str(getattr(bundle, "content_hash", "") or ""),
            name=str(name or bundle.id),
            synthetic=bool(getattr(bundle, "synthetic", False)),
        )

    @property
    def label(self) -> str:
        """Bundle id and version (what segment descriptions and series descriptions show)."""
        return f"{self.bundle_id} {self.version}"

    def notices(self) -> list[str]:
        """The research-use text, and the synthetic-model warning for a demo bundle."""
        return [RESEARCH_USE] + ([SYNTHETIC_MODEL] if self.synthetic else [])

    def to_dict(self) -> dict:
        return dict(
            id=self.bundle_id,
            version=self.version,
            content_hash=self.content_hash,
            name=self.name,
            synthetic=self.synthetic,
        )


@dataclass(frozen=True)
class ResultFacts:
    """One image's results as every writer needs them, from the runtime's ``Analysis`` or the
    app's stored ``AnalysisResult`` (same field names) and the bundle that made them."""

    model: ModelIdentity
    classes: list[str]
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    mask: np.ndarray | None  # float32 (H, W) probabilities on the original grid
    mask_threshold: float | None
    mask_label: str | None
    domain: dict = field(default_factory=dict)  # DomainState.to_dict()

    @classmethod
    def of(cls, analysis, bundle) -> ResultFacts:
        from core_model.runtime.domain import DomainState

        probabilities = {str(k): f for k, v in dict(analysis.probabilities).items() if (f := finite(v)) is not None}
        thresholds = {str(k): f for k, v in dict(bundle.thresholds or {}).items() if (f := finite(v)) is not None}
        for k, v in dict(getattr(analysis, "thresholds", None) or {}).items():
            if (f := finite(v)) is not None:
                thresholds.setdefault(str(k), f)
        classes = [c for c in (list(bundle.classes or []) or list(probabilities)) if c in probabilities]
        mask = getattr(analysis, "mask", None)
        if mask is not None:
            mask = np.clip(np.nan_to_num(_unit(np.asarray(mask))), 0.0, 1.0).astype(np.float32)
            if mask.ndim != 2:
                raise ResultsError(f"the analysis's mask has shape {mask.shape}; a 2-D mask is expected")
        thr = finite(getattr(analysis, "mask_threshold", None))
        if thr is None:
            thr = finite(getattr(bundle, "mask_threshold", None))
        domain = getattr(analysis, "domain", None)
        domain_dict = domain.to_dict() if isinstance(domain, DomainState) else DomainState.from_dict(domain).to_dict()
        return cls(
            model=ModelIdentity.of(bundle),
            classes=classes,
            probabilities=probabilities,
            thresholds=thresholds,
            mask=mask,
            mask_threshold=(thr if thr is not None else 0.5) if mask is not None else None,
            mask_label=(getattr(bundle, "mask_label", None) or getattr(analysis, "mask_label", None) or "mask")
            if mask is not None
            else None,
            domain=domain_dict,
        )

    def binary_mask(self) -> np.ndarray | None:
        """The mask at the bundle's threshold (what the runtime's ``mask_area_fraction`` counts)."""
        if self.mask is None or self.mask_threshold is None:
            return None
        return self.mask >= self.mask_threshold

    def present(self, name: str) -> bool | None:
        t, p = self.thresholds.get(name), self.probabilities.get(name)
        return None if t is None or p is None else p >= t


def _unit(mask: np.ndarray) -> np.ndarray:
    """Mask probabilities as float32 in [0, 1] (an 8-bit mask stored by the app is 0..255)."""
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    return mask.astype(np.float32)


@dataclass
class Source:
    """The image the results belong to: a DICOM dataset (``dataset``) or a PNG / JPEG file."""

    kind: str  # "dicom" | "png" | "jpeg"
    key: str  # hex digest of our choosing: what output file names are built from
    shape: tuple[int, int]
    dataset: Dataset | None = None
    path: Path | None = None

    @property
    def is_dicom(self) -> bool:
        return self.dataset is not None

    def pixel_spacing(self) -> tuple[tuple[float, float] | None, str | None]:
        """(row, column) spacing in mm and the attribute it came from (PixelSpacing first, then
        ImagerPixelSpacing: at the detector, not corrected for magnification), or (None, None)."""
        ds = self.dataset
        if ds is None:
            return None, None
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = ds.get(keyword)
            try:
                row, col = (float(v) for v in value)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                continue
            if row > 0 and col > 0 and math.isfinite(row) and math.isfinite(col):
                return (row, col), keyword
        return None, None

    def display(self) -> np.ndarray:
        """The default 8-bit display of the image (the one display path of the project)."""
        from core_model.imaging.dicom import render_dataset
        from core_model.imaging.preprocess import load_display

        if self.dataset is not None:
            return render_dataset(self.dataset, source="source image")
        assert self.path is not None
        return load_display(self.path)


def load_source(source: Dataset | str | os.PathLike) -> Source:
    """A :class:`Source` from a pydicom Dataset or a DICOM / PNG / JPEG path (read with the
    project's one sniffer and DICOM reader; refusals are UserErrors)."""
    from core_model.imaging.dicom import read_dataset
    from core_model.imaging.preprocess import original_shape
    from core_model.imaging.sniff import image_kind

    if isinstance(source, Dataset):
        return _dicom_source(source)
    path = Path(source)
    kind = image_kind(path)
    if kind == "dicom":
        return _dicom_source(read_dataset(path), path)
    h, w = original_shape(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return Source(kind=kind, key=digest.hexdigest()[:20], shape=(int(h), int(w)), path=path)


def _dicom_source(ds: Dataset, path: Path | None = None) -> Source:
    missing = [k for k in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID") if not ds.get(k)]
    if missing:
        raise ResultsError("the source DICOM has no " + ", ".join(missing) + ": results cannot reference it")
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) > 1:
        raise ResultsError(f"the source DICOM has {int(frames)} frames; only single-frame radiographs are supported")
    try:
        shape = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError) as exc:
        raise ResultsError("the source DICOM has no image size (Rows / Columns)") from exc
    return Source(kind="dicom", key=uid_key(str(ds.SOPInstanceUID)), shape=shape, dataset=ds, path=path)


def uid_key(uid: str) -> str:
    """A file-name-safe key from a (possibly hostile) DICOM value: 20 hex digits of its SHA-256."""
    return hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:20]


def derived_uid(*parts: str) -> str:
    """A UID derived from our own values (source UIDs, the bundle's content hash, what the object
    is): writing the same results again gives the same UIDs, so a PACS replaces rather than
    duplicates them."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "replace")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big') >> 6}"  # PS3.5 B.2 form: 2.25.<122-bit integer>


def check_grid(facts: ResultFacts, source: Source) -> None:
    if facts.mask is not None and tuple(facts.mask.shape) != tuple(source.shape):
        raise ResultsError(
            f"the analysis's mask is {facts.mask.shape[0]}x{facts.mask.shape[1]} but the image is "
            f"{source.shape[0]}x{source.shape[1]}: the analysis belongs to another image"
        )


def short(text: str, limit: int = 64) -> str:
    """``text`` cut to a DICOM LO / CodeMeaning limit."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def finish_image(out: Dataset, src: Dataset, *, image: bool = True) -> Dataset:
    """Attributes highdicom does not copy that the written IODs need: the source's patient
    orientation (empty when unknown: a type 2C value) for image objects, its laterality, and its
    de-identification method when the source says its patient identity was removed (a type 1C
    pair; a source that omits it gets a sentence saying it was not recorded)."""
    restore_patient(out, src)
    if image:
        orientation = src.get("PatientOrientation")
        out.PatientOrientation = orientation if orientation is not None and len(orientation) == 2 else ""
    if str(src.get("PatientIdentityRemoved") or "").upper() == "YES":
        out.PatientIdentityRemoved = "YES"
        method, codes_seq = src.get("DeidentificationMethod"), src.get("DeidentificationMethodCodeSequence")
        if method:
            out.DeidentificationMethod = method
        if codes_seq:
            out.DeidentificationMethodCodeSequence = codes_seq
        if not method and not codes_seq:
            out.DeidentificationMethod = "not recorded in the source image"
    return out


def declare_private_scheme(out: Dataset) -> Dataset:
    """Name our private coding scheme in the Coding Scheme Identification Sequence (SOP Common)."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "CXR Adaptor result codes"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    existing = [
        i
        for i in out.get("CodingSchemeIdentificationSequence") or []
        if i.get("CodingSchemeDesignator") != PRIVATE_SCHEME
    ]
    out.CodingSchemeIdentificationSequence = existing + [item]
    return out


def for_highdicom(ds: Dataset) -> Dataset:
    """A copy of ``ds``'s top level (elements shared, not copied) with an empty Patient Name:
    highdicom checks the name it copies and logs it when it looks odd (and refuses a multi-valued
    one), and patient names never go to logs. :func:`restore_patient` puts the source's own
    element back into the object highdicom built."""
    from pydicom.dataelem import DataElement

    view = Dataset()
    for elem in ds:
        view.add(elem)
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta
    view[0x00100010] = DataElement(0x00100010, "PN", "")
    return view


def restore_patient(out: Dataset, src: Dataset) -> Dataset:
    import copy

    if 0x00100010 in src:
        out[0x00100010] = copy.deepcopy(src[0x00100010])
    elif 0x00100010 in out:
        out[0x00100010] = copy.deepcopy(out[0x00100010])
    return out
