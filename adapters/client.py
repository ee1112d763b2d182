"""The seam between the object-store core and an SDK: what an SDK file implements and raises.

An SDK file turns its SDK's calls into an ``ObjectClient`` (a dozen calls on
one bucket) and its multipart uploads into ``Upload`` handles, and its
exceptions, through ``classify``, into the errors below. Nothing SDK-specific
passes this seam.
"""

from __future__ import annotations

import base64
import functools
import io
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from storage.errors import (
    BucketNotFoundError,
    MetadataError,
    StorageError,
    StoragePermissionError,
)
from storage.options import hint
from storage.retry import TransientError

# -- what an SDK file raises --------------------------------------------------


class ObjectNotFound(StorageError):
    """No object (or upload) at that key; the core decides what it means."""


class PreconditionFailed(StorageError):
    """If-None-Match / If-Match did not hold."""


_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_TRANSIENT_CODES = _THROTTLED | {
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ConditionalRequestConflict",
    "OperationAborted",
    # A body damaged on the way no longer matches its signed digest; the same
    # bytes, sent again, arrive whole.
    "BadDigest",
    "XAmzContentSHA256Mismatch",
}
_DENIED_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
}


def checksum_sha256(sha256: str) -> str:
    """A hex SHA-256 in the form the ``x-amz-checksum-sha256`` header takes (base64)."""
    return base64.b64encode(bytes.fromhex(sha256)).decode("ascii")


def classify(status: int | None, code: str | None, message: str, *, bucket: str) -> StorageError:
    """Map an S3 error response to the library's typed errors (shared by both SDKs)."""
    code = code or ""
    detail = f"{code or status}: {message}" if message else (code or str(status))
    if code == "NoSuchBucket":
        return BucketNotFoundError(
            f"bucket {bucket!r} does not exist: create it (for example `aws s3 mb s3://{bucket}` or "
            f"`mc mb`), or set {hint('create_bucket', True)}"
        )
    if code in ("NoSuchKey", "NoSuchUpload", "NotFound") or status == 404:
        return ObjectNotFound(detail)
    if code in ("PreconditionFailed",) or status == 412:
        return PreconditionFailed(detail)
    if code in _TRANSIENT_CODES or status in (429, 500, 502, 503, 504):
        return TransientError(f"transient S3 error {detail}")
    if code in _DENIED_CODES or status in (401, 403):
        return StoragePermissionError(
            f"access to bucket {bucket!r} denied ({code or status}): check the credentials and the policy"
        )
    if code in ("InvalidTag", "MalformedXML") and "tag" in message.lower():
        return MetadataError(f"the store refused the metadata tags: {detail}")
    if status == 400 and "encrypt" in message.lower():
        return StorageError(f"the object is encrypted with a customer key (SSE-C): {ENCRYPTED_HINT}")
    if code == "NotImplemented" or status == 501:
        return NotSupported(f"the store does not do this: {detail}")
    if status == 400 and code in ("", "400", "BadRequest"):
        return BadRequest(f"the store refused the request: {detail}")
    return StorageError(f"the store refused the request: {detail}")


ENCRYPTED_HINT = (
    "give the store that key (sse_customer_key= in Python; MODELSTORAGE_SSE_CUSTOMER_KEY in the environment)"
)


class NotSupported(StorageError):
    """The server does not implement the request (501 NotImplemented); the core may do it another way."""


class BadRequest(StorageError):
    """A 400 without an S3 error code: what a TLS server answers to plain HTTP (see ``_reraise``)."""


# -- what an SDK file implements ----------------------------------------------


WRITE_TOKEN = "modelstorage-write"
"""The user-metadata key (``x-amz-meta-modelstorage-write``) that carries the token of the write that made
an object, so a retry whose earlier attempt landed unseen recognises the object as its own."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    """The whole object's size (also for a ranged GET)."""
    etag: str
    last_modified: datetime
    write_token: str | None = None
    """The ``WRITE_TOKEN`` the object was written with; None for objects other tools wrote."""


@dataclass
class ObjectResponse:
    info: ObjectInfo
    body: BinaryIO
    """Readable with ``readinto``; errors while reading raise TransientError."""


@dataclass(frozen=True)
class PutMode:
    """What a PUT (or a multipart upload's completion) may find at its key, as Rust's object_store has it.

    ``OVERWRITE``: anything; ``CREATE``: nothing (``If-None-Match: *``);
    ``PutMode.update(etag)``: the object with that ETag (``If-Match``).
    Otherwise the server refuses it and the SDK file raises PreconditionFailed.
    """

    kind: str
    etag: str | None = None

    @classmethod
    def update(cls, etag: str) -> PutMode:
        return cls("update", etag)

    def headers(self) -> dict[str, str]:
        """The conditional header this mode sends."""
        if self.kind == "create":
            return {"If-None-Match": "*"}
        if self.kind == "update":
            return {"If-Match": self.etag or ""}
        return {}


