"""What the MinIO SDK 7.2 has no public call for: the one module that touches its internals.

- Conditional PUTs (``If-None-Match``, ``If-Match``) and multipart uploads
  (create, upload a part, complete with ``If-None-Match``, abort, list): the
  public ``put_object`` sends neither conditions nor single parts, so these are
  requests made by the SDK's own ``Minio._execute``, which signs and sends
  them like every other request of the client.
- ``KnownDigestMinio``: a body's SHA-256, computed while the model was
  written, handed to the SDK so it does not hash the body again, and the
  expected bucket owner sent with every request (``Minio._build_headers``).
- ``drop_connections``: the connection pool of a client passed in (``Minio._http``);
  ``speaks_https``: whether a client speaks TLS (``Minio._base_url``);
  ``credentials``: what a client signs with (``Minio._provider``), for presigned URLs;
  ``lifecycle``/``set_lifecycle``: a bucket's lifecycle rules as the server writes them.
- ``response_status``: the HTTP status of an ``InvalidResponseError`` (``_code``).

The SDK's version is checked on import: outside the versions these were
tested with, importing the MinIO adapter fails with the command that installs
one of them, instead of failing later in the middle of a write.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
import xml.etree.ElementTree as ET
from datetime import datetime

import minio
from minio import Minio
from minio.error import InvalidResponseError, S3Error

TESTED = ((7, 2, 0), (7, 2, 20))
CHECKSUM_SHA256 = "x-amz-checksum-sha256"


def _check_sdk() -> None:
    low, high = TESTED
    tested = f"minio>={'.'.join(map(str, low))},<={'.'.join(map(str, high))}"
    found = tuple(int(part) for part in re.findall(r"\d+", minio.__version__)[:3])
    execute = inspect.signature(Minio._execute).parameters
    build = inspect.signature(Minio._build_headers).parameters
    if not (
        low <= found <= high
        and {"method", "bucket_name", "object_name", "body", "headers", "query_params"} <= set(execute)
        and list(build)[:5] == ["self", "host", "headers", "body", "creds"]
        and all(hasattr(Minio("localhost:9000", secure=False), name) for name in ("_http", "_base_url", "_provider"))
    ):
        raise ImportError(
            f"the MinIO adapter makes requests minio {minio.__version__} may not make the same way "
            f"(tested with {tested}): pip install '{tested}'"
        )


_check_sdk()


class KnownDigestMinio(Minio):
    """A Minio client that does not hash a body whose SHA-256 it is given.

    The SDK hashes every body it sends: a SHA-256 to sign it over HTTP, an
    MD5 over HTTPS. The MinIO file hands over the model's SHA-256 in the
    standard ``x-amz-checksum-sha256`` header. Over HTTP it becomes the signed
    payload hash instead (the server checks it as it checks any signed body);
    over HTTPS the header stays and the server checks the body by it, in place
    of the MD5. Any other request is built as the SDK always builds it.
    """

    expected_bucket_owner: str | None = None
    """Sent with every request as ``x-amz-expected-bucket-owner`` when set."""

    def _build_headers(self, host, headers=None, body=None, creds=None):
        if self.expected_bucket_owner:
            headers = {**(headers or {}), "x-amz-expected-bucket-owner": self.expected_bucket_owner}
        known = headers.get(CHECKSUM_SHA256) if headers else None
        if known is None or not body or not creds:
            return super()._build_headers(host, headers, body, creds)
        headers, date = super()._build_headers(host, headers, None, creds)  # None: nothing to hash
        headers["Content-Length"] = str(len(body))
        if not self._base_url.is_https:
            headers["x-amz-content-sha256"] = base64.b64decode(headers.pop(CHECKSUM_SHA256)).hex()
        return headers, date


def put(client: Minio, bucket: str, key: str, body: bytes, headers: dict[str, str]) -> str:
    """One PUT with headers of our choosing (conditions); the ETag."""
    response = client._execute("PUT", bucket, key, body=body, headers=headers)
    return response.headers.get("ETag", "")


def create_upload(client: Minio, bucket: str, key: str, headers: dict[str, str]) -> str:
    headers = {"Content-Type": "application/octet-stream", **headers}
    response = client._execute("POST", bucket, key, headers=headers, query_params={"uploads": ""})
    return ET.fromstring(response.data).findtext("{*}UploadId") or ""


def upload_part(
    client: Minio, bucket: str, key: str, upload_id: str, number: int, body: bytes, headers: dict[str, str]
) -> str:
    query = {"partNumber": str(number), "uploadId": upload_id}
    # A copy: the SDK writes its own headers (Content-Length, the date) into the dict it is given.
    response = client._execute("PUT", bucket, key, body=body, headers=dict(headers), query_params=query)
    return response.headers.get("ETag", "")


def complete_upload(client: Minio, bucket: str, key: str, upload_id: str, body: bytes, headers: dict) -> str:
    """CompleteMultipartUpload, with the conditional headers the SDK's own call cannot send; the ETag."""
    headers = {"Content-Type": "application/xml", "Content-MD5": _md5_base64(body), **headers}
    response = client._execute("POST", bucket, key, body=body, headers=headers, query_params={"uploadId": upload_id})
    return ET.fromstring(response.data).findtext("{*}ETag") or ""


