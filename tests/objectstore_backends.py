"""The object-store entries of the backend registry: every adapter, every S3 server, both metadata modes.

Tiers (docs/architecture.md, "Tests"):
  2. S3 under moto's in-process ``mock_aws``;
  3. MinIO and S3 over HTTP against moto's ``ThreadedMotoServer``;
  4. MinIO and S3 against real S3 servers on loopback: SeaweedFS, Ceph RGW and LocalStack
     (required, never skipped: a missing server fails the run with the command that installs it);
  5. any endpoint named by ``MODELSTORAGE_TEST_S3_ENDPOINT`` / ``MODELSTORAGE_TEST_MINIO_ENDPOINT``
     (opt-in: registered only when the variable is set).

Each store gets its own namespace ``{root}/tenant-a/`` in one bucket per server, so
``footprint`` and ``plant_outside`` can look just around it, and the factory
removes everything under ``{root}/`` (and any upload left there) when the test ends.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import boto3
import pytest
from backends import BackendSpec, register
from cached_backends import MiB, cached
from chaos import registry_options

from adapters import MinioModelStorage, S3ModelStorage
from adapters.objectstore import ObjectStoreModelStorage
from adapters.testing.motoserver import make_moto_conditional_writes_atomic
from adapters.testing.servers import S3Endpoint, unique_bucket_name
from storage import ModelStorage


@dataclass
class _Place:
    """How a test reaches a store's bucket behind its back, and how to open it again."""

    raw: object  # a boto3 S3 client with full access to the bucket
    bucket: str
    root: str
    reopen: Callable[..., ModelStorage]
    """Another instance on the same namespace; keyword arguments override its options."""


# Every open store, reopened instances included, to the place it lives in.
_PLACES: weakref.WeakKeyDictionary[ModelStorage, _Place] = weakref.WeakKeyDictionary()
_BUCKETS: dict[str, str] = {}


def _place(store: ModelStorage) -> _Place:
    return _PLACES[store]


_RAW_CLIENTS: dict[str, object] = {}


def _raw_client(endpoint: S3Endpoint):
    if endpoint.endpoint_url not in _RAW_CLIENTS:
        _RAW_CLIENTS[endpoint.endpoint_url] = endpoint.boto3_client()
    return _RAW_CLIENTS[endpoint.endpoint_url]


def _session_bucket(name: str, raw) -> str:
    bucket = _BUCKETS.setdefault(name, unique_bucket_name("models"))
    try:
        raw.head_bucket(Bucket=bucket)
    except raw.exceptions.ClientError:
        # Also after a mock_aws test: leaving mock_aws resets the state that
        # the in-process ThreadedMotoServer shares with it.
        raw.create_bucket(Bucket=bucket)
    return bucket


def _remove_everything_under(raw, bucket: str, root: str) -> None:
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            raw.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for upload in raw.list_multipart_uploads(Bucket=bucket, Prefix=root).get("Uploads", []):
        raw.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


@contextlib.contextmanager
def _namespace(raw, bucket: str, build: Callable[[str], ObjectStoreModelStorage]) -> Iterator[ModelStorage]:
    root = f"t-{uuid.uuid4().hex[:12]}/"
    prefix = root + "tenant-a/"

    def open_here(**overrides) -> ObjectStoreModelStorage:
        opened = build(prefix, **overrides)
        _PLACES[opened] = place
        return opened

    place = _Place(raw, bucket, root, open_here)
    store = open_here()
    try:
        yield store
    finally:
        store.close()
        _remove_everything_under(raw, bucket, root)


def _footprint(store: ModelStorage) -> frozenset[str]:
    place = _place(store)
    keys = set()
    for page in place.raw.get_paginator("list_objects_v2").paginate(Bucket=place.bucket, Prefix=place.root):
        keys.update(item["Key"] for item in page.get("Contents", []))
    uploads = place.raw.list_multipart_uploads(Bucket=place.bucket, Prefix=place.root).get("Uploads", [])
    keys.update(f"upload:{u['Key']}" for u in uploads)
    return frozenset(keys)


def reopen(store: ModelStorage, **overrides) -> ModelStorage:
    """Another instance on ``store``'s namespace, with ``overrides`` of its options (``metadata="tags"``)."""
    return _place(store).reopen(**overrides)


def raw_uploads(store: ModelStorage) -> list[tuple[str, str]]:
    """The multipart uploads under way in ``store``'s namespace, as the server lists them to a raw client."""
    place = _place(store)
    uploads = place.raw.list_multipart_uploads(Bucket=place.bucket, Prefix=place.root).get("Uploads", [])
    return sorted((u["Key"], u["UploadId"]) for u in uploads)


def _plant_outside(store: ModelStorage) -> None:
    place = _place(store)
    for key in (
        f"{place.root}tenant-b/models/model",  # another tenant's prefix
        f"{place.root}models/model",  # the namespace above ours
        f"{place.root}tenant-a/other/notes.txt",  # ours, but neither models/ nor metadata/
        f"{place.root}tenant-a/models/sub/model",  # under models/, but not a model id
    ):
        place.raw.put_object(Bucket=place.bucket, Key=key, Body=b"not the store's")


def _tamper(store: ModelStorage, model_id: str) -> None:
    place = _place(store)
    assert isinstance(store, ObjectStoreModelStorage)
    key = store.keys.model_key(model_id)
    data = place.raw.get_object(Bucket=place.bucket, Key=key)["Body"].read()
    tags = place.raw.get_object_tagging(Bucket=place.bucket, Key=key)["TagSet"]
    tagging = urlencode({t["Key"]: t["Value"] for t in tags})
    # The recorded SHA-256 (sidecar or tag) is kept; only the bytes rot.
    place.raw.put_object(Bucket=place.bucket, Key=key, Body=b"tampered" + data[8:], Tagging=tagging)


