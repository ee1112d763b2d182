"""Errors that say what is wrong and what to do, in the words of the interface in use.

A mistake in how a store is named (TLS against plain HTTP, a scheme where a
host goes, an endpoint without a scheme, no bucket) is one ConfigurationError
or StorageError at once, never six retries and "try again later"; a write
denied into a missing bucket says the bucket is missing; a hint names the
Python argument in Python and the URL option on the command line.
"""

from __future__ import annotations

import time
import uuid

import pytest

from adapters import MinioModelStorage, S3ModelStorage
from adapters.testing.seaweedfs import SeaweedFSServer
from storage import (
    BucketNotFoundError,
    ConfigurationError,
    RetryPolicy,
    StorageError,
    StorageUnavailableError,
    open_storage,
)
from storage import options as option_text

pytestmark = pytest.mark.tier4
PATIENT = RetryPolicy(max_attempts=6, deadline=30, initial_backoff=0.5, max_backoff=1)
"""Six attempts half a second or more apart: a mistake retried would take seconds, not milliseconds."""


@pytest.fixture
def url_hints(monkeypatch):
    monkeypatch.setattr(option_text, "_hint_style", "url")


@pytest.fixture(scope="module")
def tls_endpoint():
    with SeaweedFSServer(https=True) as endpoint:
        yield endpoint


def _store(adapter: str, endpoint, *, tls: bool, **settings):
    credentials = {"access_key": endpoint.access_key, "secret_key": endpoint.secret_key, "region": endpoint.region}
    if adapter == "s3":
        url = f"{'https' if tls else 'http'}://{endpoint.netloc}"
        return S3ModelStorage("models", endpoint_url=url, retry=PATIENT, **credentials, **settings)
    return MinioModelStorage(endpoint.netloc, "models", secure=tls, retry=PATIENT, **credentials, **settings)


def _fails_at_once(call, match: str) -> StorageError:
    started = time.monotonic()
    with pytest.raises(StorageError, match=match) as raised:
        call()
    assert not isinstance(raised.value, StorageUnavailableError)
    assert time.monotonic() - started < 1.0, "retried"
    return raised.value


@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_tls_spoken_to_a_plain_http_server_says_to_speak_http(seaweedfs_endpoint, adapter):
    store = _store(adapter, seaweedfs_endpoint, tls=True)
    fix = "secure=False" if adapter == "minio" else f"endpoint_url='http://{seaweedfs_endpoint.netloc}'"
    _fails_at_once(lambda: store.exist("m"), f"plain HTTP, not TLS: use {fix}")


@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_plain_http_spoken_to_a_tls_server_says_to_speak_tls(tls_endpoint, adapter):
    store = _store(adapter, tls_endpoint, tls=False)
    fix = "secure=True" if adapter == "minio" else f"endpoint_url='https://{tls_endpoint.netloc}'"
    _fails_at_once(lambda: store.exist("m"), f"speaks TLS \\(HTTPS\\), not plain HTTP: use {fix}")


def test_on_the_command_line_the_hint_is_the_url_option(seaweedfs_endpoint, url_hints, monkeypatch):
    monkeypatch.setenv("MINIO_ACCESS_KEY", seaweedfs_endpoint.access_key)
    monkeypatch.setenv("MINIO_SECRET_KEY", seaweedfs_endpoint.secret_key)
    store = open_storage(f"minio://{seaweedfs_endpoint.netloc}/models?max_attempts=6&deadline=30")
    _fails_at_once(lambda: store.exist("m"), "use the URL option secure=false")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("minio://http://127.0.0.1:9000/models", "without a scheme"),
        (
            "s3://models?endpoint_url=127.0.0.1:9000",
            "has no scheme: use the URL option endpoint_url=http://127.0.0.1:9000",
        ),
        ("s3://", "name a bucket"),
        ("s3://a?endpoint_url=http://127.0.0.1:1", "is not a bucket name"),
        ("minio://127.0.0.1:9000/Not_A_Bucket!", "is not a bucket name"),
    ],
)
def test_a_misnamed_store_is_a_configuration_error_before_any_request(url, says, url_hints, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.setenv(name, "k")
    with pytest.raises(ConfigurationError, match=says):
        open_storage(url)


def test_in_python_the_hint_is_the_argument():
    with pytest.raises(ConfigurationError, match="endpoint_url='http://127.0.0.1:9000'"):
        S3ModelStorage("models", endpoint_url="127.0.0.1:9000", access_key="k", secret_key="s")
    with pytest.raises(ConfigurationError, match="secure=False"):
        MinioModelStorage("http://127.0.0.1:9000", "models", access_key="k", secret_key="s")


@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_a_write_denied_into_a_missing_bucket_says_the_bucket_is_missing(seaweedfs_endpoint, adapter, url_hints):
    """SeaweedFS answers AccessDenied to a PUT into a bucket that does not exist."""
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    credentials = {
        "access_key": seaweedfs_endpoint.access_key,
        "secret_key": seaweedfs_endpoint.secret_key,
        "region": seaweedfs_endpoint.region,
    }
    if adapter == "s3":
        store = S3ModelStorage(missing, endpoint_url=seaweedfs_endpoint.endpoint_url, **credentials)
    else:
        store = MinioModelStorage(seaweedfs_endpoint.netloc, missing, secure=False, **credentials)
    with pytest.raises(BucketNotFoundError, match="the URL option create_bucket=true"):
        store.put("m", b"weights", {"v": 1})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("s3://models?endpoint_url=127.0.0.1:9000", "use the URL option endpoint_url=http://127.0.0.1:9000"),
        ("minio://127.0.0.1:9/models/p?secure=false", "in the environment$"),
        ("minio://127.0.0.1:9/models/p?secure=false&max_attempts=1", "nothing answers at that address"),
    ],
)
def test_the_command_words_its_errors_for_the_command_line(url, says, tmp_path):
    import os
    import re
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MINIO_"))}
    if "max_attempts" in url:
        env.update(MINIO_ACCESS_KEY="k", MINIO_SECRET_KEY="s")
    result = subprocess.run([sys.executable, "-m", "storage", "-u", url, "ls"], env=env, capture_output=True, text=True)
    (line,) = result.stderr.strip().splitlines()
    assert re.search(says, line), line
    assert "pass " not in line and "=True" not in line and "=False" not in line