def abort_upload(client: Minio, bucket: str, key: str, upload_id: str) -> None:
    client._execute("DELETE", bucket, key, query_params={"uploadId": upload_id})


def list_uploads(client: Minio, bucket: str, prefix: str) -> list[tuple[str, str, datetime | None]]:
    """(key, upload id, when it started) of every upload under way whose key starts with ``prefix``."""
    found: list[tuple[str, str, datetime | None]] = []
    markers: dict[str, str] = {}
    while True:
        query = {"uploads": "", "prefix": prefix, "max-uploads": "1000", **markers}
        page = ET.fromstring(client._execute("GET", bucket, query_params=query).data)
        found += [
            (
                upload.findtext("{*}Key") or "",
                upload.findtext("{*}UploadId") or "",
                _time(upload.findtext("{*}Initiated")),
            )
            for upload in page.findall("{*}Upload")
        ]
        next_key = page.findtext("{*}NextKeyMarker")
        if (page.findtext("{*}IsTruncated") or "").lower() != "true" or not next_key:
            return found
        markers = {"key-marker": next_key, "upload-id-marker": page.findtext("{*}NextUploadIdMarker") or ""}


def list_parts(client: Minio, bucket: str, key: str, upload_id: str) -> list[tuple[int, str, int]]:
    """(number, ETag, size) of every part of an upload."""
    found: list[tuple[int, str, int]] = []
    marker = "0"
    while True:
        query = {"uploadId": upload_id, "max-parts": "1000", "part-number-marker": marker}
        page = ET.fromstring(client._execute("GET", bucket, key, query_params=query).data)
        found += [
            (int(p.findtext("{*}PartNumber") or 0), p.findtext("{*}ETag") or "", int(p.findtext("{*}Size") or 0))
            for p in page.findall("{*}Part")
        ]
        marker = page.findtext("{*}NextPartNumberMarker") or ""
        if (page.findtext("{*}IsTruncated") or "").lower() != "true" or not marker:
            return found


def copy_part(client: Minio, bucket: str, key: str, upload_id: str, number: int, headers: dict[str, str]) -> str:
    """UploadPartCopy; ``headers`` name the source (``x-amz-copy-source``, ``x-amz-copy-source-range``)."""
    query = {"partNumber": str(number), "uploadId": upload_id}
    response = client._execute("PUT", bucket, key, headers=dict(headers), query_params=query)
    return ET.fromstring(response.data).findtext("{*}ETag") or ""


def credentials(client: Minio):
    """The credentials a client signs with (``Minio._provider``), to sign presigned URLs the same way."""
    return client._provider.retrieve()


def has_parts(client: Minio, bucket: str, key: str, upload_id: str) -> bool:
    response = client._execute("GET", bucket, key, query_params={"uploadId": upload_id, "max-parts": "1"})
    return ET.fromstring(response.data).find("{*}Part") is not None


def lifecycle(client: Minio, bucket: str) -> bytes | None:
    """The bucket's LifecycleConfiguration document as the server wrote it; None without one. (The SDK's own
    reader refuses the older form of rules Ceph RGW answers with.)"""
    try:
        return client._execute("GET", bucket, query_params={"lifecycle": ""}).data
    except S3Error as exc:
        if exc.code == "NoSuchLifecycleConfiguration":
            return None
        raise


def set_lifecycle(client: Minio, bucket: str, document: bytes) -> None:
    headers = {"Content-Type": "application/xml", "Content-MD5": _md5_base64(document)}
    client._execute("PUT", bucket, body=document, headers=headers, query_params={"lifecycle": ""})


def speaks_https(client: Minio) -> bool:
    return client._base_url.is_https


def drop_connections(client: Minio) -> None:
    client._http.clear()


def response_status(exc: InvalidResponseError) -> int | None:
    return getattr(exc, "_code", None)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _md5_base64(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
