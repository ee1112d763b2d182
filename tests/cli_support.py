"""What the tests of the ``modelstorage`` command share: running it, its stores, and stopping it mid-transfer.

The command always runs as a subprocess (``python -m storage``), as a user runs
it: on a temp-file folder, or on a fresh prefix of the session's SeaweedFS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

MiB = 1024 * 1024
COMMAND = [sys.executable, "-m", "storage"]


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without anything that would choose a store or a width for the command."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODELSTORAGE_URL", "FEDN_MODEL_DIR", "COLUMNS")}
    return {**env, **extra}


def modelstorage(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 60):
    """Run the command to its end; every run, failed or not, must be free of tracebacks."""
    result = subprocess.run(
        [*COMMAND, *args],
        input=stdin if stdin is not None else b"",  # never the test runner's own stdin
        capture_output=True,
        env=env if env is not None else clean_env(),
        timeout=timeout,
    )
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return result


def assert_one_line_error(result, exit_code: int, *fragments: str) -> None:
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == exit_code, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("modelstorage: error: "), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr


_CLI_BUCKETS: dict[str, str] = {}


def cli_bucket(endpoint) -> str:
    """One bucket per S3 server for every command test; each test takes a prefix of its own."""
    if endpoint.endpoint_url not in _CLI_BUCKETS:
        _CLI_BUCKETS[endpoint.endpoint_url] = f"cli-{uuid.uuid4().hex[:12]}"
        endpoint.boto3_client().create_bucket(Bucket=_CLI_BUCKETS[endpoint.endpoint_url])
    return _CLI_BUCKETS[endpoint.endpoint_url]


def credentials_env(endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's subprocesses take their credentials from the environment, as users do."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", endpoint.access_key),
        ("AWS_SECRET_ACCESS_KEY", endpoint.secret_key),
        ("MINIO_ACCESS_KEY", endpoint.access_key),
        ("MINIO_SECRET_KEY", endpoint.secret_key),
    ):
        monkeypatch.setenv(name, value)


def seaweedfs_url(endpoint, adapter: str, prefix: str, **options: str) -> str:
    bucket = cli_bucket(endpoint)
    query = "&".join(f"{name}={value}" for name, value in options.items())
    if adapter == "s3":
        return f"s3://{bucket}/{prefix}?endpoint_url={endpoint.endpoint_url}&region={endpoint.region}" + (
            f"&{query}" if query else ""
        )
    return f"minio://{endpoint.netloc}/{bucket}/{prefix}?secure=false" + (f"&{query}" if query else "")


STORES = ["tempfile", "s3-seaweedfs", "minio-seaweedfs"]
"""The stores command tests run on (a ``url`` fixture's params, see ``store_url``)."""


def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store named by ``request.param``: a temp-file folder, or a fresh prefix on SeaweedFS."""
    if request.param == "tempfile":
        (tmp_path / "models").mkdir()  # a store that exists, as a bucket prefix does; reading never makes one
        return (tmp_path / "models").as_uri()
    endpoint = request.getfixturevalue("seaweedfs_endpoint")
    credentials_env(endpoint, monkeypatch)
    return seaweedfs_url(endpoint, request.param.partition("-")[0], f"cli-{uuid.uuid4().hex[:8]}")


# -- stopping the command mid-transfer --------------------------------------------------------


def start(*args: str, stdin=subprocess.DEVNULL, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """The command, running; stdout and stderr are collected (``finish``)."""
    return subprocess.Popen(
        [*COMMAND, *args],
        stdin=stdin,
        stdout=popen.pop("stdout", subprocess.PIPE),
        stderr=popen.pop("stderr", subprocess.PIPE),
        env=env if env is not None else clean_env(),
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for the command's end: (exit code, stdout, stderr)."""
    if proc.stdin is not None and proc.stdin.closed:
        proc.stdin = None  # the test closed it (end of input): communicate would flush it
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, (out or b"").decode(), (err or b"").decode()


def table_rows(stdout: str) -> list[str]:
    """The rows of simulate's table: the lines after its rule of dashes that start with a round number."""
    lines = stdout.splitlines()
    rule = next((i for i, line in enumerate(lines) if line.startswith("-----")), len(lines))
    return [line for line in lines[rule + 1 :] if line.split()[:1] and line.split()[0].isdigit()]


def _frozen(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of ``pid`` is stopped (SIGSTOP takes effect asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = [
                Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0]
                for task in os.listdir(f"/proc/{pid}/task")
            ]
        except (FileNotFoundError, ProcessLookupError):
            return  # gone
        if all(state in "tTZX" for state in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


def signal_mid_transfer(
    proc: subprocess.Popen, in_transfer: Callable[[], bool], signum: int, *, times: int = 1, timeout: float = 60
) -> float:
    """Send ``signum`` (``times`` times, as ``timeout`` sends SIGTERM twice) while ``in_transfer()`` holds.

    The process is frozen (SIGSTOP) while ``in_transfer`` is checked again and
    the signal is sent, so the signal surely arrives mid-transfer: what was
    seen is what the process finds when it resumes. Returns when it was sent.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the command ended (exit {proc.returncode}) before a transfer was seen")
        if in_transfer():
            proc.send_signal(signal.SIGSTOP)
            try:
                _frozen(proc.pid)
                if in_transfer():
                    for _ in range(times):
                        proc.send_signal(signum)
                    return time.monotonic()
            finally:
                proc.send_signal(signal.SIGCONT)
        time.sleep(0.002)
    raise AssertionError("no transfer was seen in time")


def part_files(folder: Path) -> list[str]:
    """Partial writes in ``folder``: the store's ``.{id}.*.part`` files, or ``get -o``'s."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part")) if folder.is_dir() else []
