"""The segmentation mask as a DICOM Segmentation (highdicom ``Segmentation``).

BINARY (default): the mask at the bundle's threshold, exactly the pixels the runtime's
``mask_area_fraction`` counts. FRACTIONAL (``fractional=True``): the mask probabilities
(PROBABILITY, 8-bit, max value 255), which a viewer can threshold itself. One frame on the source
image's pixel grid, always written (an empty mask is a result too). The SEG is in the source's
study, a new series, references the source image (Source Image Sequence / Referenced Series),
keeps its Frame of Reference when it has one (plain CR / DX usually has none: highdicom then
writes the SEG without one, which the IOD allows for projection radiographs), and names the
algorithm (bundle id, version, model name, content hash) in the segment's Algorithm
Identification and description. The series description says research use only (and "SYNTHETIC
DEMO MODEL" for a demo bundle)."""

from __future__ import annotations

import numpy as np

from core_model.dicom_results.common import (
    MANUFACTURER,
    PRIVATE_SCHEME,
    SEG_SERIES_NUMBER,
    SOFTWARE,
    ResultFacts,
    ResultsError,
    Source,
    check_grid,
    declare_private_scheme,
    derived_uid,
    finish_image,
    for_highdicom,
    short,
)


def series_description(facts: ResultFacts, what: str) -> str:
    """``RESEARCH USE ONLY[, SYNTHETIC DEMO]: <what> <bundle id> <version>`` cut to 64 characters
    (the notices first, so a long bundle id is what gets cut)."""
    tag = ", SYNTHETIC DEMO" if facts.model.synthetic else ""
    return short(f"RESEARCH USE ONLY{tag}: {what} {facts.model.label}")


def algorithm_identification(facts: ResultFacts):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=short(facts.model.name),
        family=codes.cid7162.ArtificialIntelligence,
        version=short(f"{facts.model.bundle_id} {facts.model.version}"),
        source=MANUFACTURER,
        parameters={"content_hash": facts.model.content_hash[:64] or "unknown"},
    )


def _property_type(label: str):
    from highdicom.sr.coding import CodedConcept
    from pydicom.sr.codedict import codes

    if label.lower() == "pneumothorax":
        return codes.SCT.Pneumothorax
    return CodedConcept(value=short(label.upper(), 16), scheme_designator=PRIVATE_SCHEME, meaning=short(label))


def make_seg(source: Source, facts: ResultFacts, *, fractional: bool = False):
    """The SEG (a highdicom ``Segmentation``, a pydicom Dataset) of ``facts``'s mask on the
    DICOM ``source``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from core_model import __version__

    if source.dataset is None:
        raise ResultsError("a DICOM SEG needs a DICOM source image")
    if facts.mask is None:
        raise ResultsError("this bundle has no segmentation head: there is no mask to write")
    check_grid(facts, source)
    ds = source.dataset
    label = facts.mask_label or "mask"
    kind = "FRACTIONAL" if fractional else "BINARY"
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=short(f"{label} ({facts.model.label})"),
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=_property_type(label),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(facts),
    )
    if fractional:
        pixels = facts.mask.astype(np.float32)
    else:
        binary = facts.binary_mask()
        assert binary is not None
        pixels = binary.astype(np.uint8)
    study, sop = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[for_highdicom(ds)],
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=[description],
        series_instance_uid=derived_uid(study, facts.model.content_hash, "seg-series", kind),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=derived_uid(sop, facts.model.content_hash, "seg", kind),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=short(facts.model.name),
        software_versions=short(f"{SOFTWARE} {__version__}; bundle {facts.model.label}"),
        device_serial_number=facts.model.content_hash[:16] or "0",
        fractional_type="PROBABILITY" if fractional else None,
        max_fractional_value=255,
        content_description=short(
            f"{label} mask at threshold {facts.mask_threshold:.3g}"
            if not fractional
            else f"{label} probabilities (threshold {facts.mask_threshold:.3g})"
        ),
        content_label="AI_MASK",
        omit_empty_frames=False,
    )
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures and "SliceThickness" not in measures[0]:
        # highdicom copies PixelSpacing without a Slice Thickness, which a projection radiograph
        # does not have; dciodvfy then wants one and highdicom cannot read its own SEG back. The
        # SEG is on the source's own pixel grid (Derivation Image Sequence), so we leave it out.
        del shared.PixelMeasuresSequence
    seg.SeriesDescription = series_description(facts, f"AI SEG {label}")
    if label.lower() != "pneumothorax":
        declare_private_scheme(seg)
    return finish_image(seg, ds)
