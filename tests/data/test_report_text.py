"""Report text handling: sections, the paper's text, de-identification placeholders."""

import pytest

from core_model.data.reports import clean_text, parse_sections, report_text

MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever

 COMPARISON:  ___

 FINDINGS:

 The lungs are clear.  No pleural
 effusion or pneumothorax.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_mimic_style_report_gives_impression_then_findings_without_admin_sections():
    secs = parse_sections(MIMIC_STYLE)
    assert secs.findings == "The lungs are clear. No pleural effusion or pneumothorax."
    assert secs.impression == "No acute cardiopulmonary process."
    assert secs.get("indication") == "F with cough and fever"
    text = report_text(MIMIC_STYLE)
    assert text == ("No acute cardiopulmonary process. The lungs are clear. No pleural effusion or pneumothorax.")
    assert "cough" not in text and "FINAL REPORT" not in text


@pytest.mark.parametrize(
    "report",
    [
        "Findings: Lungs clear.\nImpression: Normal.",
        "FINDINGS - Lungs clear.\nIMPRESSION - Normal.",
        "findings\nLungs clear.\nimpression.\nNormal.",
        "FINDINGS :\n  Lungs\n  clear.\n\nCONCLUSION:\nNormal.",
        "Lungs clear is not a header. FINDINGS: Lungs clear. IMPRESSION: Normal.",
    ],
)
def test_header_variants_case_punctuation_multiline(report):
    assert report_text(report) == "Normal. Lungs clear."


def test_only_one_section_or_none_or_empty():
    assert report_text("INDICATION: cough\nIMPRESSION: No pneumothorax.") == "No pneumothorax."
    assert report_text("FINDINGS: Small left effusion.") == "Small left effusion."
    # no header at all: the whole text
    assert report_text("Heart size normal.\n Lungs   clear.") == "Heart size normal. Lungs clear."
    # headers but neither FINDINGS nor IMPRESSION: other free text, never the indication
    assert report_text("INDICATION: chest pain\nPA AND LATERAL VIEWS OF THE CHEST: Clear lungs.") == "Clear lungs."
    assert report_text("INDICATION: chest pain\nCOMPARISON: none") is None
    assert report_text("INDICATION: chest pain", fallback=False) is None
    assert report_text("") is None and report_text(None) is None
    assert report_text("FINDINGS:\n\nIMPRESSION:\n   ") is None
    assert report_text(findings="  ", impression=None) is None


def test_repeated_section_is_joined_and_synonyms_map():
    secs = parse_sections("FINDINGS: A.\nIMPRESSION: B.\nFINDINGS: C.\nSUMMARY: D.")
    assert secs.findings == "A. C."
    assert secs.impression == "B. D."


def test_openi_xxxx_removed_with_common_fixes():
    text = "Normal chest x-XXXX. XXXX-year-old female. There are no XXXX of a pleural effusion. Comparison XXXX, XXXX."
    out = clean_text(text)
    assert "XXXX" not in out
    assert out == "Normal chest x-ray. year-old female. There are no of a pleural effusion. Comparison."
    assert clean_text("Chest x-XXXX. XXXX, XXXX.", deid="token") == "Chest x-ray. [deid], [deid]."
    assert clean_text("Chest XXXX", deid="token", token="_") == "Chest _"
    assert clean_text("no XXXX  here", deid="keep") == "no XXXX here"
    assert clean_text("MIMIC ___ placeholder") == "MIMIC placeholder"
    with pytest.raises(ValueError):
        clean_text("x", deid="bogus")
