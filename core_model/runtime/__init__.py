"""Torch-free inference over an exported model bundle (numpy + onnxruntime + tokenizers).

    >>> from core_model.runtime import load_bundle
    >>> bundle = load_bundle("bundle/")            # verifies format and every SHA-256
    >>> a = bundle.analyze("study.dcm")            # probabilities, mask, embedding
    >>> h = bundle.heatmap(a, "right lower lobe consolidation")
    >>> bundle.similar_reports(a, k=5)

Research use only: not a medical device, not for diagnosis.
"""

from core_model.runtime.bundle import Analysis, Bundle, load_bundle
from core_model.runtime.retrieval import ReportBank, ReportHit
from core_model.runtime.verify import BundleError, BundleFormatError, BundleIntegrityError, UnsafeArchiveError

__all__ = [
    "Analysis",
    "Bundle",
    "BundleError",
    "BundleFormatError",
    "BundleIntegrityError",
    "ReportBank",
    "ReportHit",
    "UnsafeArchiveError",
    "load_bundle",
]
