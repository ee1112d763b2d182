"""The issue's targets, each turned into a pass/fail verdict with its numbers."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.candidates import BOTO3, FILE, MEMORY, MINIO, Candidate
from benchmarks.measure import MiB, size_label
from benchmarks.throughput import Summary

LARGE = 16 * MiB  # the throughput targets apply from this size up
OWN_SDK_RATIO = 1.0
ANY_SDK_RATIO = 0.9
SMALL_OPS_RATIO = 0.8
STREAM_LIMIT = 200 * MiB
FILE_RATIO = 0.9
SMALL_BASELINE = {BOTO3: "boto3 put/get_object", MINIO: "minio put/get_object"}


@dataclass(frozen=True)
class Verdict:
    target: str
    passed: bool
    detail: str


class Rates:
    """Median MiB/s by (candidate, op, size), and the baselines the targets compare with."""

    def __init__(self, summaries: list[Summary], candidates: list[Candidate]) -> None:
        self.rate = {(s.candidate, s.op, s.size): s.mib_per_s for s in summaries}
        self.cpu = {
            (s.candidate, s.op, s.size): s.client_cpu_per_gib + (s.server_cpu_per_gib or 0.0) for s in summaries
        }
        self.sizes = sorted({s.size for s in summaries})
        self.candidates = candidates

    def best(self, op: str, size: int, sdks: tuple[str, ...]) -> tuple[str, float] | None:
        """The fastest raw call of the given SDKs at this size and direction."""
        found = [
            (self.rate[(c.name, op, size)], c.name)
            for c in self.candidates
            if c.raw and c.sdk in sdks and (c.name, op, size) in self.rate
        ]
        if not found:
            return None
        rate, name = max(found)
        return name, rate

    def baseline(self, candidate: Candidate, op: str, size: int) -> tuple[str, float] | None:
        """What a candidate's ratio is taken against: the best raw SDK call, or plain files."""
        if candidate.sdk in (FILE, MEMORY):
            return self.best(op, size, (FILE,))
        return self.best(op, size, (BOTO3, MINIO))


def _ratios(rates: Rates, name: str, op: str, sdks: tuple[str, ...], sizes: list[int]):
    """(size, throughput ratio, baseline name, detail) against the best raw call of ``sdks``.

    The detail also gives the CPU-cost ratio (baseline CPU s/GiB over ours, client + server):
    above 1 means cheaper than the baseline, whatever other load did to the wall clock.
    """
    for size in sizes:
        best = rates.best(op, size, sdks)
        mine = rates.rate.get((name, op, size))
        if best and mine is not None:
            ratio = mine / best[1]
            mine_cpu, best_cpu = rates.cpu[(name, op, size)], rates.cpu[(best[0], op, size)]
            cpu = f", CPU cost {best_cpu / mine_cpu:.2f}x" if mine_cpu else ""
            yield size, ratio, best[0], f"{size_label(size)} {ratio:.2f}x ({best[0]}{cpu})"


def throughput_verdicts(rates: Rates) -> list[Verdict]:
    verdicts = []
    large = [s for s in rates.sizes if s >= LARGE]
    adapters = [c for c in rates.candidates if not c.raw and c.sdk in (BOTO3, MINIO)]
    for label, ratio, sdks_of in (
        (f">= {OWN_SDK_RATIO}x the best raw call of its own SDK", OWN_SDK_RATIO, lambda c: (c.sdk,)),
        (f">= {ANY_SDK_RATIO}x the best raw call of either SDK", ANY_SDK_RATIO, lambda c: (BOTO3, MINIO)),
    ):
        for c in adapters:
            for op in ("put", "get"):
                found = list(_ratios(rates, c.name, op, sdks_of(c), large))
                if not found:
                    continue
                detail = "; ".join(text for *_, text in found)
                passed = all(r >= ratio for _, r, _, _ in found)
                verdicts.append(Verdict(f"{c.name} {op} {label}, models >= 16 MiB", passed, detail))
    temp = next((c for c in rates.candidates if c.sdk == FILE and not c.raw), None)
    if temp is not None:
        for op in ("put", "get"):
            found = list(_ratios(rates, temp.name, op, (FILE,), rates.sizes))
            if found:
                detail = "; ".join(text for *_, text in found)
                passed = all(r >= FILE_RATIO for _, r, _, _ in found)
                verdicts.append(Verdict(f"{temp.name} {op} >= {FILE_RATIO}x plain file, every size", passed, detail))
    return verdicts


def small_verdicts(small: dict, candidates: list[Candidate]) -> list[Verdict]:
    verdicts = []
    for c in candidates:
        if c.raw or c.sdk not in SMALL_BASELINE:
            continue
        parts, passed = [], True
        for op in ("put", "get"):
            mine, base = small.get((c.name, op)), small.get((SMALL_BASELINE[c.sdk], op))
            if mine and base:
                ratio = mine[0] / base[0]
                passed &= ratio >= SMALL_OPS_RATIO
                parts.append(f"{op} {mine[0]:.0f}/s = {ratio:.2f}x")
        if parts:
            target = f"{c.name} 64 KiB ops/s >= {SMALL_OPS_RATIO}x {SMALL_BASELINE[c.sdk]}"
            verdicts.append(Verdict(target, passed, ", ".join(parts)))
    return verdicts


def stream_verdicts(streams: dict[str, dict], size: int) -> list[Verdict]:
    verdicts = []
    for name, result in streams.items():
        for phase, how in (("write", "get_ptr, 1 MiB chunks"), ("read", "open()")):
            growth = result[phase]["peak_growth"]
            rate = size / MiB / result[phase]["seconds"]
            verdicts.append(
                Verdict(
                    f"{name} {size_label(size)} {phase} via {how}: peak RSS growth <= {STREAM_LIMIT // MiB} MiB",
                    growth <= STREAM_LIMIT,
                    f"{growth / MiB:.0f} MiB at {rate:.0f} MiB/s",
                )
            )
    return verdicts


def memory_verdict(result: dict, size: int) -> Verdict:
    peak = result["get"]
    return Verdict(
        f"MemoryModelStorage.get of {size_label(size)}: at most one copy (tracemalloc peak)",
        peak <= size + MiB,
        f"peak {peak / MiB:.1f} MiB = {peak / size:.2f} copies (put: {result['put'] / size:.2f} copies)",
    )
