"""Report text as the reports panel shows it: lines of sentences, headings kept apart, so that
each sentence can be clicked to see where the model finds it in the image."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A heading at the start of a line: "FINDINGS:", "Impression -", "COMPARISON:".
_HEADING = re.compile(r"^\s*([A-Z][A-Za-z /&()-]{2,40}?)\s*(?::|\s-\s)\s*")
# Sentence ends: . ! ? followed by space and a capital / digit / end; not inside "e.g." or
# decimal numbers ("3.5 cm").
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"(\[])")


@dataclass(frozen=True)
class Sentence:
    text: str
    heading: bool = False  # a section heading: shown, not clickable

    @property
    def phrase(self) -> str:
        """What is sent to the model: the sentence without its final full stop."""
        return self.text.rstrip(" .;")


def split_sentences(text: str | None) -> list[Sentence]:
    out: list[Sentence] = []
    for raw in (text or "").splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        m = _HEADING.match(line)
        if m and (m.group(1).isupper() or line[m.end(1) :].lstrip().startswith(":")):
            out.append(Sentence(m.group(1).strip().upper(), heading=True))
            line = line[m.end() :]
        for part in _SPLIT.split(line):
            part = part.strip()
            if len(part.strip(" .;,")) >= 2:
                out.append(Sentence(part))
    return out
