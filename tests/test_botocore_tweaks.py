"""What ``adapters.botocore_tweaks`` and ``adapters.minio_internals`` assume of the SDKs, pinned.

Each tweak changes how a request goes out; these tests look at the requests
themselves, so a botocore (or MinIO SDK) that stops behaving as assumed fails
here, not silently in production.
"""

from __future__ import annotations

import socket
import time

import minio
import pytest
from scripted_s3 import ok, scripted_s3

from adapters import MinioModelStorage, S3ModelStorage, botocore_tweaks, minio_internals
from adapters.options import ObjectStoreOptions
from adapters.s3modelstorage import make_s3_client
from adapters.transport import DeadlineTimeout
from storage import ConfigurationError, RetryPolicy, StorageUnavailableError

CREDENTIALS = {"access_key": "tweak-test-access", "secret_key": "tweak-test-secret-0123456789"}


def _s3(endpoint: str, **settings) -> S3ModelStorage:
    return S3ModelStorage("bucket", endpoint_url=f"http://{endpoint}", region="us-east-1", **CREDENTIALS, **settings)


def test_puts_go_without_expect_100_continue():
    with scripted_s3([ok(b""), ok(b"")]) as (script, endpoint):
        _s3(endpoint).put("m", b"model bytes")
    puts = [headers for (method, _), headers in zip(script.requests, script.headers, strict=True) if method == "PUT"]
    assert len(puts) == 2  # the model and its sidecar
    assert all("expect" not in headers for headers in puts)


def test_a_put_carrying_its_checksum_is_not_hashed_again_to_be_signed():
    with scripted_s3([ok(b""), ok(b"")]) as (script, endpoint):
        _s3(endpoint).put("m", b"model bytes")
    for headers in script.headers:
        assert headers["x-amz-checksum-sha256"]
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"


def test_other_requests_stay_signed():
    with scripted_s3([ok(b"model bytes")]) as (script, endpoint):
        _s3(endpoint).get("m")
    (headers,) = script.headers
    assert headers["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD"
    assert "Signature=" in headers["authorization"]


@pytest.fixture
def silent_server():
    """A listening socket that never answers: a request sent there waits for ever, but for its timeouts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_a_request_to_a_silent_server_ends_with_its_deadline_not_its_read_timeout(silent_server, adapter):
    settings = dict(retry=RetryPolicy(deadline=1.0), read_timeout=60, **CREDENTIALS)
    if adapter == "s3":
        store = S3ModelStorage("bucket", endpoint_url=f"http://{silent_server}", region="us-east-1", **settings)
    else:
        store = MinioModelStorage(silent_server, "bucket", secure=False, region="us-east-1", **settings)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        store.exist("m")
    assert time.monotonic() - started < 2.5


def test_the_s3_clients_pools_clone_the_deadline_timeout():
    options = ObjectStoreOptions.parse({"connect_timeout": 7, "read_timeout": 70})
    client = make_s3_client(
        "bucket", endpoint_url="http://127.0.0.1:9", region="us-east-1", options=options, **CREDENTIALS
    )
    session = client._s3._endpoint.http_session
    timeout = session._manager.connection_pool_kw["timeout"]
    assert isinstance(timeout, DeadlineTimeout)
    assert (timeout.clone().connect_timeout, timeout.clone().read_timeout) == (7, 70)
    clamped = RetryPolicy(deadline=2.0).call("clone", timeout.clone)
    assert clamped.connect_timeout <= 2.0 and clamped.read_timeout <= 2.0


def test_a_botocore_that_keeps_its_pools_elsewhere_is_refused_loudly():
    class Elsewhere:
        class _endpoint:  # noqa: N801 - shaped like a botocore client
            http_session = object()

    with pytest.raises(ConfigurationError, match="botocore"):
        botocore_tweaks.clamp_timeouts(Elsewhere(), DeadlineTimeout(1, 1))


def test_new_sessions_share_one_loader_of_service_models():
    first, second = botocore_tweaks.session_sharing_models(), botocore_tweaks.session_sharing_models()
    assert first is not second
    assert first.get_component("data_loader") is second.get_component("data_loader")


def test_a_minio_sdk_outside_the_tested_versions_is_refused_with_the_command_that_fixes_it(monkeypatch):
    minio_internals._check_sdk()  # the installed one passes
    monkeypatch.setattr(minio, "__version__", "7.3.0")
    with pytest.raises(ImportError) as refused:
        minio_internals._check_sdk()
    assert "pip install 'minio>=7.2.0,<=7.2.20'" in str(refused.value)


def test_minio_requests_without_a_public_call_go_out_as_s3_expects():
    upload_xml = b"<InitiateMultipartUploadResult><UploadId>up-1</UploadId></InitiateMultipartUploadResult>"
    with scripted_s3([ok(upload_xml), ok(b""), ok(b"")]) as (script, endpoint):
        store = MinioModelStorage(endpoint, "bucket", secure=False, region="us-east-1", **CREDENTIALS)
        upload = store.client.start_upload("k")
        upload.put_part(1, b"part")
        upload.abort()
    assert upload.upload_id == "up-1"
    assert [method for method, _ in script.requests] == ["POST", "PUT", "DELETE"]
    assert "uploads" in script.requests[0][1]
    assert "partNumber=1" in script.requests[1][1] and "uploadId=up-1" in script.requests[1][1]
