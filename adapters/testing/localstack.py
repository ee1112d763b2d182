"""LocalStack's S3 on loopback, run in-process from a venv of its own (no Docker).

``localstack-core`` needs Python 3.13 and pins its own boto3, so it lives in a separate virtual
environment that ``.ci/install-localstack.sh`` creates; this module only starts its runtime
(``python -m localstack.runtime.main``) with the settings the Docker image would have, and runs
the repository's init hooks (``localstack/init``, as docker-compose.yml mounts them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import adapters
from adapters.testing.servers import (
    S3Endpoint,
    ServerStartError,
    TestServer,
    free_ports,
    set_pdeathsig,
    tail,
)

INSTALL_COMMAND = "bash .ci/install-localstack.sh"
DEFAULT_VENV = Path.home() / ".cache" / "modelstorage" / "localstack-venv"
_REPO_INIT_DIR = Path(adapters.__file__).resolve().parents[1] / "localstack" / "init"
DEFAULT_INIT_DIR = _REPO_INIT_DIR if _REPO_INIT_DIR.is_dir() else None
DEFAULT_BUCKET = "fedn-models"  # what localstack/init/ready.d/create-bucket.sh creates unless told otherwise

# Twisted keeps the process alive (and deaf to SIGTERM) when the gateway cannot bind: look for this.
_BIND_FAILED = ("CannotListenError", "Address already in use")


def find_localstack_python(python: str | None = None) -> str:
    """The interpreter of LocalStack's venv, or raise :class:`ServerStartError` saying how to install it.

    Order: ``python`` if given; ``$MODELSTORAGE_LOCALSTACK_PYTHON``; the venv the install script makes.
    """
    source = "python" if python else "MODELSTORAGE_LOCALSTACK_PYTHON"
    given = python or os.environ.get("MODELSTORAGE_LOCALSTACK_PYTHON")
    candidate = given or str(DEFAULT_VENV / "bin" / "python")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    where = f"{source}={given!r} is not an executable file" if given else f"{candidate} is missing"
    raise ServerStartError(
        f"LocalStack is not installed ({where}). Install it (a Python 3.13 venv, ~1 min) with "
        f"`{INSTALL_COMMAND}` from the repository root, or point MODELSTORAGE_LOCALSTACK_PYTHON at "
        "the python of a venv that has localstack-core."
    )


class LocalStackServer(TestServer):
    """A throw-away LocalStack (S3 only) on 127.0.0.1 and a free port.

    Data lives in a temp dir removed on :meth:`stop`, except that LocalStack spills objects over
    512 KiB to ``/tmp/localstack-s3-storage/<bucket>/`` (a path it hard-codes): deleted on a clean
    stop, left there by a KILL. LocalStack checks no signatures, so any credentials work. Ready once
    every init hook has run successfully.
    """

    STARTUP_TIMEOUT = 90.0
    STOP_TIMEOUT = 10.0

    def __init__(
        self,
        *,
        init_dir: str | os.PathLike[str] | None = DEFAULT_INIT_DIR,
        python: str | None = None,
        bucket: str = DEFAULT_BUCKET,
        extra_env: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        self.init_dir = Path(init_dir) if init_dir is not None else None
        self.python = python
        self.bucket = bucket
        """Passed to the hooks as ``MODELSTORAGE_BUCKET``; reported in ``extra["bucket"]`` if they made it."""
        super().__init__(**options)
        self.extra_env = dict(extra_env or {})
        """More LocalStack settings (e.g. ``{"DEBUG": "1"}``); they win over the ones set here."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.port: int | None = None

    def new_access_key(self) -> str:
        return "test"  # LocalStack checks no signatures; its documentation's keys

    new_secret_key = new_access_key

    def start(self) -> S3Endpoint:
        python = find_localstack_python(self.python)
        if self.init_dir is not None and not self.init_dir.is_dir():
            raise ServerStartError(f"LocalStack init_dir {self.init_dir} is not a directory")
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="localstack-", dir=self.base_dir))
        try:  # whatever goes wrong, even ^C: leave no process or temp dir behind
            if self.init_dir is not None:
                # A copy, not the repo folder: LocalStack reads $FILESYSTEM_ROOT/etc/localstack/init.
                shutil.copytree(self.init_dir, self.workdir / "root/etc/localstack/init", symlinks=True)
            for sub in ("home", "tmp"):
                (self.workdir / sub).mkdir()
            for attempt in range(1, self.start_attempts + 1):
                try:
                    self._launch(python, attempt)
                    self._wait_ready(t0)
                    break
                except ServerStartError as e:
                    port_race = "address already in use" in str(e).lower()
                    if not port_race or attempt == self.start_attempts:
                        raise
                    self._terminate(grace=0)  # it ignores SIGTERM after a failed bind
            assert self.proc is not None
            endpoint = S3Endpoint(
                "localstack", f"http://127.0.0.1:{self.port}", self.access_key, self.secret_key, self.region
            )
            bucket = self.bucket if self._bucket_exists(endpoint) else None
        except BaseException:
            self.stop()
            raise
        self.endpoint = dataclasses.replace(
            endpoint,
            startup_seconds=time.monotonic() - t0,
            extra={"pid": self.proc.pid, "log": str(self.log_path), "port": self.port, "bucket": bucket},
        )
        return self.endpoint

    def _launch(self, python: str, attempt: int) -> None:
        assert self.workdir is not None
        self.port = free_ports(1)[0]
        url = f"http://127.0.0.1:{self.port}"
        env = {
            # The venv's bin first: the hooks call `awslocal` (awscli-local), as in the Docker image.
            "PATH": os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", os.defpath)]),
            # Keeps the user's ~/.aws and ~/.localstack profiles (which LocalStack loads) out.
            "HOME": str(self.workdir / "home"),
            # TMP, not TMPDIR: Python's tempfile honours both, but LocalStack takes TMPDIR for one of
            # its own (deprecated) settings and warns.
            "TMP": str(self.workdir / "tmp"),
            "LANG": "C.UTF-8",
            "OVERRIDE_IN_DOCKER": "0",  # host mode without the CLI, whose host mode wants an account
            "SERVICES": "s3",
            "EAGER_SERVICE_LOADING": "1",  # load S3 before "ready", so the hooks need not wait for it
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "LOCALSTACK_HOST": f"127.0.0.1:{self.port}",  # the host in URLs it hands out
            "FILESYSTEM_ROOT": str(self.workdir / "root"),
            "DNS_ADDRESS": "0",  # its DNS server would want port 53
            "SKIP_SSL_CERT_DOWNLOAD": "1",  # no network here
            # For awslocal in the hooks: without it they would talk to localhost:4566, which may be
            # a docker-compose LocalStack.
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MODELSTORAGE_BUCKET": self.bucket,
            "DISABLE_DEPRECATION_NOTICE": "1",  # awslocal's banner, on every call
            **self.extra_env,
        }
        self.log_path = self.workdir / f"localstack-{attempt}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [python, "-m", "localstack.runtime.main"],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() also ends hook scripts still running.
                start_new_session=True,
                preexec_fn=set_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )

    def _wait_ready(self, t0: float) -> None:
        """Poll ``/_localstack/init/ready``: its health endpoint answers before the hooks have run."""
        assert self.proc is not None and self.log_path is not None
        url = f"http://127.0.0.1:{self.port}/_localstack/init/ready"
        deadline = t0 + self.startup_timeout
        last = "no attempt yet"
        while True:
            log_tail = f"\n--- {self.log_path} (tail) ---\n{tail(self.log_path)}"
            rc = self.proc.poll()
            if rc is not None:
                raise ServerStartError(
                    f"LocalStack exited with code {rc} during startup (a broken venv? reinstall with "
                    f"`{INSTALL_COMMAND}`).{log_tail}"
                )
            if any(marker in log_tail for marker in _BIND_FAILED):
                raise ServerStartError(f"LocalStack could not bind port {self.port}: address already in use.{log_tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    status = json.load(response)
                failed = [s["name"] for s in status.get("scripts", []) if s.get("state") == "ERROR"]
                if failed:
                    raise ServerStartError(f"LocalStack init hook(s) failed: {', '.join(failed)}.{log_tail}")
                if status.get("completed"):
                    return
                last = f"hooks still running: {status.get('scripts')}"
            except (OSError, ValueError) as e:  # URLError is an OSError; ValueError: not JSON yet
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"LocalStack on port {self.port} not ready after {self.startup_timeout:.0f}s "
                    f"(last: {last}).{log_tail}"
                )
            time.sleep(0.2)

    def _bucket_exists(self, endpoint: S3Endpoint) -> bool:
        import botocore.exceptions

        try:
            endpoint.boto3_client().head_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError:
            return False
        except botocore.exceptions.BotoCoreError as e:
            raise ServerStartError(f"LocalStack was ready but S3 did not answer: {e}") from e
        return True

    def _terminate(self, grace: float | None = None) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # The whole group: a hook script still running at a failed start goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_timeout if grace is None else grace)
        except subprocess.TimeoutExpired:
            # A clean stop takes 4-7 s (most of it the interpreter tearing down), for data thrown away.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