OVERWRITE = PutMode("overwrite")
CREATE = PutMode("create")


class Upload(Protocol):
    """One multipart upload under way; an SDK file returns it from ``start_upload`` and ``uploads``."""

    key: str
    upload_id: str

    def put_part(self, number: int, body: bytes) -> str:
        """Upload part ``number`` (from 1); returns its ETag."""

    def has_parts(self) -> bool:
        """Whether any part of this upload has arrived."""

    def parts(self) -> list[tuple[int, str, int]]:
        """(number, ETag, size) of every part that has arrived, in order."""

    def copy_part(self, number: int, source_key: str, start: int, end: int) -> str:
        """Part ``number`` copied by the server from bytes ``start``-``end`` (inclusive) of ``source_key``."""

    def presign_part(self, number: int, size: int, expires: int) -> str:
        """A URL a client PUTs part ``number`` to, with exactly ``size`` bytes (Content-Length is signed)."""

    def complete(self, parts: Sequence[tuple[int, str]], mode: PutMode) -> str:
        """Join the parts (number, ETag) into the object at ``key``, as ``mode`` allows; returns its ETag."""

    def abort(self) -> None: ...


@dataclass
class UploadHandle:
    """What an SDK file's ``Upload`` holds: its client, key and upload id."""

    client: ObjectClient
    key: str
    upload_id: str
    initiated: datetime | None = None
    """When the server started it (its clock), where a listing says so."""

    @property
    def bucket(self) -> str:
        return self.client.bucket


class ObjectClient(Protocol):
    """The calls an SDK file translates, on one bucket. Each raises only library errors."""

    bucket: str

    def bucket_exists(self) -> bool: ...
    def create_bucket(self) -> None: ...
    def head(self, key: str) -> ObjectInfo: ...
    def get(
        self, key: str, start: int | None = None, end: int | None = None, if_match: str | None = None
    ) -> ObjectResponse: ...
    def put(
        self,
        key: str,
        body: bytes,
        *,
        sha256: str,
        mode: PutMode = OVERWRITE,
        tags: dict[str, str] | None = None,
        token: str | None = None,
    ) -> str:
        """One PUT of ``body``, whose SHA-256 (hex) is ``sha256``, as ``mode`` allows; returns the ETag.

        ``token`` goes with the object as its ``WRITE_TOKEN``.
        """

    def start_upload(self, key: str, token: str | None = None) -> Upload: ...
    def uploads(self, prefix: str) -> list[Upload]:
        """The multipart uploads under way whose keys start with ``prefix``."""

    def get_tags(self, key: str) -> dict[str, str]: ...
    def put_tags(self, key: str, tags: dict[str, str]) -> None: ...
    def delete_many(self, keys: Sequence[str]) -> None: ...
    def list_page(self, prefix: str, start_after: str | None) -> tuple[list[str], bool]:
        """Up to 1000 keys after ``start_after`` in order, and whether more follow."""

    def presign_get(self, key: str, expires: int) -> str:
        """A URL anyone may GET ``key`` from for ``expires`` seconds (with ``ServerSide.read_headers``)."""

    def presign_put(self, key: str, expires: int, headers: dict[str, str]) -> str:
        """A URL a client PUTs ``key`` to, with exactly ``headers``, which are signed: ``content-length``,
        ``x-amz-checksum-sha256`` and the ``ServerSide`` write headers."""

    def replace_lifecycle_rules(self, id_prefix: str, rules: list[dict]) -> None:
        """The bucket's lifecycle rules whose ID starts with ``id_prefix`` replaced by ``rules`` (in the JSON
        form of S3's API: ID, Status, Filter, Expiration, AbortIncompleteMultipartUpload); others stay."""

    def abort_rules(self) -> list[tuple[str, int]]:
        """(prefix, days) of the bucket's enabled lifecycle rules that abort incomplete multipart uploads."""

    def close(self) -> None:
        """Drop the pooled connections (closing only this process's copies); the client stays usable."""


Translate = Callable[[Exception, str], "StorageError | None"]
"""An SDK file's one mapping: (its SDK's exception, bucket) -> the library's error, or None."""


class Unreachable(TransientError):
    """Nothing accepts connections at the endpoint (refused, or a name that does not resolve)."""

    advice = (
        "nothing answers at that address: check the endpoint's host and port and that the store is running, "
        "then try again"
    )


