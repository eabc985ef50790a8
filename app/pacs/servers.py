"""DICOMweb server records and their secrets.

A :class:`ServerRecord` (name, base URL, authentication kind, user name) is plain data, kept in
``<user config dir>/pacs_servers.json`` (never in the library's SQLite file). The secret (basic
auth password or bearer token) is never written there, never logged and never printed: it goes
to the platform keyring through the ``keyring`` package when that is installed and has a usable
backend, otherwise it is not stored at all and is asked for once per session (kept in this
process's memory only). :data:`SECRET_ENV` gives it to headless runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.pacs.errors import PacsError
from core_model.fileio import atomic_write_json

log = logging.getLogger(__name__)

AUTH_KINDS = ("none", "basic", "bearer")
KEYRING_SERVICE = "cxr-adaptor-pacs"
SECRET_ENV = "CXR_ADAPTOR_PACS_SECRET"
SERVERS_ENV = "CXR_ADAPTOR_PACS_SERVERS"


@dataclass(frozen=True)
class ServerRecord:
    """A DICOMweb service: ``url`` is its base (e.g. ``http://host:8042/dicom-web``)."""

    name: str
    url: str
    auth: str = "none"  # none | basic | bearer
    username: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalise_url(self.url))
        if self.auth not in AUTH_KINDS:
            raise PacsError(f"unknown authentication {self.auth!r}: use one of {', '.join(AUTH_KINDS)}")
        if self.auth == "basic" and not self.username:
            raise PacsError("basic authentication needs a user name")

    @property
    def secret_key(self) -> str:
        """The keyring / session key of this server's secret (URL and user, no secret)."""
        return f"{self.auth}:{self.username}@{self.url}"

    @property
    def needs_secret(self) -> bool:
        return self.auth != "none"


def normalise_url(url: str) -> str:
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"not a DICOMweb URL: {url!r} (expected http(s)://host[:port]/path)")
    if parts.username or parts.password:
        raise PacsError("put the user name in --user and the password in the prompt or the keyring, not in the URL")
    return url


# -- the record file --------------------------------------------------------------------------
def default_servers_path() -> Path:
    env = os.environ.get(SERVERS_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_path

    return user_config_path("cxr-adaptor", appauthor=False) / "pacs_servers.json"


def load_servers(path: Path | None = None) -> list[ServerRecord]:
    path = Path(path) if path is not None else default_servers_path()
    if not path.exists():
        return []
    try:
        items = json.loads(path.read_text(encoding="utf-8"))["servers"]
        return [
            ServerRecord(**{k: item[k] for k in ("name", "url", "auth", "username") if k in item}) for item in items
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PacsError(f"the PACS server list {path} is unreadable ({type(exc).__name__}); fix or delete it") from exc


def save_server(record: ServerRecord, path: Path | None = None) -> Path:
    """Add or replace (by name) ``record`` in the server list; returns the file written."""
    path = Path(path) if path is not None else default_servers_path()
    servers = [s for s in load_servers(path) if s.name != record.name] + [record]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"servers": [asdict(s) for s in servers]})
    return path


def find_server(name: str, path: Path | None = None) -> ServerRecord:
    servers = load_servers(path)
    for s in servers:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in servers) or "none saved yet"
    raise PacsError(f"no saved PACS server named {name!r} (saved: {known})")


# -- secrets ----------------------------------------------------------------------------------
_session_secrets: dict[str, str] = {}
_lock = threading.Lock()


def _keyring():
    """The keyring module when installed with a usable backend, else None."""
    try:
        import keyring  # type: ignore[import-not-found]
        from keyring.backends import fail  # type: ignore[import-not-found]
    except Exception:
        return None
    try:
        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
            return None
    except Exception:
        return None
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def get_secret(record: ServerRecord) -> str | None:
    """The secret for ``record`` from this session, then the keyring; None when unknown."""
    if not record.needs_secret:
        return None
    with _lock:
        if record.secret_key in _session_secrets:
            return _session_secrets[record.secret_key]
    kr = _keyring()
    if kr is not None:
        try:
            value = kr.get_password(KEYRING_SERVICE, record.secret_key)
        except Exception as exc:  # a locked or broken keyring: ask instead
            log.debug("keyring lookup failed: %s", type(exc).__name__)
            value = None
        if value:
            remember_secret(record, value, persist=False)
            return value
    return None


def remember_secret(record: ServerRecord, secret: str, *, persist: bool = False) -> bool:
    """Keep ``secret`` for this session; with ``persist`` also in the keyring when available.
    Returns whether it was stored in the keyring."""
    with _lock:
        _session_secrets[record.secret_key] = secret
    if not persist:
        return False
    kr = _keyring()
    if kr is None:
        return False
    try:
        kr.set_password(KEYRING_SERVICE, record.secret_key, secret)
        return True
    except Exception as exc:
        log.debug("keyring store failed: %s", type(exc).__name__)
        return False


def forget_secret(record: ServerRecord) -> None:
    with _lock:
        _session_secrets.pop(record.secret_key, None)
    kr = _keyring()
    if kr is not None:
        try:
            kr.delete_password(KEYRING_SERVICE, record.secret_key)
        except Exception:
            pass
