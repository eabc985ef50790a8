"""A tiny local HTTP server that misbehaves the way real servers do (stalls, invalid DICOM,
truncated answers), for the error cases Orthanc itself never produces. 127.0.0.1 only."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BOUNDARY = "cxr-test-boundary"


def multipart(parts: list[bytes], *, close: bool = True) -> bytes:
    out = b""
    for p in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return out


class StubServer:
    """``routes``: path prefix -> ``fn(handler, release_event)`` writing the whole answer."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable] = {}
        self.release = threading.Event()
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                stub.requests.append(self.path)
                for prefix, fn in sorted(stub.routes.items(), key=lambda kv: -len(kv[0])):
                    if self.path.startswith(prefix):
                        try:
                            fn(self, stub.release)
                        except (BrokenPipeError, ConnectionResetError):
                            pass
                        return
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/dicom-web"

    def start(self) -> StubServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# -- behaviours --------------------------------------------------------------------------------
def answer(body: bytes, content_type: str, status: int = 200):
    def fn(h: BaseHTTPRequestHandler, _release) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return fn


def dicom_study(files: list[Path], *, close: bool = True):
    """A WADO-RS answer with these files as parts (``close=False``: no closing boundary)."""
    body = multipart([Path(f).read_bytes() for f in files], close=close)
    return answer(body, f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')


def garbage_study(text: bytes = b"this is not a DICOM object at all"):
    return answer(multipart([text]), f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')


def stall_before_headers(h: BaseHTTPRequestHandler, release: threading.Event) -> None:
    release.wait(60)


def stall_in_body(first: bytes):
    """Headers and the start of the first part, then nothing until released."""

    def fn(h: BaseHTTPRequestHandler, release: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + first[: len(first) // 2]
        h.wfile.write(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        h.wfile.flush()
        release.wait(60)

    return fn
