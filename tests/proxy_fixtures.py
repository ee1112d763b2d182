"""pytest plugin: adapter stores reaching the session's SeaweedFS through a fault-injecting proxy.

``proxy`` is a ``FaultProxy`` in front of SeaweedFS; ``make_store(**options)`` opens a store of the
adapter under test (``adapter``: both) through it, in a fresh ``prefix`` of a module ``bucket``;
``raw`` is a boto3 client that talks to SeaweedFS directly, to see what the server really holds.
"""

from __future__ import annotations

import uuid

import pytest
from chaos import adapter_store, raw_clear
from faultproxy import FaultProxy

ADAPTERS = ("s3", "minio")


@pytest.fixture(scope="module")
def raw(seaweedfs_endpoint):
    return seaweedfs_endpoint.boto3_client()


@pytest.fixture(scope="module")
def bucket(seaweedfs_endpoint, raw):
    name = f"faults-{uuid.uuid4().hex[:16]}"
    raw.create_bucket(Bucket=name)
    yield name
    raw_clear(raw, name, "")
    raw.delete_bucket(Bucket=name)


@pytest.fixture
def prefix(raw, bucket):
    prefix = f"t-{uuid.uuid4().hex[:12]}/"
    yield prefix
    raw_clear(raw, bucket, prefix)


@pytest.fixture
def proxy(seaweedfs_endpoint):
    with FaultProxy(seaweedfs_endpoint.netloc, stall_seconds=5.0) as running:
        yield running
    # The adapters send Content-Length bodies only (no aws-chunked, no chunked transfer encoding).
    assert running.chunked_requests == 0


@pytest.fixture(params=ADAPTERS)
def adapter(request) -> str:
    return request.param


@pytest.fixture
def make_store(adapter, proxy, seaweedfs_endpoint, bucket, prefix):
    """Stores of the adapter under test, through the proxy; all closed at the end."""
    opened = []

    def make(**options):
        store = adapter_store(adapter, seaweedfs_endpoint, bucket, prefix, netloc=proxy.netloc, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()
