"""Put/get throughput per model size, and small-model operations per second.

Noise control on a shared machine: candidates are interleaved (every repeat
runs each candidate once, in an order rotated by one each repeat, so none
always runs first or right after the heaviest), the heap is collected before
each timed call, every candidate is warmed up first (connections, lazily
built clients), and the report uses the median of the repeats together with
their spread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.candidates import Candidate
from benchmarks.measure import KiB, MiB, median, size_label, spread, timed

SMALL = 64 * KiB
KEY = "model"  # one key per candidate, overwritten: stores hold one large model at a time


@dataclass(frozen=True)
class Sample:
    candidate: str
    op: str  # "put" | "get"
    size: int
    seconds: float
    peak_growth: int | None


@dataclass(frozen=True)
class Summary:
    candidate: str
    op: str
    size: int
    mib_per_s: float
    spread: float
    peak_growth: int | None
    """The highest peak RSS growth seen over the repeats."""


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


def warm_up(candidates: list[Candidate]) -> None:
    """One untimed round trip each: connections, credential lookups, lazily built transfer managers."""
    data = os.urandom(MiB)
    for candidate in candidates:
        candidate.put("warmup", data, {"status": "0"})
        candidate.get("warmup")


def run_sizes(
    candidates: list[Candidate], sizes: list[int], repeats: Callable[[int], int], log=print
) -> list[Sample]:
    samples: list[Sample] = []
    for size in sizes:
        data = os.urandom(size)
        for rep in range(repeats(size)):
            log(f"  {size_label(size)}: repeat {rep + 1}/{repeats(size)}")
            for candidate in _rotated(candidates, rep):
                for op, call in (("put", lambda c=candidate: c.put(KEY, data)), ("get", lambda c=candidate: c.get(KEY))):
                    t = timed(call)
                    if op == "get" and not _same(t.result, data):
                        raise AssertionError(f"{candidate.name} returned other bytes than it was given")
                    samples.append(Sample(candidate.name, op, size, t.seconds, t.peak_growth))
                    del t
        del data
    return samples


def summarize(samples: list[Sample]) -> list[Summary]:
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.candidate, s.op, s.size), []).append(s)
    summaries = []
    for (candidate, op, size), group in groups.items():
        rates = [size / MiB / s.seconds for s in group]
        peaks = [s.peak_growth for s in group if s.peak_growth is not None]
        summaries.append(Summary(candidate, op, size, median(rates), spread(rates), max(peaks) if peaks else None))
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


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
