"""Errors raised when an image file cannot be turned into pixels, each with a specific reason."""

from __future__ import annotations

from core_model.errors import UserError


class ImageReadError(UserError):
    """An image file could not be read. ``reason`` is a short machine-readable code."""

    reason = "unreadable"

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class NotDicomError(ImageReadError):
    reason = "not_dicom"


class NoPixelDataError(ImageReadError):
    reason = "no_pixel_data"


class TruncatedFileError(ImageReadError):
    reason = "truncated"


class PixelDataMismatchError(ImageReadError):
    reason = "pixel_data_mismatch"


class MissingDecoderError(ImageReadError):
    reason = "missing_decoder"


class UnsupportedImageError(ImageReadError):
    reason = "unsupported"


class DecodeError(ImageReadError):
    """A decoder is installed but rejected the compressed stream (corrupt or unsupported variant)."""

    reason = "decode_failed"


class ImageTooLargeError(ImageReadError):
    """The file declares more pixels (or bytes) than the budgets of
    :mod:`core_model.imaging.limits`; refused before anything was decoded."""

    reason = "too_large"


class SequenceTooDeepError(ImageReadError):
    """The DICOM header nests sequences deeper than ``limits.MAX_SEQUENCE_DEPTH``."""

    reason = "too_deep"


class InvalidValuesError(ImageReadError):
    """Values that would make the displayed image meaningless: a NaN or zero Rescale Slope, a
    non-finite intercept, NaN / infinite pixel values. Refused rather than shown black."""

    reason = "invalid_values"


class BadHeaderError(ImageReadError):
    """A DICOM header element that cannot be parsed (unknown VR, undecodable value)."""

    reason = "bad_header"
