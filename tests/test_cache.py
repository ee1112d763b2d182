"""What only the read-through cache promises (storage.cache): it is never stale, one GET serves many readers,
it stays within its bound, a crash leaves nothing it would serve, writes drop what they replace, and it touches
nothing but its own files. The contract itself runs on the cached backends of the registry (``-k cached``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from backends import tree
from chaos import adapter_store

import storage.cachefolder
from storage import (
    CachedModelStorage,
    ConfigurationError,
    IntegrityError,
    MemoryModelStorage,
    ModelStat,
    TempModelStorage,
    open_storage,
)

MiB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".model"))


def count_reads(monkeypatch, store, *, delay: float = 0.0) -> list[str]:
    """The ids whose bytes ``store`` is asked for (``open``, ``get``); each read takes ``delay`` seconds."""
    reads: list[str] = []
    for name in ("open", "get"):
        original = getattr(store, name)

        def counted(model_id, *args, _original=original, **kwargs):
            reads.append(model_id)
            time.sleep(delay)
            return _original(model_id, *args, **kwargs)

        monkeypatch.setattr(store, name, counted)
    return reads


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The store's folder and the cache's, side by side."""
    return tmp_path / "store", tmp_path / "cache"


@pytest.fixture
def behind(folders) -> TempModelStorage:
    with TempModelStorage(folders[0]) as store:
        yield store


@pytest.fixture
def cache(behind, folders) -> CachedModelStorage:
    return CachedModelStorage(behind, folders[1], 64 * MiB)


# -- freshness --------------------------------------------------------------------------------------


def test_a_cached_model_is_read_from_disk_after_one_stat_of_the_store(cache, behind, folders, monkeypatch):
    data = os.urandom(MiB + 1)
    cache.put("global", data)
    reads = count_reads(monkeypatch, behind)
    stats = []
    monkeypatch.setattr(behind, "stat", lambda model_id, _stat=behind.stat: stats.append(model_id) or _stat(model_id))
    assert cache.get("global").read() == data
    assert cache.get("global").read() == data
    with cache.open("global", verify=True) as reader:
        assert reader.read() == data
    assert cache.get("global", verify=True).read() == data
    assert reads == ["global"]
    assert stats == ["global"] * 4
    assert entries(folders[1]) == [f"{sha256(data)}.model"]


@pytest.mark.parametrize("how", ["get", "open", "verified get", "verified open"])
def test_a_model_replaced_through_another_instance_is_never_served_stale(cache, folders, how):
    old, new = b"a" * MiB, b"b" * MiB  # one size: only the SHA-256 tells them apart
    cache.put("global", old)
    assert cache.get("global").read() == old
    with TempModelStorage(folders[0]) as other:
        other.put("global", new)
    if how.endswith("get"):
        assert cache.get("global", verify=how.startswith("verified")).read() == new
    else:
        with cache.open("global", verify=how.startswith("verified")) as reader:
            assert reader.read() == new


@pytest.mark.parametrize("metadata", ["sidecar", "tags"])
def test_on_an_object_store_a_hit_costs_a_head_and_one_small_get_and_a_replacement_is_seen(
    moto_server_endpoint, tmp_path, metadata, monkeypatch
):
    bucket, prefix = f"cache-{uuid.uuid4().hex[:12]}", f"{metadata}/"
    moto_server_endpoint.boto3_client().create_bucket(Bucket=bucket)
    with (
        adapter_store("s3", moto_server_endpoint, bucket, prefix, metadata=metadata) as store,
        CachedModelStorage(store, tmp_path / "cache", 64 * MiB) as cache,
    ):
        data = os.urandom(MiB)
        cache.put("global", data)
        assert cache.get("global").read() == data
        requests = []
        for name in ("head", "get", "get_tags"):
            original = getattr(store.client, name)
            monkeypatch.setattr(
                store.client,
                name,
                lambda key, *a, _n=name, _o=original, **k: requests.append((_n, key)) or _o(key, *a, **k),
            )
        assert cache.get("global").read() == data
        model_key = store.keys.model_key("global")
        record = ("get", store.keys.metadata_key("global")) if metadata == "sidecar" else ("get_tags", model_key)
        assert sorted(requests) == sorted([("head", model_key), record])
        with adapter_store("s3", moto_server_endpoint, bucket, prefix, metadata=metadata) as other:
            other.put("global", bytes(reversed(data)))
        assert cache.get("global").read() == bytes(reversed(data))


