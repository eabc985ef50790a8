"""Synthetic chest X-ray phantoms with free-text reports. SYNTHETIC DATA, NOT MEDICAL DATA.

Every image, mask, report and DICOM file written here is made up by this program from random
numbers: no patient, no real radiograph and no real report went into it. The pictures only
resemble frontal chest radiographs (lung fields, mediastinum and heart shadow, diaphragm domes,
clavicles, ribs, soft tissue, noise) so that the training and review tools can be exercised and
tested end to end without real data. Never use them to judge anything about real patients.

Each image carries exactly one primary finding, drawn in equal shares:

- ``normal``: no finding;
- ``pneumonia``: a focal consolidation in one lobe or zone that the report names;
- ``covid19``: bilateral, peripheral, lower-zone predominant hazy opacities;
- ``pneumothorax``: a dark region without lung markings at the apex and lateral edge of one
  lung, bounded by a visible pleural line, small to large, with its binary mask.

The output folder holds ``images/*.png`` (8-bit grayscale), ``masks/*.png`` (same size as the
image, 0 / 255: pneumothorax masks and lesion masks of pneumonia and COVID-19 opacities),
optional ``dicom/*.dcm`` copies, ``manifest.csv`` in the generic manifest format (see
:mod:`core_model.data.manifest`), ``phantoms.json`` (parameters and counts) and ``README.txt``.

Manifest columns: ``id, image, report, split, patient_id, study_id, view, finding,
label_normal, label_pneumonia, label_covid19, label_pneumothorax, mask, lesion_mask, dicom,
location, size``. ``mask`` is set for pneumothorax rows only (a blank mask with
``label_pneumothorax = 0`` means "no pneumothorax", i.e. an empty mask). ``lesion_mask`` is set for
every abnormal row (for pneumothorax it is the same file as ``mask``); it is meant for scoring
heatmaps. ``location`` and ``size`` repeat what the report says about the finding.

Splits are by patient (some patients have two studies), seeded, 80 / 10 / 10 by default, with the
validation and test shares rounded up so that n = 2,000 gives at least 200 validation images.
The output is a pure function of ``(n, seed, size, dicom, dicom_fraction, split fractions)``:
the same arguments give byte-identical files, whatever the number of worker processes.

DICOM copies (``dicom="all" | "some" | "none"``; ``some`` writes about ``dicom_fraction`` of the
images, at least one of each encoding) cycle through encodings: 8- and 12-bit stored, MONOCHROME2
and MONOCHROME1 (stored inverted), uncompressed, RLE, JPEG-LS and JPEG 2000 lossless, with a
window centre/width such that the default rendering
(:func:`core_model.imaging.preprocess.load_display`) reproduces the PNG within one grey level.
Patient names and IDs are obviously synthetic (``PHANTOM^...``).

Only numpy, Pillow and pydicom are used (no torch), so the generator runs anywhere.

The package, one job per module:

- :mod:`~core_model.data.phantoms.plan`: options and case planning (findings, patients, splits,
  seeds, locations and sizes), everything but the pixels;
- :mod:`~core_model.data.phantoms.report_text`: the free-text report of a case;
- :mod:`~core_model.data.phantoms.render`: the picture and masks of a case;
- :mod:`~core_model.data.phantoms.dicom`: the DICOM copies;
- :mod:`~core_model.data.phantoms.generate`: writing a set (worker processes), reusing a matching
  one, contact sheets.
"""

from core_model.data.phantoms.dicom import dicom_pixels_and_spec, write_dicom_copy
from core_model.data.phantoms.generate import (
    MANIFEST_COLUMNS,
    SYNTHETIC_NOTICE,
    case_row,
    contact_sheet,
    ensure_phantoms,
    generate_phantoms,
)
from core_model.data.phantoms.plan import (
    DEFAULT_DICOM_FRACTION,
    DEFAULT_SIZE,
    DICOM_MODES,
    FINDINGS,
    GENERATOR_VERSION,
    Case,
    PhantomOptions,
    plan_cases,
)
from core_model.data.phantoms.render import Rendered, render_case
from core_model.data.phantoms.report_text import make_report

__all__ = [
    "DEFAULT_DICOM_FRACTION",
    "DEFAULT_SIZE",
    "DICOM_MODES",
    "FINDINGS",
    "GENERATOR_VERSION",
    "MANIFEST_COLUMNS",
    "SYNTHETIC_NOTICE",
    "Case",
    "PhantomOptions",
    "Rendered",
    "case_row",
    "contact_sheet",
    "dicom_pixels_and_spec",
    "ensure_phantoms",
    "generate_phantoms",
    "make_report",
    "plan_cases",
    "render_case",
    "write_dicom_copy",
]
