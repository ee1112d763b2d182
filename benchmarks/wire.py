"""What goes over the wire: requests by S3 operation, and the bytes they carry, counted at urllib3.

Both SDKs send every request through urllib3's ``HTTPConnectionPool.urlopen``
(botocore directly, the MinIO SDK through its PoolManager), so counting calls
there counts what goes on the wire, including anything an SDK adds on its own.
The SDKs' retries are off in the adapters, so no request is counted twice.

Bytes are the Content-Length of each request body and of each response body
(a HEAD's Content-Length describes an object it does not send, so it is not
counted). GETs of a model's own object (``{prefix}models/{id}``, not its
sidecar) are counted apart: they are what a read-through cache saves.

Standard library at import time: the child processes of ``storeprobe`` import
this module in an interpreter that may have no urllib3 for a store that makes
no requests.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

MODEL_KEYS = "/models/"
"""In a request's path: the object is a model's bytes (``{prefix}models/{id}``)."""


def operation_name(method: str, url: str) -> str:
    """The S3 operation a request is, from its method and query string."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    object_level = parts.path.strip("/").count("/") >= 1  # /bucket/key vs /bucket
    if method == "GET":
        if "tagging" in query:
            return "GetObjectTagging"
        return "GetObject" if object_level else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if object_level else "HeadBucket"
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        return "PutObjectTagging" if "tagging" in query else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "POST"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return method


@dataclass
class Traffic:
    """Requests and bytes seen while a ``counting`` block ran."""

    requests: Counter = field(default_factory=Counter)
    """By S3 operation."""
    bytes_up: int = 0
    bytes_down: int = 0
    model_gets: int = 0
    """GetObject requests of a model's bytes (ranged ones each count)."""
    model_bytes_down: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def as_dict(self) -> dict:
        return {
            "requests": self.total,
            "by_operation": dict(sorted(self.requests.items())),
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "model_gets": self.model_gets,
            "model_bytes_down": self.model_bytes_down,
        }


def _content_length(headers) -> int:
    """A request's or response's Content-Length, whatever mapping the SDK keeps its headers in."""
    if not headers:
        return 0
    for name, value in headers.items():
        if name.lower() == "content-length":
            try:
                return int(value)
            except (TypeError, ValueError):
                return 0
    return 0


def _body_length(body) -> int:
    try:
        return len(body) if body is not None else 0
    except TypeError:  # a stream without a length; its Content-Length header said it already
        return 0


@contextlib.contextmanager
def counting() -> Iterator[Traffic]:
    """Count every urllib3 request made while the block runs, and the bytes it moved."""
    from urllib3.connectionpool import HTTPConnectionPool

    traffic = Traffic()
    lock = threading.Lock()
    original = HTTPConnectionPool.urlopen

    def urlopen(self, method, url, *args, **kwargs):
        body = args[0] if args else kwargs.get("body")
        headers = args[1] if len(args) > 1 else kwargs.get("headers")
        sent = _content_length(headers) or _body_length(body)
        response = original(self, method, url, *args, **kwargs)
        received = 0 if method == "HEAD" or response.status in (204, 304) else _content_length(response.headers)
        operation = operation_name(method, url)
        with lock:
            traffic.requests[operation] += 1
            traffic.bytes_up += sent
            traffic.bytes_down += received
            if operation == "GetObject" and MODEL_KEYS in urlsplit(url).path:
                traffic.model_gets += 1
                traffic.model_bytes_down += received
        return response

    HTTPConnectionPool.urlopen = urlopen
    try:
        yield traffic
    finally:
        HTTPConnectionPool.urlopen = original


@contextlib.contextmanager
def not_counting() -> Iterator[Traffic]:
    """For a store that makes no requests (local files): nothing to count, and no urllib3 to patch."""
    yield Traffic()
