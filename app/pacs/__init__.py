"""DICOMweb in and out (Qt-free, torch-free): server records and their secrets
(:mod:`app.pacs.servers`), the client (:mod:`app.pacs.client`: QIDO-RS search, WADO-RS retrieve,
STOW-RS send) and the jobs the CLI and the GUI run (:mod:`app.pacs.jobs`: retrieve into the
library, send results). Research use only."""

from app.pacs.client import PacsClient, StoreResult, StudyHit, StudyQuery
from app.pacs.errors import PacsAuthError, PacsError, PacsInvalidResponse, PacsNotFound, PacsTimeout, PacsUnreachable
from app.pacs.jobs import RetrieveProgress, RetrieveSummary, retrieve_studies, send_objects
from app.pacs.servers import ServerRecord

__all__ = [
    "PacsAuthError",
    "PacsClient",
    "PacsError",
    "PacsInvalidResponse",
    "PacsNotFound",
    "PacsTimeout",
    "PacsUnreachable",
    "RetrieveProgress",
    "RetrieveSummary",
    "ServerRecord",
    "StoreResult",
    "StudyHit",
    "StudyQuery",
    "retrieve_studies",
    "send_objects",
]
