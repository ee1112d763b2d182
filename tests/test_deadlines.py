"""A server that stops answering mid-call: every call ends by its retry deadline, plus a little.

A SeaweedFS of this module's own is frozen with SIGSTOP (the TCP connection
stays open and nothing answers, the hardest case for a client) while a call
is under way, and thawed after it. The stores keep their default timeouts
(10 s to connect, 60 s per read): only the deadline may end the call.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from chaos import blob

from adapters import MinioModelStorage, S3ModelStorage
from adapters.testing.seaweedfs import SeaweedFSServer
from adapters.testing.servers import S3Endpoint, unique_bucket_name
from storage import RetryPolicy, StorageUnavailableError

DEADLINE = 3.0
SLACK = 3.0
"""What a call may take beyond its deadline: the pause before the last attempt is never started,
but one cleanup (an upload's abort) gets a moment of its own."""
PART = 5 * 2**20

pytestmark = pytest.mark.tier4


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SeaweedFSServer, S3Endpoint]]:
    weed = SeaweedFSServer()
    endpoint = weed.start()
    try:
        yield weed, endpoint
    finally:
        if weed.proc is not None:
            os.kill(weed.proc.pid, signal.SIGCONT)
        weed.stop()


class Freezer:
    def __init__(self, weed: SeaweedFSServer) -> None:
        self.pid = weed.proc.pid  # type: ignore[union-attr]
        self.frozen = False

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            os.kill(self.pid, signal.SIGCONT)
            self.frozen = False


@pytest.fixture
def freezer(server) -> Iterator[Freezer]:
    freezer = Freezer(server[0])
    yield freezer
    freezer.thaw()


@pytest.fixture(params=["s3", "minio"])
def store(request, server):
    _, endpoint = server
    bucket = unique_bucket_name("deadline")
    endpoint.boto3_client().create_bucket(Bucket=bucket)
    common = dict(
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
        region=endpoint.region,
        retry=RetryPolicy(deadline=DEADLINE),
        part_size=PART,
    )
    if request.param == "s3":
        made = S3ModelStorage(bucket, "p", endpoint_url=endpoint.endpoint_url, **common)
    else:
        made = MinioModelStorage(endpoint.netloc, bucket, "p", secure=False, **common)
    yield made
    made.close()


class FreezesAfter(io.RawIOBase):
    """Model bytes that freeze the server once ``after`` of them were read: the put is then mid-way."""

    def __init__(self, data: bytes, after: int, freezer: Freezer) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._position = 0
        self._after = after
        self._freezer = freezer

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._position >= self._after and not self._freezer.frozen:
            time.sleep(0.2)  # let the parts sent so far arrive
            self._freezer.freeze()
        n = min(len(buffer), len(self._data) - self._position)
        buffer[:n] = self._data[self._position : self._position + n]
        self._position += n
        return n


def _ends_in_time(call) -> float:
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError):
        call()
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + SLACK, f"the call took {elapsed:.1f}s; its deadline is {DEADLINE}s"
    return elapsed


def test_a_single_put_ends_by_its_deadline(store, freezer):
    freezer.freeze()
    _ends_in_time(lambda: store.put("m", blob("m", 1, 1000), {"v": 1}))


def test_a_multipart_put_frozen_after_its_first_parts_ends_by_its_deadline(store, freezer):
    data = blob("m", 1, 6 * PART)
    _ends_in_time(lambda: store.put("m", io.BufferedReader(FreezesAfter(data, 2 * PART, freezer))))
    freezer.thaw()
    assert not store.exist("m")


def test_a_fedn_style_upload_frozen_mid_way_ends_by_its_deadline(store, freezer):
    writer = store.get_ptr("m")
    for _ in range(2 * PART // 2**20):
        writer.write(os.urandom(2**20))
    time.sleep(0.2)
    freezer.freeze()

    def rest():
        for _ in range(4 * PART // 2**20):
            writer.write(os.urandom(2**20))
        writer.close()

    _ends_in_time(rest)


def test_a_get_ends_by_its_deadline(store, freezer):
    store.put("m", blob("m", 1, 2 * PART))
    freezer.freeze()
    _ends_in_time(lambda: store.get("m"))
    freezer.thaw()
    _ends_in_time(lambda: (freezer.freeze(), store.get("m", verify=True)))


def test_an_open_read_frozen_mid_stream_ends_by_its_deadline(store, freezer):
    store.put("m", blob("m", 1, 40 * 2**20))
    reader = store.open("m")
    reader.read(2**20)
    freezer.freeze()

    def drain():
        while reader.read(2**20):
            pass

    _ends_in_time(drain)
    freezer.thaw()
    reader.close()


def test_list_and_delete_all_end_by_their_deadline(store, freezer):
    store.put("m", b"x")
    freezer.freeze()
    _ends_in_time(store.list)
    _ends_in_time(store.delete_all)


@pytest.mark.parametrize("scheme", ["s3", "minio"])
def test_the_command_ends_by_the_deadline_of_its_url(server, freezer, scheme, tmp_path):
    _, endpoint = server
    bucket = unique_bucket_name("deadline")
    endpoint.boto3_client().create_bucket(Bucket=bucket)
    model = tmp_path / "model.bin"
    model.write_bytes(blob("m", 1, 3 * PART))
    if scheme == "s3":
        url = f"s3://{bucket}/p?endpoint_url={endpoint.endpoint_url}&region={endpoint.region}&deadline={DEADLINE}"
    else:
        url = f"minio://{endpoint.netloc}/{bucket}/p?secure=false&deadline={DEADLINE}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": endpoint.access_key,
        "AWS_SECRET_ACCESS_KEY": endpoint.secret_key,
        "AWS_DEFAULT_REGION": endpoint.region,
    }
    freezer.freeze()
    started = time.monotonic()
    command = [sys.executable, "-m", "storage", "-q", "-u", url, "put", "m", str(model)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert "failed after" in result.stderr
    assert elapsed < DEADLINE + SLACK + 2.0, f"the command took {elapsed:.1f}s"  # + the interpreter's start