def _chain(exc: BaseException):
    """``exc`` and the exceptions SDKs wrap inside it (bounded: they nest a few levels deep)."""
    pending, seen = [exc], 0
    while pending and seen < 32:
        current = pending.pop()
        seen += 1
        yield current
        nested = (current.__cause__, current.__context__, getattr(current, "reason", None), *current.args)
        pending.extend(e for e in nested if isinstance(e, BaseException))


def connection_failure(exc: BaseException) -> TransientError:
    """A failed connection as the retry layer takes it, saying why in the words of the operating system."""
    errors = [e for e in _chain(exc) if isinstance(e, OSError)]
    refused = any(isinstance(e, (ConnectionRefusedError, socket.gaierror)) for e in errors)
    reason = (
        next((e.strerror for e in errors if e.strerror), None) or str(exc).rpartition(": ")[2] or type(exc).__name__
    )
    return (Unreachable if refused else TransientError)(f"no connection to the store: {reason}")


class ProtocolHints(Protocol):
    """What an SDK file's client says to change when TLS and plain HTTP are mixed up."""

    def use_plain_http(self) -> str: ...
    def use_tls(self) -> str: ...
    def plain_http_address(self) -> tuple[str, int] | None:
        """(host, port) the client speaks plain HTTP to; None over TLS."""


_NOT_TLS = ("wrong_version_number", "wrong version number", "record layer failure", "unknown protocol")
_NOT_HTTP = ("http request to an https server", "plain http request was sent to https port")


def tls_failure(exc: BaseException, client: ProtocolHints | None = None) -> StorageError | None:
    """TLS that cannot work, however the SDK wrapped the failure: never worth a retry.

    A certificate the client refused; TLS spoken to a plain-HTTP server; plain
    HTTP spoken to a TLS server. Each says what to change.
    """
    for current in _chain(exc):
        text = str(current).lower()
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = current.verify_message or current.reason or "certificate verify failed"
            return StorageError(
                f"TLS certificate verification failed ({reason}): trust the CA that signed the server's "
                f"certificate ({hint('verify', '/path/to/ca.pem')}), or fix the certificate"
            )
        if client is not None and isinstance(current, ssl.SSLError) and any(sign in text for sign in _NOT_TLS):
            return StorageError(f"the server speaks plain HTTP, not TLS: use {client.use_plain_http()}")
        if client is not None and any(sign in text for sign in _NOT_HTTP):
            return StorageError(f"the server speaks TLS (HTTPS), not plain HTTP: use {client.use_tls()}")
    return None


def _reraise(exc: Exception, translate: Translate, owner):
    if isinstance(exc, StorageError):
        raise exc
    client = getattr(owner, "client", owner)  # an Upload's or a ResponseBody's client, or the client itself
    error = tls_failure(exc, client) or translate(exc, owner.bucket)
    if error is None:
        raise exc
    address = client.plain_http_address() if isinstance(error, BadRequest) else None
    if address is not None and _refuses_plain_http(*address):
        error = StorageError(f"the server speaks TLS (HTTPS), not plain HTTP: use {client.use_tls()}")
    raise error from None


def _refuses_plain_http(host: str, port: int) -> bool:
    """Whether the server answers plain HTTP as a TLS server does: asked once, after a 400 without an S3 error
    (the answer to a HEAD has no body to tell)."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = sock.recv(4096).decode("latin-1").lower()
    except OSError:
        return False
    return any(sign in answer for sign in _NOT_HTTP)


def translating(translate: Translate):
    """Decorate an SDK file's client methods so only the library's errors come out."""

    def decorate(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - _reraise re-raises whatever it does not translate
                _reraise(exc, translate, self)

        return call

    return decorate


class ResponseBody(io.RawIOBase):
    """An SDK's response stream: errors while reading translated, the connection released on close."""

    def __init__(self, stream, client: ObjectClient, translate: Translate, release: Callable[[], None]) -> None:
        super().__init__()
        self._stream = stream
        self.client = client
        self.bucket = client.bucket
        self._translate = translate
        self._release = release

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if hasattr(self._stream, "readinto"):
            return self._translated(self._stream.readinto, buffer)
        data = self._translated(self._stream.read, len(buffer))  # botocore 1.36's body has no readinto
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        return self._translated(self._stream.read, size)  # up to ``size`` bytes, not one socket read

    def readall(self) -> bytes:
        # RawIOBase's own readall loops readinto 8 KiB at a time; the SDK stream
        # reads the whole body in one call (and checks its length).
        return self._translated(self._stream.read)

    def _translated(self, read, *args):
        try:
            return read(*args)
        except Exception as exc:  # noqa: BLE001 - _reraise re-raises whatever it does not translate
            _reraise(exc, self._translate, self)

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()
