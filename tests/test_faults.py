"""Both adapters through a fault-injecting proxy in front of SeaweedFS.

Each scenario runs on S3ModelStorage (boto3) and MinioModelStorage (MinIO SDK),
both pointed at ``faultproxy.FaultProxy``; what the server really holds is
checked with a boto3 client that talks to SeaweedFS directly.

a. 20% of requests fail transiently: a 200-operation mixed workload succeeds op for op;
b. an outage longer than the deadline: StorageUnavailableError in time, nothing partial, no upload left;
c. the server restarts mid-upload: a short restart is bridged, a long one fails cleanly;
d. bytes changed behind the adapter's back (or in flight): verified reads raise IntegrityError;
e. 403, 404 and 412 are answered once and never retried, counted on the wire.
"""

from __future__ import annotations

import collections
import hashlib
import io
import random
import threading
import time
import uuid

import pytest
from chaos import (
    MiB,
    adapter_store,
    blob,
    raw_clear,
    raw_keys,
    raw_read,
    raw_uploads,
    record_put_payloads,
)
from faultproxy import (
    CORRUPT,
    INTERNAL,
    RESET,
    RESET_DOWNLOAD,
    RESET_UPLOAD,
    SLOWDOWN,
    STALL,
    TRUNCATE,
    FaultProxy,
    Reply,
    Schedule,
)

from storage import (
    BucketNotFoundError,
    IntegrityError,
    ModelExistsError,
    ModelNotFoundError,
    StoragePermissionError,
    StorageUnavailableError,
)
from storage.retry import RetryPolicy

pytestmark = [pytest.mark.objectstore, pytest.mark.tier4]


OUTAGE_RETRY = RetryPolicy(max_attempts=10_000, deadline=1.0, initial_backoff=0.02, max_backoff=0.1)
OUTAGE = {"retry": OUTAGE_RETRY, "connect_timeout": 0.5, "read_timeout": 1.0}
"""Retries bounded by the deadline alone: an outage is outlasted or reported within 1 s."""


def _write_in_chunks(store, model_id: str, data: bytes, metadata) -> None:
    """FEDn's upload: 1 MiB chunks into get_ptr, IN_PROGRESS while writing, the final status before close."""
    writer = store.get_ptr(model_id)
    for offset in range(0, len(data), MiB):
        store.get_ptr(model_id).write(data[offset : offset + MiB])
        if offset == 0:
            store.set_model_metadata(model_id, 1)
    store.set_model_metadata(model_id, metadata)
    writer.close()


# -- a. 20% transient faults ----------------------------------------------------------------------------

LARGE_WRITES = {17: 32 * MiB, 83: 6 * MiB}
"""Op index -> size of a large get_ptr write; every other write is 1-128 KiB."""
ABORTED_LARGE = 170
OPS = {
    "write": 24,
    "put": 10,
    "create": 5,
    "get": 14,
    "open": 8,
    "stat": 6,
    "exist": 7,
    "get_metadata": 8,
    "set_metadata": 7,
    "delete": 5,
    "list": 3,
    "abort": 3,
}


