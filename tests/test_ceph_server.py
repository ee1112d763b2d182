"""Smoke test for the Ceph RADOS Gateway test server (adapters/testing/ceph.py).

Needs Debian's ceph-mon, ceph-osd and radosgw (``.ci/install-ceph.sh``); without them the start
fails with the command that installs them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from adapters.testing.ceph import CephRGWServer
from adapters.testing.servers import ServerStartError, unique_bucket_name

pytestmark = pytest.mark.objectstore


def _running(pid: int, conf: str) -> bool:
    """Whether ``pid`` is still one of our daemons (a reused pid would not have our config in its argv)."""
    try:
        return conf in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_ceph_rgw_roundtrip_and_stop(https):
    server = CephRGWServer(https=https)
    try:
        endpoint = server.start()
    except ServerStartError as e:
        pytest.fail(f"Ceph RGW test server could not start: {e}", pytrace=False)
    pids, conf = endpoint.extra["pids"], endpoint.extra["conf"]
    try:
        assert set(pids) == {"mon.a", "osd.0", "client.rgw"}
        assert all(_running(pid, conf) for pid in pids.values())

        assert endpoint.secure == https
        # when_required: boto3's default sends PUT bodies aws-chunked over HTTPS, which RGW 16 refuses (411).
        s3 = endpoint.boto3_client(request_checksum_calculation="when_required")
        bucket = unique_bucket_name("ceph-smoke")
        s3.create_bucket(Bucket=bucket)
        body = os.urandom(64 * 1024)
        s3.put_object(Bucket=bucket, Key="models/m1", Body=body)
        assert s3.get_object(Bucket=bucket, Key="models/m1")["Body"].read() == body
        s3.delete_object(Bucket=bucket, Key="models/m1")
        with pytest.raises(ClientError) as ei:
            s3.get_object(Bucket=bucket, Key="models/m1")
        assert ei.value.response["Error"]["Code"] == "NoSuchKey"

        # Credentials are checked: a wrong secret is refused.
        bad = dataclasses.replace(endpoint, secret_key="wrong-secret")
        with pytest.raises(ClientError) as ei:
            bad.boto3_client().list_objects_v2(Bucket=bucket)
        assert ei.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        s3.delete_bucket(Bucket=bucket)
    finally:
        server.stop()

    assert not any(_running(pid, conf) for pid in pids.values())
    assert not Path(conf).parent.exists()


def test_missing_ceph_names_the_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServerStartError) as ei:
        CephRGWServer().start()
    message = str(ei.value)
    assert "apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw" in message
    assert ".ci/install-ceph.sh" in message
