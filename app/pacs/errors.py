"""What can go wrong talking to a DICOMweb server, each as a one-line :class:`UserError`."""

from __future__ import annotations

from core_model.errors import UserError


class PacsError(UserError):
    """A DICOMweb request failed; the message says why in one line (never a patient attribute)."""


class PacsUnreachable(PacsError):
    """No connection to the server (refused, unknown host, TLS failure)."""


class PacsAuthError(PacsError):
    """The server refused the credentials (HTTP 401 / 403)."""


class PacsNotFound(PacsError):
    """The server does not have the study (HTTP 404)."""


class PacsTimeout(PacsError):
    """The server stopped answering (connect or read timeout)."""


class PacsInvalidResponse(PacsError):
    """The server answered something that is not what DICOMweb promises (invalid DICOM, bad JSON)."""


# Errors that concern the server as a whole: a retrieve stops at the first one
FATAL = (PacsUnreachable, PacsAuthError)
