"""A fault-injecting HTTP/1.1 proxy between the adapters and an S3 test server.

Standard library only (threads and blocking sockets), loopback only. The
adapters are pointed at the proxy; the proxy forwards each request to the
real server (SeaweedFS, moto's server) unless the schedule or a rule says
otherwise, and counts what it saw and what it did::

    with FaultProxy(seaweedfs.netloc, schedule=Schedule(seed=7, rate=0.2)) as proxy:
        store = S3ModelStorage(bucket, endpoint_url=proxy.endpoint_url, ...)
        ...
    proxy.requests, proxy.faults   # 1234, Counter({"503 SlowDown": 40, ...})

Faults (``Schedule`` draws them, deterministically for a seed; rules script them):

- ``SLOWDOWN`` / ``INTERNAL``: answer ``503 SlowDown`` / ``500 InternalError`` (S3's XML body);
  the request never reaches the server.
- ``RESET``: read the whole request, then reset the connection (TCP RST) with no response.
- ``RESET_UPLOAD``: read half of the request body, then reset.
- ``RESET_DOWNLOAD``: forward a GET, send the headers and half of the body, then reset.
- ``TRUNCATE``: forward a GET, announce the whole Content-Length, send half, then close cleanly.
- ``STALL``: read the request and answer nothing until the client gives up (or ``stall_seconds``).
- ``LOST`` (rules only): forward the request, read the server's whole answer, then reset the
  client's connection: the server acted, the client never hears of it.
- ``CORRUPT`` (rules only): flip one byte in the middle of a body: of the response to a GET,
  or of a request's own body before it is forwarded (the server should refuse it).
- ``Reply(status, code)``: any S3 error answer (403 AccessDenied, 404 NoSuchKey, ...), from a rule.

The schedule injects only faults that leave the server untouched (or touch it
only with a GET): the request either never reaches the server or is a read.
So every retry the adapters make is safe, and a test can demand that every
operation succeeds. ``LOST``, the fault after the server acted, comes from
rules, where a test says which answer goes missing.

``down()`` / ``up()`` / ``restart(seconds)`` simulate a server that goes away:
the listening socket is closed (connections are refused) and every open
connection is reset, including requests in flight.

``tls=`` (an ``ssl.SSLContext``) serves HTTPS to the client and counts in ``tls_failures``
the TLS connections that ended without a request (the client refused the certificate);
the server behind is still spoken to in plain HTTP.

HTTP/1.1 as the SDKs use it: keep-alive, ``Content-Length`` request bodies,
``Expect: 100-continue`` (answered at once), chunked responses from the
server (re-sent with a Content-Length). Chunked *requests* are decoded too, but
counted in ``chunked_requests`` so tests can prove the adapters send none.

Every loop is bounded: requests per connection, requests in total, and every
socket read has a timeout.
"""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SLOWDOWN = "503 SlowDown"
INTERNAL = "500 InternalError"
RESET = "reset before response"
RESET_UPLOAD = "reset mid-upload"
RESET_DOWNLOAD = "reset mid-download"
TRUNCATE = "truncated response"
STALL = "stall past timeout"
CORRUPT = "corrupted body"
LOST = "answer lost"
TRANSIENT_FAULTS = (SLOWDOWN, INTERNAL, RESET, RESET_UPLOAD, RESET_DOWNLOAD, TRUNCATE, STALL)

_MAX_HEAD = 64 * 1024
_LINGER_RST = b"\1\0\0\0\0\0\0\0"  # struct linger {on=1, linger=0}: close() sends RST


@dataclass(frozen=True)
class Reply:
    """An S3 error answer a rule can script (the request is not forwarded)."""

    status: int
    code: str

    @property
    def kind(self) -> str:
        return f"{self.status} {self.code}"


_REPLIES = {SLOWDOWN: Reply(503, "SlowDown"), INTERNAL: Reply(500, "InternalError")}


