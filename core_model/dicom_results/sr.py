"""The model's measurements and classifications as a DICOM Structured Report: a Comprehensive 3D
SR holding a TID 1500 Measurement Report (highdicom ``MeasurementReport``), the template IHE AI
Results uses for AI output.

Content (one TID 1501 / 1410 measurement group each):

- per class: the finding (SNOMED CT where a code exists: pneumonia 233604007, COVID-19
  840539006, normal 17621005; otherwise our private scheme ``99CXRADAPTOR``), the calibrated
  probability (DCM 122157 "Probability", unit UCUM "1"), the bundle's operating threshold
  (DCM 122411 "Threshold Value") and the result as a qualitative evaluation: finding
  Present / Absent (probability >= threshold);
- the mask (when the bundle segments): a planar ROI group referencing the SEG's segment (or the
  source image when no SEG is given), its area in mm2 (from PixelSpacing, else ImagerPixelSpacing;
  absent when the image has neither), its area as a percentage of the image, the mask threshold
  and Present / Absent (any pixel at or above the threshold);
- the model's domain: the state (in / out of the training domain / unknown, private codes), the
  reasons, the domain score and its threshold, the intended use "Research use only - not for
  diagnostic use" and, for a demo bundle, "Demo model trained on synthetic phantoms".

Every group carries the algorithm identification (TID 4019: model name, bundle id and version,
and as parameters the bundle's content hash and the research-use text). The source image and
the SEG are the SR's evidence (Current Requested Procedure Evidence Sequence) and are referenced
from the groups. The SR is written COMPLETE, UNVERIFIED and not final (Preliminary Flag): an AI
result is a proposal, not a signed report."""

from __future__ import annotations

