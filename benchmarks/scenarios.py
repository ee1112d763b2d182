"""FEDn's calls, FEDn's round and the download fan-out, each store in child processes (``storeprobe``).

- calls: this project's ``TempModelStorage`` against FEDn's own, through the
  calls FEDn makes (the upload protocol in 1 MiB chunks, ``get``).
- round: a FEDn round end to end on FEDn's ``TempModelStorage``, this
  project's, each adapter (sidecar metadata) and each adapter behind the
  read-through cache.
- fanout: N clients download one model at once, through each adapter with and
  without the cache.

Stores are interleaved as in the throughput section: each repeat runs every
store once, in an order rotated by one per repeat; every run is a fresh child.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.candidates import BOTO3, MINIO, adapter_options
from benchmarks.endpoint import Target
from benchmarks.measure import GiB, MiB, median, run_child, size_label, spread
from benchmarks.storeprobe import ADAPTER, FEDN, TEMP

ADAPTER_LABELS = {BOTO3: "S3ModelStorage", MINIO: "MinioModelStorage"}


@dataclass(frozen=True)
class ProbeStore:
    """A store as a child process builds it, and the interpreter that runs it."""

    name: str
    spec: dict
    python: str | None = None
    """None: this interpreter."""
    sdk: str | None = None
    cached: bool = False


def fedn_store(fedn: tuple[str, str] | None) -> ProbeStore | None:
    if fedn is None:
        return None
    python, version = fedn
    return ProbeStore(f"FEDn {version} TempModelStorage", {"kind": FEDN}, python)


def temp_store() -> ProbeStore:
    return ProbeStore("TempModelStorage", {"kind": TEMP})


def adapter_stores(target: Target, tuning: dict, cache_max_bytes: int) -> list[ProbeStore]:
    """Each adapter with sidecar metadata, then each behind the cache."""
    adapter_options(target, "sidecar", tuning)  # a bad tuning fails here, not in a child
    stores = []
    for cached in (False, True):
        for sdk, label in ADAPTER_LABELS.items():
            spec = {"kind": ADAPTER, "sdk": sdk, "metadata": "sidecar", "target": target.as_dict(), "tuning": tuning}
            name = f"{label}[sidecar]"
            if cached:
                spec |= {"cache": True, "cache_max_bytes": cache_max_bytes}
                name = f"CachedModelStorage({name})"
            stores.append(ProbeStore(name, spec, sdk=sdk, cached=cached))
    return stores


def _run(stores: list[ProbeStore], repeats: int, job_for: Callable[[int], dict | None], what: str, log):
    """Every store once per repeat, interleaved; store name -> the children's results."""
    results: dict[str, list[dict]] = {s.name: [] for s in stores}
    for rep in range(repeats):
        job = job_for(rep)
        if job is None:
            continue
        log(f"  {what}: repeat {rep + 1}/{repeats}")
        by = rep % len(stores)
        for store in stores[by:] + stores[:by]:
            results[store.name].append(run_child("benchmarks.storeprobe", job | {"store": store.spec}, store.python))
    return results


# -- calls: FEDn's TempModelStorage and this project's ----------------------------------


@dataclass(frozen=True)
class CallRate:
    store: str
    op: str  # "put" (FEDn's upload protocol) | "get"
    size: int
    mib_per_s: float
    spread: float
    client_cpu_per_gib: float


def run_calls(stores: list[ProbeStore], sizes: list[int], repeats: Callable[[int], int], log) -> list[CallRate]:
    most = max(repeats(s) for s in sizes)

    def job_for(rep: int) -> dict | None:
        wanted = [s for s in sizes if repeats(s) > rep]
        return {"kind": "calls", "sizes": wanted} if wanted else None

    results = _run(stores, most, job_for, "FEDn's calls", log)
    rates = []
    for name, runs in results.items():
        for size in sizes:
            for op in ("put", "get"):
                found = [s[op] for run in runs for s in run["sizes"] if s["size"] == size]
                mibs = [size / MiB / f["seconds"] for f in found]
                cpu = median([f["client_cpu"] / (size / GiB) for f in found])
                rates.append(CallRate(name, op, size, median(mibs), spread(mibs), cpu))
    return rates


# -- the round and the fan-out ----------------------------------------------------------

PHASES = ("upload", "aggregate", "download")


@dataclass(frozen=True)
class RoundSummary:
    store: str
    phase_seconds: dict[str, float]
    """Median wall seconds per phase."""
    seconds: float
    """Median wall seconds of the whole round."""
    spread: float
    client_cpu: float
    server_cpu: float | None
    requests: int
    bytes_up: int
    bytes_down: int
    model_gets: int
    """GETs of models' bytes: the combiner's reads of the updates plus the clients' downloads."""


_COUNTED = ("requests", "bytes_up", "bytes_down", "model_gets")
"""What ``RoundSummary`` adds up over the phases, after its wall and CPU seconds, in its field order."""


def _total(run: dict, key: str) -> float | None:
    values = [phase[key] for phase in run["phases"].values()]
    return None if any(v is None for v in values) else sum(values)


def run_rounds(stores: list[ProbeStore], clients: int, size: int, repeats: int, server_pid, log):
    job = {"kind": "round", "clients": clients, "size": size, "server_pid": server_pid}
    results = _run(stores, repeats, lambda _: job, f"round, {clients} clients x {size_label(size)}", log)
    summaries = []
    for name, runs in results.items():
        totals = [_total(run, "seconds") for run in runs]
        servers = [s for s in (_total(run, "server_cpu") for run in runs) if s is not None]
        summaries.append(
            RoundSummary(
                name,
                {p: median([run["phases"][p]["seconds"] for run in runs]) for p in PHASES},
                median(totals),
                spread(totals),
                median([_total(run, "client_cpu") for run in runs]),
                median(servers) if servers else None,
                *(int(median([_total(run, key) for run in runs])) for key in _COUNTED),
            )
        )
    return summaries, results


@dataclass(frozen=True)
class FanoutSummary:
    store: str
    sdk: str | None
    cached: bool
    seconds: float
    spread: float
    mib_per_s: float
    """Bytes delivered to all clients over wall time."""
    model_gets: list[int]
    """GETs of the model's bytes, per repeat."""
    model_bytes_down: int
    requests: int
    client_cpu: float
    server_cpu: float | None


def run_fanout(stores: list[ProbeStore], clients: int, size: int, repeats: int, server_pid, log):
    job = {"kind": "fanout", "clients": clients, "size": size, "server_pid": server_pid}
    results = _run(stores, repeats, lambda _: job, f"fan-out, {clients} downloads of {size_label(size)}", log)
    summaries = []
    for store in stores:
        runs = [run["download"] for run in results[store.name]]
        seconds = [r["seconds"] for r in runs]
        servers = [r["server_cpu"] for r in runs if r["server_cpu"] is not None]
        summaries.append(
            FanoutSummary(
                store.name,
                store.sdk,
                store.cached,
                median(seconds),
                spread(seconds),
                median([clients * size / MiB / s for s in seconds]),
                [r["model_gets"] for r in runs],
                int(median([r["model_bytes_down"] for r in runs])),
                int(median([r["requests"] for r in runs])),
                median([r["client_cpu"] for r in runs]),
                median(servers) if servers else None,
            )
        )
    return summaries, results
