"""Stopping a command by a signal: SIGTERM and SIGHUP end it as Ctrl-C does, and nothing is left behind.

``kill``, ``docker stop``, systemd and ``timeout`` send SIGTERM; a closed
terminal sends SIGHUP. Each transferring command (put, get -o, simulate) is
stopped mid-transfer, on the temp-file store and on SeaweedFS through both
adapters (models large enough to be multipart uploads there, with
``part_size=5MiB``). The process is frozen while the transfer is seen and the
signal sent (``cli_support.signal_mid_transfer``), so the signal surely lands
mid-transfer. Then: the exit code is 128 + the signal, stderr is one line, and
the store's namespace holds what it held before: no ``.part`` file, no model,
no multipart upload (listed with a raw boto3 client), no partial output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import (
    MiB,
    clean_env,
    credentials_env,
    finish,
    modelstorage,
    part_files,
    seaweedfs_url,
    signal_mid_transfer,
    start,
    table_rows,
)

PART_SIZE = "5MiB"  # the smallest S3 allows: a model of a few MiB is already a multipart upload
SIGNAL_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
CLEANUP_SECONDS = 20  # from the signal to the exit, cleanup included; measured: well under a second


@dataclass
class Target:
    """A store to stop commands on, and what is in its namespace, seen from outside the command."""

    url: str
    everything: Callable[[], list[str]]
    """Every file of the folder, or every object key and multipart upload under the prefix."""
    writing: Callable[[], bool]
    """Bytes of a write on their way: a ``.part`` file that has some, or a multipart upload with a part.

    Not merely a ``.part`` file or an upload that exists: the store's own
    handling of an interrupt in the instant of their creation is the core's
    business (see the core's tests), this is the command's.
    """


STORES = ["tempfile", "s3-seaweedfs", "minio-seaweedfs"]
# Every signal on the temp-file store; on SeaweedFS, where the cleanup is the same, SIGTERM.
STORES_AND_SIGNALS = [
    *((STORES[0], signum) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)),
    *((store, signal.SIGTERM) for store in STORES[1:]),
]


def make_target(store: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    if store == "tempfile":
        folder = tmp_path / "models"
        return Target(
            folder.as_uri(),
            lambda: sorted(p.name for p in folder.iterdir()) if folder.is_dir() else [],
            lambda: any(_size(folder / name) for name in part_files(folder)),
        )
    endpoint = request.getfixturevalue("seaweedfs_endpoint")
    credentials_env(endpoint, monkeypatch)
    prefix = f"signals-{uuid.uuid4().hex[:8]}/"
    url = seaweedfs_url(endpoint, store.partition("-")[0], prefix, part_size=PART_SIZE)
    raw = endpoint.boto3_client()
    bucket = url.split("/")[2] if url.startswith("s3:") else url.split("/")[3]

    def uploads() -> list[dict]:
        return raw.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])

    def everything() -> list[str]:
        keys = [o["Key"] for o in raw.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        return sorted(keys) + [f"upload of {u['Key']}" for u in uploads()]

    def writing() -> bool:
        parts = (raw.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]) for u in uploads())
        return any(listed.get("Parts") for listed in parts)

    return Target(url, everything, writing)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.fixture(params=STORES)
def target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    return make_target(request.param, request, tmp_path, monkeypatch)


def _ids(value: object) -> str:
    return value.name if isinstance(value, signal.Signals) else str(value)


def _assert_stopped_cleanly(proc: subprocess.Popen, signum: int, sent: float) -> float:
    """The command ended by ``signum``: its exit code, one line on stderr; returns the seconds it took."""
    code = proc.wait(timeout=CLEANUP_SECONDS)  # stdin, if it is a pipe, still open: no end of input
    elapsed = time.monotonic() - sent
    if proc.stdin is not None:
        proc.stdin.close()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert code == SIGNAL_EXIT_CODES[signum], err
    assert err == f"modelstorage: error: interrupted by {signal.Signals(signum).name}\n", err
    print(f"\n  {signal.Signals(signum).name}: exited {code} {elapsed:.2f}s after the signal")
    return elapsed


# -- put ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("store", "signum"), STORES_AND_SIGNALS, ids=_ids)
def test_put_stopped_mid_upload_leaves_nothing(
    store: str, signum: int, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make_target(store, request, tmp_path, monkeypatch)
    before = target.everything()
    proc = start("-u", target.url, "put", "big", "-", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    # Two full parts and some: a multipart upload is under way; the pipe stays open, so the
    # command waits in the middle of its upload for more.
    proc.stdin.write(os.urandom(12 * MiB))
    proc.stdin.flush()

    sent = signal_mid_transfer(proc, target.writing, signum)
    _assert_stopped_cleanly(proc, signum, sent)
    assert target.everything() == before


def test_put_keeps_ignoring_a_hangup_it_was_started_to_ignore(tmp_path: Path) -> None:
    # nohup starts a command with SIGHUP ignored, so that it outlives its terminal: it must.
    folder = tmp_path / "models"
    data = os.urandom(4 * MiB)
    proc = start(
        "-u",
        folder.as_uri(),
        "put",
        "m",
        "-",
        stdin=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert proc.stdin is not None
    proc.stdin.write(data[: 2 * MiB])
    proc.stdin.flush()
    signal_mid_transfer(proc, lambda: bool(part_files(folder)), signal.SIGHUP)
    proc.stdin.write(data[2 * MiB :])
    proc.stdin.close()
    code, _, err = finish(proc)
    assert code == 0, err
    assert (folder / "m").read_bytes() == data


# -- get -o -------------------------------------------------------------------------------------


def test_get_stopped_mid_download_leaves_no_partial_output(target: Target, tmp_path: Path) -> None:
    # Large enough that the download takes a while even from the page cache.
    size = (128 if target.url.startswith("file:") else 48) * MiB
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(size))
    assert modelstorage("-u", target.url, "-q", "put", "big", str(source), timeout=120).returncode == 0
    before = target.everything()
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    proc = start("-u", target.url, "get", "big", "-o", str(downloads / "big.bin"))
    sent = signal_mid_transfer(proc, lambda: bool(part_files(downloads)), signal.SIGTERM)
    _assert_stopped_cleanly(proc, signal.SIGTERM, sent)
    assert list(downloads.iterdir()) == []
    assert target.everything() == before  # the model itself is untouched


# -- simulate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("store", "signum"), STORES_AND_SIGNALS, ids=_ids)
def test_simulate_stopped_mid_round_removes_what_it_wrote_and_nothing_else(
    store: str, signum: int, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make_target(store, request, tmp_path, monkeypatch)
    users = modelstorage("-u", target.url, "put", "global-round-1", "-", "--meta", "owner=user", stdin=b"mine")
    assert users.returncode == 0
    before = target.everything()

    # 2 M parameters: 8 MB models, two parts each on SeaweedFS.
    proc = start("-u", target.url, "simulate", "--clients", "2", "--rounds", "50", "--params", "2M")
    # Twice, as `timeout` sends SIGTERM (to the command, then to its process group):
    # the second must not cut the cleanup short.
    sent = signal_mid_transfer(proc, target.writing, signum, times=2)
    elapsed = _assert_stopped_cleanly(proc, signum, sent)
    assert elapsed < CLEANUP_SECONDS
    assert target.everything() == before
    assert modelstorage("-u", target.url, "get", "global-round-1").stdout == b"mine"


def test_a_simulate_stopped_by_timeout_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    command = [sys.executable, "-m", "storage", "-u", folder.as_uri(), "simulate", "--rounds", "1000", "--params", "1M"]
    result = subprocess.run(["timeout", "3", *command], capture_output=True, env=clean_env(), timeout=60)
    assert result.returncode == 124, result.stderr  # timeout's own code: it stopped the command
    assert result.stderr.decode() == "modelstorage: error: interrupted by SIGTERM\n", result.stderr
    assert table_rows(result.stdout.decode()), "no round ended before it was stopped"
    assert list(folder.iterdir()) == []
