"""Clocks and memory: wall time per call, peak resident memory growth, medians.

Peak RSS comes from Linux's VmHWM, reset before each measured call by
writing 5 to /proc/self/clear_refs; where that is unavailable the peak is
not reported (None) rather than guessed.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KiB, MiB, GiB = 1024, 1024**2, 1024**3

MIN_SECONDS = 0.05
"""A sample repeats a call until this much time has passed: one fast call is too short to time alone."""

RESULT_MARK = "benchmark-result: "
"""Starts the line a child process reports on; anything else it prints (a library's log) is ignored."""


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss() -> int | None:
    """Resident memory now, in bytes."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * KiB


def reset_peak() -> bool:
    """Make the peak-RSS mark equal the current RSS; False if the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * KiB


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds another process has used so far (Linux), or None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_growth: int | None
    """Highest RSS during the call minus RSS just before it, in bytes."""
    client_cpu: float
    """CPU seconds of this process (every thread) during the call."""
    server_cpu: float | None
    """CPU seconds of the server process during the call, when it runs on this machine."""
    result: Any


def timed(fn: Callable[..., Any], *args: Any, track_memory: bool = True, server_pid: int | None = None) -> Timed:
    """Run ``fn`` once, on a collected heap, timing it and watching its peak RSS and CPU use.

    On a CPU-bound machine CPU seconds per byte are steadier than wall time:
    other load on the machine stretches wall time but barely changes them.
    """
    gc.collect()
    before = rss() if track_memory and reset_peak() else None
    server_before = process_cpu(server_pid)
    cpu_before = time.process_time()
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    server_after = process_cpu(server_pid)
    server = None if server_before is None or server_after is None else server_after - server_before
    peak = peak_rss() if before is not None else None
    return Timed(seconds, None if peak is None or before is None else max(0, peak - before), cpu, server, result)


def repeated(call: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """(calls made, last result): ``call`` run until MIN_SECONDS have passed, at least once."""
    started, calls, result = time.perf_counter(), 0, None
    while True:
        result = None  # the previous model is freed before the next call, not held beside it
        result = call(*args)
        calls += 1
        if time.perf_counter() - started >= MIN_SECONDS:
            return calls, result


def run_child(module: str, job: dict, python: str | None = None) -> dict:
    """Run ``python -m module`` (this interpreter by default) with ``job`` as JSON on stdin, from the
    repository root, and return what it reported. Credentials in a job never go on a command line."""
    proc = subprocess.run(
        [python or sys.executable, "-m", module],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],  # where benchmarks/ is importable
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {job.get('kind')} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARK) :])


def report_to_parent(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the repeats were."""
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


def size_label(size: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def _machine_busy() -> float | None:
    """CPU seconds all CPUs have spent busy since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OutsideLoad:
    """How busy other processes kept the machine while a section ran.

    Busy CPU time of the whole machine minus this process's and the server's:
    on a shared machine this says how much of the spread is someone else's work.
    """

    def __init__(self, server_pid: int | None = None) -> None:
        self._server_pid = server_pid
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float | None, float, float | None]:
        own = os.times()  # this process and its finished children (the memory probes)
        own_cpu = own.user + own.system + own.children_user + own.children_system
        return time.monotonic(), _machine_busy(), own_cpu, process_cpu(self._server_pid)

    def cpus(self) -> float | None:
        """Average number of CPUs others kept busy since this object was made."""
        (t0, busy0, own0, srv0), (t1, busy1, own1, srv1) = self._start, self._snapshot()
        if busy0 is None or busy1 is None or t1 <= t0:
            return None
        server = (srv1 - srv0) if srv0 is not None and srv1 is not None else 0.0
        return max(0.0, (busy1 - busy0) - (own1 - own0) - server) / (t1 - t0)
