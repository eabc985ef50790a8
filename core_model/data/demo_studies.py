"""Demo studies: a dozen SYNTHETIC phantom DICOMs with their reports, for the app's demo.

Taken from the test split of a phantom set (never seen in training), three per finding, PA and
AP views, and written in every encoding the app must read: uncompressed 8/12-bit, MONOCHROME1,
RLE, JPEG-LS, JPEG 2000, JPEG baseline and JPEG lossless; several windows in one file. Each
``<id>.dcm`` has its report beside it as ``<id>.txt`` (the library attaches it on import).
Not medical data; the DICOMs say so in their descriptions.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from core_model.data.phantoms import FINDINGS, PhantomOptions, dicom_pixels_and_spec, plan_cases, render_case
from core_model.fileio import atomic_write_text

# (phantom DICOM variant for pixels + header, transfer syntax name or None for the variant's own)
ENCODINGS = [
    (0, None),  # 8-bit MONOCHROME2, explicit VR little endian
    (1, None),  # 12-bit RLE
    (2, None),  # 12-bit MONOCHROME1, JPEG-LS
    (3, None),  # 12-bit JPEG 2000, LINEAR_EXACT window
    (0, "jpeg_baseline"),  # 8-bit JPEG baseline (lossy)
    (5, "jpeg_lossless"),  # 12-bit JPEG lossless SV1, two windows
    (4, None),  # 8-bit MONOCHROME1, RLE
    (5, None),  # 12-bit, two windows
]


def _syntax(name: str):
    from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1

    return {"jpeg_baseline": JPEGBaseline8Bit, "jpeg_lossless": JPEGLosslessSV1}[name]


def write_demo_studies(phantom_dir: str | os.PathLike, out_dir: str | os.PathLike, per_finding: int = 3) -> list[dict]:
    """Write the demo studies of the phantom set in ``phantom_dir`` to ``out_dir`` (only the DICOMs,
    their reports and a README, so importing the folder imports exactly the studies); returns an
    index of what was written."""
    from core_model.imaging.dicom_write import write_dicom

    phantom_dir, out = Path(phantom_dir), Path(out_dir)
    info = json.loads((phantom_dir / "phantoms.json").read_text())
    opts = PhantomOptions(**{k: v for k, v in info["options"].items() if k in PhantomOptions.__dataclass_fields__})
    cases = [c for c in plan_cases(opts) if c.split == "test"]
    chosen = []
    for finding in FINDINGS:  # one AP view and the rest PA, per finding
        pa = [c for c in cases if c.finding == finding and c.view == "PA"]
        ap = [c for c in cases if c.finding == finding and c.view == "AP"]
        picked = ap[:1] + pa[: per_finding - len(ap[:1])]
        picked += [c for c in ap + pa if c not in picked][: per_finding - len(picked)]
        chosen += picked
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for k, case in enumerate(chosen):
        variant, syntax = ENCODINGS[k % len(ENCODINGS)]
        case = replace(case, dicom_variant=variant)
        rendered = render_case(case)
        pixels, spec, ts = dicom_pixels_and_spec(case, rendered, int(opts.seed))
        if syntax:
            ts = _syntax(syntax)
        path = out / f"{case.id}.dcm"
        write_dicom(path, pixels, spec, transfer_syntax=ts)
        atomic_write_text(out / f"{case.id}.txt", case.report.strip() + "\n", fsync=False)
        index.append(
            {
                "id": case.id,
                "file": path.name,
                "finding": case.finding,
                "view": case.view,
                "photometric": spec.photometric,
                "bits_stored": spec.bits_stored,
                "transfer_syntax": str(ts.name if hasattr(ts, "name") else ts),
            }
        )
    readme = out / "README.txt"
    readme.write_text(
        "SYNTHETIC DEMO STUDIES - NOT MEDICAL DATA.\n"
        "Computer-generated chest X-ray phantoms (CXR Adaptor) with synthetic reports, written as DICOM in\n"
        "several encodings to demonstrate the app. No patient was involved. Research use only.\n"
    )
    return index
