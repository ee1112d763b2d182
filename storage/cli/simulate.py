"""Combiner rounds on any store: what ``modelstorage simulate`` runs and measures.

A round is what a FEDn combiner does with its model storage:

1. N clients (threads) download the current global model, "train" it (add
   noise) and stream their update into the store in 1 MiB chunks with FEDn's
   status protocol (``fedavg.FednUpload``).
2. The combiner checks each update's status and folds it into a running
   FedAvg, one layer of one update at a time (``fedavg.aggregate_updates``).
3. It stores the round's global model and deletes the updates.

Every id a run writes starts with ``sim-<run id>-`` (``RunModels``), a fresh
random run id per run: a simulation never reads, replaces or deletes a model
it did not write, and removes all it wrote when it ends, however it ends
(unless ``--keep``, which keeps the global models).

Every round's global model is compared with a reference FedAvg that the
clients fold in memory from their own arrays, so a store that loses, mixes up
or corrupts bytes shows up as a mismatch. Throughput, the aggregation's
allocations and the process's peak RSS are measured on the way; the report
is drawn by ``simulate_report``.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import secrets
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from storage import ModelStat, ModelStorage, StorageError
from storage.cli.fedavg import (
    Comparison,
    FedAvg,
    FednUpload,
    ModelSpec,
    Update,
    aggregate_updates,
    compare_models,
    initial_model,
    iter_layers,
    store_global_model,
    write_model,
)
from storage.cli.streams import ProgressReader

if TYPE_CHECKING:
    from rich.progress import Progress  # only its add_task, reset and advance are used

logger = logging.getLogger("modelstorage")

NOISE_SCALE = 0.01  # how far one client's "training" moves each weight
EXAMPLES_RANGE = (50, 1000)  # a client's example count, its FedAvg weight
PHASES = ("download", "upload", "aggregate")


# -- the run's models ------------------------------------------------------------------


class RunModels:
    """The ids of one run, all under ``sim-<run id>-``, and their removal when it ends.

    Each id is recorded before its write starts, so ``remove`` also takes away
    a write that was cut short (``delete`` aborts an open one).
    """

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or secrets.token_hex(6)
        self.prefix = f"sim-{self.run_id}-"
        self._written: list[str] = []
        self._lock = threading.Lock()

    def global_model(self, round_number: int) -> str:
        return f"{self.prefix}global-round-{round_number}"

    def update(self, round_number: int, client: int) -> str:
        return f"{self.prefix}round-{round_number}-client-{client}"

    def claim(self, model_id: str) -> str:
        """Record ``model_id`` as this run's, before writing it."""
        with self._lock:
            if model_id not in self._written:
                self._written.append(model_id)
        return model_id

    def remove(self, store: ModelStorage, keep: Sequence[str] = ()) -> None:
        """Delete every model this run wrote or began to write, but those in ``keep``."""
        with self._lock:
            doomed = [model_id for model_id in self._written if model_id not in keep]
        for model_id in doomed:
            try:
                store.delete(model_id)
            except StorageError as exc:
                logger.warning("could not delete %s: %s", model_id, exc)


class RoundCancelled(Exception):
    """A client stops: the round is over (another client failed, or the command was interrupted)."""


# -- clients -------------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    nbytes: int
    started: float
    finished: float


@dataclass(frozen=True)
class ClientResult:
    update: Update
    download: Transfer
    upload: Transfer


def train(layers: list[np.ndarray], rng: np.random.Generator) -> int:
    """Stand-in for local training: nudge every weight; return the client's example count."""
    for layer in layers:
        noise = rng.standard_normal(layer.size, dtype=np.float32)
        noise *= NOISE_SCALE
        layer += noise
    low, high = EXAMPLES_RANGE
    return int(rng.integers(low, high + 1))


