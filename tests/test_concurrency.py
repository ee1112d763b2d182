"""Many threads and processes on one store.

- 8 threads x 100 mixed operations on one instance of every backend: every
  answer is one a serial execution could give, no torn model, exactly one
  winner per contended atomic create;
- readers during overwrites see a whole old or a whole new model, never a mix;
- two processes racing ``put(..., overwrite=False)`` on one id: exactly one
  wins, the other gets ModelExistsError (temp store, both adapters on SeaweedFS).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from chaos import PART_SIZE, MiB, adapter_store, blob, raw_clear, raw_uploads, whole_version

from storage import ModelExistsError, ModelNotFoundError, StorageError, TempModelStorage

REPO = Path(__file__).resolve().parent.parent

THREADS = 8
OPS_PER_THREAD = 100
SHARED = [f"shared-{n}" for n in range(4)]
MIX = {
    "get": 3,
    "exist": 2,
    "meta": 2,
    "open": 1,
    "stat": 1,
    "put": 2,
    "set_meta": 1,
    "delete": 1,
    "list": 1,
    "write": 1,
    "race": 1,
}
"""Mostly one-request operations, so 800 of them stay cheap."""


# One instance of every backend: memory, tempfile, S3ModelStorage and MinioModelStorage on a real S3
# server (SeaweedFS), one adapter per metadata mode, so both record kinds (sidecar, tags) race too.
# The moto tiers are left out of the concurrency tests: moto's S3 is not thread-safe (an overwrite
# closes the buffer of a key another request still reads: "I/O operation on closed file"), and its
# in-process server runs on the test's own GIL at ~100 requests a second, so 800 operations there
# would test moto and take a minute.
one_instance_per_backend = pytest.mark.backends(
    lambda spec: (
        spec.name in ("memory", "tempfile", "s3-seaweedfs-sidecar", "minio-seaweedfs-tags") or "external" in spec.name
    )
)


class _Worker:
    def __init__(self, store, number: int, universe: set[str], results: dict) -> None:
        self.store = store
        self.n = number
        self.rng = random.Random(1000 + number)
        self.universe = universe
        self.results = results
        self.private: dict[str, tuple[bytes, object]] = {}
        self.errors: list[str] = []
        self.done = 0

    def run(self, barrier: threading.Barrier) -> None:
        barrier.wait()
        for i in range(OPS_PER_THREAD):
            op = self.rng.choices(list(MIX), list(MIX.values()))[0]
            try:
                getattr(self, op)(i)
            except Exception as exc:  # noqa: BLE001 - collected and reported by the test
                self.errors.append(f"thread {self.n} op {i} {op}: {type(exc).__name__}: {exc}")
            self.done += 1

    def _version(self, i: int) -> int:
        return self.n * 1000 + i

    def _check(self, model_id: str, data: bytes) -> None:
        assert whole_version(data)[0] == model_id

    def put(self, i):
        model_id = self.rng.choice(SHARED)
        data = blob(model_id, self._version(i), self.rng.randint(100, 8000))
        metadata = {"writer": self.n, "v": self._version(i)} if i % 2 else None
        assert self.store.put(model_id, data, metadata).size == len(data)

    def get(self, i):
        model_id = self.rng.choice(SHARED)
        found = self.store.get(model_id)
        if found is not None:
            self._check(model_id, found.getvalue())

    def open(self, i):
        model_id = self.rng.choice(SHARED)
        try:
            with self.store.open(model_id) as reader:
                self._check(model_id, reader.read())
        except ModelNotFoundError:
            pass

    def exist(self, i):
        assert self.store.exist(self.rng.choice(SHARED)) in (True, False)

    def stat(self, i):
        with contextlib.suppress(ModelNotFoundError):
            assert self.store.stat(self.rng.choice(SHARED)).size > 0

    def meta(self, i):
        try:
            value = self.store.get_model_metadata(self.rng.choice(SHARED))
        except ModelNotFoundError:
            return
        assert value == {} or set(value) == {"writer", "v"} or set(value) == {"set-by"}, value

    def set_meta(self, i):
        with contextlib.suppress(ModelNotFoundError):
            assert self.store.set_model_metadata(self.rng.choice(SHARED), {"set-by": self.n}) is True

    def delete(self, i):
        assert self.store.delete(self.rng.choice(SHARED)) in (True, False)

    def list(self, i):
        listed = self.store.list()
        assert listed == sorted(listed) and set(listed) <= self.universe, listed

    def write(self, i):
        """A private model streamed through get_ptr (read back exactly at the end)."""
        model_id = f"t{self.n}-{i % 3}"
        data = blob(model_id, self._version(i), self.rng.randint(1000, 3 * 64 * 1024))
        metadata = {"writer": self.n, "v": self._version(i)}
        writer = self.store.get_ptr(model_id)
        for offset in range(0, len(data), 64 * 1024):
            writer.write(data[offset : offset + 64 * 1024])
        self.store.set_model_metadata(model_id, metadata)
        writer.close()
        self.private[model_id] = (data, metadata)

    def race(self, i):
        """Every thread creates race-<i // 10> around the same time; one may win."""
        model_id = f"race-{i // 10}"
        try:
            self.store.put(model_id, blob(model_id, self.n, 500), overwrite=False)
        except ModelExistsError:
            return
        with self.results["lock"]:
            self.results["winners"][model_id].append(self.n)


