"""Smoke test of the LocalStack launcher (adapters.testing.localstack): start, the init hook's bucket, stop.

Needs LocalStack's own venv (``bash .ci/install-localstack.sh``); without it the launcher's
ServerStartError, which names that command, fails the test.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from adapters.testing.localstack import DEFAULT_INIT_DIR, LocalStackServer
from adapters.testing.servers import ServerStartError


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_localstack_runs_the_repository_init_hook_and_serves_s3() -> None:
    assert DEFAULT_INIT_DIR is not None and (DEFAULT_INIT_DIR / "ready.d" / "create-bucket.sh").is_file()
    bucket = "smoke-" + uuid.uuid4().hex[:12]
    server = LocalStackServer(bucket=bucket)
    try:
        endpoint = server.start()
    except ServerStartError as e:
        pytest.fail(f"LocalStack could not start: {e}", pytrace=False)
    pid = endpoint.extra["pid"]
    workdir = server.workdir
    try:
        assert endpoint.extra["bucket"] == bucket, "the init hook (localstack/init/ready.d) made no bucket"
        assert endpoint.extra["port"] == endpoint.port
        s3 = endpoint.boto3_client()
        s3.head_bucket(Bucket=bucket)
        assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]

        s3.put_object(Bucket=bucket, Key="models/m1", Body=b"weights")
        assert s3.get_object(Bucket=bucket, Key="models/m1")["Body"].read() == b"weights"
        s3.delete_object(Bucket=bucket, Key="models/m1")
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    finally:
        server.stop()
    assert _gone(pid), f"LocalStack (pid {pid}) still running after stop()"
    assert workdir is not None and not workdir.exists()
