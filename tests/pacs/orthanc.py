"""A real Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) for the DICOMweb tests and
benchmarks/pacs_retrieve.py: started on 127.0.0.1 with a free HTTP port, the DICOM port disabled,
a temporary storage folder and a generated JSON config that loads the DICOMweb plugin; stopped
(terminated, then killed) at the end. The Debian package's own service is never used."""

from __future__ import annotations

import glob
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/orthanc*/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc*/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
)


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).exists()), None
    )


def dicomweb_plugin() -> str | None:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def missing_reason() -> str | None:
    """Why no Orthanc can be started here (None when one can)."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb; .ci/run does it as root)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def _die_with_parent() -> None:
    """Linux: Orthanc gets SIGTERM when the test process dies (a killed pytest leaves no server)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancServer:
    """``with OrthancServer(folder) as o: o.dicomweb_url ...``; ``users={"name": "password"}``
    turns HTTP basic authentication on."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, startup_timeout: float = 60.0):
        self.folder = Path(folder)
        self.users = dict(users or {})
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> OrthancServer:
        binary, plugin = orthanc_binary(), dicomweb_plugin()
        if binary is None or plugin is None:
            raise RuntimeError(missing_reason())
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port can be taken between the check and Orthanc's bind
            self.port = free_port()
            config = {
                "Name": "cxr-adaptor-test",
                "StorageDirectory": str(storage),
                "IndexDirectory": str(storage),
                "HttpPort": self.port,
                "DicomServerEnabled": False,
                "DicomPort": free_port(),
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": bool(self.users),
                "RegisteredUsers": self.users,
                "HttpThreadsCount": 16,
                "Plugins": [plugin],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.port}"},
                "StableAge": 1,
                "ConcurrentJobs": 2,
            }
            cfg = self.folder / "orthanc.json"
            cfg.write_text(json.dumps(config, indent=1))
            self._log = open(self.folder / "orthanc.log", "ab")
            self.proc = subprocess.Popen(
                [binary, str(cfg)],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                preexec_fn=_die_with_parent,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"Orthanc did not start; its log: {self.folder / 'orthanc.log'}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                self.rest("GET", "/system")
                return True
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        return False

    def rest(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/dicom"):
        """Orthanc's own REST API (JSON answers decoded); used to upload and inspect in tests."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        if self.users:
            user, password = next(iter(self.users.items()))
            req.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def upload(self, path: Path) -> dict:
        return self.rest("POST", "/instances", Path(path).read_bytes())

    def study_instances(self, study_uid: str) -> list[dict]:
        """The instances Orthanc holds for a Study Instance UID (its tags, simplified)."""
        found = self.rest(
            "POST",
            "/tools/find",
            json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}).encode(),
            "application/json",
        )
        out = []
        for study_id in found:
            for inst in self.rest("GET", f"/studies/{study_id}/instances"):
                out.append(self.rest("GET", f"/instances/{inst['ID']}/simplified-tags"))
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
