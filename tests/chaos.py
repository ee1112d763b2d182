"""Shared helpers of the fault, crash, concurrency and security tests.

- ``blob`` / ``whole_version``: model bytes that say which id and version they
  are, so a reader can prove it saw one whole version and not a mix;
- ``adapter_store``: an S3ModelStorage or MinioModelStorage on any endpoint
  (a SeaweedFS, or the fault proxy in front of it) with a given retry policy;
- ``raw_keys`` / ``raw_uploads``: what the server holds, asked directly with
  boto3, never through the proxy or the adapter under test.
"""

from __future__ import annotations

import hashlib
import re

from adapters import MinioModelStorage, S3ModelStorage
from adapters.objectstore import ObjectStoreModelStorage
from adapters.options import MIN_PART_SIZE, ObjectStoreOptions
from storage.retry import RetryPolicy

MiB = 1024 * 1024
PART_SIZE = MIN_PART_SIZE  # small parts, so a few MiB already take the multipart path


def tuning(metadata: str) -> dict:
    """Test stores' transfer settings: small parts; sidecar stores read models above one part by
    ranges, tag stores in one GET, so both read paths run on every server."""
    ranged = PART_SIZE if metadata == "sidecar" else None
    return {"part_size": PART_SIZE, "max_concurrency": 4, "ranged_get_threshold": ranged}


def registry_options(metadata: str) -> ObjectStoreOptions:
    """The options of the registry's object stores: ``metadata`` and ``tuning``."""
    return ObjectStoreOptions.parse({"metadata": metadata, **tuning(metadata)})


FAST_RETRY = {
    "retry": RetryPolicy(max_attempts=12, deadline=15.0, initial_backoff=0.005, max_backoff=0.05),
    "connect_timeout": 1.0,
    "read_timeout": 1.0,
}
"""Retries and timeouts of the fault tests: many cheap attempts, a stall costs one second."""

_HEADER = re.compile(rb"<([A-Za-z0-9._-]+)\|(\d+)\|(\d+)>")


def blob(model_id: str, version: int, size: int) -> bytes:
    """``size`` bytes (at least the header) that name ``model_id`` and ``version``; the rest derives from them."""
    header = b"<%s|%d|%d>" % (model_id.encode(), version, size)
    if size <= len(header):
        return header
    seed = hashlib.sha256(header).digest()
    body = (seed * ((size - len(header)) // len(seed) + 1))[: size - len(header)]
    return header + body


def whole_version(data: bytes) -> tuple[str, int]:
    """(id, version) of bytes made by ``blob``; AssertionError if they are not one whole version."""
    found = _HEADER.match(data)
    assert found is not None, f"no version header in {data[:40]!r}"
    model_id, version, size = found.group(1).decode(), int(found.group(2)), int(found.group(3))
    assert len(data) == max(size, len(found.group(0))), f"{model_id} v{version}: {len(data)} bytes, not {size}"
    assert data == blob(model_id, version, size), f"{model_id} v{version}: bytes of more than one version"
    return model_id, version


def adapter_store(
    adapter: str,
    endpoint,
    bucket: str,
    prefix: str,
    *,
    netloc: str | None = None,
    metadata: str = "sidecar",
    access_key: str | None = None,
    secret_key: str | None = None,
    **options,
) -> ObjectStoreModelStorage:
    """A store of ``adapter`` ("s3" or "minio") with ``endpoint``'s credentials, reached at ``netloc``."""
    netloc = netloc or endpoint.netloc
    settings = dict(
        access_key=access_key or endpoint.access_key,
        secret_key=secret_key or endpoint.secret_key,
        region=endpoint.region,
        metadata=metadata,
        **FAST_RETRY,
        **tuning(metadata),
    )
    settings.update(options)
    if adapter == "s3":
        return S3ModelStorage(bucket, prefix, endpoint_url=f"http://{netloc}", **settings)
    if adapter == "minio":
        return MinioModelStorage(netloc, bucket, prefix, secure=False, **settings)
    raise ValueError(adapter)


def raw_keys(raw, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def raw_uploads(raw, bucket: str, prefix: str) -> list[tuple[str, str]]:
    uploads = raw.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    return [(u["Key"], u["UploadId"]) for u in uploads]


def raw_read(raw, bucket: str, key: str) -> bytes:
    return raw.get_object(Bucket=bucket, Key=key)["Body"].read()


def raw_clear(raw, bucket: str, prefix: str) -> None:
    keys = sorted(raw_keys(raw, bucket, prefix))
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        raw.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
    for key, upload_id in raw_uploads(raw, bucket, prefix):
        raw.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def record_put_payloads(proxy) -> list[tuple[str, str, str | None]]:
    """Have a FaultProxy record each PUT it sees, as it arrives.

    Entries: (operation, its x-amz-content-sha256, the x-amz-checksum-* header it carries or None).
    """
    seen: list[tuple[str, str, str | None]] = []

    def record(request):
        if request.method == "PUT":
            headers = request.headers
            checksum = next((name.lower() for name in headers if name.lower().startswith("x-amz-checksum-")), None)
            seen.append((request.operation, headers.get("x-amz-content-sha256"), checksum))

    proxy.rules.append(record)
    return seen
