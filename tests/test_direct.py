"""Direct transfers end to end: the client side is the standard library's urllib, nothing else.

On moto's server, SeaweedFS, Ceph RGW and LocalStack, both adapters: a model
presigned, uploaded by a client (one PUT, or part by part), committed, read
back verified and downloaded by a presigned GET; a wrong body and a wrong
length refused, by the server where it checks signatures or checksums, and
in any case never a model.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import uuid

import pytest

from adapters import MinioModelStorage, S3ModelStorage
from adapters.presign import PresignedRequest
from storage import (
    ConfigurationError,
    IntegrityError,
    MemoryModelStorage,
    ModelExistsError,
    ModelNotFoundError,
    TempModelStorage,
)

pytestmark = [pytest.mark.objectstore, pytest.mark.tier4]

PART = 5 * 2**20
SERVERS = {
    # fixture: (checks signatures, checks x-amz-checksum-sha256)
    "moto_server_endpoint": (False, False),
    "seaweedfs_endpoint": (True, True),
    "ceph_endpoint": (True, False),
    "localstack_endpoint": (False, True),
}


def send(request: PresignedRequest, body: bytes | None, *, drop: tuple[str, ...] = ()) -> int:
    headers = {name: value for name, value in request.headers.items() if name not in drop}
    call = urllib.request.Request(request.url, data=body, method=request.method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as refused:
        return refused.code


def download(request: PresignedRequest) -> bytes:
    call = urllib.request.Request(request.url, method="GET", headers=request.headers)
    with urllib.request.urlopen(call, timeout=30) as response:
        return response.read()


@pytest.fixture(params=list(SERVERS))
def server(request):
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(params=["s3", "minio"])
def store(request, server):
    _, endpoint = server
    bucket = f"direct-{uuid.uuid4().hex[:12]}"
    endpoint.boto3_client().create_bucket(Bucket=bucket)
    credentials = {"access_key": endpoint.access_key, "secret_key": endpoint.secret_key, "region": endpoint.region}
    if request.param == "s3":
        made = S3ModelStorage(bucket, "p", endpoint_url=endpoint.endpoint_url, part_size=PART, **credentials)
    else:
        made = MinioModelStorage(endpoint.netloc, bucket, "p", secure=False, part_size=PART, **credentials)
    yield made
    made.close()


def _upload(plan, data: bytes) -> list[int]:
    return [
        send(request, data[n * plan.part_size : (n + 1) * plan.part_size]) for n, request in enumerate(plan.requests)
    ]


@pytest.mark.parametrize("size", [0, 1000, 2 * PART + 17], ids=["empty", "one PUT", "three parts"])
def test_a_client_uploads_and_downloads_a_model_with_urllib_alone(store, size):
    data = os.urandom(size)
    plan = store.presign_put("m", size=size, sha256=hashlib.sha256(data).hexdigest(), expires="10m")
    assert len(plan.requests) == max(1, -(-size // PART))
    assert not store.exist("m")
    assert _upload(plan, data) == [200] * len(plan.requests)
    assert not store.exist("m"), "an upload is no model before it is committed"
    stat = store.commit_upload("m", {"round": 4}, overwrite=False)
    assert (stat.size, stat.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert store.get("m", verify=True).getvalue() == data
    assert store.get_model_metadata("m") == {"round": 4}
    assert download(store.presign_get("m", expires=60)) == data
    assert store.list() == ["m"]  # nothing staged is left


@pytest.mark.parametrize("size", [1000, 2 * PART + 17], ids=["one PUT", "three parts"])
def test_a_wrong_body_never_becomes_a_model(store, server, size):
    _, checks_checksums = SERVERS[server[0]]
    data = os.urandom(size)
    plan = store.presign_put("m", size=size, sha256=hashlib.sha256(data).hexdigest())
    wrong = bytes([data[0] ^ 1]) + data[1:]
    codes = _upload(plan, wrong)
    if size <= PART and checks_checksums:
        assert codes == [400], "the server checks the signed checksum"
    with pytest.raises((IntegrityError, ModelNotFoundError)):
        store.commit_upload("m")
    assert not store.exist("m")
    assert store.list() == []


def test_a_wrong_length_never_becomes_a_model(store, server):
    checks_signatures, checks_checksums = SERVERS[server[0]]
    data = os.urandom(1000)
    plan = store.presign_put("m", size=1000, sha256=hashlib.sha256(data).hexdigest())
    code = send(plan.requests[0], data[:10], drop=("content-length",))
    if checks_signatures:
        assert code == 403, "the length is signed"
    elif checks_checksums:
        assert code == 400, "ten bytes are not the checksum's"
    with pytest.raises((IntegrityError, ModelNotFoundError)):
        store.commit_upload("m")
    assert not store.exist("m")


def test_an_atomic_create_of_a_direct_upload_refuses_a_taken_id(store):
    store.put("m", b"first")
    data = os.urandom(1000)
    plan = store.presign_put("m", size=1000, sha256=hashlib.sha256(data).hexdigest())
    _upload(plan, data)
    with pytest.raises(ModelExistsError):
        store.commit_upload("m", overwrite=False)
    assert store.get("m").read() == b"first"
    store.commit_upload("m")  # overwrite, from the same staged upload
    assert store.get("m", verify=True).read() == data


def test_delete_all_removes_uploads_never_committed(store):
    data = os.urandom(2 * PART + 1)
    plan = store.presign_put("m", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    send(plan.requests[0], data[:PART])
    small = store.presign_put("n", size=3, sha256=hashlib.sha256(b"abc").hexdigest())
    send(small.requests[0], b"abc")
    store.delete_all()
    assert store.pending_uploads() == []
    with pytest.raises(ModelNotFoundError):
        store.commit_upload("n")


def test_nothing_presigned_or_uploaded_is_nothing_to_commit(store):
    with pytest.raises(ModelNotFoundError, match="presigned"):
        store.commit_upload("m")
    plan = store.presign_put("m", size=3, sha256=hashlib.sha256(b"abc").hexdigest())
    assert plan.requests
    with pytest.raises(ModelNotFoundError, match="uploaded"):
        store.commit_upload("m")
    with pytest.raises(ModelNotFoundError):
        store.presign_get("absent")


@pytest.mark.parametrize("make", [MemoryModelStorage, TempModelStorage], ids=["memory", "tempfile"])
def test_local_stores_say_presigning_needs_an_object_store(make, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDN_MODEL_DIR", str(tmp_path))
    store = make()
    for call in (
        lambda: store.presign_get("m"),
        lambda: store.presign_put("m", size=1, sha256="0" * 64),
        lambda: store.commit_upload("m"),
    ):
        with pytest.raises(ConfigurationError, match="object store"):
            call()
