"""Put/get throughput per model size, and small-model operations per second.

Noise control on a shared machine: candidates are interleaved (every repeat
runs each candidate once, in an order rotated by one each repeat, so none
always runs first; a rotation keeps each candidate's predecessor, except for
the one that runs first), the heap is collected before
each timed call, every candidate is warmed up first (connections, lazily
built clients), and the report uses the median of the repeats together with
their spread.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.candidates import BOTO3, MINIO, Candidate
from benchmarks.measure import GiB, KiB, MiB, Timed, median, repeated, size_label, spread, timed

SMALL = 64 * KiB


@dataclass(frozen=True)
class Sample:
    candidate: str
    op: str  # "put" | "get"
    size: int
    seconds: float
    peak_growth: int | None
    client_cpu: float
    server_cpu: float | None


@dataclass(frozen=True)
class Summary:
    candidate: str
    op: str
    size: int
    mib_per_s: float
    spread: float
    peak_growth: int | None
    """The highest peak RSS growth seen over the repeats."""
    client_cpu_per_gib: float
    server_cpu_per_gib: float | None


@dataclass(frozen=True)
class SmallSample:
    candidate: str
    op: str
    ops_per_s: float


def _rotated(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


def _same(result: object, data: bytes) -> bool:
    view = result.getbuffer() if hasattr(result, "getbuffer") else memoryview(result)
    with view:
        return view == data


class _NewKeys:
    """Puts under a new key each call, as a combiner stores each update under a new uuid:
    overwriting one key would time truncation and replace-by-rename, which real workloads rarely do."""

    def __init__(self, candidate: Candidate, prefix: str) -> None:
        self.candidate, self.prefix, self.keys = candidate, prefix, []

    def put(self, data: bytes) -> None:
        self.keys.append(f"{self.prefix}-{len(self.keys)}")
        self.candidate.put(self.keys[-1], data)

    def delete_all(self) -> None:
        for key in self.keys:
            self.candidate.delete(key)


def warm_up(candidates: list[Candidate]) -> None:
    """One untimed round trip each: connections, credential lookups, lazily built transfer managers."""
    data = os.urandom(MiB)
    for candidate in candidates:
        candidate.put("warmup", data, {"status": "0"})
        candidate.get("warmup")


def run_sizes(
    candidates: list[Candidate],
    sizes: list[int],
    repeats: Callable[[int], int],
    log=print,
    server_pid: int | None = None,
) -> list[Sample]:
    samples: list[Sample] = []
    for size in sizes:
        data = os.urandom(size)
        for rep in range(repeats(size)):
            log(f"  {size_label(size)}: repeat {rep + 1}/{repeats(size)}")
            for candidate in _rotated(candidates, rep):
                written = _NewKeys(candidate, f"model-{size}-{rep}")
                put = timed(repeated, written.put, data, server_pid=server_pid)
                samples.append(_sample(candidate, "put", size, put))
                got = timed(repeated, candidate.get, written.keys[-1], server_pid=server_pid)
                if not _same(got.result[1], data):
                    raise AssertionError(f"{candidate.name} returned other bytes than it was given")
                samples.append(_sample(candidate, "get", size, got))
                del got  # the model it holds would otherwise count against the next call's memory
                written.delete_all()  # untimed: keeps stores (and page cache) from filling up
    return samples


def _sample(candidate: Candidate, op: str, size: int, t: Timed) -> Sample:
    """Per-call figures of a timed ``repeated`` run."""
    calls = t.result[0]
    # Local stores do not use the server: its CPU during their calls is someone else's.
    server_cpu = t.server_cpu / calls if t.server_cpu is not None and candidate.sdk in (BOTO3, MINIO) else None
    return Sample(candidate.name, op, size, t.seconds / calls, t.peak_growth, t.client_cpu / calls, server_cpu)


def summarize(samples: list[Sample]) -> list[Summary]:
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.candidate, s.op, s.size), []).append(s)
    summaries = []
    for (candidate, op, size), group in groups.items():
        rates = [size / MiB / s.seconds for s in group]
        peaks = [s.peak_growth for s in group if s.peak_growth is not None]
        gib = size / GiB
        client = median([s.client_cpu / gib for s in group])
        servers = [s.server_cpu / gib for s in group if s.server_cpu is not None]
        server = median(servers) if servers else None
        summaries.append(
            Summary(candidate, op, size, median(rates), spread(rates), max(peaks) if peaks else None, client, server)
        )
    return summaries


def run_small(candidates: list[Candidate], ops: int, repeats: int, log=print) -> list[SmallSample]:
    """``ops`` puts of distinct 64 KiB models with metadata, then ``ops`` gets of them, per repeat."""
    data = os.urandom(SMALL)
    samples: list[SmallSample] = []
    for rep in range(repeats):
        log(f"  small models: repeat {rep + 1}/{repeats}")
        for candidate in _rotated(candidates, rep):
            keys = [f"small-{rep}-{i}" for i in range(ops)]

            def put_all(c=candidate, keys=keys):
                for i, key in enumerate(keys):
                    c.put(key, data, {"status": "0", "round": str(i)})

            def get_all(c=candidate, keys=keys):
                for key in keys:
                    c.get(key)

            for op, call in (("put", put_all), ("get", get_all)):
                samples.append(SmallSample(candidate.name, op, ops / timed(call, track_memory=False).seconds))
    return samples


def summarize_small(samples: list[SmallSample]) -> dict[tuple[str, str], tuple[float, float]]:
    """(candidate, op) -> (median ops/s, spread)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for s in samples:
        groups.setdefault((s.candidate, s.op), []).append(s.ops_per_s)
    return {key: (median(v), spread(v)) for key, v in groups.items()}


_STARTED = time.monotonic()


def stderr_log(message: str) -> None:
    """Progress on stderr, with the seconds since start (the report goes to stdout)."""
    print(f"[{time.monotonic() - _STARTED:5.0f}s] {message}", file=sys.stderr, flush=True)
