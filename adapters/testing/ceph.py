"""A throw-away Ceph cluster with its S3 gateway (RADOS Gateway, ``radosgw``) on loopback, without Docker.

What it starts, from Debian's packages (``.ci/install-ceph.sh``): one monitor (``ceph-mon``), one OSD
(``ceph-osd``) that keeps every object in memory (``osd_objectstore = memstore``) and the gateway
(``radosgw``, beast frontend on 127.0.0.1). No manager: the monitor alone creates pools.

How: everything lives in a temp dir with its own ``ceph.conf`` (a fresh fsid, every path inside the
dir, ``-c`` given to every command), so nothing reads or writes /etc/ceph or /var/lib/ceph and any
user can run it. The daemons trust each other (``auth none``) and speak messenger v2 only. Steps:
``monmaptool --create``, ``ceph-mon --mkfs``, start the monitor, ``ceph osd new``, ``ceph-osd --mkfs``,
start the OSD, ``radosgw-admin user create`` (the S3 credentials), start the gateway, then wait until
a bucket can be made and an object stored, read and deleted through boto3: about 2 s (3-4 s on a
busy 2-core machine) and 130 MB RSS, plus the objects' own size (memstore keeps them in RAM).
:meth:`CephRGWServer.stop` TERMs the daemons by pid (KILL after ``stop_timeout``) and removes the dir.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
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

# The programs run, and the Debian package that ships each.
TOOLS = {"monmaptool": "ceph-base", "ceph-mon": "ceph-mon", "ceph": "ceph-common", "ceph-osd": "ceph-osd"}
TOOLS |= {"radosgw-admin": "ceph-common", "radosgw": "radosgw"}
INSTALL_COMMAND = "sudo apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw"

CONF = """\
[global]
fsid = {fsid}
mon_host = [v2:127.0.0.1:{mon}]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
# The daemons trust each other: no keyrings to make, none looked for in /etc/ceph.
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# Without auth the default "secure" mode fails: radosgw loops on "get_initial_auth_request returned -13".
ms_mon_client_mode = crc
ms_bind_msgr1 = false
# The OSD binds four ports; keep them in a block that was free, not 6800-7300 where a real Ceph lives.
ms_bind_port_min = {osd_min}
ms_bind_port_max = {osd_max}
# A taken port is our race to lose (start() retries with new ports): fail at once, not 3 times 5 s apart.
ms_bind_retry_count = 1
run_dir = {dir}/run
crash_dir = {dir}/crash
mon_data = {dir}/mon
osd_data = {dir}/osd
rgw_data = {dir}/rgw
# Each daemon's stderr goes to log/<name>.log, which startup errors quote.
log_to_file = false
log_to_stderr = true
mon_cluster_log_to_file = false
# A temp dir on a nearly full disk must not make the monitor shut itself down.
mon_data_avail_crit = 0
# One OSD holding everything in memory: one replica per pool, few placement groups, nonzero CRUSH weight.
osd_objectstore = memstore
memstore_device_bytes = {memstore_bytes}
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_pool_default_pg_num = 8
osd_crush_initial_weight = 1
# The gateway creates its six pools one by one, a few map changes each, and the monitor batches
# changes for 1 s by default: startup took 12 s instead of 2, a first bucket and first PUT 2 s each.
paxos_propose_interval = 0.05
# A client op sent before the OSD is up waits for the client's next tick to ask for a newer map: 5 s by
# default, which made one start in ten take 5 s longer on a loaded machine.
objecter_tick_interval = 0.5
# On SIGTERM an OSD waits up to 5 s for the monitor to acknowledge it is going down; ours goes down next.
osd_fast_shutdown_notify_mon = false

