"""Whether the model can vouch for an image: the domain guard (torch-free).

CONTRACT (shared by the runtime, the exporter and the app; keep these names):

- ``DomainState``: frozen dataclass returned with every analysis as ``Analysis.domain``.
  ``status`` is one of ``IN_DOMAIN``, ``OUT_OF_DOMAIN``, ``UNKNOWN`` (the bundle records no
  training domain, so nothing can be said). ``score`` / ``threshold``: the embedding distance
  score and the operating threshold it is compared with (higher score = further from the
  training images), None when not computed. ``reasons``: one human-readable sentence per reason
  (empty when in domain); ``codes``: the matching machine codes (see ``REASON_*``).
- ``DomainState.ok`` is True only for ``IN_DOMAIN``; the app shows any other state as a result the
  model cannot vouch for.

The implementation (domain model fitted at export, scoring at analysis) lives in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IN_DOMAIN = "in_domain"
OUT_OF_DOMAIN = "out_of_domain"
UNKNOWN = "unknown"

REASON_EMBEDDING = "embedding"  # pooled embedding far from the training images
REASON_VIEW = "view"  # view not among the training views (lateral, or unknown for a frontal-only model)
REASON_MODALITY = "modality"  # DICOM modality not CR/DX (or not among the training modalities)
REASON_NO_DOMAIN = "no_domain_model"  # the bundle records no training domain


@dataclass(frozen=True)
class DomainState:
    status: str
    score: float | None = None
    threshold: float | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    codes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status == IN_DOMAIN

    def summary(self) -> str:
        """One line for panels, CSVs and legends."""
        if self.status == IN_DOMAIN:
            return "in the model's training domain"
        if self.status == UNKNOWN:
            return "domain unknown: " + ("; ".join(self.reasons) or "the bundle records no training domain")
        return "out of the model's training domain: " + "; ".join(self.reasons)

    def to_dict(self) -> dict:
        return {"status": self.status, "score": self.score, "threshold": self.threshold,
                "reasons": list(self.reasons), "codes": list(self.codes)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "DomainState":
        if not isinstance(d, dict) or d.get("status") not in (IN_DOMAIN, OUT_OF_DOMAIN, UNKNOWN):
            return unknown("no domain state was recorded for this result")
        score = d.get("score")
        thr = d.get("threshold")
        return cls(status=d["status"], score=None if score is None else float(score),
                   threshold=None if thr is None else float(thr),
                   reasons=tuple(str(r) for r in d.get("reasons") or ()),
                   codes=tuple(str(c) for c in d.get("codes") or ()))


def unknown(reason: str = "the bundle records no training domain") -> DomainState:
    return DomainState(status=UNKNOWN, reasons=(reason,), codes=(REASON_NO_DOMAIN,))
