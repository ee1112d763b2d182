"""Smoke tests for the S3 test-server fixtures (tests/server_fixtures.py)."""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.objectstore

SERVERS = ["seaweedfs_endpoint", "moto_server_endpoint"]


@pytest.fixture(params=SERVERS)
def endpoint(request):
    return request.getfixturevalue(request.param)


def _bucket() -> str:
    return "smoke-" + uuid.uuid4().hex[:16]


def test_put_get_roundtrip(endpoint):
    s3 = endpoint.boto3_client()
    bucket = _bucket()
    s3.create_bucket(Bucket=bucket)
    body = b"\x00model-bytes\xff" * 1000
    s3.put_object(Bucket=bucket, Key="models/abc", Body=body, Metadata={"sha256": "x"})
    got = s3.get_object(Bucket=bucket, Key="models/abc")
    assert got["Body"].read() == body
    assert got["Metadata"] == {"sha256": "x"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="models/")["Contents"]]
    assert keys == ["models/abc"]
    s3.delete_object(Bucket=bucket, Key="models/abc")
    with pytest.raises(ClientError) as ei:
        s3.get_object(Bucket=bucket, Key="models/abc")
    assert ei.value.response["Error"]["Code"] == "NoSuchKey"


def test_minio_client_roundtrip(endpoint):
    import io

    mc = endpoint.minio_client()
    bucket = _bucket()
    mc.make_bucket(bucket)
    mc.put_object(bucket, "k", io.BytesIO(b"hello"), 5)
    resp = mc.get_object(bucket, "k")
    try:
        assert resp.read() == b"hello"
    finally:
        resp.close()
        resp.release_conn()


def test_seaweedfs_requires_credentials(seaweedfs_endpoint):
    good = seaweedfs_endpoint.boto3_client()
    bucket = _bucket()
    good.create_bucket(Bucket=bucket)
    bad = type(seaweedfs_endpoint)(
        name="bad",
        endpoint_url=seaweedfs_endpoint.endpoint_url,
        access_key=seaweedfs_endpoint.access_key,
        secret_key="wrong-secret",
        region=seaweedfs_endpoint.region,
    ).boto3_client()
    with pytest.raises(ClientError) as ei:
        bad.list_objects_v2(Bucket=bucket)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert ei.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_seaweedfs_serves_s3_over_tls_and_both_adapters_trust_it_by_its_ca_bundle():
    """The server the benchmark's --https runs: a real TLS listener, not the test proxy."""
    import os

    from adapters import MinioModelStorage, S3ModelStorage
    from adapters.testing.seaweedfs import SeaweedFSServer
    from storage import StorageError

    with SeaweedFSServer(https=True) as ep:
        assert ep.secure and ep.ca_bundle
        bucket = _bucket()
        ep.boto3_client().create_bucket(Bucket=bucket)
        common = dict(access_key=ep.access_key, secret_key=ep.secret_key, region=ep.region, part_size=5 * 2**20)
        data = os.urandom(11 * 2**20)  # three parts
        stores = [
            S3ModelStorage(bucket, "s3/", endpoint_url=ep.endpoint_url, verify=ep.ca_bundle, **common),
            MinioModelStorage(ep.netloc, bucket, "minio/", verify=ep.ca_bundle, **common),
        ]
        for store in stores:
            with store:
                store.put("model", data, {"v": 1})
                assert store.get("model", verify=True).getvalue() == data
                assert store.get_model_metadata("model") == {"v": 1}
        untrusting = S3ModelStorage(bucket, "s3/", endpoint_url=ep.endpoint_url, **common)
        with untrusting, pytest.raises(StorageError, match="TLS certificate verification failed"):
            untrusting.get("model")
