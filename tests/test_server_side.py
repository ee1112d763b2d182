"""Encryption, the expected bucket owner and the storage class: on every request that needs them, as servers report.

The headers are counted on the wire (the fault proxy records every request in
front of SeaweedFS); what the servers then say about the objects is read back
with a raw client: SSE-S3 on moto and LocalStack, SSE-C on SeaweedFS, Ceph RGW
and LocalStack, KMS on moto. The customer key never shows in a repr, a log
line or a message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import urllib.request
import uuid

import pytest
from chaos import adapter_store, blob

from adapters import MinioModelStorage, S3ModelStorage
from adapters.serverside import CUSTOMER_KEY_ENV
from storage import ConfigurationError, StorageError, from_fedn_config, open_storage

pytestmark = [pytest.mark.objectstore, pytest.mark.tier4]

KEY = os.urandom(32)
KEY_TEXT = base64.b64encode(KEY).decode()
PART = 5 * 2**20
SSE_C = "x-amz-server-side-encryption-customer-key"
WRITES = {"PutObject", "CreateMultipartUpload"}
NEEDS_KEY = {"PutObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "GetObject", "HeadObject"}


def _operation(entry) -> str:
    if entry.operation == "UploadPart" and "x-amz-copy-source" in entry.headers:
        return "UploadPartCopy"
    return entry.operation


def test_every_request_carries_what_it_needs(make_store, proxy):
    owner = "123456789012"
    store = make_store(sse_customer_key=KEY, storage_class="STANDARD", expected_bucket_owner=owner)
    store.put("small", b"weights", {"v": 1})
    large = blob("large", 1, 2 * PART + 1)
    store.put("large", large, {"v": 2})
    assert store.get("large", verify=True).getvalue() == large
    data = os.urandom(PART + 1)
    plan = store.presign_put("direct", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    for n, request in enumerate(plan.requests):
        assert request.headers[SSE_C] == KEY_TEXT  # a client sends the key with its parts
        body = data[n * PART : (n + 1) * PART]
        urllib.request.urlopen(urllib.request.Request(request.url, body, request.headers, method="PUT"), timeout=30)
    store.commit_upload("direct")
    assert store.get("direct", verify=True).getvalue() == data
    entries = [e for e in proxy.entries() if e.status]
    seen = {_operation(e) for e in entries}
    # SeaweedFS answers UploadPartCopy of an SSE-C object with 501: the commit then copies through the store.
    assert {"PutObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "GetObject", "HeadObject"} <= seen
    for entry in entries:
        operation, headers = _operation(entry), entry.headers
        assert headers.get("x-amz-expected-bucket-owner") == owner, operation
        if operation in NEEDS_KEY and "/metadata/" not in entry.path or operation in WRITES:
            assert headers.get(SSE_C) == KEY_TEXT, operation
        if operation in WRITES:
            assert headers.get("x-amz-storage-class") == "STANDARD", operation
        if operation == "UploadPartCopy":
            assert headers.get("x-amz-copy-source-server-side-encryption-customer-key") == KEY_TEXT


@pytest.fixture(params=["s3", "minio"])
def adapter(request) -> str:
    return request.param


def _fresh(endpoint, adapter: str, **settings):
    bucket = f"sse-{uuid.uuid4().hex[:12]}"
    endpoint.boto3_client().create_bucket(Bucket=bucket)
    return adapter_store(adapter, endpoint, bucket, "p", part_size=PART, **settings), bucket


@pytest.mark.parametrize("server", ["moto_server_endpoint", "localstack_endpoint"])
def test_sse_s3_is_what_the_server_reports(request, server, adapter):
    endpoint = request.getfixturevalue(server)
    store, bucket = _fresh(endpoint, adapter, sse="AES256")
    store.put("small", b"weights", {"v": 1})
    store.put("large", blob("large", 1, PART + 1))
    raw = endpoint.boto3_client()
    for key in ("p/models/small", "p/models/large", "p/metadata/small.json"):
        assert raw.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256", key


def test_sse_kms_with_a_key_is_what_the_server_reports(moto_server_endpoint, adapter):
    store, bucket = _fresh(moto_server_endpoint, adapter, sse="aws:kms", sse_kms_key_id="models-key")
    store.put("m", b"weights")
    head = moto_server_endpoint.boto3_client().head_object(Bucket=bucket, Key="p/models/m")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"].endswith("models-key")) == ("aws:kms", True)


@pytest.mark.parametrize("server", ["seaweedfs_endpoint", "ceph_endpoint", "localstack_endpoint"])
def test_an_sse_c_model_is_read_with_its_key_and_refused_without(request, server, adapter, caplog):
    endpoint = request.getfixturevalue(server)
    store, bucket = _fresh(endpoint, adapter, sse_customer_key=KEY)
    large = blob("m", 1, PART + 1)
    with caplog.at_level(logging.DEBUG, logger="modelstorage"):
        store.put("m", large, {"v": 1})
        assert store.get("m", verify=True).getvalue() == large
    raw = endpoint.boto3_client()
    head = raw.head_object(Bucket=bucket, Key="p/models/m", SSECustomerAlgorithm="AES256", SSECustomerKey=KEY)
    assert head["SSECustomerAlgorithm"] == "AES256"
    with pytest.raises(raw.exceptions.ClientError):
        raw.get_object(Bucket=bucket, Key="p/models/m")
    keyless = adapter_store(adapter, endpoint, bucket, "p")
    for read in (lambda: keyless.get("m"), lambda: keyless.stat("m")):
        with pytest.raises(StorageError, match="customer key") as refused:
            read()
        assert KEY_TEXT not in str(refused.value)
    shown = [repr(store), str(store.options), repr(store.options.server_side), caplog.text]
    assert not any(KEY_TEXT in text or KEY.hex() in text for text in shown)


def test_the_customer_key_comes_from_the_environment_never_from_a_url(monkeypatch, seaweedfs_endpoint):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_endpoint.secret_key)
    url = f"s3://b-{uuid.uuid4().hex[:8]}/p?endpoint_url={seaweedfs_endpoint.endpoint_url}"
    with pytest.raises(ConfigurationError, match=CUSTOMER_KEY_ENV) as refused:
        open_storage(url + f"&sse_customer_key={KEY_TEXT}")
    assert KEY_TEXT not in str(refused.value)
    monkeypatch.setenv(CUSTOMER_KEY_ENV, KEY_TEXT)
    assert open_storage(url).options.server_side.sse_customer_key.key == KEY


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"sse": "AES128"}, "AES256 or aws:kms"),
        ({"sse_kms_key_id": "k"}, "go with sse=aws:kms"),
        ({"sse": "AES256", "sse_customer_key": KEY}, "exclude each other"),
        ({"sse_customer_key": b"short"}, "32 bytes"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_any_request(settings, says):
    for make in (
        lambda: S3ModelStorage("models", endpoint_url="http://127.0.0.1:1", access_key="k", secret_key="s", **settings),
        lambda: MinioModelStorage("127.0.0.1:1", "models", access_key="k", secret_key="s", **settings),
    ):
        with pytest.raises(ConfigurationError, match=says):
            make()


def test_fedn_style_settings_and_variables_name_the_same_options(monkeypatch):
    config = {
        "storage_endpoint": "http://127.0.0.1:1",
        "storage_access_key": "k",
        "storage_secret_key": "s",
        "storage_sse": "aws:kms",
        "storage_sse_kms_key_id": "models-key",
        "storage_expected_bucket_owner": "123456789012",
        "storage_class": "STANDARD_IA",
    }
    expected = ("aws:kms", "models-key", "123456789012", "STANDARD_IA")
    for storage_type in ("BOTO3", "MINIO"):
        store = from_fedn_config({"storage_type": storage_type, "storage_config": config})
        side = store.options.server_side
        assert (side.sse, side.sse_kms_key_id, side.expected_bucket_owner, side.storage_class) == expected
    for name, value in (
        ("FEDN_OBJECT_STORAGE_TYPE", "BOTO3"),
        ("FEDN_OBJECT_STORAGE_ENDPOINT", "http://127.0.0.1:1"),
        ("FEDN_OBJECT_STORAGE_ACCESS_KEY", "k"),
        ("FEDN_OBJECT_STORAGE_SECRET_KEY", "s"),
        ("FEDN_OBJECT_STORAGE_SSE", "AES256"),
        ("FEDN_OBJECT_STORAGE_CLASS", "STANDARD"),
    ):
        monkeypatch.setenv(name, value)
    side = from_fedn_config().options.server_side
    assert (side.sse, side.storage_class) == ("AES256", "STANDARD")
