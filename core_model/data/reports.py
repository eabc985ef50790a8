"""Radiology report text: section parsing, the paper's text, whitespace and de-identification tokens.

- :func:`parse_sections` splits a free-text report into named sections. Headers are recognised at
  the start of a line in any case, followed by ``:``, `` -``, ``.`` or the end of the line
  (``FINDINGS:``, ``Findings -``, ``IMPRESSION`` alone on a line), and inline when written in
  capitals with a colon (``... clear. IMPRESSION: No acute ...``). Synonyms map to one canonical
  name: CONCLUSION(S) / SUMMARY / OPINION -> ``impression``; FINDING(S) / "FINDINGS AND
  IMPRESSION" -> ``findings``; INDICATION / HISTORY / REASON FOR EXAM(INATION) / CLINICAL
  INFORMATION -> ``indication``; COMPARISON(S) -> ``comparison``; TECHNIQUE / EXAMINATION ->
  ``technique``; other capitalised ``WORDS:`` at the start of a line -> ``other``; text before the
  first header -> ``preamble`` (MIMIC's "FINAL REPORT" banner is dropped). A section header that
  occurs twice gets its texts joined.
- :func:`report_text` gives the text the Adaptor paper trains on: IMPRESSION + " " + FINDINGS.
  With only one of them, that one. With neither, the fallback is the report's other free text
  (preamble and ``other`` sections, never indication, comparison, technique, notification or
  wet read); a report without any header is used whole. Empty -> ``None``.
- :func:`clean_text` collapses whitespace and handles de-identification placeholders: Open-I's
  ``XXXX`` and MIMIC's ``___``. ``deid="remove"`` (default) deletes them (a BERT tokenizer would
  only turn them into meaningless word pieces), with two fixes for the commonest Open-I cases:
  ``x-XXXX`` -> ``x-ray`` and ``XXXX-year-old`` -> ``year-old``; punctuation left dangling
  (``", ."``) is tidied. ``deid="token"`` maps each placeholder to one neutral token (``[deid]``
  by default, or ``token=...``); ``deid="keep"`` leaves them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FINDINGS = "findings"
IMPRESSION = "impression"

_CANONICAL = {
    "findings and impression": FINDINGS,
    "findings/impression": FINDINGS,
    "findings": FINDINGS,
    "finding": FINDINGS,
    "impressions": IMPRESSION,
    "impression": IMPRESSION,
    "conclusions": IMPRESSION,
    "conclusion": IMPRESSION,
    "summary": IMPRESSION,
    "opinion": IMPRESSION,
    "clinical indication": "indication",
    "clinical indications": "indication",
    "indications": "indication",
    "indication": "indication",
    "clinical history": "indication",
    "history": "indication",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical information": "indication",
    "clinical data": "indication",
    "comparisons": "comparison",
    "comparison": "comparison",
    "technique": "technique",
    "examination": "technique",
    "exam": "technique",
    "procedure": "technique",
    "notification": "notification",
    "recommendations": "recommendation",
    "recommendation": "recommendation",
    "wet read": "wet read",
    "addendum": "addendum",
}
_NOT_FALLBACK = {"indication", "comparison", "technique", "notification", "wet read", "recommendation"}

_names = sorted(_CANONICAL, key=len, reverse=True)
_alt = "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in _names)
_alt_upper = "|".join(re.escape(n.upper()).replace(r"\ ", r"\s+") for n in _names)
# A known header at the start of a line: any case; then ':' / ' -' / '.' at the end / end of line.
_LINE_HEADER = re.compile(
    rf"^[ \t]*(?P<name>{_alt})[ \t]*(?::|-(?=\s)|\.(?=[ \t]*$)|(?=[ \t]*$))",
    re.IGNORECASE | re.MULTILINE,
)
# A known header in capitals with a colon anywhere (single-line reports).
_INLINE_HEADER = re.compile(rf"(?<![A-Za-z])(?P<name>{_alt_upper})[ \t]*:")
# Any other capitalised header at the start of a line: "PA AND LATERAL VIEWS OF THE CHEST:"
_OTHER_HEADER = re.compile(r"^[ \t]*(?P<name>[A-Z][A-Z0-9 /&(),'-]{2,60}?)[ \t]*:", re.MULTILINE)
_BANNER = re.compile(r"^\s*FINAL\s+REPORT\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class Sections:
    """Sections of one report (canonical name -> text), in report order."""

    sections: dict[str, str] = field(default_factory=dict)
    had_headers: bool = False

    def get(self, name: str) -> str:
        return self.sections.get(name, "")

    @property
    def findings(self) -> str:
        return self.get(FINDINGS)

    @property
    def impression(self) -> str:
        return self.get(IMPRESSION)


def _canonical(name: str) -> str:
    key = re.sub(r"\s+", " ", name.strip().lower())
    return _CANONICAL.get(key, "other")


def parse_sections(text: str | None, *, deid: str = "remove", token: str = "[deid]") -> Sections:
    """Split a report into sections; each section's text is cleaned with :func:`clean_text`."""
    if not text:
        return Sections()
    text = _BANNER.sub("", str(text).replace("\r\n", "\n").replace("\r", "\n"))
    hits: list[tuple[int, int, str]] = []
    for rx in (_LINE_HEADER, _INLINE_HEADER):
        for m in rx.finditer(text):
            hits.append((m.start("name"), m.end(), _canonical(m.group("name"))))
    for m in _OTHER_HEADER.finditer(text):
        name = m.group("name")
        if _canonical(name) == "other" and not re.fullmatch(r"[\d\s/().,-]+", name):
            hits.append((m.start("name"), m.end(), "other"))
    hits.sort()
    chosen: list[tuple[int, int, str]] = []
    for h in hits:  # drop overlapping matches (the first, longest at a position wins)
        if chosen and h[0] < chosen[-1][1]:
            continue
        chosen.append(h)
    out: dict[str, str] = {}

    def add(name: str, body: str) -> None:
        body = clean_text(body, deid=deid, token=token)
        if not body:
            return
        out[name] = f"{out[name]} {body}" if name in out else body

    if not chosen:
        add("preamble", text)
        return Sections(out, had_headers=False)
    add("preamble", text[: chosen[0][0]])
    for k, (_start, end, name) in enumerate(chosen):
        stop = chosen[k + 1][0] if k + 1 < len(chosen) else len(text)
        add(name, text[end:stop])
    return Sections(out, had_headers=True)


