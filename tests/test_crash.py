"""The temp-file store under crashes and a full disk.

- a writer process killed with SIGKILL (mid-stream, mid-put, while its
  metadata record is written) leaves the previous version whole, nothing
  partial visible; its leftovers are ignored by list/exist and removed by
  delete_all;
- a full disk (ENOSPC, simulated at the file objects the store writes
  through) fails with a clear StorageError and keeps the previous version.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from backends import tree

from storage import ModelExistsError, StorageError, TempModelStorage

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
OLD = b"old version " * 1000
OLD_METADATA = {"round": 1, "status": 0}

# The writer: opens the store, starts a write, reports how far it got, then waits (to be killed).
WRITER = textwrap.dedent(
    """
    import sys
    from storage import TempModelStorage
    import storage.tempmodelstorage as temp

    folder, model_id, mode = sys.argv[1:4]
    store = TempModelStorage(folder)
    chunk = b"N" * (1 << 20)

    def wait_to_be_killed(what):
        print(what, flush=True)
        sys.stdin.read()  # the test kills us here
        raise SystemExit("not killed")

    if mode == "stream":  # FEDn's get_ptr upload, killed between chunks
        writer = store.get_ptr(model_id)
        store.set_model_metadata(model_id, {"round": 2})
        for _ in range(3):
            writer.write(chunk)
        wait_to_be_killed("3 chunks written")
    elif mode == "busy":  # killed at whatever moment a tight write loop has reached
        writer = store.get_ptr(model_id)
        print("writing", flush=True)
        for _ in range(64):
            writer.write(chunk)
        wait_to_be_killed("64 chunks written")
    elif mode == "create":  # an atomic create, killed while reading its source
        class Source:
            sent = 0
            def read(self, n):
                if self.sent == 2:
                    wait_to_be_killed("2 chunks read")
                self.sent += 1
                return chunk
        store.put(model_id, Source(), {"round": 2}, overwrite=False)
    elif mode == "record":  # killed while the commit writes the metadata record
        original = temp.json.dump
        def dump(record, f):
            original(record, f)
            f.flush()
            wait_to_be_killed("record half written")
        temp.json.dump = dump
        with store.get_ptr(model_id) as writer:
            writer.write(chunk)
            store.set_model_metadata(model_id, {"round": 2})
    """
)


def _kill_mid_write(folder: Path, model_id: str, mode: str) -> str:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), model_id, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = child.stdout.readline().decode().strip()
        assert line, child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        child.stdin.close()
        child.stdout.close()
        child.stderr.close()
    return line


@pytest.mark.parametrize("mode", ["stream", "busy", "create", "record"])
def test_a_writer_killed_mid_write_leaves_the_previous_version_and_nothing_partial(tmp_path, mode):
    folder = tmp_path / "models"
    with TempModelStorage(folder) as store:
        store.put("model", OLD, OLD_METADATA)
        store.put("neighbour", b"untouched", {"n": 1})
    model_id = "fresh" if mode == "create" else "model"
    _kill_mid_write(folder, model_id, mode)

    leftovers = [name for name in os.listdir(folder) if name.endswith(".part")]
    assert leftovers, "the killed writer should have left its partial file behind"
    with TempModelStorage(folder) as restarted:
        assert restarted.list() == ["model", "neighbour"]
        assert restarted.exist("model") is True
        assert restarted.exist("fresh") is False
        assert restarted.get("model", verify=True).read() == OLD
        assert restarted.stat("model").sha256 == hashlib.sha256(OLD).hexdigest()
        assert restarted.get_model_metadata("model") == OLD_METADATA
        assert restarted.get("fresh") is None
        # The id is free for an atomic create, and the old model can be replaced as usual.
        restarted.put("fresh", b"new", overwrite=False)
        with pytest.raises(ModelExistsError):
            restarted.put("fresh", b"newer", overwrite=False)
        restarted.put("model", b"version 3", {"round": 3})
        assert restarted.get_model_metadata("model") == {"round": 3}
        assert restarted.delete_all() is True
    assert os.listdir(folder) == []  # leftovers included


class FullDisk:
    """A disk with ``capacity`` bytes left, for the files a TempModelStorage writes.

    ``os.fdopen`` is wrapped so every file the store opens in its folder
    counts what is written to it and raises ENOSPC, as write(2) does, once
    the disk is full (or, with ``at_flush``, when the buffered data is flushed,
    as delayed allocation reports it).
    """

    def __init__(self, folder: Path, capacity: int, *, at_flush: bool = False) -> None:
        self.folder = os.path.realpath(folder)
        self.capacity = capacity
        self.at_flush = at_flush
        self.used = 0
        self.refused = 0

    def install(self, monkeypatch) -> None:
        real_fdopen = os.fdopen

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            path = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
            return _QuotaFile(f, self) if path.startswith(self.folder + os.sep) else f

        monkeypatch.setattr(os, "fdopen", fdopen)

    def take(self, n: int) -> None:
        if self.used + n > self.capacity:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.used += n


class _QuotaFile:
    def __init__(self, f, disk: FullDisk) -> None:
        self._f = f
        self._disk = disk
        self._pending = 0

    def write(self, data):
        n = len(data.encode() if isinstance(data, str) else memoryview(data).cast("B"))
        if self._disk.at_flush:
            self._pending += n
        else:
            self._disk.take(n)
        return self._f.write(data)

    def flush(self):
        if self._pending:
            pending, self._pending = self._pending, 0
            self._disk.take(pending)
        return self._f.flush()

    def close(self):
        if self._f.closed:
            return
        try:
            self.flush()
        finally:
            self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


@pytest.fixture
def full_store(tmp_path, monkeypatch):
    """(store with the old model committed, folder, install(capacity, at_flush) -> FullDisk)."""
    folder = tmp_path / "models"
    store = TempModelStorage(folder)
    store.put("model", OLD, OLD_METADATA)

    def fill(capacity: int, *, at_flush: bool = False) -> FullDisk:
        disk = FullDisk(folder, capacity, at_flush=at_flush)
        disk.install(monkeypatch)
        return disk

    yield store, folder, fill
    store.close()


def _assert_old_version_intact(store: TempModelStorage, folder: Path, before: frozenset[str]) -> None:
    assert tree(folder) == before, "the failed write left something behind"
    assert store.list() == ["model"]
    assert store.get("model", verify=True).read() == OLD
    assert store.get_model_metadata("model") == OLD_METADATA


def _assert_clear_enospc(raised: pytest.ExceptionInfo) -> None:
    assert isinstance(raised.value, StorageError)
    assert "no space left on device" in str(raised.value)
    assert "model 'model'" in str(raised.value) or "'model'" in str(raised.value)


def test_a_full_disk_mid_stream_fails_clearly_and_keeps_the_previous_version(full_store):
    store, folder, fill = full_store
    before = tree(folder)
    disk = fill(capacity=2 * MiB + MiB // 2)
    writer = store.get_ptr("model")
    writer.write(b"n" * MiB)
    writer.write(b"n" * MiB)
    with pytest.raises(StorageError) as raised:
        writer.write(b"n" * MiB)
    _assert_clear_enospc(raised)
    assert disk.refused == 1
    with pytest.raises(ValueError):
        writer.write(b"more")  # the failed write was discarded
    _assert_old_version_intact(store, folder, before)


def test_a_full_disk_reported_at_flush_fails_the_commit_and_keeps_the_previous_version(full_store):
    store, folder, fill = full_store
    before = tree(folder)
    fill(capacity=1000, at_flush=True)
    writer = store.get_ptr("model")
    writer.write(b"n" * 5000)
    store.set_model_metadata("model", {"round": 2})
    with pytest.raises(StorageError) as raised:
        writer.close()
    _assert_clear_enospc(raised)
    _assert_old_version_intact(store, folder, before)


def test_a_full_disk_while_the_metadata_record_is_committed_keeps_the_previous_version(full_store):
    store, folder, fill = full_store
    before = tree(folder)
    new = b"new version " * 100
    fill(capacity=len(new) + 10)  # the bytes fit, their metadata record does not
    with pytest.raises(StorageError) as raised:
        store.put("model", new, {"round": 2})
    _assert_clear_enospc(raised)
    _assert_old_version_intact(store, folder, before)


def test_a_full_disk_while_metadata_is_set_keeps_the_previous_metadata(full_store):
    store, folder, fill = full_store
    before = tree(folder)
    fill(capacity=10)
    with pytest.raises(StorageError) as raised:
        store.set_model_metadata("model", {"round": 2, "note": "does not fit"})
    _assert_clear_enospc(raised)
    _assert_old_version_intact(store, folder, before)


def test_a_full_disk_during_an_atomic_create_leaves_the_id_free(full_store):
    store, folder, fill = full_store
    before = tree(folder)
    disk = fill(capacity=MiB)
    with pytest.raises(StorageError) as raised:
        store.put("fresh", b"f" * (3 * MiB), {"round": 1}, overwrite=False)
    assert "no space left on device" in str(raised.value)
    _assert_old_version_intact(store, folder, before)
    disk.capacity = 1 << 40  # space freed: the id is still free
    store.put("fresh", b"f", overwrite=False)
    assert store.get("fresh").read() == b"f"