def test_models_without_a_recorded_sha256_or_changed_outside_the_store_are_read_past_the_cache(cache, folders):
    (folders[0] / "from-another-tool").write_bytes(b"no record")
    assert cache.get("from-another-tool").read() == b"no record"
    cache.put("global", b"recorded")
    assert cache.get("global").read() == b"recorded"
    (folders[0] / "global").write_bytes(b"swapped!")  # outside the store: its record no longer fits the file
    assert cache.stat("global").changed
    assert cache.get("global").read() == b"swapped!"
    assert entries(folders[1]) == [f"{sha256(b'recorded')}.model"]


def test_bytes_that_do_not_match_the_stat_are_not_cached_and_the_store_answers(cache, behind, folders, monkeypatch):
    cache.put("global", b"version 1")
    original = behind.open

    def replaced_while_read(model_id, **kwargs):
        with TempModelStorage(folders[0]) as other:
            other.put(model_id, b"version 2")
        return original(model_id, **kwargs)

    monkeypatch.setattr(behind, "open", replaced_while_read)
    assert cache.get("global").read() == b"version 2"
    assert entries(folders[1]) == []


def test_a_recorded_sha256_that_is_not_hex_never_becomes_a_path(tmp_path):
    class Lying(MemoryModelStorage):
        def _stat(self, model_id):
            found = super()._stat(model_id)
            return found and ModelStat(model_id, found.size, "../../escaped", found.last_modified)

    before = tree(tmp_path)
    with CachedModelStorage(Lying(), tmp_path / "cache", MiB) as cache:
        cache.put("global", b"weights")
        assert cache.get("global").read() == b"weights"
    assert tree(tmp_path) == before | {"cache"}


# -- single flight ---------------------------------------------------------------------------------------


