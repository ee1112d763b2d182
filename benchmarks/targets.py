"""The targets, each held against what a user would pick instead, as pass/fail verdicts with their numbers.

- ``TempModelStorage``: FEDn's own ``TempModelStorage``, through the calls FEDn makes.
- A sidecar put of a small model: two raw PUTs of the same SDK (two requests is the design).
- Adapter throughput and client CPU: the best raw call of the adapter's own SDK.
- The read-through cache: the same downloads without it.
- Peak memory of streamed writes and reads, and of ``MemoryModelStorage.get``.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.candidates import BOTO3, FILE, MEMORY, MINIO, Candidate, TwoPuts
from benchmarks.measure import MiB, size_label
from benchmarks.scenarios import CallRate, FanoutSummary
from benchmarks.throughput import Summary

ADAPTER_SIZES = (16 * MiB, 256 * MiB)
OWN_SDK_RATIO = 0.95
"""Adapter MiB/s at least this times the best raw call of its own SDK..."""
OWN_SDK_CPU_RATIO = 1.0
"""...and client CPU seconds per GiB at most this times that call's."""
FEDN_RATIO = 1.0
SIDECAR_PUT_RATIO = 0.9
FANOUT_SPEEDUP = 5.0
FANOUT_MODEL_GETS = 1
STREAM_LIMIT = 200 * MiB


@dataclass(frozen=True)
class Verdict:
    target: str
    passed: bool
    detail: str


class Rates:
    """Median MiB/s and client CPU per GiB by (candidate, op, size), and the baselines they are held to."""

    def __init__(self, summaries: list[Summary], candidates: list[Candidate]) -> None:
        self.rate = {(s.candidate, s.op, s.size): s.mib_per_s for s in summaries}
        self.client_cpu = {(s.candidate, s.op, s.size): s.client_cpu_per_gib for s in summaries}
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
        """What a candidate's ratio is taken against: the best raw call of its own SDK, or plain files."""
        if candidate.sdk in (FILE, MEMORY):
            return self.best(op, size, (FILE,))
        return self.best(op, size, (candidate.sdk,))


def adapter_verdicts(rates: Rates) -> list[Verdict]:
    verdicts = []
    adapters = [c for c in rates.candidates if not c.raw and c.sdk in (BOTO3, MINIO)]
    for c in adapters:
        for op in ("put", "get"):
            parts, passed = [], True
            for size in (s for s in ADAPTER_SIZES if (c.name, op, s) in rates.rate):
                best = rates.best(op, size, (c.sdk,))
                if best is None:
                    continue
                ratio = rates.rate[(c.name, op, size)] / best[1]
                mine_cpu, best_cpu = rates.client_cpu[(c.name, op, size)], rates.client_cpu[(best[0], op, size)]
                cpu_ratio = mine_cpu / best_cpu if best_cpu else float("inf")
                passed &= ratio >= OWN_SDK_RATIO and cpu_ratio <= OWN_SDK_CPU_RATIO
                parts.append(
                    f"{size_label(size)}: {rates.rate[(c.name, op, size)]:.0f} MiB/s = {ratio:.2f}x, "
                    f"client CPU {mine_cpu:.2f} s/GiB = {cpu_ratio:.2f}x of {best[0]} "
                    f"({best[1]:.0f} MiB/s, {best_cpu:.2f} s/GiB)"
                )
            if parts:
                target = (
                    f"{c.name} {op}, {' and '.join(size_label(s) for s in ADAPTER_SIZES)}: >= {OWN_SDK_RATIO}x MiB/s "
                    f"and <= {OWN_SDK_CPU_RATIO}x client CPU s/GiB of the best raw call of its own SDK"
                )
                verdicts.append(Verdict(target, passed, "; ".join(parts)))
    return verdicts


def sidecar_put_verdicts(small: dict, candidates: list[Candidate]) -> list[Verdict]:
    """A sidecar adapter's 64 KiB puts per second against its own SDK's two raw PUTs."""
    verdicts = []
    baselines = {c.sdk: c.name for c in candidates if isinstance(c, TwoPuts)}
    for c in candidates:
        if c.raw or "sidecar" not in c.name or c.sdk not in baselines:
            continue
        mine, base = small.get((c.name, "put")), small.get((baselines[c.sdk], "put"))
        if mine and base:
            ratio = mine[0] / base[0]
            verdicts.append(
                Verdict(
                    f"{c.name} 64 KiB put (with metadata) >= {SIDECAR_PUT_RATIO}x two raw PUTs of its own SDK",
                    ratio >= SIDECAR_PUT_RATIO,
                    f"{mine[0]:.0f}/s against {baselines[c.sdk]} {base[0]:.0f}/s = {ratio:.2f}x",
                )
            )
    return verdicts


def fedn_verdicts(rates: list[CallRate], ours: str, fedn: str | None) -> list[Verdict]:
    """``ours`` against FEDn's TempModelStorage, per direction, at every size measured."""
    labels = {"put": "put through get_ptr (1 MiB chunks, a status per chunk)", "get": "get"}
    if fedn is None:
        return [
            Verdict(f"{ours} {labels[op]} >= {FEDN_RATIO}x FEDn's TempModelStorage", False, "not measured: no FEDn")
            for op in ("put", "get")
        ]
    by = {(r.store, r.op, r.size): r for r in rates}
    verdicts = []
    for op in ("put", "get"):
        parts, passed = [], True
        for size in sorted({r.size for r in rates}):
            mine, theirs = by.get((ours, op, size)), by.get((fedn, op, size))
            if mine and theirs:
                ratio = mine.mib_per_s / theirs.mib_per_s
                passed &= ratio >= FEDN_RATIO
                parts.append(f"{size_label(size)} {mine.mib_per_s:.0f}/{theirs.mib_per_s:.0f} MiB/s = {ratio:.2f}x")
        verdicts.append(Verdict(f"{ours} {labels[op]} >= {FEDN_RATIO}x {fedn}", passed, "; ".join(parts)))
    return verdicts


def fanout_verdicts(fanout: list[FanoutSummary], clients: int, size: int) -> list[Verdict]:
    verdicts = []
    local = next((f for f in fanout if f.sdk is None), None)  # a local file: what every cache hit reads
    for cached in (f for f in fanout if f.cached):
        plain = next((f for f in fanout if f.sdk == cached.sdk and not f.cached), None)
        if plain is None:
            continue
        gets_ok = all(n == FANOUT_MODEL_GETS for n in cached.model_gets)
        gets = ", ".join(str(n) for n in cached.model_gets)
        speedup = cached.mib_per_s / plain.mib_per_s
        bound = (
            f"; from a local file {local.mib_per_s:.0f} MiB/s = {local.mib_per_s / plain.mib_per_s:.1f}x"
            if local
            else ""
        )
        verdicts.append(
            Verdict(
                f"{cached.store}: {clients} concurrent downloads of one {size_label(size)} model make exactly "
                f"{FANOUT_MODEL_GETS} remote GET of its bytes, at >= {FANOUT_SPEEDUP:.0f}x the throughput of "
                f"{clients} uncached downloads",
                gets_ok and speedup >= FANOUT_SPEEDUP,
                f"model GETs per repeat: {gets} (uncached: {plain.model_gets[0]}); {cached.mib_per_s:.0f} against "
                f"{plain.mib_per_s:.0f} MiB/s = {speedup:.1f}x{bound}",
            )
        )
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
