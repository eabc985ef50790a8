"""A phrase heatmap as a DICOM Secondary Capture image with the heatmap burned in.

Why a Secondary Capture and not a Parametric Map: the runtime's heatmap is a *relative* map
(the patch attention min-max stretched to [0, 1] over the image, see ``Bundle.heatmap``), not a
quantity with units, so a Parametric Map's Real World Value Mapping would give the values a
meaning they do not have; and the Parametric Map IOD needs a Frame of Reference and plane
position / orientation, which plain CR / DX radiographs do not carry. What researchers want from
it is the picture: the source image's default display (the project's one display path) with the
heatmap on top, as the app shows it (values below ``threshold`` transparent, the rest blended at
``opacity``), an RGB image every PACS viewer shows. The phrase is in the series description
(cut to 64 characters) and in full in Image Comments and the Derivation Description, with the
research-use text (and "synthetic demo model" for a demo bundle); the series description
shortens "research use only" to "RUO" when the phrase needs the room. The source image is referenced
in the Source Image Sequence."""

from __future__ import annotations

import numpy as np

from core_model.dicom_results.common import (
    MANUFACTURER,
    SC_SERIES_NUMBER,
    ResultFacts,
    ResultsError,
    Source,
    derived_uid,
    finish_image,
    for_highdicom,
    short,
)

DEFAULT_THRESHOLD = 0.3  # as the app's default heatmap display threshold
DEFAULT_OPACITY = 0.5


def default_lut() -> np.ndarray:
    """(256, 3) uint8 "hot" colour table (black, red, yellow, white): no plotting library needed."""
    v = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=1)
    return np.rint(rgb * 255).astype(np.uint8)


def burn_in(
    gray: np.ndarray,
    heat: np.ndarray,
    *,
    lut: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    opacity: float = DEFAULT_OPACITY,
) -> np.ndarray:
    """(H, W, 3) uint8: ``gray`` (H, W) uint8 with ``heat`` (H, W, [0, 1]) blended on top."""
    table = default_lut() if lut is None else np.asarray(lut, dtype=np.uint8)[:, :3]
    if table.shape != (256, 3):
        raise ValueError("the colour table must have 256 entries")
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    colour = table[np.clip(np.rint(h * 255), 0, 255).astype(np.uint8)].astype(np.float32)
    alpha = (np.where(h >= threshold, opacity, 0.0)).astype(np.float32)[..., None]
    base = np.repeat(np.asarray(gray, dtype=np.float32)[..., None], 3, axis=2)
    return np.clip(np.rint(base * (1 - alpha) + colour * alpha), 0, 255).astype(np.uint8)


def heatmap_series_description(phrase: str, synthetic: bool) -> str:
    """``HEATMAP '<phrase>' (RESEARCH USE ONLY[, SYNTHETIC DEMO])`` in 64 characters: the notice
    shortens to "RUO" (research use only) before the phrase is cut."""
    for notice in (
        ("RESEARCH USE ONLY, SYNTHETIC DEMO", "RUO, SYNTHETIC DEMO", "RUO, SYNTHETIC")
        if synthetic
        else (
            "RESEARCH USE ONLY",
            "RUO",
        )
    ):
        text = f"HEATMAP '{phrase}' ({notice})"
        if len(text) <= 64:
            return text
    room = 64 - len(f"HEATMAP '...' ({notice})")
    return f"HEATMAP '{phrase[:room].rstrip()}...' ({notice})"


def src_laterality(ds) -> str:
    """The source's laterality (General Series, type 2C): none for a chest (unpaired)."""
    value = str(ds.get("Laterality") or ds.get("ImageLaterality") or "").upper()
    return value if value in ("R", "L") else ""


def make_heatmap_sc(
    source: Source,
    facts: ResultFacts,
    heatmap: np.ndarray,
    phrase: str,
    *,
    lut: np.ndarray | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    opacity: float = DEFAULT_OPACITY,
):
    """The Secondary Capture (a highdicom ``SCImage``, a pydicom Dataset) of ``heatmap`` for
    ``phrase`` burned into the DICOM ``source``'s default display."""
    import highdicom as hd
    from pydicom.dataset import Dataset

    if source.dataset is None:
        raise ResultsError("a DICOM Secondary Capture needs a DICOM source image")
    heat = np.asarray(heatmap)
    if heat.shape != tuple(source.shape):
        raise ResultsError(
            f"the heatmap is {heat.shape[0]}x{heat.shape[1]} but the image is {source.shape[0]}x{source.shape[1]}"
        )
    phrase = " ".join(str(phrase).split())
    ds = source.dataset
    rgb = burn_in(source.display(), heat, lut=lut, threshold=threshold, opacity=opacity)
    orientation = ds.get("PatientOrientation")
    known = orientation is not None and len(orientation) == 2 and all(str(v) for v in orientation)
    spacing, _ = source.pixel_spacing()
    sop, study = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=for_highdicom(ds),
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=derived_uid(study, facts.model.content_hash, "heatmap-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid(sop, facts.model.content_hash, "heatmap", phrase),
        instance_number=1,
        manufacturer=MANUFACTURER,
        pixel_spacing=spacing,  # type: ignore[arg-type]  # highdicom annotates ints; mm are floats
        patient_orientation=tuple(str(v) for v in orientation) if known else ("L", "F"),  # type: ignore[arg-type]
    )
    notices = " ".join(facts.model.notices())
    sc.SeriesDescription = heatmap_series_description(phrase, facts.model.synthetic)
    sc.ImageComments = short(
        f"Heatmap of '{phrase}' by {facts.model.name} ({facts.model.label}): where the model finds the "
        f"phrase, min-max stretched (relative, not a probability). {notices}",
        10240,
    )
    sc.DerivationDescription = short(
        f"Phrase heatmap '{phrase}' burned in (values >= {threshold:g} at opacity {opacity:g}). {notices}", 1024
    )
    sc.BurnedInAnnotation = "NO"
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    sc.SourceImageSequence = [item]
    if src_laterality(ds):
        sc.Laterality = src_laterality(ds)
    if ds.get("BodyPartExamined"):  # says whether the body part is paired (Laterality, type 2C)
        sc.BodyPartExamined = ds.BodyPartExamined
    return finish_image(sc, ds)  # also empties the placeholder orientation when the source has none
