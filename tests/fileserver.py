"""A local HTTP server (in-process thread on 127.0.0.1) for download tests: the machines that run
the suite have no internet. It serves in-memory files, honours Range, and can misbehave on
purpose: drop the connection half way, ignore Range, or answer with an error status."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> content
    drop_first: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the first drop
    ignore_range: bool = False
    fail_status: dict[str, int] = field(default_factory=dict)  # path -> HTTP status to answer with
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    no_length: bool = False  # no Content-Length: the body ends when the connection closes
    truncate_first: dict[str, int] = field(default_factory=dict)  # path -> bytes sent (no length) the first time
    range_shift: int = 0  # answer a Range request with a range starting this many bytes off


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        b = self.server.behaviour
        rng = self.headers.get("Range")
        b.requests.append((self.path, rng))
        if self.path in b.fail_status:
            self.send_error(b.fail_status[self.path])
            return
        data = b.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not b.ignore_range and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0]) + b.range_shift
            b.range_shift = 0
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        cut = b.truncate_first.pop(self.path, None)
        if cut is not None or b.no_length:
            self.end_headers()
            self.wfile.write(body[:cut] if cut is not None else body)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = b.drop_first.pop(self.path, None)
        if cut is not None:  # send part of the body, then hang up
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


class FileServer:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.behaviour = self.behaviour
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes) -> str:
        self.behaviour.files[path] = data
        return self.url + path

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url(path: str = "/x.zip") -> str:
    """A URL on 127.0.0.1 where nothing listens: connection refused, like a machine offline."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}{path}"