@dataclass
class Request:
    index: int
    method: str
    target: str
    headers: dict[str, str]
    length: int
    path: str = ""
    query: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    """Kept for small requests (up to ``record_body_limit`` bytes)."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = unquote(parts.path)
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").partition("/")[0]

    @property
    def key(self) -> str:
        return self.path.lstrip("/").partition("/")[2]

    @property
    def operation(self) -> str:
        """A rough S3 operation name, for logs and assertions."""
        q, m = self.query, self.method
        if "uploadId" in q:
            return {"PUT": "UploadPart", "POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload"}.get(
                m, "ListParts"
            )
        if "uploads" in q:
            return "CreateMultipartUpload" if m == "POST" else "ListMultipartUploads"
        if "delete" in q:
            return "DeleteObjects"
        if "tagging" in q:
            return {"GET": "GetObjectTagging", "PUT": "PutObjectTagging"}.get(m, "DeleteObjectTagging")
        if not self.key:
            return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "GET": "ListObjects"}.get(m, m + "Bucket")
        return {"HEAD": "HeadObject", "GET": "GetObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(m, m)


@dataclass(frozen=True)
class Entry:
    """One request as the proxy saw it, and what it did with it."""

    index: int
    method: str
    path: str
    query: dict[str, str]
    operation: str
    fault: str | None
    status: int | None
    headers: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """The request's headers, names in lower case."""


def _applies(kind: str, request: Request) -> bool:
    if kind == RESET_UPLOAD:
        return request.length >= 2
    if kind in (RESET_DOWNLOAD, TRUNCATE):
        return request.method == "GET"
    return True


class Schedule:
    """Draws a fault (or none) per request, deterministically for a seed.

    Every request consumes exactly two draws, so the n-th request to arrive
    always gets the n-th decision, whatever its kind. ``weights`` choose among
    the faults that apply to the request (a reset mid-upload needs a body, a
    download fault a GET); ``caps`` bound how often one kind may be injected
    (stalls cost a client timeout each).
    """

    def __init__(
        self,
        seed: int = 0,
        rate: float = 0.0,
        weights: dict[str, float] | None = None,
        caps: dict[str, int] | None = None,
    ) -> None:
        self.rate = rate
        self.weights = dict(weights or dict.fromkeys(TRANSIENT_FAULTS, 1.0))
        self.caps = dict(caps or {})
        self._rng = random.Random(seed)
        self._given: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def decide(self, request: Request) -> str | None:
        with self._lock:
            draw, pick = self._rng.random(), self._rng.random()
            if draw >= self.rate:
                return None
            kinds = [
                kind
                for kind, weight in self.weights.items()
                if weight > 0 and _applies(kind, request) and self._given[kind] < self.caps.get(kind, 1 << 62)
            ]
            if not kinds:
                return None
            total = sum(self.weights[k] for k in kinds)
            threshold = pick * total
            for kind in kinds:
                threshold -= self.weights[kind]
                if threshold < 0:
                    break
            self._given[kind] += 1
            return kind


Rule = Callable[[Request], "str | Reply | None"]