@dataclass(frozen=True)
class RoundContext:
    """What every client of one round shares."""

    store: ModelStorage
    global_id: str
    spec: ModelSpec
    reference: FedAvg
    progress: Progress
    tasks: dict[str, int]
    stop: threading.Event
    """Set when the round is over for everyone: each client stops at its next chunk."""

    def advancing(self, phase: str) -> Callable[[int], None]:
        """Moves ``phase``'s bar by each chunk, and ends the client once ``stop`` is set."""

        def advance(nbytes: int) -> None:
            if self.stop.is_set():
                raise RoundCancelled
            self.progress.advance(self.tasks[phase], nbytes)

        return advance


def run_client(round_: RoundContext, update_id: str, rng: np.random.Generator) -> ClientResult:
    """One client's round: download the global model, train, upload the update FEDn's way."""
    store, global_id, spec = round_.store, round_.global_id, round_.spec
    started = time.perf_counter()
    with store.open(global_id, verify=True) as stream:
        reader = ProgressReader(stream, round_.advancing("download"))
        layers = list(iter_layers(reader, spec, global_id))
    download = Transfer(reader.count, started, time.perf_counter())

    examples = train(layers, rng)
    if round_.stop.is_set():
        raise RoundCancelled
    round_.reference.fold(layers, examples)

    upload = FednUpload(store, update_id, round_.advancing("upload"))
    started = time.perf_counter()
    try:
        write_model(layers, upload)
        upload.finish()
    except BaseException:
        with contextlib.suppress(StorageError):
            upload.discard()
        raise
    return ClientResult(
        Update(upload.model_id, examples), download, Transfer(upload.bytes_written, started, time.perf_counter())
    )


# -- rounds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationConfig:
    clients: int = 8
    rounds: int = 3
    parameters: int = 10_000_000
    seed: int | None = None
    keep: bool = False
    """Keep the global models (the updates, and whatever an interrupted round began, always go)."""


@dataclass(frozen=True)
class RoundReport:
    round_number: int
    contributors: int
    model_bytes: int
    upload_bytes: int
    upload_seconds: float
    download_bytes: int
    download_seconds: float
    aggregation_bytes: int
    aggregation_seconds: float
    aggregation_peak_bytes: int
    """tracemalloc's peak of what the aggregation allocated (sum, one layer, the result)."""
    rss_high_water_bytes: int
    """resource.getrusage's peak RSS of the whole process so far, clients included."""
    comparison: Comparison


@dataclass(frozen=True)
class SimulationReport:
    store: str
    config: SimulationConfig
    seed: int
    spec: ModelSpec
    run_id: str
    rounds: list[RoundReport]
    kept: list[str]
    seconds: float

    @property
    def all_matched(self) -> bool:
        return len(self.rounds) == self.config.rounds and all(r.comparison.matched for r in self.rounds)


def _span(transfers: Sequence[Transfer]) -> tuple[int, float]:
    """All bytes, and the wall time from the first start to the last finish."""
    return sum(t.nbytes for t in transfers), max(t.finished for t in transfers) - min(t.started for t in transfers)


def _rss_high_water() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


@contextlib.contextmanager
def _traced_peak():
    """Yields a callable giving the peak bytes allocated since entering (tracemalloc)."""
    already = tracemalloc.is_tracing()
    if already:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
    else:
        tracemalloc.start()
        baseline = 0
    try:
        yield lambda: tracemalloc.get_traced_memory()[1] - baseline
    finally:
        if not already:
            tracemalloc.stop()


def _run_clients(round_: RoundContext, update_ids: list[str], rngs: list[np.random.Generator]) -> list[ClientResult]:
    """Every client of the round at once; the first failure (or an interrupt) stops the others."""
    with ThreadPoolExecutor(len(rngs), thread_name_prefix="client") as pool:
        futures = [pool.submit(run_client, round_, uid, rng) for uid, rng in zip(update_ids, rngs, strict=True)]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            # Nobody will aggregate this round: the others stop at their next chunk instead of
            # finishing their uploads (the pool waits for them on its way out).
            if not all(f.done() and f.exception() is None for f in futures):
                round_.stop.set()
    failures = [f.exception() for f in futures if not isinstance(f.exception(), (RoundCancelled, type(None)))]
    if failures:
        raise failures[0]
    return [f.result() for f in futures]


