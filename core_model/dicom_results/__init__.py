"""The model's results as standard DICOM objects and as plain files (Qt-free, torch-free).

Research use only: every object says so (series descriptions, the SR's content, the JSON), and
a demo bundle trained on synthetic phantoms (``Bundle.synthetic``) is marked as such in each.

API (``source``: a pydicom Dataset *with its pixel data* or a DICOM / PNG / JPEG path;
``analysis``: the runtime's :class:`core_model.runtime.Analysis` or the app's stored
``AnalysisResult``, which has the same fields; ``bundle``: the :class:`core_model.runtime.Bundle`
that made it, for its identity, thresholds and mask label)::

    from core_model.dicom_results import build_seg, build_sr, write_dicom_results, write_results

    seg = build_seg(source, analysis, bundle, fractional=False)   # pydicom Dataset (highdicom SEG)
    sr = build_sr(source, analysis, bundle, seg=seg)               # pydicom Dataset (TID 1500 SR)
    sc = build_heatmap_sc(source, analysis, bundle, heatmap, phrase)  # Secondary Capture
    paths = write_dicom_results(source, analysis, bundle, out_dir, *, fractional=False,
                                heatmap=None, heatmap_phrase=None) -> list[Path]
    written = write_results(source, analysis, bundle, dicom_dir=D, plain_dir=P, ...)
                                                                  # -> WrittenResults

- :mod:`.seg`: the mask at the bundle's threshold as DICOM SEG (BINARY, or FRACTIONAL
  probabilities), same study / Frame of Reference as the source, a new series, the algorithm
  identification in the segment description;
- :mod:`.sr`: the TID 1500 Measurement Report in a Comprehensive 3D SR: per class probability,
  threshold and present / absent, the mask's area, the domain state, the model's identity and
  the research-use text, referencing the source image and the SEG;
- :mod:`.heatmap`: a phrase heatmap as a Secondary Capture with the overlay burned in (why not a
  Parametric Map: in that module's docstring);
- :mod:`.plain`: mask PNG and NIfTI on the original pixel grid and one ``results.json``.

SOP Instance and Series UIDs are derived from the source's UIDs and the bundle's content hash, so
writing (or sending) the same results again replaces rather than duplicates them. File and
folder names are ours (``img-<hex key>/seg.dcm``, ``sr.dcm``, ``heatmap.dcm``, ``mask.png``,
``mask.nii.gz``, ``results.json``), never built from DICOM values. DICOM SEG / SR need a DICOM
source: for a PNG / JPEG image :func:`write_results` writes the plain files with a note saying so,
and the DICOM builders raise :class:`NotDicomSourceError` (a ``UserError``). Written objects are
checked in tests/dicom_results with highdicom, pydicom and ``dciodvfy`` (dicom3tools) when
installed; loading them in 3D Slicer or OHIF was out of reach here and is not tested.
"""

from core_model.dicom_results.common import (
    NEEDS_DICOM,
    RESEARCH_USE,
    SYNTHETIC_MODEL,
    NotDicomSourceError,
    ResultFacts,
    ResultsError,
    Source,
    load_source,
)
from core_model.dicom_results.writer import (
    WrittenResults,
    build_heatmap_sc,
    build_seg,
    build_sr,
    folder_name,
    write_dicom_results,
    write_results,
)

__all__ = [
    "NEEDS_DICOM",
    "RESEARCH_USE",
    "SYNTHETIC_MODEL",
    "NotDicomSourceError",
    "ResultFacts",
    "ResultsError",
    "Source",
    "WrittenResults",
    "build_heatmap_sc",
    "build_seg",
    "build_sr",
    "folder_name",
    "load_source",
    "write_dicom_results",
    "write_results",
]
