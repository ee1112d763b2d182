"""The retry layer, counted on the wire: what is retried, how often, and what is not.

Each adapter talks to a scripted loopback server, so the counts include any
retry the SDKs would add on their own (there must be none).
"""

from __future__ import annotations

import logging
import time

import pytest
from scripted_s3 import OK_BODY, RESET, error, ok, scripted_s3

from adapters import MinioModelStorage, S3ModelStorage
from adapters.client import classify
from storage import (
    BucketNotFoundError,
    ModelExistsError,
    ModelNotFoundError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from storage.retry import RetryPolicy, TransientError

SECRET = "retry-test-secret-key-0123456789"
FAST = RetryPolicy(max_attempts=4, deadline=20, initial_backoff=0.001, max_backoff=0.01)


def _s3(endpoint: str, retry: RetryPolicy = FAST) -> S3ModelStorage:
    return S3ModelStorage(
        "bucket",
        endpoint_url=f"http://{endpoint}",
        region="us-east-1",
        access_key="retry-test-access",
        secret_key=SECRET,
        retry=retry,
        read_timeout=5,
    )


def _minio(endpoint: str, retry: RetryPolicy = FAST) -> MinioModelStorage:
    return MinioModelStorage(
        endpoint,
        "bucket",
        access_key="retry-test-access",
        secret_key=SECRET,
        secure=False,
        region="us-east-1",
        retry=retry,
        read_timeout=5,
    )


ADAPTERS = [pytest.param(_s3, id="s3"), pytest.param(_minio, id="minio")]

TRANSIENT = [
    pytest.param(error(503, "SlowDown"), id="503-SlowDown"),
    pytest.param(error(500, "InternalError"), id="500-InternalError"),
    pytest.param(error(502, "BadGateway"), id="502"),
    pytest.param(error(504, "GatewayTimeout"), id="504"),
    pytest.param(error(429, "TooManyRequests"), id="429"),
    pytest.param(RESET, id="connection-reset"),
]


def _object_gets(script) -> int:
    return sum(1 for method, path in script.requests if method == "GET" and "/models/m" in path)


@pytest.mark.parametrize("make", ADAPTERS)
@pytest.mark.parametrize("failure", TRANSIENT)
def test_transient_failures_are_retried_until_success(make, failure):
    with scripted_s3([failure, failure, ok()]) as (script, endpoint):
        store = make(endpoint)
        assert store.get("m").read() == OK_BODY
    assert _object_gets(script) == 3


@pytest.mark.parametrize("make", ADAPTERS)
@pytest.mark.parametrize("failure", TRANSIENT)
def test_retries_stop_after_max_attempts(make, failure):
    with scripted_s3([failure] * 10) as (script, endpoint):
        store = make(endpoint)
        with pytest.raises(StorageUnavailableError, match="after 4 attempt"):
            store.get("m")
    assert _object_gets(script) == FAST.max_attempts


@pytest.mark.parametrize("make", ADAPTERS)
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        pytest.param(error(403, "AccessDenied"), StoragePermissionError, id="403-AccessDenied"),
        pytest.param(error(403, "SignatureDoesNotMatch"), StoragePermissionError, id="403-bad-secret"),
        pytest.param(error(403, "InvalidAccessKeyId"), StoragePermissionError, id="403-unknown-key"),
        pytest.param(error(404, "NoSuchBucket"), BucketNotFoundError, id="404-NoSuchBucket"),
        pytest.param(error(400, "InvalidArgument"), StorageError, id="400-InvalidArgument"),
    ],
)
def test_permanent_failures_are_not_retried(make, reply, expected):
    with scripted_s3([reply] * 10) as (script, endpoint):
        store = make(endpoint)
        with pytest.raises(expected) as raised:
            store.open("m")
    assert _object_gets(script) == 1
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("make", ADAPTERS)
def test_missing_model_is_not_retried(make):
    # A 404 on the object, then the one-time bucket check says the bucket exists.
    with scripted_s3([error(404, "NoSuchKey"), ok(b"")] + [error(404, "NoSuchKey")] * 5) as (script, endpoint):
        store = make(endpoint)
        with pytest.raises(ModelNotFoundError):
            store.open("m")
    assert _object_gets(script) == 1


@pytest.mark.parametrize("make", ADAPTERS)
def test_failed_precondition_is_not_retried(make):
    with scripted_s3([error(412, "PreconditionFailed")] * 5) as (script, endpoint):
        store = make(endpoint)
        with pytest.raises(ModelExistsError):
            store.put("m", b"new bytes", overwrite=False)
    # One PUT, and one HEAD to tell an earlier attempt of its own (an answer lost) from another writer's.
    assert [m for m, p in script.requests if "/models/m" in p] == ["PUT", "HEAD"]


@pytest.mark.parametrize("make", ADAPTERS)
def test_one_log_line_per_retry(make, caplog):
    with scripted_s3([error(503, "SlowDown")] * 2 + [ok()]) as (script, endpoint):
        store = make(endpoint)
        with caplog.at_level(logging.WARNING, logger="modelstorage.retry"):
            store.get("m")
    retries = [r for r in caplog.records if r.name == "modelstorage.retry"]
    assert len(retries) == 2
    assert all("retrying" in r.getMessage() for r in retries)
    assert all(SECRET not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("make", ADAPTERS)
def test_deadline_bounds_the_whole_operation(make):
    policy = RetryPolicy(max_attempts=1000, deadline=1.0, initial_backoff=0.2, max_backoff=0.2)
    with scripted_s3([error(503, "SlowDown")] * 1000) as (script, endpoint):
        store = make(endpoint, policy)
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError):
            store.get("m")
        elapsed = time.monotonic() - started
    assert elapsed < policy.deadline + 1.0
    assert 2 <= _object_gets(script) < 1000


def test_policy_retries_only_transient_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("try again")
        return "done"

    assert FAST.call("flaky", flaky) == "done"
    assert len(calls) == 3

    def broken():
        calls.append(1)
        raise StoragePermissionError("no")

    calls.clear()
    with pytest.raises(StoragePermissionError):
        FAST.call("broken", broken)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (503, "SlowDown", TransientError),
        (500, "InternalError", TransientError),
        (400, "RequestTimeout", TransientError),
        (409, "ConditionalRequestConflict", TransientError),
        (403, "AccessDenied", StoragePermissionError),
        (404, "NoSuchBucket", BucketNotFoundError),
        (400, "InvalidArgument", StorageError),
    ],
)
def test_classification_table(status, code, kind):
    classified = classify(status, code, "message", bucket="bucket")
    assert type(classified) is kind


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)