[client.rgw]
# tcp_nodelay: without it a GET or LIST answer waits about 40 ms on a delayed ACK (Nagle), 20x a PUT.
rgw_frontends = beast endpoint=127.0.0.1:{s3}{tls} tcp_nodelay=1
rgw_thread_pool_size = 32
# Allow SSE headers over plain HTTP (RGW, like AWS, refuses them without TLS by default) so tests can use SSE-C.
rgw_crypt_require_ssl = false
# Overwritten and deleted data stays in RAM (memstore) until garbage-collected: by default after 2 h.
rgw_gc_obj_min_wait = 60
rgw_gc_processor_period = 60
# If the test process dies every daemon gets SIGTERM at once (PR_SET_PDEATHSIG); with its monitor
# gone, radosgw's shutdown hangs until this alarm (120 s by default).
rgw_exit_timeout_secs = 5
"""


def find_ceph_tools() -> dict[str, str]:
    """Paths of the Ceph programs, or raise :class:`ServerStartError` with the command that installs them."""
    found = {tool: shutil.which(tool) for tool in TOOLS}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        packages = ", ".join(sorted({TOOLS[tool] for tool in missing}))
        raise ServerStartError(
            f"Ceph RGW test server: {', '.join(missing)} not found (Debian package(s) {packages}). "
            f"Install with `{INSTALL_COMMAND}`, or run `.ci/install-ceph.sh`."
        )
    return {tool: path for tool, path in found.items() if path is not None}


def free_port_block(n: int, low: int = 10000, high: int = 32000) -> int:
    """First of ``n`` consecutive ports free on 127.0.0.1. Below Linux's ephemeral range (32768+), where
    :func:`free_ports` picks, so a server starting at the same time is not handed one of them."""
    for _ in range(200):
        base = random.randrange(low, high - n)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + n):
                socks.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                socks[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ServerStartError(f"no {n} consecutive free ports between {low} and {high}")


class CephRGWServer(TestServer):
    """A throw-away Ceph cluster (monitor, in-memory OSD, RADOS Gateway) serving S3 on 127.0.0.1."""

    OSD_PORTS = 12  # it binds 4; Ceph skips ports taken since we checked, so leave it some to skip to

    SERVES_HTTPS = True

    def __init__(self, *, memstore_mb: int = 2048, **options: Any) -> None:
        super().__init__(**options)
        self.memstore_mb = memstore_mb
        """The size the OSD reports; writes fail once 95% is used. The data itself is held in RAM."""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # daemon name -> process, in start order
        self.logs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}
        self._tools: dict[str, str] = {}
        self._deadline = 0.0

    def new_access_key(self) -> str:
        return "CEPH" + uuid.uuid4().hex[:16].upper()

    def start(self) -> S3Endpoint:
        self._tools = find_ceph_tools()
        t0 = time.monotonic()
        self._deadline = t0 + self.startup_timeout
        for attempt in range(1, self.start_attempts + 1):
            try:
                self._bootstrap()
                self._wait_ready(self._endpoint(t0))
                break
            except BaseException as e:  # Ctrl-C included: no daemons left behind
                self.stop()
                # The monitor's and gateway's ports were free a moment before they bound them: retry on a race.
                race = isinstance(e, ServerStartError) and "address already in use" in str(e).lower()
                if not race or attempt == self.start_attempts:
                    raise
        self.endpoint = self._endpoint(t0)
        return self.endpoint

    def _endpoint(self, t0: float) -> S3Endpoint:
        assert self.workdir is not None
        extra = {"pids": {name: p.pid for name, p in self.procs.items()}, "ports": dict(self.ports)}
        extra |= {"logs": {name: str(path) for name, path in self.logs.items()}, "conf": f"{self.workdir}/ceph.conf"}
        if self.https:
            extra["ca_bundle"] = str(self.workdir / "tls" / "cert.pem")
        url = f"https://127.0.0.1:{self.ports['s3_https']}" if self.https else f"http://127.0.0.1:{self.ports['s3']}"
        return S3Endpoint("ceph-rgw", url, self.access_key, self.secret_key, self.region, time.monotonic() - t0, extra)

    def _bootstrap(self) -> None:
        w = self.workdir = Path(tempfile.mkdtemp(prefix="ceph-", dir=self.base_dir))
        for sub in ("mon", "osd", "rgw", "run", "crash", "log"):
            (w / sub).mkdir()
        self.logs = {}
        mon, s3, s3_https = free_ports(3)
        osd_min = free_port_block(self.OSD_PORTS)
        self.ports = {"mon": mon, "s3": s3, "osd_min": osd_min, "osd_max": osd_min + self.OSD_PORTS - 1}
        tls = ""
        if self.https:
            self.ports["s3_https"] = s3_https
            cert, key = write_self_signed_certificate(w / "tls")
            tls = f" ssl_endpoint=127.0.0.1:{s3_https} ssl_certificate={cert} ssl_private_key={key}"
        fsid = str(uuid.uuid4())
        conf = CONF.format(fsid=fsid, dir=w, memstore_bytes=self.memstore_mb << 20, tls=tls, **self.ports)
        (w / "ceph.conf").write_text(conf)

        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon}]", str(w / "monmap"))
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(w / "monmap"))
        self._spawn("mon.a", "ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "osd", "new", osd_uuid, waits_for="mon.a").strip()
        self._run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._spawn(f"osd.{osd_id}", "ceph-osd", "-i", osd_id)
        # Waits for the OSD to be up: it creates the gateway's first pools and stores the user in them.
        user = ["--uid", "modelstorage-tests", "--display-name", "modelstorage tests"]
        keys = ["--access-key", self.access_key, "--secret-key", self.secret_key]
        self._run("radosgw-admin", "user", "create", *user, *keys, waits_for=f"osd.{osd_id}")
        self._spawn("client.rgw", "radosgw", "-n", "client.rgw")

    def _popen(self, tool: str, args: tuple[str, ...], out: Path, err: Path) -> subprocess.Popen[bytes]:
        assert self.workdir is not None
        argv = [self._tools[tool], "-c", str(self.workdir / "ceph.conf"), *args]
        with open(out, "ab") as stdout, open(err, "ab") as stderr:
            return subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # Our -c is the whole configuration: a CEPH_ARGS in the environment would add to it. The
                # ceph CLI is /usr/bin/python3 with Debian's modules, not this (virtual) environment's.
                env={k: v for k, v in os.environ.items() if not k.startswith(("CEPH_", "PYTHONPATH", "PYTHONHOME"))},
                preexec_fn=set_pdeathsig if sys.platform.startswith("linux") else None,  # noqa: PLW1509
            )

    def _spawn(self, name: str, tool: str, *args: str) -> None:
        """Start a daemon in the foreground (``-f``: the pid we get is the daemon's), logging to log/<name>.log."""
        assert self.workdir is not None
        log = self.logs[name] = self.workdir / "log" / f"{name}.log"
        self.procs[name] = self._popen(tool, ("-f", *args), log, log)

    def _run(self, tool: str, *args: str, waits_for: str | None = None) -> str:
        """Run a one-off command within the startup deadline; its stdout. ``waits_for``: the daemon
        it blocks on, whose log explains a hang."""
        assert self.workdir is not None
        step = "-".join([tool, *(a.lstrip("-") for a in args[:2])])
        out, err = (self.workdir / "log" / f"{step}.{ext}" for ext in ("out", "err"))
        proc = self._popen(tool, args, out, err)
        command = f"`{tool} {' '.join(args)}`".replace(self.secret_key, "<secret>")
        try:
            while proc.poll() is None:
                self._check_alive()
                if time.monotonic() > self._deadline:
                    log = self.logs.get(waits_for or "")
                    raise ServerStartError(
                        f"{command} did not finish within the {self.startup_timeout:.0f}s startup timeout."
                        + (f"\n--- {log} (tail) ---\n{tail(log)}" if log else "")
                    )
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise ServerStartError(f"{command} failed with exit code {proc.returncode}:\n{tail(err)}\n{tail(out)}")
        return out.read_text()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ServerStartError(
                    f"Ceph daemon {name} exited with code {proc.returncode} during startup.\n"
                    f"--- {self.logs[name]} (tail) ---\n{tail(self.logs[name])}"
                )

    def _wait_ready(self, endpoint: S3Endpoint) -> None:
        """Poll until the gateway authenticates us and can store, read and delete an object."""
        import botocore.exceptions

        # when_required: over HTTPS, boto3's default streams PUT bodies aws-chunked with a trailing CRC32,
        # which this RGW (16.x) refuses (411 MissingContentLength); readiness is not the place to find that out.
        client = endpoint.boto3_client(connect_timeout=1, read_timeout=5, request_checksum_calculation="when_required")
        bucket, last = "ready-probe-" + uuid.uuid4().hex[:8], "no attempt yet"
        while True:
            self._check_alive()
            try:
                client.create_bucket(Bucket=bucket)  # again after a timeout: RGW answers its owner 200
                client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                if client.get_object(Bucket=bucket, Key="probe")["Body"].read() == b"ok":
                    client.delete_object(Bucket=bucket, Key="probe")
                    client.delete_bucket(Bucket=bucket)
                    return
                last = "probe object read back wrong"
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > self._deadline:
                log = self.logs["client.rgw"]
                raise ServerStartError(
                    f"Ceph RGW on {endpoint.endpoint_url} not ready after {self.startup_timeout:.0f}s "
                    f"(last error: {last}).\n--- {log} (tail) ---\n{tail(log)}"
                )
            time.sleep(0.2)

    def _terminate(self) -> None:
        # Gateway first, monitor last: a daemon whose monitor is gone stalls its shutdown waiting for it
        # (OSD 5 s, radosgw until rgw_exit_timeout_secs); in this order all three stop in under a second.
        procs, self.procs = list(self.procs.values()), {}
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