def _read_in_threads(cache, model_id: str, how: str, threads: int = 16) -> list[bytes]:
    barrier = threading.Barrier(threads)
    results: list[bytes] = []

    def read() -> None:
        barrier.wait()
        if how == "open":
            with cache.open(model_id) as reader:
                results.append(reader.read())
        else:
            results.append(cache.get(model_id, verify=how == "verified get").read())

    workers = [threading.Thread(target=read) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


@pytest.mark.parametrize("locks", ["flock", "threads only"])
@pytest.mark.parametrize("how", ["get", "open", "verified get"])
def test_16_threads_reading_one_model_make_one_get(cache, behind, monkeypatch, how, locks):
    if locks == "threads only":
        monkeypatch.setattr(storage.cachefolder, "fcntl", None)
    data = os.urandom(3 * MiB)
    cache.put("global", data)
    reads = count_reads(monkeypatch, behind, delay=0.2)
    assert _read_in_threads(cache, "global", how) == [data] * 16
    assert reads == ["global"]


def test_16_threads_on_an_object_store_make_one_get_of_the_model(moto_server_endpoint, tmp_path, monkeypatch):
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    moto_server_endpoint.boto3_client().create_bucket(Bucket=bucket)
    with (
        adapter_store("minio", moto_server_endpoint, bucket, "p/") as store,
        CachedModelStorage(store, tmp_path / "cache", 64 * MiB) as cache,
    ):
        data = os.urandom(2 * MiB)
        cache.put("global", data)
        model_gets = []
        original = store.client.get

        def get(key, *args, **kwargs):
            if key == store.keys.model_key("global"):
                model_gets.append(key)
                time.sleep(0.2)
            return original(key, *args, **kwargs)

        monkeypatch.setattr(store.client, "get", get)
        assert _read_in_threads(cache, "global", "get") == [data] * 16
        assert len(model_gets) == 1


def _read_in_a_process(folders, barrier, counts) -> None:
    with TempModelStorage(folders[0]) as store, CachedModelStorage(store, folders[1], 64 * MiB) as cache:
        reads = []
        original = store.open
        store.open = lambda model_id: reads.append(model_id) or time.sleep(0.3) or original(model_id)
        barrier.wait()
        data = cache.get("global").read()
        counts.put((len(reads), sha256(data)))


def test_2_processes_sharing_the_cache_folder_make_one_get(cache, folders):
    data = os.urandom(3 * MiB)
    cache.put("global", data)
    context = multiprocessing.get_context("fork")
    barrier, counts = context.Barrier(2), context.Queue()
    children = [context.Process(target=_read_in_a_process, args=(folders, barrier, counts)) for _ in range(2)]
    for child in children:
        child.start()
    results = [counts.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert sorted(results) == [(0, sha256(data)), (1, sha256(data))]


# -- eviction -----------------------------------------------------------------------------------------------


def test_the_least_recently_used_entries_go_first_once_the_bytes_exceed_the_bound(behind, folders, monkeypatch):
    models = {name: os.urandom(MiB) for name in "abcd"}
    cache = CachedModelStorage(behind, folders[1], 3 * MiB)
    for name, data in models.items():
        cache.put(name, data)
    for name in ("a", "b", "c", "a"):  # a, read again, is used more recently than b and c
        cache.get(name)
    cache.get("d")
    assert entries(folders[1]) == sorted(f"{sha256(models[n])}.model" for n in "acd")
    reads = count_reads(monkeypatch, behind)
    for name in "acd":
        assert cache.get(name).read() == models[name]
    assert reads == []
    assert cache.get("b").read() == models["b"]
    assert reads == ["b"]
    assert sum(os.path.getsize(folders[1] / name) for name in entries(folders[1])) <= 3 * MiB


def test_a_model_larger_than_the_bound_is_read_uncached(behind, folders, monkeypatch):
    cache = CachedModelStorage(behind, folders[1], MiB)
    cache.put("large", os.urandom(MiB + 1))
    reads = count_reads(monkeypatch, behind)
    assert len(cache.get("large").read()) == MiB + 1
    assert len(cache.get("large").read()) == MiB + 1
    assert reads == ["large", "large"]
    assert entries(folders[1]) == []


def test_identical_bytes_under_two_ids_share_one_entry(cache, behind, folders, monkeypatch):
    cache.put("round-3", b"the global model")
    cache.put("latest", b"the global model")
    reads = count_reads(monkeypatch, behind)
    assert cache.get("round-3").read() == cache.get("latest").read() == b"the global model"
    assert reads == ["round-3"]
    assert len(entries(folders[1])) == 1


# -- bad entries ------------------------------------------------------------------------------------------------


def test_an_entry_changed_on_local_disk_fails_no_verified_read_and_is_dropped(cache, folders):
    data = os.urandom(MiB)
    cache.put("global", data)
    cache.get("global")
    entry = folders[1] / f"{sha256(data)}.model"
    entry.write_bytes(b"rot" + data[3:])
    assert cache.get("global", verify=True).read() == data  # dropped, filled again
    entry.write_bytes(b"rot" + data[3:])
    with pytest.raises(IntegrityError, match="cached copy"), cache.open("global", verify=True) as reader:
        reader.read()
    assert not entry.exists()
    assert cache.get("global", verify=True).read() == data


def test_a_fill_that_fails_midway_leaves_nothing_in_the_cache_folder(cache, behind, folders, monkeypatch):
    cache.put("global", os.urandom(3 * MiB))
    original = behind.open

    class Failing:
        def __init__(self, reader):
            self.reader = reader

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.reader.close()

        def read(self, n):
            if self.reader.tell() >= MiB:
                raise ConnectionResetError("the store went away")
            return self.reader.read(n)

    monkeypatch.setattr(behind, "open", lambda model_id: Failing(original(model_id)))
    with pytest.raises(ConnectionResetError):
        cache.get("global")
    assert os.listdir(folders[1]) == []


def test_a_failing_cache_folder_sends_reads_to_the_store(cache, folders, monkeypatch, caplog):
    real_mkstemp = storage.cachefolder.tempfile.mkstemp

    def full_disk(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folders[1]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*args, dir=dir, **kwargs)

    cache.put("global", b"weights")
    monkeypatch.setattr(storage.cachefolder.tempfile, "mkstemp", full_disk)
    with caplog.at_level(logging.WARNING, logger="modelstorage"):
        assert cache.get("global").read() == b"weights"
        with cache.open("global") as reader:
            assert reader.read() == b"weights"
    assert "No space left on device" in caplog.text
    assert os.listdir(folders[1]) == []


# -- crashes ------------------------------------------------------------------------------------------------------

_KILLED_WHILE_FILLING = """
import sys, time
from storage import CachedModelStorage, TempModelStorage

store = TempModelStorage(sys.argv[1])
original = store.open


class Stalling:
    def __init__(self, reader):
        self.reader = reader

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.reader.close()

    def read(self, n):
        if self.reader.tell() >= 2**20:
            print("filling", flush=True)
            time.sleep(600)
        return self.reader.read(n)


store.open = lambda model_id: Stalling(original(model_id))
CachedModelStorage(store, sys.argv[2], 2**30).get("global")
"""


@pytest.mark.parametrize("cleaned_by", ["the next fill", "a restart"])
def test_a_process_killed_while_filling_leaves_nothing_that_is_served(cache, behind, folders, monkeypatch, cleaned_by):
    data = os.urandom(3 * MiB)
    cache.put("global", data)
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WHILE_FILLING, *map(str, folders)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "filling\n"
    finally:
        child.kill()
        child.wait(timeout=30)
    left = os.listdir(folders[1])
    assert entries(folders[1]) == []
    assert sorted(name.rsplit(".", 1)[-1] for name in left) == ["filling", "lock"]
    if cleaned_by == "a restart":
        cache = CachedModelStorage(behind, folders[1], 64 * MiB)
        assert os.listdir(folders[1]) == []
    reads = count_reads(monkeypatch, behind)
    assert cache.get("global", verify=True).read() == data
    assert os.listdir(folders[1]) == [f"{sha256(data)}.model"]
    assert reads == ["global"]


# -- writes drop what they replace ----------------------------------------------------------------------------


def _fedn_write(store, model_id: str) -> None:
    store.get_ptr(model_id).write(b"new bytes")
    store.set_model_metadata(model_id, 0)
    store.get_ptr(model_id).close()


WRITES = {
    "put": lambda store: store.put("global", b"new bytes"),
    "get_ptr": lambda store: _fedn_write(store, "global"),
    "set_model_metadata": lambda store: store.set_model_metadata("global", {"round": 4}),
    "delete": lambda store: store.delete("global"),
    "delete_all": lambda store: store.delete_all(),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_writes_and_deletes_go_to_the_store_and_drop_the_entry(cache, behind, folders, monkeypatch, write):
    cache.put("global", b"old bytes", {"round": 3})
    cache.get("global")
    assert entries(folders[1]) == [f"{sha256(b'old bytes')}.model"]
    write(cache)
    assert entries(folders[1]) == []
    with TempModelStorage(folders[0]) as other:  # the store behind saw the write
        expected = other.get("global")
    reads = count_reads(monkeypatch, behind)
    got = cache.get("global")
    assert (got and got.read()) == (expected and expected.read())
    assert reads == ([] if expected is None else ["global"])


def test_metadata_stat_list_and_exist_come_from_the_store(cache, folders):
    cache.put("global", b"weights", {"round": 3})
    cache.get("global")
    with TempModelStorage(folders[0]) as other:
        other.set_model_metadata("global", {"round": 4})
        other.put("update", b"client update")
        assert cache.get_model_metadata("global") == {"round": 4}
        assert cache.list() == ["global", "update"]
        assert cache.stat("update").sha256 == sha256(b"client update")
        other.delete("global")
        assert not cache.exist("global")
        assert cache.get("global") is None


# -- the folder ---------------------------------------------------------------------------------------------------


def test_nothing_outside_the_cache_folder_and_nothing_foreign_inside_it_is_touched(tmp_path):
    store_folder, cache_folder = tmp_path / "store", tmp_path / "cache"
    cache_folder.mkdir()
    (tmp_path / "neighbour").write_bytes(b"not the cache's")
    foreign = {
        "notes.txt": b"mine",
        f"{'0' * 64}.model.bak": b"a backup",
        f"{'A' * 64}.model": b"upper case",
        f"{'1' * 64}.part": b"someone else's",
    }
    for name, content in foreign.items():
        (cache_folder / name).write_bytes(content)
    (cache_folder / "sub").mkdir()
    outside = tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith(("store", "cache"))}
    with TempModelStorage(store_folder) as store, CachedModelStorage(store, cache_folder, 2 * MiB) as cache:
        for n in range(5):  # fills and evictions
            cache.put(f"m{n}", os.urandom(MiB))
            cache.get(f"m{n}")
        cache.get("m1", verify=True)
        cache.delete("m4")
        cache.delete_all()
    assert tree(tmp_path) - {p for p in tree(tmp_path) if p.startswith(("store", "cache"))} == outside
    assert os.listdir(store_folder) == []  # delete_all left the store empty: nothing of the cache's went there
    for name, content in foreign.items():
        assert (cache_folder / name).read_bytes() == content
    left = set(os.listdir(cache_folder)) - set(foreign) - {"sub"}
    assert all(name.endswith(".model") and len(name) == 64 + len(".model") for name in left), left


# -- the URL option ------------------------------------------------------------------------------------------------


def test_a_cache_option_on_any_store_url_wraps_the_store(tmp_path):
    with open_storage(f"file://{tmp_path}/store?fsync=true&cache_dir={tmp_path}/cache&cache_max_bytes=20MiB") as opened:
        assert isinstance(opened, CachedModelStorage)
        assert isinstance(opened.store, TempModelStorage) and opened.store.fsync  # its own options still reach it
        assert (opened.directory, opened.max_bytes) == (tmp_path / "cache", 20 * MiB)
        opened.put("global", b"weights")
        assert opened.get("global").read() == b"weights"
    with open_storage(f"memory://?cache_dir={tmp_path}/cache") as opened:  # memory:// refuses options it does not know
        assert isinstance(opened.store, MemoryModelStorage)
        assert opened.max_bytes == 10 * 2**30


def test_the_cache_option_on_an_object_store_url(moto_server_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_server_endpoint.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_server_endpoint.secret_key)
    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    url = f"s3://{bucket}/p?endpoint_url={moto_server_endpoint.endpoint_url}&region=us-east-1&create_bucket=true"
    with open_storage(f"{url}&cache_dir={tmp_path}/cache&cache_max_bytes=1GiB") as opened:
        assert type(opened.store).__name__ == "S3ModelStorage"
        opened.put("global", b"weights")
        assert opened.get("global").read() == b"weights"
        assert entries(tmp_path / "cache") == [f"{sha256(b'weights')}.model"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("cache_max_bytes=1GiB", "needs cache_dir="),
        ("cache_dir=", "names no folder"),
        ("cache_dir={tmp}/cache&cache_max_bytes=lots", "cache_max_bytes"),
        ("cache_dir={tmp}/cache&cache_max_bytes=-1", "cache_max_bytes"),
    ],
)
def test_bad_cache_options_are_refused_before_the_store_is_opened(tmp_path, query, message):
    with pytest.raises(ConfigurationError, match=message):
        open_storage(f"file://{tmp_path}/store?{query.format(tmp=tmp_path)}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where, message", [("store", "own folder"), ("a-file", "cannot use")])
def test_a_folder_the_cache_cannot_use_is_refused(tmp_path, where, message):
    (tmp_path / "a-file").write_bytes(b"not a folder")
    with pytest.raises(ConfigurationError, match=message):
        open_storage(f"file://{tmp_path}/store?cache_dir={tmp_path}/{where}")
