"""A fault-injecting HTTP proxy for tests: sits on 127.0.0.1 in front of a real registry.

Clients talk to the proxy as if it were the registry (``proxy.host`` instead of the registry's).
Every request is forwarded unchanged (the ``Host`` header too, so the registry's ``Location``
headers point back at the proxy) unless a :class:`Fault` rule matches it; then the proxy answers
500/503/401, resets the connection, or stalls before forwarding. Every request is recorded
(:attr:`FaultProxy.log`) with its time, so tests can check what reached the registry, in which
order, and how far apart retries were.

Rules match by method and a path regex, and fire for the Nth matching request(s), the first
``times`` ones, or a seeded share of them. Bodies are buffered whole (test images are small),
which keeps chunked uploads (``PATCH`` of blobs) simple to forward.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import random
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterable

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
MANIFEST_PATH = r"^/v2/.+/manifests/"
BLOB_UPLOAD_PATH = r"^/v2/.+/blobs/uploads/"


@dataclasses.dataclass
class Fault:
    """What to do to which requests.

    action: ``500``, ``503``, ``401``, ``reset`` (TCP RST, no answer) or ``stall`` (wait
    ``stall_seconds`` or until :meth:`FaultProxy.release`, then forward).
    methods/path: only requests with one of these methods whose path matches the regex count.
    nth: fire on these 1-based positions among matching requests; times: fire on the first N;
    share: fire on that fraction (seeded, reproducible); none of them: fire on every match.
    """

    action: str
    methods: tuple[str, ...] = ()
    path: str = ""
    nth: tuple[int, ...] = ()
    times: int | None = None
    share: float | None = None
    seed: int = 0
    stall_seconds: float = 3600.0
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.action not in {"500", "503", "401", "reset", "stall"}:
            raise ValueError(f"unknown fault action {self.action!r}")
        self._rng = random.Random(self.seed)
        self._re = re.compile(self.path) if self.path else None

    def applies(self, method: str, path: str) -> bool:
        """Count a matching request and say whether this one gets the fault (call once per request)."""
        if self.methods and method not in self.methods:
            return False
        if self._re and not self._re.search(path):
            return False
        self.matched += 1
        if self.nth:
            hit = self.matched in self.nth
        elif self.times is not None:
            hit = self.matched <= self.times
        elif self.share is not None:
            hit = self._rng.random() < self.share
        else:
            hit = True
        if hit:
            self.fired += 1
        return hit


@dataclasses.dataclass(frozen=True)
class Record:
    """One request as the proxy saw it."""

    time: float
    method: str
    path: str
    status: int | None  # what the client got (None: reset)
    fault: str | None  # the action taken, or None when forwarded untouched


class FaultProxy:
    """``with FaultProxy(registry.host, [Fault("503", ("PUT",), MANIFEST_PATH, nth=(1,))]) as p: ...``"""

    def __init__(self, upstream: str, faults: Iterable[Fault] = ()):
        self.upstream = upstream
        self.faults: list[Fault] = list(faults)
        self.log: list[Record] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self.host = ""  # 127.0.0.1:PORT once started

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.host = f"127.0.0.1:{server.server_address[1]}"  # stays readable after stop()
        self._thread = threading.Thread(target=server.serve_forever, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def release(self) -> None:
        """Let stalled requests go on."""
        self._release.set()

    # --- bookkeeping -------------------------------------------------------------------------

    def choose(self, method: str, path: str) -> Fault | None:
        with self._lock:
            chosen = None
            for fault in self.faults:
                if fault.applies(method, path) and chosen is None:
                    chosen = fault
            return chosen

    def record(self, method: str, path: str, status: int | None, fault: str | None) -> None:
        with self._lock:
            self.log.append(Record(time.monotonic(), method, path, status, fault))

    def requests(self, method: str | None = None, path: str = "") -> list[Record]:
        rx = re.compile(path) if path else None
        with self._lock:
            return [r for r in self.log if (method is None or r.method == method) and (rx is None or rx.search(r.path))]


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Abort the TCP connection with an RST, as a crashed load balancer would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _answer(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        owner = self.owner
        method, path = self.command, self.path
        body = self._body()
        fault = owner.choose(method, path)
        action = fault.action if fault else None
        if action == "reset":
            owner.record(method, path, None, action)
            self._reset()
            return
        if action in ("500", "503"):
            owner.record(method, path, int(action), action)
            self._answer(int(action), '{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}')
            return
        if action == "401":
            owner.record(method, path, 401, action)
            self._answer(
                401,
                '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                {"WWW-Authenticate": 'Basic realm="faultproxy"'},
            )
            return
        if action == "stall":
            owner._release.wait(fault.stall_seconds)
        conn = http.client.HTTPConnection(owner.upstream, timeout=120)
        try:
            # header by header: a client sends several Accept headers, a dict would keep one
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    conn.putheader(k, v)
            if body or method in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            owner.record(method, path, None, "upstream-error")
            self._reset()
            return
        finally:
            conn.close()
        owner.record(method, path, resp.status, action)
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if method == "HEAD":
            length = resp.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle
