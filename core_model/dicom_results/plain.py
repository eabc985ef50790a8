"""Results as plain files: the mask as PNG and NIfTI on the original pixel grid, and one JSON of
everything.

- ``mask.png``: 8-bit grey, 255 where the mask probability is at or above the bundle's mask
  threshold, 0 elsewhere; the image's own size (rows x columns).
- ``mask.nii.gz``: the same binary mask as NIfTI-1 (uint8 0/1). Voxel ``(i, j, 0)`` is pixel
  ``(row j, column i)`` (NIfTI's first axis runs along a row, as DICOM columns do); the affine
  scales by the pixel spacing in mm when the image records one (PixelSpacing, else
  ImagerPixelSpacing), else by 1. A radiograph has no patient coordinate frame, so the axes are
  the image's, not RAS.
- ``results.json``: probabilities, operating thresholds and present / absent per class, the
  mask's threshold, area (pixels, fraction, mm2 where known), the domain state, the bundle's id,
  version, content hash and name, whether it is a synthetic demo model, the research-use text,
  the DICOM objects written with it (UIDs and file names) and any note (e.g. why no DICOM was
  written). No patient attribute is copied into it.
"""

from __future__ import annotations

import datetime as _dt
import gzip
import io
from pathlib import Path

import numpy as np

from core_model.dicom_results.common import RESEARCH_USE, ResultFacts, Source


def mask_png_bytes(binary: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.where(binary, 255, 0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def mask_nifti_bytes(binary: np.ndarray, spacing: tuple[float, float] | None) -> bytes:
    """Gzipped NIfTI-1 of the binary mask (see the module docstring for the axes)."""
    import nibabel as nib

    row, col = spacing or (1.0, 1.0)
    affine = np.diag([col, row, 1.0, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(binary.T[:, :, None].astype(np.uint8)), affine)
    img.header.set_xyzt_units("mm" if spacing else "unknown")
    img.header["descrip"] = b"AI mask; research use only"
    return gzip.compress(img.to_bytes(), mtime=0)


def results_dict(
    source: Source,
    facts: ResultFacts,
    *,
    files: dict[str, str] | None = None,
    dicom: dict[str, dict] | None = None,
    heatmap_phrase: str | None = None,
    notes: list[str] | None = None,
) -> dict:
    spacing, spacing_from = source.pixel_spacing()
    ds = source.dataset
    src: dict = dict(kind=source.kind, rows=source.shape[0], columns=source.shape[1])
    if ds is not None:
        src.update(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID") or "") or None,
            modality=str(ds.get("Modality") or "") or None,
        )
    else:
        src["sha256_prefix"] = source.key
    src.update(pixel_spacing_mm=list(spacing) if spacing else None, pixel_spacing_from=spacing_from)
    classes = [
        dict(
            name=name,
            probability=facts.probabilities[name],
            threshold=facts.thresholds.get(name),
            present=facts.present(name),
        )
        for name in facts.classes
    ]
    mask = None
    binary = facts.binary_mask()
    if binary is not None:
        pixels = int(binary.sum())
        mask = dict(
            label=facts.mask_label,
            threshold=facts.mask_threshold,
            area_pixels=pixels,
            area_fraction=pixels / binary.size,
            area_mm2=pixels * spacing[0] * spacing[1] if spacing else None,
            present=pixels > 0,
        )
    return dict(
        notice=RESEARCH_USE,
        notices=facts.model.notices(),
        synthetic_model=facts.model.synthetic,
        model=facts.model.to_dict(),
        source=src,
        classes=classes,
        probabilities=dict(facts.probabilities),
        thresholds=dict(facts.thresholds),
        mask=mask,
        domain=dict(facts.domain),
        heatmap=dict(phrase=heatmap_phrase) if heatmap_phrase else None,
        files=files or {},
        dicom=dicom or {},
        notes=notes or [],
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def write_plain(folder: Path, source: Source, facts: ResultFacts) -> dict[str, Path]:
    """Write ``mask.png`` and ``mask.nii.gz`` (when there is a mask) into ``folder``; the JSON is
    written by the caller, which knows what else was written."""
    from core_model.fileio import atomic_write

    out: dict[str, Path] = {}
    binary = facts.binary_mask()
    if binary is not None:
        spacing, _ = source.pixel_spacing()
        out["mask_png"] = folder / "mask.png"
        atomic_write(out["mask_png"], mask_png_bytes(binary), fsync=False)
        out["mask_nifti"] = folder / "mask.nii.gz"
        atomic_write(out["mask_nifti"], mask_nifti_bytes(binary, spacing), fsync=False)
    return out
