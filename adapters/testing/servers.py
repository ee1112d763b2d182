"""What every test server shares: the endpoint it yields, its start error, free ports, certificates.

The servers themselves (``seaweedfs.SeaweedFSServer``, ``motoserver.MotoServer``,
``ceph.CephRGWServer``, ``localstack.LocalStackServer``) start on 127.0.0.1 and
yield an :class:`S3Endpoint`; plain helpers, no pytest import, so tests,
benchmarks and scripts use them alike::

    with SeaweedFSServer() as ep:
        s3 = ep.boto3_client()
        s3.create_bucket(Bucket="models")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "S3Endpoint",
    "ServerStartError",
    "TestServer",
    "free_ports",
    "unique_bucket_name",
    "write_self_signed_certificate",
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


class TestServer:
    """A throw-away server: ``with server as endpoint`` (or ``start()``), and ``stop()`` leaves nothing behind.

    A server keeps its files in ``workdir`` and stops its processes in ``_terminate``.
    """

    __test__ = False  # not a pytest test class, whatever its name says

    STARTUP_TIMEOUT = 60.0
    STOP_TIMEOUT = 5.0
    SERVES_HTTPS = False

    def __init__(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = DEFAULT_REGION,
        startup_timeout: float | None = None,
        stop_timeout: float | None = None,
        base_dir: str | None = None,
        start_attempts: int = 3,
        https: bool = False,
    ) -> None:
        """Options every server takes; a server's own options come before them in its signature.

        Keys left out are made up per server (see :meth:`new_access_key`); ``start_attempts``
        retries a start that lost a race for its ports; ``https`` serves S3 over TLS too, with a
        certificate made here for 127.0.0.1, and the endpoint is then HTTPS.
        """
        if https and not self.SERVES_HTTPS:
            raise ValueError(f"{type(self).__name__} does not serve HTTPS")
        self.access_key = access_key or self.new_access_key()
        self.secret_key = secret_key or self.new_secret_key()
        self.region = region
        self.startup_timeout = self.STARTUP_TIMEOUT if startup_timeout is None else startup_timeout
        self.stop_timeout = self.STOP_TIMEOUT if stop_timeout is None else stop_timeout
        self.base_dir = base_dir
        self.start_attempts = start_attempts
        self.https = https
        self.workdir: Path | None = None
        self.endpoint: S3Endpoint | None = None

    def new_access_key(self) -> str:
        return "key-" + uuid.uuid4().hex[:12]

    def new_secret_key(self) -> str:
        return uuid.uuid4().hex + uuid.uuid4().hex[:8]

    def __enter__(self) -> S3Endpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> S3Endpoint:
        raise NotImplementedError

    def _terminate(self) -> None:
        """Stop the server's processes (none by default)."""

    def stop(self) -> None:
        self._terminate()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


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


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<no log: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGTERM the server if the test process dies without cleaning up."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