class Workload:
    """A seeded, mixed sequence of operations, each checked against a plain-dict reference."""

    def __init__(self, store, seed: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.reference: dict[str, tuple[bytes, object]] = {}
        self.ids = [f"model-{n}" for n in range(8)]
        self.version = 0
        self.done: collections.Counter[str] = collections.Counter()
        self.failed: list[str] = []

    def run(self, operations: int, *, large: bool = True) -> None:
        for n in range(operations):
            if large and n in LARGE_WRITES:
                op, model_id, size = "write", f"big-{n}", LARGE_WRITES[n]
            elif large and n == ABORTED_LARGE:
                op, model_id, size = "abort", "big-17", 6 * MiB
            else:
                op = self.rng.choices(list(OPS), list(OPS.values()))[0]
                model_id = self.rng.choice(self.ids)
                size = self.rng.randint(1024, 128 * 1024)
            try:
                getattr(self, op)(n, model_id, size)
            except Exception as exc:  # noqa: BLE001 - every failure is collected and reported at the end
                self.failed.append(f"#{n} {op}({model_id}): {type(exc).__name__}: {exc}")
            self.done[op] += 1

    def _new(self, model_id: str, size: int) -> tuple[bytes, dict]:
        self.version += 1
        return blob(model_id, self.version, size), {"round": self.version, "status": 0}

    def _expect_missing(self, call, *args) -> None:
        try:
            call(*args)
        except ModelNotFoundError:
            return
        raise AssertionError(f"{call.__name__}{args} should raise ModelNotFoundError")

    def write(self, n, model_id, size):
        data, metadata = self._new(model_id, size)
        _write_in_chunks(self.store, model_id, data, metadata)
        self.reference[model_id] = (data, metadata)
        if n in LARGE_WRITES:  # read the large ones back at once: ranges fetched concurrently
            assert self.store.get(model_id, verify=True).getbuffer() == data

    def put(self, n, model_id, size):
        data, metadata = self._new(model_id, size)
        metadata = metadata if n % 3 else None
        stat = self.store.put(model_id, data, metadata)
        assert stat.size == len(data) and stat.sha256 == hashlib.sha256(data).hexdigest()
        self.reference[model_id] = (data, {} if metadata is None else metadata)

    def create(self, n, model_id, size):
        if model_id in self.reference and n % 2:
            before = self.reference[model_id]
            try:
                self.store.put(model_id, b"must not land", overwrite=False)
            except ModelExistsError:
                assert self.store.get(model_id).getbuffer() == before[0]
                return
            raise AssertionError("an atomic create over a taken id succeeded")
        model_id = f"fresh-{n}"
        data, metadata = self._new(model_id, size)
        self.store.put(model_id, io.BytesIO(data), metadata, overwrite=False)
        self.reference[model_id] = (data, metadata)

    def get(self, n, model_id, size):
        found = self.store.get(model_id, verify=bool(n % 2))
        if model_id in self.reference:
            assert found is not None and found.getbuffer() == self.reference[model_id][0]
        else:
            assert found is None

    def open(self, n, model_id, size):
        if model_id not in self.reference:
            return self._expect_missing(self.store.open, model_id)
        with self.store.open(model_id, verify=True) as reader:
            assert reader.read() == self.reference[model_id][0]

    def stat(self, n, model_id, size):
        if model_id not in self.reference:
            return self._expect_missing(self.store.stat, model_id)
        data = self.reference[model_id][0]
        stat = self.store.stat(model_id)
        assert (stat.size, stat.sha256) == (len(data), hashlib.sha256(data).hexdigest())

    def exist(self, n, model_id, size):
        assert self.store.exist(model_id) is (model_id in self.reference)

    def get_metadata(self, n, model_id, size):
        if model_id not in self.reference:
            return self._expect_missing(self.store.get_model_metadata, model_id)
        assert self.store.get_model_metadata(model_id) == self.reference[model_id][1]

    def set_metadata(self, n, model_id, size):
        metadata = {"note": f"set at {n}", "status": n % 4}
        if model_id not in self.reference:
            return self._expect_missing(self.store.set_model_metadata, model_id, metadata)
        assert self.store.set_model_metadata(model_id, metadata) is True
        self.reference[model_id] = (self.reference[model_id][0], metadata)

    def delete(self, n, model_id, size):
        assert self.store.delete(model_id) is (self.reference.pop(model_id, None) is not None)

    def list(self, n, model_id, size):
        assert self.store.list() == sorted(self.reference)

    def abort(self, n, model_id, size):
        data = blob(model_id, -1, size)
        try:
            with self.store.get_ptr(model_id) as writer:
                for offset in range(0, len(data), MiB):
                    writer.write(data[offset : offset + MiB])
                raise KeyboardInterrupt  # the client went away
        except KeyboardInterrupt:
            pass
        found = self.store.get(model_id)
        if model_id in self.reference:
            assert found is not None and found.getbuffer() == self.reference[model_id][0]
        else:
            assert found is None

    def check_everything(self) -> None:
        """The end state, read back whole and verified."""
        assert self.store.list() == sorted(self.reference)
        for model_id, (data, metadata) in self.reference.items():
            if model_id.startswith("big-"):  # streamed, resuming where a connection breaks
                with self.store.open(model_id, verify=True) as streamed:
                    assert streamed.read() == data, model_id
            else:
                assert self.store.get(model_id, verify=True).getbuffer() == data, model_id
            assert self.store.get_model_metadata(model_id) == metadata, model_id


def test_a_mixed_workload_succeeds_op_for_op_while_20_percent_of_requests_fail(
    adapter, proxy, make_store, raw, bucket, prefix
):
    proxy.schedule = Schedule(
        seed=20,
        rate=0.2,
        weights={SLOWDOWN: 3, INTERNAL: 3, RESET: 3, RESET_UPLOAD: 2, RESET_DOWNLOAD: 2, TRUNCATE: 2, STALL: 1},
        caps={STALL: 1},  # a stall costs one read timeout (1 s)
    )
    store = make_store()
    workload = Workload(store, seed=7)
    started = time.monotonic()
    workload.run(200)
    assert workload.failed == []
    workload.check_everything()
    # Every upload finished or aborted, seen by the server itself.
    store.close()
    assert raw_uploads(raw, bucket, prefix) == []
    expected_keys = {f"{prefix}models/{i}" for i in workload.reference}
    expected_keys |= {f"{prefix}metadata/{i}.json" for i in workload.reference}
    assert raw_keys(raw, bucket, prefix) == expected_keys
    faults = dict(proxy.faults)
    assert sum(faults.values()) >= 0.15 * proxy.requests
    assert set(faults) == {SLOWDOWN, INTERNAL, RESET, RESET_UPLOAD, RESET_DOWNLOAD, TRUNCATE, STALL}
    print(
        f"\n[fault workload {adapter}] {sum(workload.done.values())} operations, {len(workload.failed)} failed, "
        f"{proxy.requests} requests over {proxy.connections} connections, faults {faults}, "
        f"orphaned uploads 0, {time.monotonic() - started:.1f}s; operations {dict(workload.done)}"
    )


@pytest.mark.tier3
def test_the_proxy_serves_moto_server_too(adapter, moto_server_endpoint):
    # The other HTTP tier: the same faults in front of moto's server, on a shorter workload.
    raw = moto_server_endpoint.boto3_client()
    bucket = f"faults-{uuid.uuid4().hex[:16]}"
    raw.create_bucket(Bucket=bucket)
    schedule = Schedule(
        seed=3, rate=0.2, weights={SLOWDOWN: 1, INTERNAL: 1, RESET: 1, RESET_UPLOAD: 1, RESET_DOWNLOAD: 1, TRUNCATE: 1}
    )
    with FaultProxy(moto_server_endpoint.netloc, schedule=schedule) as proxy:
        store = adapter_store(adapter, moto_server_endpoint, bucket, "moto/", netloc=proxy.netloc)
        workload = Workload(store, seed=11)
        workload.run(30, large=False)
        assert workload.failed == []
        workload.check_everything()
        store.close()
    assert proxy.faults and proxy.chunked_requests == 0
    raw_clear(raw, bucket, "")


# -- b. and c. outages and restarts ----------------------------------------------------------------------


class _Outage:
    """Starts an outage from inside the proxy the moment a matching request arrives."""

    def __init__(self, proxy: FaultProxy, operation: str, *, nth: int = 1, seconds: float | None = None) -> None:
        self.proxy = proxy
        self.operation = operation
        self.nth = nth
        self.seconds = seconds
        self.started: float | None = None
        self._seen = 0
        self._lock = threading.Lock()
        proxy.rules.append(self)

    def __call__(self, request):
        if request.operation != self.operation:
            return None
        with self._lock:
            self._seen += 1
            if self._seen != self.nth:
                return None
            self.started = time.monotonic()
        if self.seconds is None:
            self.proxy.down()
        else:
            self.proxy.restart(self.seconds)
        return RESET_UPLOAD if request.length >= 2 else RESET


def _assert_only_the_old_version(raw, bucket, prefix, old: bytes) -> None:
    """What the server holds, asked directly: the old model, its sidecar, nothing else (uploads aside)."""
    assert raw_keys(raw, bucket, prefix) == {f"{prefix}models/model", f"{prefix}metadata/model.json"}
    assert raw_read(raw, bucket, f"{prefix}models/model") == old


OUTAGE_POINTS = {
    "single-put": (1 * MiB, "PutObject", 1),
    "first-part": (21 * MiB, "UploadPart", 1),  # more parts than the upload window (2 in flight + 1)
    "complete": (11 * MiB, "CompleteMultipartUpload", 1),
}
"""Where the outage begins; a later part is where the restart tests below cut in."""


@pytest.mark.parametrize("point", list(OUTAGE_POINTS))
def test_an_outage_longer_than_the_deadline_fails_in_time_and_leaves_the_old_version(
    point, proxy, make_store, raw, bucket, prefix
):
    size, operation, nth = OUTAGE_POINTS[point]
    store = make_store(**OUTAGE, max_concurrency=2)
    old, new = blob("model", 1, MiB), blob("model", 2, size)
    store.put("model", old, {"v": 1})
    outage = _Outage(proxy, operation, nth=nth)
    with pytest.raises(StorageUnavailableError) as raised:
        _write_in_chunks(store, "model", new, {"v": 2})
    elapsed = time.monotonic() - outage.started
    assert elapsed <= OUTAGE_RETRY.deadline + 1.0, f"failed {elapsed:.2f}s after the outage began"
    assert "try again" in str(raised.value)
    # Still down: the server holds the old version only.
    _assert_only_the_old_version(raw, bucket, prefix, old)
    proxy.rules.clear()
    proxy.up()
    assert store.get("model", verify=True).getbuffer() == old
    assert store.get_model_metadata("model") == {"v": 1}
    assert store.list() == ["model"]
    # What the outage left is aborted by the store's next write, or when it closes: no orphaned upload.
    if point == "complete":
        assert len(raw_uploads(raw, bucket, prefix)) == 1
        store.close()
    else:
        store.put("other", b"after the outage")
    assert raw_uploads(raw, bucket, prefix) == []


@pytest.mark.parametrize("operation", ["UploadPart", "CompleteMultipartUpload"])
def test_a_server_restart_mid_upload_is_bridged_by_the_retries(operation, proxy, make_store, raw, bucket, prefix):
    store = make_store(**OUTAGE)
    old, new = blob("model", 1, MiB), blob("model", 2, 11 * MiB)
    store.put("model", old, {"v": 1})
    # In-flight requests are reset, new connections refused for 0.3 s, then the server is back.
    restart = _Outage(proxy, operation, nth=2 if operation == "UploadPart" else 1, seconds=0.3)
    _write_in_chunks(store, "model", new, {"v": 2})
    assert restart.started is not None
    assert proxy.count(lambda e: e.operation == operation and e.fault is not None) == 1
    assert store.get("model", verify=True).getbuffer() == new
    assert store.get_model_metadata("model") == {"v": 2}
    assert raw_read(raw, bucket, f"{prefix}models/model") == new
    assert raw_uploads(raw, bucket, prefix) == []


def test_a_server_restart_longer_than_the_deadline_fails_cleanly(proxy, make_store, raw, bucket, prefix):
    store = make_store(**OUTAGE)
    old, new = blob("model", 1, MiB), blob("model", 2, 11 * MiB)
    store.put("model", old, {"v": 1})
    restart = _Outage(proxy, "UploadPart", nth=2, seconds=OUTAGE_RETRY.deadline + 0.5)
    with pytest.raises(StorageUnavailableError):
        _write_in_chunks(store, "model", new, {"v": 2})
    assert time.monotonic() - restart.started <= OUTAGE_RETRY.deadline + 1.0
    _assert_only_the_old_version(raw, bucket, prefix, old)
    deadline = time.monotonic() + 5
    while proxy.is_down and time.monotonic() < deadline:  # the restart ends on its own
        time.sleep(0.05)
    proxy.rules.clear()
    assert store.get("model").getbuffer() == old
    assert store.get_model_metadata("model") == {"v": 1}
    store.put("model", new, {"v": 2})
    assert raw_uploads(raw, bucket, prefix) == []
    assert store.get("model", verify=True).getbuffer() == new


# -- d. bytes changed behind the adapter's back ---------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "size"),
    [("sidecar", 4096), ("tags", 4096), ("sidecar", 6 * MiB)],
    ids=["sidecar", "tags", "sidecar-multi-range"],
)
def test_a_verified_read_of_bytes_changed_behind_the_adapters_back_raises_integrity_error(
    metadata, size, make_store, raw, bucket, prefix
):
    store = make_store(metadata=metadata)
    data = blob("model", 1, size)
    _write_in_chunks(store, "model", data, {"v": 1})
    key = f"{prefix}models/model"
    tags = raw.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    tagging = "&".join(f"{t['Key']}={t['Value']}" for t in tags)
    for changed in (data[:100] + b"X" + data[101:], data[: size // 2]):
        # Another tool rewrites the object and keeps its tags (so the recorded SHA-256 stays).
        raw.put_object(Bucket=bucket, Key=key, Body=changed, Tagging=tagging)
        with pytest.raises(IntegrityError):
            store.get("model", verify=True)
        with pytest.raises(IntegrityError), store.open("model", verify=True) as reader:
            reader.read()
        assert store.get("model").getbuffer() == changed  # unverified reads return what is there
    assert store.get_model_metadata("model") == {"v": 1}


def test_a_verified_read_catches_bytes_corrupted_in_flight(proxy, make_store):
    store = make_store()
    data = blob("model", 1, 3 * MiB)
    store.put("model", data)
    proxy.rules.append(lambda r: CORRUPT if r.operation == "GetObject" and "models/model" in r.path else None)
    with pytest.raises(IntegrityError):
        store.get("model", verify=True)
    with pytest.raises(IntegrityError), store.open("model", verify=True) as reader:
        reader.read()
    assert proxy.faults[CORRUPT] == 2


def test_a_body_corrupted_on_the_way_up_is_refused_by_the_server_and_sent_again(
    proxy, seaweedfs_endpoint, bucket, prefix
):
    """The S3 adapter's PUTs carry their SHA-256 in a checksum header, which the server checks.

    SeaweedFS does not check signed payload hashes: without the header it
    would store the damaged bytes. (The MinIO SDK signs its bodies; a server
    that does not check them leaves the damage to verified reads to find.)
    """
    store = adapter_store("s3", seaweedfs_endpoint, bucket, prefix, netloc=proxy.netloc)
    data = blob("model", 4, 3 * MiB)
    hit: set[str] = set()

    def corrupt_each_body_once(request):
        if request.method == "PUT" and request.length and request.target not in hit:
            hit.add(request.target)
            return CORRUPT
        return None

    proxy.rules.append(corrupt_each_body_once)
    store.put("model", data, {"v": 1})
    corrupted = [(e.path.rsplit("/", 2)[-2], e.status) for e in proxy.entries() if e.fault == CORRUPT]
    assert sorted(corrupted) == [("metadata", 400), ("models", 400)]
    assert store.stat("model").sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("model", verify=True).getbuffer() == data
    assert store.get_model_metadata("model") == {"v": 1}
    store.close()


def test_over_http_the_s3_adapter_signs_only_the_bodies_without_a_checksum_header(
    proxy, seaweedfs_endpoint, bucket, prefix
):
    """Signing makes botocore hash a body once more; a body the server checks by its header needs no signature."""
    store = adapter_store("s3", seaweedfs_endpoint, bucket, prefix, netloc=proxy.netloc, part_size=5 * MiB)
    seen = record_put_payloads(proxy)
    small, large = blob("small", 1, MiB), blob("large", 1, 11 * MiB)
    store.put("small", small, {"v": 1})
    store.put("large", large)
    store.set_model_metadata("large", {"v": 2})
    assert {(op, payload == "UNSIGNED-PAYLOAD", checksum) for op, payload, checksum in seen} == {
        ("PutObject", True, "x-amz-checksum-sha256"),  # the small model's bytes and the sidecars
        ("UploadPart", False, None),  # signed: its SHA-256 is in x-amz-content-sha256
    }
    assert len(seen) == 2 + 3 + 2
    assert store.get("small", verify=True).getvalue() == small
    assert store.get("large", verify=True).getvalue() == large
    store.close()


def test_over_http_the_minio_adapter_signs_a_put_by_the_sha256_computed_while_writing(
    proxy, seaweedfs_endpoint, bucket, prefix, monkeypatch
):
    """The SDK hashes every body it signs; for a whole-model PUT the model's own SHA-256 serves instead."""
    import minio.api

    hashed: list[int] = []
    sdk_hash = minio.api.sha256_hash
    monkeypatch.setattr(minio.api, "sha256_hash", lambda body: hashed.append(len(body or b"")) or sdk_hash(body))
    store = adapter_store("minio", seaweedfs_endpoint, bucket, prefix, netloc=proxy.netloc, part_size=5 * MiB)
    seen = record_put_payloads(proxy)
    small, large = blob("small", 1, 2 * MiB), blob("large", 1, 11 * MiB)
    store.put("small", small, {"v": 1})
    store.put("large", large)
    assert sorted(size for size in hashed if size >= MiB) == [MiB, 5 * MiB, 5 * MiB]  # the parts, not the model
    assert [payload for op, payload, _ in seen if op == "PutObject"][0] == hashlib.sha256(small).hexdigest()
    assert all(payload != "UNSIGNED-PAYLOAD" for _, payload, _ in seen)
    assert store.get("small", verify=True).getvalue() == small
    assert store.get("large", verify=True).getvalue() == large
    store.close()


# -- e. what is never retried ---------------------------------------------------------------------------


def _key_requests(proxy, key_suffix: str) -> list[str]:
    return [f"{e.operation}" for e in proxy.entries() if e.path.endswith(key_suffix)]


def test_403_is_answered_once_and_never_retried(proxy, make_store):
    store = make_store()
    store.put("denied", b"x", {"v": 1})
    store.exist("warm-up")  # the one-time bucket check (a denial's diagnosis) is behind us
    proxy.rules.append(lambda r: Reply(403, "AccessDenied") if "denied" in r.path else None)
    calls = {
        "exist": lambda: store.exist("denied"),
        "get": lambda: store.get("denied"),
        "open": lambda: store.open("denied"),
        "stat": lambda: store.stat("denied"),
        "put": lambda: store.put("denied", b"y"),
        "create": lambda: store.put("denied", b"y", overwrite=False),
        "get_model_metadata": lambda: store.get_model_metadata("denied"),
        "set_model_metadata": lambda: store.set_model_metadata("denied", 2),
        "delete": lambda: store.delete("denied"),
    }
    for name, call in calls.items():
        proxy.reset_counts()
        with pytest.raises(StoragePermissionError):
            call()
        assert proxy.requests == 1, f"{name}: {[e.operation for e in proxy.entries()]}"
        assert proxy.faults == {"403 AccessDenied": 1}, name


def test_404_is_answered_once_and_never_retried(proxy, make_store, seaweedfs_endpoint, adapter):
    store = make_store()
    store.exist("warm-up")  # the one-time bucket check is behind us
    for name, call, outcome in [
        ("get", lambda: store.get("missing"), None),
        ("exist", lambda: store.exist("missing"), False),
        ("open", lambda: store.open("missing"), ModelNotFoundError),
        ("stat", lambda: store.stat("missing"), ModelNotFoundError),
        ("get_model_metadata", lambda: store.get_model_metadata("missing"), ModelNotFoundError),
        ("set_model_metadata", lambda: store.set_model_metadata("missing", 1), ModelNotFoundError),
        ("delete", lambda: store.delete("missing"), False),
    ]:
        proxy.reset_counts()
        if isinstance(outcome, type):
            with pytest.raises(outcome):
                call()
        else:
            assert call() is outcome
        seen = collections.Counter((e.operation, e.path) for e in proxy.entries())
        assert seen and max(seen.values()) == 1, f"{name}: {seen}"
        assert all(e.status in (200, 204, 404) for e in proxy.entries()), name
    # A 404 the proxy makes up for a model that exists: one request, and the model reads as missing.
    store.put("present", b"x")
    proxy.rules.append(lambda r: Reply(404, "NoSuchKey") if r.path.endswith("models/present") else None)
    proxy.reset_counts()
    assert store.get("present") is None
    assert proxy.requests == 1
    proxy.rules.clear()
    # NoSuchBucket: one request.
    other = adapter_store(adapter, seaweedfs_endpoint, f"missing-{uuid.uuid4().hex[:12]}", "", netloc=proxy.netloc)
    proxy.reset_counts()
    with pytest.raises(BucketNotFoundError):
        other.put("m", b"x")
    other.close()
    assert proxy.requests == 1


def test_412_is_answered_once_and_never_retried(proxy, make_store):
    store = make_store()
    store.put("taken", b"first")
    proxy.reset_counts()
    with pytest.raises(ModelExistsError):
        store.put("taken", b"second", overwrite=False)
    # The store looks once at what is there: its own earlier write (an answer lost), or another's.
    assert [(e.operation, e.status) for e in proxy.entries()] == [("PutObject", 412), ("HeadObject", 200)]
    # A 412 the proxy makes up on an atomic create of a free id: not retried, ModelExistsError.
    proxy.rules.append(
        lambda r: Reply(412, "PreconditionFailed") if r.method == "PUT" and r.path.endswith("models/free") else None
    )
    proxy.reset_counts()
    with pytest.raises(ModelExistsError):
        store.put("free", b"x", overwrite=False)
    assert [(e.operation, e.status) for e in proxy.entries()] == [("PutObject", 412), ("HeadObject", 404)]
    assert store.get("taken").read() == b"first"


# -- the proxy itself --------------------------------------------------------------------------------------


def test_the_proxy_keeps_connections_alive_and_sees_no_chunked_uploads(proxy, make_store):
    store = make_store(metadata="tags")
    data = blob("model", 1, 11 * MiB)
    _write_in_chunks(store, "model", data, {"v": 1})
    store.put("small", b"x" * 1000, {"v": 2})
    assert store.get("model").getbuffer() == data
    for _ in range(40):
        assert store.exist("small")
        assert store.get("small").read() == b"x" * 1000
    assert proxy.requests > 80
    assert proxy.connections <= 8  # pooled connections carry many requests each
    assert proxy.chunked_requests == 0
    assert proxy.faults == {}


# -- what concurrent writers can leave behind -------------------------------------------------------------


def test_a_sidecar_left_without_its_model_is_no_model(make_store, raw, bucket, prefix):
    # A set_model_metadata (or a put's sidecar) racing a delete can put the sidecar back after the
    # model is gone. The model object decides: no model, no metadata, and delete clears the leftover.
    store = make_store()
    raw.put_object(Bucket=bucket, Key=f"{prefix}metadata/ghost.json", Body=b'{"sha256":null,"metadata":{"v":1}}')
    assert store.exist("ghost") is False
    assert store.list() == []
    with pytest.raises(ModelNotFoundError):
        store.get_model_metadata("ghost")
    with pytest.raises(ModelNotFoundError):
        store.set_model_metadata("ghost", {"v": 2})
    assert store.delete("ghost") is False
    assert raw_keys(raw, bucket, prefix) == set()


# -- f. the last model of a process ---------------------------------------------------------------------

_STORE_AT_EXIT = """
import atexit, json, sys
sys.path.insert(0, "tests")
from chaos import adapter_store, blob
from adapters.testing.servers import S3Endpoint

job = json.loads(sys.stdin.read())
endpoint = S3Endpoint("seaweedfs", job["url"], job["access_key"], job["secret_key"], job["region"])
store = adapter_store(
    job["adapter"], endpoint, job["bucket"], job["prefix"], part_size=5 * 2**20, ranged_get_threshold=5 * 2**20
)

def store_the_last_model():
    data = blob("last", 1, 11 * 2**20)  # three parts up, three ranges down
    store.put("last", data, {"v": 1})
    if store.get("last", verify=True).getvalue() == data:
        print("stored and read back", flush=True)

atexit.register(store_the_last_model)
"""


def test_a_multipart_model_is_written_and_read_while_the_interpreter_exits(
    adapter, seaweedfs_endpoint, raw, bucket, prefix
):
    """An atexit handler may store a last model; every thread pool refuses new work by then."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    ep = seaweedfs_endpoint
    job = {
        "adapter": adapter,
        "url": ep.endpoint_url,
        "access_key": ep.access_key,
        "secret_key": ep.secret_key,  # on stdin, never in argv
        "region": ep.region,
        "bucket": bucket,
        "prefix": prefix,
    }
    done = subprocess.run(
        [sys.executable, "-c", _STORE_AT_EXIT],
        input=json.dumps(job).encode(),
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == b"stored and read back", done.stderr.decode()
    assert raw_read(raw, bucket, f"{prefix}models/last") == blob("last", 1, 11 * MiB)