def report_text(
    text: str | None = None,
    *,
    findings: str | None = None,
    impression: str | None = None,
    fallback: bool = True,
    deid: str = "remove",
    token: str = "[deid]",
) -> str | None:
    """The paper's report text: IMPRESSION + " " + FINDINGS (whichever exist), or None when empty.

    Give either a whole report (``text``: sections are parsed) or the two sections directly.
    """
    if text is not None:
        secs = parse_sections(text, deid=deid, token=token)
        findings, impression = secs.findings, secs.impression
        if not (findings or impression):
            if not fallback:
                return None
            rest = [v for k, v in secs.sections.items() if k not in _NOT_FALLBACK]
            joined = " ".join(rest).strip()
            return joined or None
    parts = [clean_text(impression, deid=deid, token=token), clean_text(findings, deid=deid, token=token)]
    joined = " ".join(p for p in parts if p)
    return joined or None


_DEID = re.compile(r"X{4,}|_{3,}")
_XRAY = re.compile(r"\b(x)-X{4,}", re.IGNORECASE)
_YEAR_OLD = re.compile(r"(?:X{4,}|_{3,})[ -]?(year[ -]old)", re.IGNORECASE)


def clean_text(text: str | None, *, deid: str = "remove", token: str = "[deid]") -> str:
    """Collapse whitespace; remove or map de-identification placeholders (see module docs)."""
    if not text:
        return ""
    s = str(text)
    if deid not in ("remove", "token", "keep"):
        raise ValueError(f"deid must be 'remove', 'token' or 'keep' (got {deid!r})")
    if deid != "keep":
        s = _XRAY.sub(lambda m: m.group(1) + "-ray", s)
        if deid == "remove":
            s = _YEAR_OLD.sub(lambda m: m.group(1), s)
            s = _DEID.sub(" ", s)
        else:
            s = _DEID.sub(f" {token} ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r" ([,.;:])(?=\s|$)", r"\1", s)
    if deid == "remove":
        # tidy what removal leaves behind: ", ." / ",," / leading punctuation
        s = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", s)
        s = re.sub(r"[,;:]\s*\.", ".", s)
        s = re.sub(r"\.(?:\s*\.)+", ".", s)
        s = re.sub(r"^[\s,;:.]+", "", s)
        s = re.sub(r"\s+", " ", s).strip()
    return s
