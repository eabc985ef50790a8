"""A Qt-free DICOMweb client: QIDO-RS study search, WADO-RS study retrieval to files, STOW-RS.

Built on ``dicomweb-client`` (STOW-RS through its API) over a ``requests`` session that carries
the authentication; QIDO-RS is a plain GET on that session (see :meth:`PacsClient._qido`), and
WADO-RS a streaming GET of the study in its stored transfer syntax (``transfer-syntax=*``:
servers such as Orthanc without a transcoder refuse the library's default of Explicit VR Little
Endian for compressed images) whose multipart parts are written, one at a time and byte for
byte, to files: the importer's own checks on untrusted files then see exactly what the server sent.

Every failure becomes one line (:mod:`app.pacs.errors`): unreachable, refused credentials (401 /
403), unknown study (404), other HTTP status, timeout (``timeout`` seconds without a byte:
connect or read), invalid answers. Query strings name patients, so the debug logs of
``dicomweb_client`` and ``urllib3`` (which print URLs) are kept at WARNING; our own logs name
study UIDs, never patients, and never a secret.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydicom
import requests
from pydicom.dataset import Dataset

from app.pacs.errors import (
    PacsAuthError,
    PacsError,
    PacsInvalidResponse,
    PacsNotFound,
    PacsTimeout,
    PacsUnreachable,
)
from app.pacs.servers import ServerRecord
from core_model.imaging.limits import MAX_PIXEL_BYTES

log = logging.getLogger(__name__)
for _name in ("dicomweb_client", "urllib3.connectionpool"):  # they log URLs, i.e. query values
    logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_TIMEOUT = 30.0
CHUNK = 1 << 20
MAX_PART_BYTES = MAX_PIXEL_BYTES + (64 << 20)  # no importable image is larger (as the importer's zip budget)
IMAGE_MODALITIES = ("CR", "DX")
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
WADO_HEADERS = {"Accept": WADO_ACCEPT, "Accept-Encoding": "identity"}  # pixel data: gzip costs CPU on both ends

# QIDO-RS attribute tags (DICOM JSON model)
_TAGS = {
    "StudyInstanceUID": "0020000D",
    "PatientName": "00100010",
    "PatientID": "00100020",
    "StudyDate": "00080020",
    "AccessionNumber": "00080050",
    "ModalitiesInStudy": "00080061",
    "StudyDescription": "00081030",
    "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208",
}
STUDY_FIELDS = list(_TAGS)


class Cancelled(Exception):
    """Raised inside a retrieval when the caller cancelled (never reaches the user)."""


@dataclass(frozen=True)
class StudyQuery:
    """QIDO-RS study search. Empty fields match anything. ``patient_name`` without a wildcard
    matches names that start with it; dates are YYYYMMDD or YYYY-MM-DD (inclusive range)."""

    patient_name: str = ""
    patient_id: str = ""
    date_from: str = ""
    date_to: str = ""
    modalities: tuple[str, ...] = IMAGE_MODALITIES
    accession: str = ""
    limit: int = 500

    def filters(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.patient_name.strip():
            # name parts ("SMITH^JOHN", "smith john") become wildcards: the same matches on every
            # server, also those that do not decode an escaped "^" or space in a query
            name = "*".join(p for p in re.split(r"[\s^,]+", self.patient_name.strip()) if p)
            out["PatientName"] = name if name.endswith("*") else name + "*"
        if self.patient_id.strip():
            out["PatientID"] = self.patient_id.strip()
        if self.accession.strip():
            out["AccessionNumber"] = self.accession.strip()
        lo, hi = _date(self.date_from, "from"), _date(self.date_to, "to")
        if lo or hi:
            if lo and hi and lo > hi:
                raise PacsError(f"the date range is empty: {self.date_from} is after {self.date_to}")
            out["StudyDate"] = lo if lo and lo == hi else f"{lo}-{hi}"
        return out


def _date(value: str, which: str) -> str:
    text = (value or "").strip().replace("-", "")
    if not text:
        return ""
    if len(text) != 8 or not text.isdigit():
        raise PacsError(f"the date {which} {value!r} is not a date (YYYYMMDD or YYYY-MM-DD)")
    return text


@dataclass(frozen=True)
class StudyHit:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    accession: str
    modalities: tuple[str, ...]
    description: str
    series: int | None
    instances: int | None


@dataclass(frozen=True)
class StoreResult:
    """One object's STOW-RS outcome: ``accepted``, or failed with the server's reason."""

    path: str
    sop_instance_uid: str
    accepted: bool
    reason: str = ""


@dataclass
class StudyFiles:
    """What one WADO-RS retrieve wrote: the files (in the order the server sent them)."""

    study_uid: str
    files: list[Path] = field(default_factory=list)
    bytes: int = 0


# STOW-RS FailureReason codes (PS3.18 Table I.2-2 / PS3.4 C.4.2.1.4)
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorised",
    0x0211: "unrecognised operation",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "referenced transfer syntax not supported",
    0xB000: "coercion of data elements",
    0xB007: "data set does not match SOP class (warning)",
    0xB006: "elements discarded",
}


class PacsClient:
    """One DICOMweb server. Thread-safe: every thread gets its own HTTP session."""

    def __init__(self, server: ServerRecord, secret: str | None = None, *, timeout: float = DEFAULT_TIMEOUT):
        if server.needs_secret and not secret:
            what = "password" if server.auth == "basic" else "token"
            raise PacsAuthError(
                f"the PACS {server.url} needs a {what} ({server.auth} authentication) and none was given"
            )
        if server.url.startswith("https:") and not _tls_available():
            raise PacsUnreachable(
                f"cannot reach the PACS {server.url}: this installation has no TLS (Python's ssl module); "
                "use the pip installation of the app for https servers"
            )
        self.server = server
        self.timeout = float(timeout)
        self._secret = secret
        self._local = threading.local()
        self._active: set[requests.Response] = set()  # streamed WADO-RS answers in flight
        self._active_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.server.url

    def __repr__(self) -> str:  # never the secret
        return f"PacsClient({self.server.url!r}, auth={self.server.auth})"

    # -- sessions ---------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "cxr-adaptor-review (research use only)"
            if self.server.auth == "basic":
                session.auth = (self.server.username, self._secret or "")
            elif self.server.auth == "bearer":
                session.headers["Authorization"] = f"Bearer {self._secret}"
            self._local.session = session
        return session

    def _dicomweb(self):
        client = getattr(self._local, "dicomweb", None)
        if client is None:
            from dicomweb_client.api import DICOMwebClient

            try:
                client = DICOMwebClient(self.server.url, session=self._session(), timeout=self._timeouts())
            except ValueError as exc:
                raise PacsError(f"not a usable DICOMweb URL: {self.server.url} ({exc})") from exc
            client.set_http_retry_params(retry=False)
            self._local.dicomweb = client
        return client

    def _timeouts(self) -> tuple[float, float]:
        return (min(self.timeout, 10.0), self.timeout)

    def abort(self) -> None:
        """Break off every WADO-RS answer in flight (from any thread): a worker blocked reading a
        stalled server gets an error at once instead of waiting for the timeout. A request still
        waiting for the server's first byte ends at its timeout."""
        with self._active_lock:
            active = list(self._active)
        for response in active:
            sock = _socket_of(response)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
        self._local = threading.local()

    # -- QIDO-RS ----------------------------------------------------------------------------
    def search_studies(self, query: StudyQuery) -> list[StudyHit]:
        """Studies matching ``query`` (one request per modality when several are given), by date,
        newest first."""
        filters = query.filters()
        modalities = [m.strip().upper() for m in query.modalities if m.strip()] or [""]
        hits: dict[str, StudyHit] = {}
        for modality in modalities:
            params = dict(filters)
            if modality:
                params["ModalitiesInStudy"] = modality
            params["limit"] = str(int(query.limit))
            for row in self._qido("studies", params, "search the studies", fields=STUDY_FIELDS):
                hit = _hit(row)
                if hit is not None:
                    hits.setdefault(hit.study_uid, hit)
        return sorted(hits.values(), key=lambda h: (h.study_date, h.study_uid), reverse=True)

    def _qido(self, resource: str, params: dict[str, str], what: str, fields: Sequence[str] = ()) -> list:
        """A QIDO-RS GET. Query values keep the DICOM wildcards ``*`` and ``?`` unescaped: some
        servers (Orthanc 1.10's DICOMweb plugin) do not decode percent-escapes in them."""
        pairs = [(k, v) for k, v in params.items()] + [("includefield", _TAGS[f]) for f in fields]
        query = "&".join(f"{quote(k)}={quote(str(v), safe='*?')}" for k, v in pairs)
        url = f"{self.url}/{resource}" + (f"?{query}" if query else "")
        try:
            response = self._session().get(url, headers={"Accept": "application/dicom+json"}, timeout=self._timeouts())
        except requests.RequestException as exc:
            raise translate(exc, self.url, what) from exc
        with response:
            if response.status_code >= 400:
                raise http_error(response.status_code, self.url, what)
            if response.status_code == 204 or not response.content.strip():
                return []
            try:
                rows = response.json()
            except ValueError as exc:
                raise PacsInvalidResponse(
                    f"the PACS {self.url} answered the search with something that is not JSON"
                ) from exc
        if not isinstance(rows, list):
            raise PacsInvalidResponse(f"the PACS {self.url} answered the search with something other than a list")
        return rows

    # -- WADO-RS ----------------------------------------------------------------------------
    def retrieve_study(
        self,
        study_uid: str,
        folder: Path,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        on_bytes: Callable[[int], None] | None = None,
    ) -> StudyFiles:
        """Write every instance of ``study_uid`` into ``folder`` (``00000.dcm``, ...: names never
        come from the server). Raises a :class:`PacsError` or :class:`Cancelled`; the caller
        discards the folder then."""
        _check_uid(study_uid)
        url = f"{self.url}/studies/{study_uid}"
        folder.mkdir(parents=True, exist_ok=True)
        out = StudyFiles(study_uid)
        try:
            response = self._session().get(url, headers=WADO_HEADERS, stream=True, timeout=self._timeouts())
        except requests.RequestException as exc:
            raise translate(exc, self.url, f"retrieve study {study_uid}") from exc
        with self._active_lock:
            self._active.add(response)
        try:
            if cancelled():
                raise Cancelled
            self._write_parts(response, study_uid, folder, out, cancelled, on_bytes)
        finally:
            with self._active_lock:
                self._active.discard(response)
            response.close()
        if not out.files:
            raise PacsInvalidResponse(f"the PACS {self.url} sent no objects for study {study_uid}")
        return out

    def _write_parts(self, response, study_uid: str, folder: Path, out: StudyFiles, cancelled, on_bytes) -> None:
        what = f"retrieve study {study_uid}"
        if response.status_code >= 400:
            raise http_error(response.status_code, self.url, what, study_uid)
        try:
            for part in iter_multipart(response, cancelled):
                path = folder / f"{len(out.files):05d}.dcm"
                path.write_bytes(part)  # a folder of our own, discarded whole unless the study completes
                out.files.append(path)
                out.bytes += len(part)
                if on_bytes is not None:
                    on_bytes(len(part))
        except requests.RequestException as exc:
            if cancelled():  # abort() broke the connection off
                raise Cancelled from exc
            raise translate(exc, self.url, what) from exc

    # -- STOW-RS ----------------------------------------------------------------------------
    def store(self, objects: Iterable[str | Path | Dataset]) -> list[StoreResult]:
        """Send DICOM objects (files or datasets) in one STOW-RS request; one result per object,
        in order: accepted, or failed with the server's reason (or why it was not sent)."""
        items: list[tuple[str, str, Dataset | None, str]] = []
        for obj in objects:
            label = str(obj) if not isinstance(obj, Dataset) else f"{obj.get('Modality', '') or 'DICOM'} object"
            if isinstance(obj, Dataset):
                ds: Dataset | None = obj
                problem = ""
            else:
                ds, problem = _read_for_send(Path(obj))
            sop = str(getattr(ds, "SOPInstanceUID", "") or "") if ds is not None else ""
            if ds is not None and not sop:
                ds, problem = None, "the object has no SOP Instance UID"
            if ds is not None and "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
                ds, problem = None, "the object has no file meta information (Transfer Syntax UID)"
            items.append((label, sop, ds, problem))
        to_send = [ds for _, _, ds, _ in items if ds is not None]
        answer: Dataset | None = None
        failure = ""
        if to_send:
            try:
                answer = self._call("store the objects", lambda c: c.store_instances(to_send), stow=True)
            except _StowRefused as exc:
                answer, failure = exc.answer, exc.message
        accepted, failed = _stow_outcome(answer)
        results = []
        for label, sop, ds, problem in items:
            if ds is None:
                results.append(StoreResult(label, sop, False, f"not sent: {problem}"))
            elif sop in failed:
                results.append(StoreResult(label, sop, False, failed[sop]))
            elif sop in accepted:
                results.append(StoreResult(label, sop, True, accepted[sop]))
            else:
                results.append(StoreResult(label, sop, False, failure or "the server's answer does not mention it"))
        for r in results:
            log.info("STOW-RS %s: %s", r.sop_instance_uid or r.path, "accepted" if r.accepted else "failed")
        return results

    # -- errors -----------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[Any], Any], *, stow: bool = False):
        client = self._dicomweb()
        try:
            return fn(client)
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            if stow and status not in (401, 403, 404) and response is not None:
                answer = _json_dataset(response)
                raise _StowRefused(answer, _http_message(status, self.url, what)) from exc
            raise http_error(status, self.url, what) from exc
        except requests.RequestException as exc:
            raise translate(exc, self.url, what) from exc
        except (ValueError, KeyError, TypeError) as exc:  # JSON / DICOM JSON the library could not read
            raise PacsInvalidResponse(
                f"the PACS {self.url} sent an answer that is not valid DICOMweb JSON ({type(exc).__name__}) "
                f"when asked to {what}"
            ) from exc