def run_round(
    store: ModelStorage,
    spec: ModelSpec,
    config: SimulationConfig,
    seed: int,
    round_number: int,
    model_bytes: int,
    progress: Progress,
    tasks: dict[str, int],
    models: RunModels,
) -> tuple[RoundReport, ModelStat]:
    """One combiner round from the global model of round ``r-1`` to that of round ``r``."""
    total = config.clients * model_bytes
    for phase in PHASES:
        progress.reset(
            tasks[phase], total=total, description=f"round {round_number}/{config.rounds} {phase}", visible=True
        )

    reference = FedAvg(spec)
    round_ = RoundContext(
        store, models.global_model(round_number - 1), spec, reference, progress, tasks, threading.Event()
    )
    update_ids = [models.claim(models.update(round_number, client)) for client in range(config.clients)]
    rngs = [np.random.default_rng([seed, round_number, client]) for client in range(config.clients)]
    results = _run_clients(round_, update_ids, rngs)
    updates = [result.update for result in results]

    try:
        with _traced_peak() as traced_peak:
            started = time.perf_counter()
            fedavg = aggregate_updates(store, updates, spec, lambda n: progress.advance(tasks["aggregate"], n))
            aggregate = fedavg.result()
            del fedavg  # the float64 sums; the float32 result is what is stored
            global_id = models.claim(models.global_model(round_number))
            stat = store_global_model(store, global_id, aggregate, round_number, len(updates))
            aggregation_seconds = time.perf_counter() - started
            aggregation_peak = traced_peak()
    finally:
        for update in updates:
            store.delete(update.model_id)

    upload_bytes, upload_seconds = _span([r.upload for r in results])
    download_bytes, download_seconds = _span([r.download for r in results])
    report = RoundReport(
        round_number=round_number,
        contributors=len(updates),
        model_bytes=stat.size,
        upload_bytes=upload_bytes,
        upload_seconds=upload_seconds,
        download_bytes=download_bytes,
        download_seconds=download_seconds,
        aggregation_bytes=upload_bytes,
        aggregation_seconds=aggregation_seconds,
        aggregation_peak_bytes=aggregation_peak,
        rss_high_water_bytes=_rss_high_water(),
        comparison=compare_models(aggregate, reference.result()),
    )
    return report, stat


def run_simulation(
    store: ModelStorage,
    config: SimulationConfig,
    progress: Progress,
    *,
    models: RunModels | None = None,
    on_round: Callable[[RoundReport], None] = lambda report: None,
) -> SimulationReport:
    """Seed the global model of round 0, run ``config.rounds`` rounds, reporting each to ``on_round`` as it ends.

    Whatever way this ends (success, a failure, an interrupt), every model
    the run wrote or began is removed, but for the global models when
    ``config.keep``.
    """
    if config.clients < 1 or config.rounds < 1:
        raise ValueError("a simulation needs at least one client and one round")
    models = models or RunModels()
    spec = ModelSpec.with_parameters(config.parameters)
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    started = time.perf_counter()
    global_models: list[str] = []
    reports: list[RoundReport] = []
    # Hidden until the first round starts: seeding the first global model has nothing to show.
    tasks = {phase: progress.add_task(phase, total=None, visible=False) for phase in PHASES}
    try:
        first = models.claim(models.global_model(0))
        stat = store_global_model(store, first, initial_model(spec, np.random.default_rng([seed])), 0, 0)
        global_models.append(stat.model_id)
        for round_number in range(1, config.rounds + 1):
            report, stat = run_round(store, spec, config, seed, round_number, stat.size, progress, tasks, models)
            global_models.append(stat.model_id)
            reports.append(report)
            logger.info(
                "round %d: %s, aggregated in %.2fs",
                round_number,
                "matched" if report.comparison.matched else "MISMATCH",
                report.aggregation_seconds,
            )
            on_round(report)
    finally:
        models.remove(store, keep=global_models if config.keep else ())
    return SimulationReport(
        store=repr(store),
        config=config,
        seed=seed,
        spec=spec,
        run_id=models.run_id,
        rounds=reports,
        kept=global_models if config.keep else [],
        seconds=time.perf_counter() - started,
    )