from core_model.dicom_results.common import (
    MANUFACTURER,
    PRIVATE_SCHEME,
    RESEARCH_USE,
    SR_SERIES_NUMBER,
    SYNTHETIC_MODEL,
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
from core_model.dicom_results.seg import series_description

_FINDINGS = {  # SNOMED CT codes of the findings the project names
    "pneumonia": ("233604007", "Pneumonia"),
    "covid19": ("840539006", "COVID-19"),
    "covid-19": ("840539006", "COVID-19"),
    "normal": ("17621005", "Normal"),
    "pneumothorax": ("36118008", "Pneumothorax"),
}
DOMAIN_STATES = {
    "in_domain": ("INDOMAIN", "In the model's training domain"),
    "out_of_domain": ("OUTOFDOMAIN", "Out of the model's training domain"),
    "unknown": ("DOMAINUNKNOWN", "Training domain unknown"),
}


def private(value: str, meaning: str):
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(value=short(value, 16), scheme_designator=PRIVATE_SCHEME, meaning=short(meaning))


def finding_code(name: str):
    from highdicom.sr.coding import CodedConcept

    known = _FINDINGS.get(name.lower())
    if known:
        return CodedConcept(value=known[0], scheme_designator="SCT", meaning=known[1])
    return private(name.upper().replace(" ", "_"), name.replace("_", " "))


C_AREA_FRACTION = ("AREAPCT", "Mask area as a percentage of the image")
C_DOMAIN_STATE = ("DOMAINSTATE", "Training domain state")
C_DOMAIN_REASON = ("DOMAINREASON", "Reason for the training domain state")
C_DOMAIN_SCORE = ("DOMAINSCORE", "Training domain distance score")
C_DOMAIN_THRESHOLD = ("DOMAINTHRESH", "Training domain score threshold")
C_INTENDED_USE = ("INTENDEDUSE", "Intended use")
C_RUO = ("RUO", RESEARCH_USE)
C_SYNTHETIC = ("SYNTHETIC", "Demo model trained on synthetic phantoms")


def make_sr(source: Source, facts: ResultFacts, *, seg=None):
    """The SR (a highdicom ``Comprehensive3DSR``, a pydicom Dataset) of ``facts`` on the DICOM
    ``source``; ``seg``: the SEG written with it (:func:`core_model.dicom_results.seg.make_seg`),
    which the mask group then references."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if source.dataset is None:
        raise ResultsError("a DICOM SR needs a DICOM source image")
    check_grid(facts, source)
    ds = source.dataset
    sop, study, content_hash = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), facts.model.content_hash
    parameters = [f"bundle content hash sha256:{content_hash or 'unknown'}", *facts.model.notices()]
    algorithm = hd.sr.AlgorithmIdentification(
        name=short(facts.model.name),
        version=short(f"{facts.model.bundle_id} {facts.model.version}"),
        parameters=parameters,
        manufacturer=MANUFACTURER,
    )
    source_ref = [hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)]
    absent_present = {True: codes.SCT.Present, False: codes.SCT.Absent}

    def tracking(what: str, label: str):
        return hd.sr.TrackingIdentifier(uid=derived_uid(sop, content_hash, "sr-group", what), identifier=short(label))

    groups: list = []
    for name in facts.classes:
        p, t = facts.probabilities[name], facts.thresholds.get(name)
        measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=p, unit=codes.UCUM.NoUnits)]
        evaluations = []
        if t is not None:
            measurements.append(hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=t, unit=codes.UCUM.NoUnits))
            evaluations.append(hd.sr.QualitativeEvaluation(name=finding_code(name), value=absent_present[p >= t]))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking("class:" + name, f"{name} classification"),
                finding_type=finding_code(name),
                algorithm_id=algorithm,
                measurements=measurements,
                qualitative_evaluations=evaluations,
                source_images=source_ref,
            )
        )
    binary = facts.binary_mask()
    if binary is not None and facts.mask_threshold is not None:
        label = facts.mask_label or "mask"
        pixels = int(binary.sum())
        measurements = []
        spacing, _where = source.pixel_spacing()
        if spacing is not None:
            area = pixels * spacing[0] * spacing[1]
            measurements.append(hd.sr.Measurement(name=codes.SCT.Area, value=area, unit=codes.UCUM.SquareMillimeter))
        measurements += [
            hd.sr.Measurement(
                name=private(*C_AREA_FRACTION), value=100.0 * pixels / binary.size, unit=codes.UCUM.Percent
            ),
            hd.sr.Measurement(
                name=codes.DCM.ThresholdValue, value=float(facts.mask_threshold), unit=codes.UCUM.NoUnits
            ),
        ]
        evaluations = [hd.sr.QualitativeEvaluation(name=finding_code(label), value=absent_present[pixels > 0])]
        common = dict(
            tracking_identifier=tracking("mask", f"{label} segmentation"),
            finding_type=finding_code(label),
            algorithm_id=algorithm,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )
        if seg is not None:
            ref = hd.sr.ReferencedSegmentationFrame(  # one frame, one segment (from_segmentation wants
                sop_class_uid=str(seg.SOPClassUID),  # per-frame segment ids, which a 1-frame SEG shares)
                sop_instance_uid=str(seg.SOPInstanceUID),
                frame_number=1,
                segment_number=1,
                source_image=hd.sr.SourceImageForSegmentation(str(ds.SOPClassUID), str(ds.SOPInstanceUID)),
            )
            for item in ref:  # a SEG is referenced by segment, not also by frame (PS3.3 C.18.3.1)
                if "ReferencedFrameNumber" in item.ReferencedSOPSequence[0]:
                    del item.ReferencedSOPSequence[0].ReferencedFrameNumber
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_segment=ref, **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(source_images=source_ref, **common))
    groups.append(_domain_group(facts, tracking("domain", "model training domain"), algorithm, source_ref))

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid(content_hash, "device"),
            name=short(facts.model.name),
            manufacturer_name=MANUFACTURER,
            model_name=short(facts.model.label),
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.cid100.XRUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    evidence = [for_highdicom(ds)] + ([seg] if seg is not None else [])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=derived_uid(study, content_hash, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=derived_uid(sop, content_hash, "sr", "seg" if seg is not None else "no-seg"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
    sr.SeriesDescription = series_description(facts, "AI SR")
    return declare_private_scheme(finish_image(sr, ds, image=False))


def _domain_group(facts: ResultFacts, tracking_identifier, algorithm, source_ref):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    d = facts.domain
    state = DOMAIN_STATES.get(str(d.get("status")), DOMAIN_STATES["unknown"])
    evaluations = [hd.sr.QualitativeEvaluation(name=private(*C_DOMAIN_STATE), value=private(*state))]
    for code, reason in zip(d.get("codes") or [], d.get("reasons") or []):
        evaluations.append(
            hd.sr.QualitativeEvaluation(name=private(*C_DOMAIN_REASON), value=private(str(code).upper(), str(reason)))
        )
    evaluations.append(hd.sr.QualitativeEvaluation(name=private(*C_INTENDED_USE), value=private(*C_RUO)))
    if facts.model.synthetic:
        evaluations.append(hd.sr.QualitativeEvaluation(name=private(*C_INTENDED_USE), value=private(*C_SYNTHETIC)))
    measurements = []
    for code, key in ((C_DOMAIN_SCORE, "score"), (C_DOMAIN_THRESHOLD, "threshold")):
        value = d.get(key)
        if value is not None:
            measurements.append(hd.sr.Measurement(name=private(*code), value=float(value), unit=codes.UCUM.NoUnits))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier,
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
        source_images=source_ref,
    )


__all__ = ["make_sr", "finding_code", "SYNTHETIC_MODEL"]