class _StowRefused(Exception):
    def __init__(self, answer: Dataset | None, message: str):
        super().__init__(message)
        self.answer, self.message = answer, message


def _tls_available() -> bool:
    try:
        import ssl  # noqa: F401  (the PyInstaller build leaves it out)
    except ImportError:
        return False
    return True


def _socket_of(response: requests.Response):
    raw = getattr(response, "raw", None)
    conn = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:  # http.client's socket file under urllib3's response
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    return sock


def _json_dataset(response: requests.Response) -> Dataset | None:
    try:
        return Dataset.from_json(response.content)
    except Exception:
        return None


def _stow_outcome(answer: Dataset | None) -> tuple[dict[str, str], dict[str, str]]:
    accepted: dict[str, str] = {}
    failed: dict[str, str] = {}
    if answer is None:
        return accepted, failed
    for item in answer.get("ReferencedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        warning = item.get("WarningReason")
        accepted[uid] = f"accepted with a warning: {_reason(warning)}" if warning is not None else ""
    for item in answer.get("FailedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        failed[uid] = f"refused by the server: {_reason(item.get('FailureReason'))}"
    return accepted, failed


def _reason(code) -> str:
    try:
        value = int(code)
    except (TypeError, ValueError):
        return "no reason given"
    return f"{FAILURE_REASONS.get(value, 'failure')} (0x{value:04X})"


def _read_for_send(path: Path) -> tuple[Dataset | None, str]:
    if not path.is_file():
        return None, "no such file"
    try:
        return pydicom.dcmread(path), ""
    except Exception as exc:
        return None, f"not a readable DICOM file ({type(exc).__name__})"


def _check_uid(uid: str) -> None:
    if not uid or len(uid) > 64 or not all(c.isdigit() or c == "." for c in uid):
        raise PacsError(f"not a DICOM UID: {uid[:80]!r}")


def _value(row: dict, keyword: str):
    item = row.get(_TAGS[keyword]) or {}
    values = item.get("Value") or []
    return values


def _first(row: dict, keyword: str) -> str:
    values = _value(row, keyword)
    if not values:
        return ""
    v = values[0]
    if isinstance(v, dict):  # PN: {"Alphabetic": "..."}
        return str(v.get("Alphabetic", "") or "")
    return str(v)


def _int(row: dict, keyword: str) -> int | None:
    try:
        return int(_first(row, keyword))
    except ValueError:
        return None


def _hit(row) -> StudyHit | None:
    if not isinstance(row, dict):
        return None
    uid = _first(row, "StudyInstanceUID")
    if not uid:
        return None
    return StudyHit(
        study_uid=uid,
        patient_name=_first(row, "PatientName"),
        patient_id=_first(row, "PatientID"),
        study_date=_first(row, "StudyDate"),
        accession=_first(row, "AccessionNumber"),
        modalities=tuple(str(m) for m in _value(row, "ModalitiesInStudy")),
        description=_first(row, "StudyDescription"),
        series=_int(row, "NumberOfStudyRelatedSeries"),
        instances=_int(row, "NumberOfStudyRelatedInstances"),
    )


# -- errors -----------------------------------------------------------------------------------
def _http_message(status: int, url: str, what: str) -> str:
    return f"the PACS {url} answered HTTP {status} when asked to {what}"


def http_error(status: int, url: str, what: str, study_uid: str = "") -> PacsError:
    if status in (401, 403):
        return PacsAuthError(
            f"the PACS {url} refused the credentials (HTTP {status}) when asked to {what}; check the user "
            "name and password or token"
        )
    if status == 404:
        if study_uid:
            return PacsNotFound(f"study {study_uid} is not on the PACS {url} (HTTP 404)")
        return PacsNotFound(f"the PACS {url} has no DICOMweb service there (HTTP 404); check the URL's path")
    return PacsError(_http_message(status, url, what))


def translate(exc: BaseException, url: str, what: str) -> PacsError:
    """A ``requests`` exception as the one-line error a user reads."""
    text = str(exc)
    if isinstance(exc, requests.Timeout) or "timed out" in text.lower():
        return PacsTimeout(f"the PACS {url} did not answer within the timeout when asked to {what}")
    if isinstance(exc, requests.exceptions.SSLError):
        return PacsUnreachable(f"cannot reach the PACS {url}: the TLS (https) handshake failed")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return PacsInvalidResponse(f"the PACS {url} broke off its answer when asked to {what}")
    if isinstance(exc, requests.ConnectionError):
        reason = "connection refused" if "refused" in text.lower() else "no connection"
        if "name or service not known" in text.lower() or "nodename nor servname" in text.lower():
            reason = "unknown host name"
        return PacsUnreachable(f"cannot reach the PACS {url} ({reason})")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return http_error(exc.response.status_code, url, what)
    return PacsError(f"the request to the PACS {url} failed ({type(exc).__name__}) when asked to {what}")


# -- multipart/related ------------------------------------------------------------------------
def _content_type(value: str) -> tuple[str, dict[str, str]]:
    media, *rest = [p.strip() for p in value.split(";")]
    params = {}
    for item in rest:
        key, _, val = item.partition("=")
        params[key.strip().lower()] = val.strip().strip('"')
    return media.lower(), params


def iter_multipart(
    response: requests.Response,
    cancelled: Callable[[], bool] = lambda: False,
    max_part: int = MAX_PART_BYTES,
    chunk_size: int = CHUNK,
) -> Iterator[bytes]:
    """The bodies of a streamed ``multipart/related`` answer, one part at a time (at most one
    part and one chunk in memory). A single-part ``application/dicom`` answer is one part.
    :class:`PacsInvalidResponse` for anything else or a message that ends before its closing
    boundary."""
    media, params = _content_type(response.headers.get("Content-Type", ""))
    chunks = response.iter_content(chunk_size=chunk_size)
    if media == "application/dicom":
        body = bytearray()
        for chunk in chunks:
            if cancelled():
                raise Cancelled
            body += chunk
            if len(body) > max_part:
                raise PacsInvalidResponse("the PACS sent an object larger than any image the app imports")
        yield bytes(body)
        return
    if media != "multipart/related" or not params.get("boundary"):
        raise PacsInvalidResponse(f"the PACS answered {media or 'no content type'} instead of multipart/related DICOM")
    delimiter = b"\r\n--" + params["boundary"].encode("latin-1")
    buf = bytearray(b"\r\n")  # the first boundary may open the body without a CRLF before it
    started = closed = after_delimiter = False
    search = 0
    for chunk in chunks:
        if cancelled():
            raise Cancelled
        buf += chunk
        while True:
            if after_delimiter:  # "--" right after a delimiter closes the message
                if len(buf) < 2:
                    break
                closed, after_delimiter = buf[:2] == b"--", False
                if closed:
                    break
            i = buf.find(delimiter, search)
            if i < 0:
                search = max(0, len(buf) - len(delimiter) + 1)
                break
            if started:
                yield _part_body(bytes(buf[:i]))
            started = after_delimiter = True
            del buf[: i + len(delimiter)]
            search = 0
        if closed:
            break
        if len(buf) > max_part:
            raise PacsInvalidResponse("the PACS sent an object larger than any image the app imports")
    if not closed:
        raise PacsInvalidResponse("the PACS's answer ended before its last part did (truncated multipart message)")


def _part_body(segment: bytes) -> bytes:
    # segment: CRLF, the part's header lines, CRLF CRLF, the body
    i = segment.find(b"\r\n\r\n")
    if i < 0:
        raise PacsInvalidResponse("the PACS sent a multipart part without headers")
    return segment[i + 4 :]