class _Connection:
    """One client connection and the upstream connection that serves it."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.upstream_reader = None
        self.killed = False
        self.requests = 0


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        schedule: Schedule | None = None,
        stall_seconds: float = 10.0,
        idle_timeout: float = 60.0,
        upstream_timeout: float = 60.0,
        max_requests: int = 200_000,
        max_requests_per_connection: int = 20_000,
        record_body_limit: int = 64 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        host, _, port = upstream.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the fault proxy forwards to loopback only, not {host!r}")
        self.upstream = (host, int(port))
        self.schedule = schedule or Schedule()
        self.stall_seconds = stall_seconds
        self.idle_timeout = idle_timeout
        self.upstream_timeout = upstream_timeout
        self.max_requests = max_requests
        self.max_requests_per_connection = max_requests_per_connection
        self.record_body_limit = record_body_limit
        self.tls = tls
        self.tls_failures = 0
        self.rules: list[Rule] = []
        self.faults: collections.Counter[str] = collections.Counter()
        self.log: list[Entry] = []
        self.bodies: list[Request] = []
        self.requests = 0
        self.chunked_requests = 0
        self.connections = 0
        self.refused_while_down = 0
        self.port = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._open: set[_Connection] = set()
        self._threads: list[threading.Thread] = []
        self._accept_thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listen()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        for timer in self._timers:
            timer.cancel()
        self._close_listener()
        self._kill_all()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}"

    # -- outages --------------------------------------------------------------

    @property
    def is_down(self) -> bool:
        return self._listener is None

    def down(self) -> None:
        """The server is gone: new connections are refused, open ones are reset."""
        self._close_listener()
        self._kill_all()

    def up(self) -> None:
        """The server is back on the same port."""
        if self._listener is None and not self._stopped.is_set():
            self._listen()

    def restart(self, seconds: float) -> None:
        """Down now, up again after ``seconds`` (a server restart)."""
        self.down()
        timer = threading.Timer(seconds, self.up)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    # -- figures --------------------------------------------------------------

    def count(self, predicate: Callable[[Entry], bool]) -> int:
        with self._lock:
            return sum(1 for entry in self.log if predicate(entry))

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self.log)

    def reset_counts(self) -> None:
        with self._lock:
            self.log.clear()
            self.bodies.clear()
            self.faults.clear()
            self.requests = 0

    # -- internals --------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _kill_all(self) -> None:
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            self._kill(connection)

    @staticmethod
    def _kill(connection: _Connection) -> None:
        """Reset a connection from another thread: wake its reader; it closes with RST."""
        connection.killed = True
        for sock in (connection.client, connection.upstream):
            if sock is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                self._stopped.wait(0.02)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                continue  # closed by down() or stop()
            connection = _Connection(client)
            with self._lock:
                self.connections += 1
                self._threads = [t for t in self._threads if t.is_alive()]
                self._open.add(connection)  # before the thread runs, so down() reaches it too
            if self._listener is not listener:
                self._kill(connection)  # accepted just as the server went down
            thread = threading.Thread(target=self._serve, args=(connection,), name="faultproxy-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: _Connection) -> None:
        client = connection.client
        client.settimeout(self.idle_timeout)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                client = connection.client = self.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):  # the client refused our certificate (or went away)
                with self._lock:
                    self.tls_failures += 1
                    self._open.discard(connection)
                client.close()
                return
        reader = client.makefile("rb", buffering=256 * 1024)
        reset = False
        try:
            for _ in range(self.max_requests_per_connection):
                if connection.killed or self._stopped.is_set():
                    reset = True
                    return
                keep_open = self._one_request(connection, reader)
                if keep_open is None:  # the connection must be reset
                    reset = True
                    return
                if not keep_open:
                    return
        except (OSError, ValueError, ConnectionError):
            reset = connection.killed
        finally:
            if self.tls is not None and connection.requests == 0:
                # TLS 1.3: our side of the handshake completes before the client checks the certificate;
                # a client that refused it hangs up without a request.
                with self._lock:
                    self.tls_failures += 1
            with self._lock:
                self._open.discard(connection)
            self._close_upstream(connection)
            reader.close()
            if reset or connection.killed:
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            client.close()

    def _one_request(self, connection: _Connection, reader) -> bool | None:
        """Serve one request. True: keep the connection; False: close it; None: reset it."""
        head = _read_head(reader)
        if head is None:
            return False
        request_line, headers = head
        connection.requests += 1
        method, target, _version = request_line.split(" ", 2)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = int(headers.get("content-length") or 0)
        with self._lock:
            index = self.requests
            self.requests += 1
            if chunked:
                self.chunked_requests += 1
        request = Request(index, method, target, headers, length)
        if index >= self.max_requests:
            self._send_error(connection, request, Reply(503, "ProxyRequestLimit"), close=True)
            return False
        fault = self._decide(request)
        if headers.get("expect", "").lower() == "100-continue":
            connection.client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        reply = fault if isinstance(fault, Reply) else _REPLIES.get(fault)  # type: ignore[arg-type]
        if reply is not None:
            self._record(request, fault if isinstance(fault, str) else reply.kind, reply.status)
        elif fault in (RESET_UPLOAD, RESET, STALL):
            self._record(request, fault, None)  # now: an outage may cut the body short
        if fault == RESET_UPLOAD and not chunked:
            _read_exactly(reader, length // 2)
            return None
        body = _read_chunked(reader) if chunked else _read_exactly(reader, length)
        corrupt_upload = fault == CORRUPT and method != "GET" and len(body) > 0
        if corrupt_upload:
            body = _flipped(body)
        if len(body) <= self.record_body_limit:
            request.body = bytes(body)
            if request.method == "POST":
                with self._lock:
                    self.bodies.append(request)
        client_wants_close = headers.get("connection", "").lower() == "close"
        if reply is not None:
            self._send_error(connection, request, reply, close=client_wants_close)
            return not client_wants_close
        if fault == RESET:
            return None
        if fault == STALL:
            self._stall(connection)
            return False
        status, reason, response_headers, response_body = self._forward(connection, request, headers, body)
        if connection.killed:
            return None  # the server went down while it worked on this request: no answer
        if fault == LOST:
            self._record(request, fault, status)
            return None
        has_body = response_body is not None and len(response_body) >= 2
        if fault in (RESET_DOWNLOAD, TRUNCATE) and has_body:
            self._record(request, fault, status)
            half = len(response_body) // 2
            self._send_response(connection, status, reason, response_headers, response_body, request, limit=half)
            if fault == RESET_DOWNLOAD:
                return None
            connection.client.shutdown(socket.SHUT_WR)  # a clean close, the body short of its length
            return False
        corrupt_download = fault == CORRUPT and method == "GET" and has_body
        if corrupt_download:
            response_body = _flipped(response_body)
        self._record(request, fault if corrupt_upload or corrupt_download else None, status)
        self._send_response(connection, status, reason, response_headers, response_body, request)
        return not client_wants_close and not connection.killed

    def _decide(self, request: Request) -> str | Reply | None:
        for rule in list(self.rules):
            decided = rule(request)
            if decided is not None:
                return decided
        return self.schedule.decide(request)

    def _record(self, request: Request, fault: str | None, status: int | None) -> None:
        with self._lock:
            self.log.append(
                Entry(
                    request.index,
                    request.method,
                    request.path,
                    request.query,
                    request.operation,
                    fault,
                    status,
                    dict(request.headers),
                )
            )
            if fault is not None:
                self.faults[fault] += 1

    def _stall(self, connection: _Connection) -> None:
        """Say nothing until the client hangs up (its read timeout) or stall_seconds pass."""
        client = connection.client
        deadline = time.monotonic() + self.stall_seconds
        while time.monotonic() < deadline and not connection.killed and not self._stopped.is_set():
            client.settimeout(0.05)
            try:
                if client.recv(1, socket.MSG_PEEK) == b"":
                    return  # the client gave up and closed
            except TimeoutError:
                continue
            except OSError:
                return

    def _send_error(self, connection: _Connection, request: Request, reply: Reply, *, close: bool) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{reply.code}</Code><Message>injected by the fault proxy</Message>"
            f"<Resource>{request.path}</Resource><RequestId>faultproxy-{request.index}</RequestId></Error>"
        ).encode()
        if request.method == "HEAD":
            body = b""
        head = [
            f"HTTP/1.1 {reply.status} {reply.code}",
            "Content-Type: application/xml",
            f"Content-Length: {len(body)}",
            f"x-amz-request-id: faultproxy-{request.index}",
        ]
        if close:
            head.append("Connection: close")
        connection.client.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _forward(self, connection: _Connection, request: Request, headers: dict[str, str], body: bytes):
        lines = [f"{request.method} {request.target} HTTP/1.1"]
        for name, value in headers.items():
            if name in ("expect", "transfer-encoding", "content-length", "connection", "keep-alive"):
                continue
            lines.append(f"{name}: {value}")
        if body or request.method in ("PUT", "POST"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for attempt in range(2):  # a pooled upstream connection the server closed: reconnect once
            fresh = connection.upstream is None
            if fresh:
                self._connect_upstream(connection)
            try:
                connection.upstream.sendall(head)
                if body:
                    connection.upstream.sendall(body)
                response = _read_response(connection.upstream_reader, request.method)
            except (OSError, EOFError):
                self._close_upstream(connection)
                if fresh or attempt or connection.killed:
                    raise ConnectionError("upstream failed") from None
                continue
            status, reason, response_headers, response_body, upstream_closes = response
            if upstream_closes:
                self._close_upstream(connection)
            return status, reason, response_headers, response_body
        raise ConnectionError("upstream failed")

    def _connect_upstream(self, connection: _Connection) -> None:
        sock = socket.create_connection(self.upstream, timeout=self.upstream_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.upstream = sock
        connection.upstream_reader = sock.makefile("rb", buffering=256 * 1024)

    @staticmethod
    def _close_upstream(connection: _Connection) -> None:
        if connection.upstream_reader is not None:
            connection.upstream_reader.close()
        if connection.upstream is not None:
            connection.upstream.close()
        connection.upstream = connection.upstream_reader = None

    @staticmethod
    def _send_response(connection, status, reason, headers, body, request: Request, limit: int | None = None):
        lines = [f"HTTP/1.1 {status} {reason}"]
        passthrough = body is None  # HEAD, 204, 304: the server's Content-Length describes no body here
        for name, value in headers:
            lowered = name.lower()
            if lowered in ("transfer-encoding", "connection", "keep-alive"):
                continue
            if lowered == "content-length" and not passthrough:
                continue
            lines.append(f"{name}: {value}")
        if not passthrough:
            lines.append(f"Content-Length: {len(body)}")
        connection.client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body:
            connection.client.sendall(memoryview(body)[: len(body) if limit is None else limit])


def _read_head(reader) -> tuple[str, dict[str, str]] | None:
    line = reader.readline(_MAX_HEAD)
    if not line:
        return None
    while line in (b"\r\n", b"\n"):  # tolerate stray blank lines between requests
        line = reader.readline(_MAX_HEAD)
        if not line:
            return None
    request_line = line.decode("latin-1").rstrip("\r\n")
    headers: dict[str, str] = {}
    total = len(line)
    for _ in range(1000):
        line = reader.readline(_MAX_HEAD)
        total += len(line)
        if not line:
            raise ConnectionError("connection closed inside a request head")
        if total > _MAX_HEAD:
            raise ValueError("request head too large")
        if line in (b"\r\n", b"\n"):
            return request_line, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise ValueError("too many header lines")


def _read_exactly(reader, n: int) -> bytes:
    data = reader.read(n) if n else b""
    if len(data) != n:
        raise ConnectionError(f"connection closed after {len(data)} of {n} body bytes")
    return data


def _read_chunked(reader) -> bytes:
    parts = []
    for _ in range(1_000_000):
        size_line = reader.readline(1024)
        if not size_line:
            raise ConnectionError("connection closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            for _ in range(1000):  # trailers, up to the blank line
                if reader.readline(_MAX_HEAD) in (b"\r\n", b"\n", b""):
                    return b"".join(parts)
            raise ValueError("too many trailer lines")
        parts.append(_read_exactly(reader, size))
        reader.readline(16)  # the CRLF after each chunk
    raise ValueError("too many chunks")


def _read_response(reader, method: str):
    """(status, reason, headers, body or None, upstream closes) of one upstream response."""
    for _ in range(10):  # skip interim 1xx answers
        line = reader.readline(_MAX_HEAD)
        if not line:
            raise EOFError("upstream closed before answering")
        _version, status_text, *rest = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        status = int(status_text)
        headers: list[tuple[str, str]] = []
        for _ in range(1000):
            header = reader.readline(_MAX_HEAD)
            if not header:
                raise EOFError("upstream closed inside a response head")
            if header in (b"\r\n", b"\n"):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        if 100 <= status < 200:
            continue
        lookup = {name.lower(): value for name, value in headers}
        closes = lookup.get("connection", "").lower() == "close"
        if method == "HEAD" or status in (204, 304):
            return status, rest[0] if rest else "", headers, None, closes
        if "chunked" in lookup.get("transfer-encoding", "").lower():
            body = _read_chunked(reader)
        elif "content-length" in lookup:
            body = _read_exactly(reader, int(lookup["content-length"]))
        else:
            body, closes = reader.read(), True
        return status, rest[0] if rest else "", headers, body, closes
    raise ValueError("too many interim responses")


def _flipped(body: bytes) -> bytes:
    changed = bytearray(body)
    changed[len(changed) // 2] ^= 0xFF
    return bytes(changed)
