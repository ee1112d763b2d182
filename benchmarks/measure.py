"""Clocks and memory: wall time per call, peak resident memory growth, medians.

Peak RSS comes from Linux's VmHWM, reset before each measured call by
writing 5 to /proc/self/clear_refs; where that is unavailable the peak is
not reported (None) rather than guessed.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KiB, MiB, GiB = 1024, 1024**2, 1024**3


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


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_growth: int | None
    """Highest RSS during the call minus RSS just before it, in bytes."""
    result: Any


def timed(fn: Callable[..., Any], *args: Any, track_memory: bool = True) -> Timed:
    """Run ``fn`` once, on a collected heap, timing it and watching its peak RSS."""
    gc.collect()
    before = rss() if track_memory and reset_peak() else None
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    peak = peak_rss() if before is not None else None
    return Timed(seconds, None if peak is None or before is None else max(0, peak - before), result)


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


def parse_size(text: str) -> int:
    """``64K``, ``16M``, ``1G``, ``64KiB`` or bytes."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    for suffix, unit in (("K", KiB), ("M", MiB), ("G", GiB)):
        if text.endswith(suffix):
            return int(float(text[:-1]) * unit)
    return int(text)