@one_instance_per_backend
def test_8_threads_x_100_mixed_operations_on_one_instance(store):
    universe = set(SHARED) | {f"t{n}-{k}" for n in range(THREADS) for k in range(3)}
    universe |= {f"race-{r}" for r in range(OPS_PER_THREAD // 10)}
    results = {"lock": threading.Lock(), "winners": collections.defaultdict(list)}
    workers = [_Worker(store, n, universe, results) for n in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    threads = [threading.Thread(target=w.run, args=(barrier,)) for w in workers]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    errors = [error for w in workers for error in w.errors]
    assert errors == []
    assert sum(w.done for w in workers) == THREADS * OPS_PER_THREAD
    # Quiet now: the end state is whole and consistent.
    for model_id, winners in results["winners"].items():
        assert len(winners) == 1, f"{model_id} was created by {winners}"
        assert whole_version(store.get(model_id).getvalue()) == (model_id, winners[0])
    for w in workers:
        for model_id, (data, metadata) in w.private.items():
            assert store.get(model_id, verify=True).getvalue() == data
            assert store.get_model_metadata(model_id) == metadata
    listed = store.list()
    for model_id in SHARED:
        if model_id in listed:
            # Unverified: on object stores a set_model_metadata racing a replacement can pair the new
            # bytes with the old SHA-256 (a known limitation of the sidecar/tag record, see the report).
            assert whole_version(store.get(model_id).getvalue())[0] == model_id
        else:
            assert store.exist(model_id) is False
            with pytest.raises(ModelNotFoundError):
                store.get_model_metadata(model_id)
    assert set(listed) == {m for m in universe if store.exist(m)}
    print(f"\n[threads] {THREADS}x{OPS_PER_THREAD} ops in {time.monotonic() - started:.1f}s")


@one_instance_per_backend
def test_readers_during_overwrites_see_a_whole_old_or_a_whole_new_model(store):
    # Object stores: above the part size, so writes are multipart and get() reads ranges concurrently.
    large = PART_SIZE + MiB if hasattr(store, "part_size") else 2 * MiB
    sizes = [large, 3000, large]
    store.put("model", blob("model", 0, 50_000))
    seen: collections.Counter[int] = collections.Counter()
    errors: list[str] = []
    writing = threading.Event()
    writing.set()

    def read(how: str, verify: bool) -> None:
        for _ in range(10_000):  # bounded; ends with the writer
            if not writing.is_set():
                return
            try:
                if how == "get":
                    data = store.get("model", verify=verify).getvalue()
                else:
                    with store.open("model", verify=verify) as reader:
                        data = reader.read()
                model_id, version = whole_version(data)
                seen[version] += 1
            except StorageError as exc:
                # A streamed, verified read of a model replaced meanwhile cannot be checked and says so;
                # it is never reported as corrupt.
                if not (how == "open" and verify and "replaced while being read" in str(exc)):
                    errors.append(f"{how}(verify={verify}): {type(exc).__name__}: {exc}")
                    return
            except Exception as exc:  # noqa: BLE001 - collected and reported by the test
                errors.append(f"{how}(verify={verify}): {type(exc).__name__}: {exc}")
                return

    readers = [
        threading.Thread(target=read, args=args)
        for args in (("get", False), ("get", True), ("open", False), ("open", True))
    ]
    for reader in readers:
        reader.start()
    try:
        for version, size in enumerate(sizes, 1):
            data = blob("model", version, size)
            with store.get_ptr("model") as writer:
                for offset in range(0, size, MiB):
                    writer.write(data[offset : offset + MiB])
    finally:
        writing.clear()
        for reader in readers:
            reader.join(timeout=60)
    assert errors == []
    assert sum(seen.values()) >= len(readers)
    assert whole_version(store.get("model", verify=True).getvalue()) == ("model", len(sizes))


RACER = textwrap.dedent(
    """
    import json, os, sys
    from storage import ModelExistsError

    spec = json.loads(sys.argv[1])
    if spec["kind"] == "tempfile":
        from storage import TempModelStorage
        store = TempModelStorage(spec["folder"])
    else:  # only the one SDK this racer needs is imported
        keys = dict(access_key=os.environ["RACE_ACCESS_KEY"], secret_key=os.environ["RACE_SECRET_KEY"],
                    region=spec["region"], part_size=5 * 2**20)
        if spec["kind"] == "s3":
            from adapters.s3modelstorage import S3ModelStorage
            store = S3ModelStorage(spec["bucket"], spec["prefix"], endpoint_url=spec["url"], **keys)
        else:
            from adapters.miniomodelstorage import MinioModelStorage
            netloc = spec["url"].split("://", 1)[1]
            store = MinioModelStorage(netloc, spec["bucket"], spec["prefix"], secure=False, **keys)
    me = spec["me"]
    print("ready", flush=True)
    sys.stdin.readline()  # go
    results = {}
    for model_id, size in spec["ids"]:
        data = (b"<%s|%d|%d>" % (model_id.encode(), me, size)).ljust(size, bytes([65 + me]))
        try:
            store.put(model_id, data, {"winner": me}, overwrite=False)
            results[model_id] = "won"
        except ModelExistsError:
            results[model_id] = "exists"
    print(json.dumps(results), flush=True)
    store.close()
    """
)


@pytest.fixture
def race_target(request, tmp_path):
    kind = request.param
    if kind == "tempfile":
        folder = tmp_path / "models"
        yield kind, {"folder": str(folder)}, {}, lambda: TempModelStorage(folder)
        return
    endpoint = request.getfixturevalue("seaweedfs_endpoint")
    raw = endpoint.boto3_client()
    bucket = f"race-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=bucket)
    prefix = "racers/"
    spec = {
        "url": endpoint.endpoint_url,
        "region": endpoint.region,
        "bucket": bucket,
        "prefix": prefix,
    }
    env = {"RACE_ACCESS_KEY": endpoint.access_key, "RACE_SECRET_KEY": endpoint.secret_key}
    opened = []

    def reopen():
        store = adapter_store(kind, endpoint, bucket, prefix)
        opened.append(store)
        return store

    yield kind, spec, env, reopen
    for store in opened:
        store.close()
    assert raw_uploads(raw, bucket, prefix) == []
    raw_clear(raw, bucket, "")
    raw.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("race_target", ["tempfile", "s3", "minio"], indirect=True)
def test_two_processes_racing_an_atomic_create_one_wins_the_other_gets_model_exists(race_target):
    kind, spec, env, reopen = race_target
    # Many small ids (single PUT with If-None-Match) and one above the part size (multipart).
    ids = [(f"race-{n}", 2000) for n in range(6)] + [("race-large", PART_SIZE + 1024)]
    racers = []
    for me in (1, 2):
        racers.append(
            subprocess.Popen(
                [sys.executable, "-c", RACER, json.dumps({**spec, "kind": kind, "me": me, "ids": ids})],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), **env},
            )
        )
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == b"ready", racer.stderr.read().decode()
        for racer in racers:
            racer.stdin.write(b"go\n")
            racer.stdin.flush()
        outcomes = []
        for racer in racers:
            out, err = racer.communicate(timeout=60)
            assert racer.returncode == 0, err.decode()
            outcomes.append(json.loads(out))
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait(timeout=10)
    store = reopen()
    for model_id, size in ids:
        results = sorted(outcome[model_id] for outcome in outcomes)
        assert results == ["exists", "won"], f"{model_id}: {results}"
        winner = 1 + [outcome[model_id] for outcome in outcomes].index("won")
        data = store.get(model_id, verify=True).getvalue()
        assert data.startswith(b"<%s|%d|" % (model_id.encode(), winner)) and len(data) == size
        assert store.get_model_metadata(model_id) == {"winner": winner}
    assert store.list() == sorted(model_id for model_id, _ in ids)