def _s3_on(endpoint: S3Endpoint, bucket: str, metadata: str) -> Callable[[str], ObjectStoreModelStorage]:
    return lambda prefix, **overrides: S3ModelStorage(
        bucket,
        prefix,
        endpoint_url=endpoint.endpoint_url,
        region=endpoint.region,
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
        options=registry_options(metadata),
        **overrides,
    )


def _minio_on(endpoint: S3Endpoint, bucket: str, metadata: str) -> Callable[[str], ObjectStoreModelStorage]:
    return lambda prefix, **overrides: MinioModelStorage(
        endpoint.netloc,
        bucket,
        prefix,
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
        secure=endpoint.secure,
        region=endpoint.region,
        options=registry_options(metadata),
        **overrides,
    )


ADAPTERS = {"s3": _s3_on, "minio": _minio_on}


def _on_server(fixture: str, adapter: str, metadata: str):
    @contextlib.contextmanager
    def factory(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
        endpoint: S3Endpoint = request.getfixturevalue(fixture)
        raw = _raw_client(endpoint)
        # A server whose init hooks made a bucket (LocalStack's localstack/init) is tested in that bucket.
        bucket = endpoint.extra.get("bucket") or _session_bucket(fixture, raw)
        with _namespace(raw, bucket, ADAPTERS[adapter](endpoint, bucket, metadata)) as store:
            yield store

    return factory


@functools.cache
def _mock_raw_client():
    # moto hooks every client made after it is imported, so one serves every mock.
    return boto3.client("s3", region_name="us-east-1", aws_access_key_id="mock", aws_secret_access_key="mock")


def _under_mock_aws(metadata: str):
    @contextlib.contextmanager
    def factory(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
        from moto import mock_aws

        make_moto_conditional_writes_atomic()
        with mock_aws():
            raw = _mock_raw_client()
            bucket = unique_bucket_name("models")
            raw.create_bucket(Bucket=bucket)
            build = lambda prefix, **overrides: S3ModelStorage(  # noqa: E731
                bucket, prefix, region="us-east-1", options=registry_options(metadata), **overrides
            )
            with _namespace(raw, bucket, build) as store:
                yield store

    return factory


def _spec(name: str, factory, metadata: str, tier: str) -> BackendSpec:
    return BackendSpec(
        name,
        factory,
        reopen=lambda store: _place(store).reopen(),
        footprint=_footprint,
        plant_outside=_plant_outside,
        tamper=_tamper,
        nested_metadata=metadata == "sidecar",
        marks=(pytest.mark.objectstore, getattr(pytest.mark, tier)),
    )


for _mode in ("sidecar", "tags"):
    register(_spec(f"s3-mock_aws-{_mode}", _under_mock_aws(_mode), _mode, "tier2"))
    for _adapter in ("minio", "s3"):
        register(
            _spec(f"{_adapter}-motoserver-{_mode}", _on_server("moto_server_endpoint", _adapter, _mode), _mode, "tier3")
        )
        for _server in ("seaweedfs", "ceph", "localstack"):
            _factory = _on_server(f"{_server}_endpoint", _adapter, _mode)
            register(_spec(f"{_adapter}-{_server}-{_mode}", _factory, _mode, "tier4"))


# -- the read-through cache (storage.cache) in front of one S3 and one MinIO backend ----
# On moto's server, in sidecar mode: the tests selected by tag mode or by a SeaweedFS name reach into the
# adapters' insides, which a cached store does not show (tests/test_cache.py runs the cache on tags too).
for _adapter in ("s3", "minio"):
    _inner = _spec(
        f"{_adapter}-motoserver-sidecar", _on_server("moto_server_endpoint", _adapter, "sidecar"), "sidecar", "tier3"
    )
    register(cached(_inner, max_bytes=64 * MiB))


def _external_endpoint(variable: str) -> S3Endpoint | None:
    url = os.environ.get(variable)
    if not url:
        return None
    return S3Endpoint(
        name=variable,
        endpoint_url=url,
        access_key=os.environ.get("MODELSTORAGE_TEST_ACCESS_KEY") or os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ.get("MODELSTORAGE_TEST_SECRET_KEY") or os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("MODELSTORAGE_TEST_REGION", "us-east-1"),
    )


def _on_external(endpoint: S3Endpoint, adapter: str, metadata: str):
    @contextlib.contextmanager
    def factory(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
        raw = _raw_client(endpoint)
        bucket = os.environ.get("MODELSTORAGE_TEST_BUCKET") or _session_bucket(endpoint.name, raw)
        with _namespace(raw, bucket, ADAPTERS[adapter](endpoint, bucket, metadata)) as store:
            yield store

    return factory


for _variable, _adapters in (
    ("MODELSTORAGE_TEST_S3_ENDPOINT", ("s3",)),
    ("MODELSTORAGE_TEST_MINIO_ENDPOINT", ("minio", "s3")),
):
    _external = _external_endpoint(_variable)
    if _external is not None:
        for _mode in ("sidecar", "tags"):
            for _adapter in _adapters:
                factory = _on_external(_external, _adapter, _mode)
                register(_spec(f"{_adapter}-external-{_mode}", factory, _mode, "tier5"))
