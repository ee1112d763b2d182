"""Combiner rounds on any store: what ``modelstorage simulate`` runs and measures.

A round is what a FEDn combiner does with its model storage:

1. N clients (threads) download the current global model, "train" it (add
   noise) and stream their update into the store in 1 MiB chunks with FEDn's
   status protocol: per chunk ``get_ptr(id).write(chunk)`` then
   ``set_model_metadata(id, IN_PROGRESS)``; at the end
   ``set_model_metadata(id, OK)``, ``get_ptr(id).flush()``, ``get_ptr(id).close()``.
2. The combiner checks each update's status and folds it into a running FedAvg
   sum weighted by the client's example count, reading one layer of one update
   at a time: it never holds more than the sum and that layer.
3. It stores the global model ``global-round-{r}`` and deletes the updates.

Every round's global model is compared with a reference FedAvg that the
clients fold in memory from their own arrays, so a store that loses, mixes up
or corrupts bytes shows up as a mismatch.

A model is its float32 layers written back to back in NumPy's ``.npy`` format
(what ``np.save`` writes, one record per layer). That streams both ways;
``.npz`` does not read from a stream, since its zip directory is at the end.

This is the only module that imports numpy (the ``simulate`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import resource
import secrets
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from storage.errors import StorageError
from storage.modelstorage import CHUNK_SIZE, ModelStat, ModelStorage

logger = logging.getLogger("modelstorage")

OK = 0
"""FEDn's ``ModelStatus.OK``: the update is complete."""
IN_PROGRESS = 1
"""FEDn's ``ModelStatus.IN_PROGRESS``: chunks are still arriving."""

MiB = 1024 * 1024
MIN_PARAMETERS = 8  # four layers of at least one weight each
NOISE_SCALE = 0.01  # how far one client's "training" moves each weight
EXAMPLES_RANGE = (50, 1000)  # a client's example count, its FedAvg weight
# Aggregate and reference are both summed in float64 and rounded to float32
# once; only the order of the additions differs, which moves a weight by at
# most one float32 step. A lost, swapped or corrupted update moves it by far more.
RTOL, ATOL = 1e-6, 1e-9


class SimulationError(Exception):
    """An update or global model is not what the round expected."""


# -- the model and its format ---------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """The simulated model: float32 vectors of these sizes, in this order."""

    layer_sizes: tuple[int, ...]

    @classmethod
    def with_parameters(cls, parameters: int) -> ModelSpec:
        """``parameters`` split over four layers of 1/2, 1/4, 1/8 and the rest, like a tapering MLP."""
        if parameters < MIN_PARAMETERS:
            raise ValueError(f"a model needs at least {MIN_PARAMETERS} parameters, not {parameters}")
        sizes = [parameters // 2, parameters // 4, parameters // 8]
        return cls((*sizes, parameters - sum(sizes)))

    @property
    def parameters(self) -> int:
        return sum(self.layer_sizes)


def initial_model(spec: ModelSpec, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.standard_normal(size, dtype=np.float32) * np.float32(0.1) for size in spec.layer_sizes]


def write_model(layers: Iterable[np.ndarray], stream) -> None:
    """Write ``layers`` to ``stream`` as consecutive ``.npy`` records."""
    for layer in layers:
        np.save(stream, layer, allow_pickle=False)


def iter_layers(stream, spec: ModelSpec, model_id: str) -> Iterator[np.ndarray]:
    """Yield a model's layers from ``stream`` one at a time, each checked against ``spec``.

    Raises SimulationError for anything but exactly ``spec``'s layers; reading
    to the end also lets a verifying reader check the model's SHA-256.
    """
    for index, size in enumerate(spec.layer_sizes):
        try:
            layer = np.lib.format.read_array(stream, allow_pickle=False)
        except ValueError as exc:
            raise SimulationError(f"model {model_id!r}: layer {index} is not a .npy record: {exc}") from None
        if layer.dtype != np.float32 or layer.shape != (size,):
            raise SimulationError(
                f"model {model_id!r}: layer {index} is {layer.dtype}{list(layer.shape)}, expected float32[{size}]"
            )
        yield layer
    if stream.read(1):
        raise SimulationError(f"model {model_id!r} has bytes after its last layer")


class _CountingReader:
    """A reader that reports how many bytes pass through it (for progress and throughput)."""

    def __init__(self, raw, on_bytes: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self.count += len(data)
            self._on_bytes(len(data))
        return data


class _HashingWriter:
    """Passes writes on and keeps their SHA-256, for metadata set before the commit."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def write(self, data) -> int:
        self._hash.update(data)
        return self._raw.write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class FednUpload:
    """A write-only stream into ``store.get_ptr(model_id)``, driven exactly as FEDn's combiner does.

    Whatever is written is cut into CHUNK_SIZE chunks; each goes in with
    ``store.get_ptr(id).write(chunk)`` followed by
    ``store.set_model_metadata(id, IN_PROGRESS)``. ``finish()`` sets OK, then
    flushes and closes the pointer, which commits the model.
    """

    def __init__(self, store: ModelStorage, model_id: str, on_chunk: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.model_id = model_id
        self.bytes_written = 0
        self._on_chunk = on_chunk
        self._pending = bytearray()

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        if self._pending:
            take = min(CHUNK_SIZE - len(self._pending), size)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < CHUNK_SIZE:
                return size
            # A fresh buffer rather than clear(): the store may still hold a view of the old one.
            chunk, self._pending = self._pending, bytearray()
            self._send(chunk)
        while view.nbytes >= CHUNK_SIZE:
            self._send(view[:CHUNK_SIZE])
            view = view[CHUNK_SIZE:]
        self._pending += view
        return size

    def finish(self) -> None:
        if self._pending:
            chunk, self._pending = self._pending, bytearray()
            self._send(chunk)
        self.store.set_model_metadata(self.model_id, OK)
        self.store.get_ptr(self.model_id).flush()
        self.store.get_ptr(self.model_id).close()

    def discard(self) -> None:
        """Drop the upload, open or committed. ``delete`` rather than ``get_ptr(...).abort()``:
        after a failed write the pointer is gone and ``get_ptr`` would open a new one."""
        self.store.delete(self.model_id)

    def _send(self, chunk) -> None:
        self.store.get_ptr(self.model_id).write(chunk)
        self.store.set_model_metadata(self.model_id, IN_PROGRESS)
        self.bytes_written += len(chunk)
        if self._on_chunk is not None:
            self._on_chunk(len(chunk))


def store_global_model(
    store: ModelStorage, model_id: str, layers: Sequence[np.ndarray], round_number: int, contributors: int
) -> ModelStat:
    """Stream a global model into the store with ``{"round", "contributors", "sha256"}`` metadata."""
    with store.get_ptr(model_id) as pointer:
        hashing = _HashingWriter(pointer)
        write_model(layers, hashing)
        digest = hashing.hexdigest()
        # Set while the pointer is open, so bytes and metadata commit together.
        store.set_model_metadata(model_id, {"round": round_number, "contributors": contributors, "sha256": digest})
    stat = pointer.stat
    if stat is None or stat.sha256 != digest:
        raise SimulationError(f"the store recorded another SHA-256 for {model_id!r} than was written")
    return stat


# -- FedAvg ------------------------------------------------------------------------


class FedAvg:
    """FedAvg as a running sum: sum(n_k * w_k) and sum(n_k), one float64 vector per layer.

    Folding an update takes its layers one at a time, so memory stays at the
    sum plus one layer however many clients contribute. Thread-safe: the
    clients fold the reference concurrently.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.examples = 0
        self.contributors = 0
        self._sums = [np.zeros(size, dtype=np.float64) for size in spec.layer_sizes]
        self._lock = threading.Lock()
        self._broken = False

    def fold(self, layers: Iterable[np.ndarray], examples: int) -> None:
        """Add one update, weighted by its example count."""
        if examples <= 0:
            raise ValueError(f"an update needs a positive example count, not {examples}")
        with self._lock:
            folded = 0
            try:
                for index, layer in enumerate(layers):
                    self._sums[index] += np.multiply(layer, examples, dtype=np.float64)
                    folded += 1
            except BaseException:
                self._broken = True  # some layers of this update are in the sum, others not
                raise
            if folded != len(self._sums):
                self._broken = True
                raise SimulationError(f"an update had {folded} layers, expected {len(self._sums)}")
            self.examples += examples
            self.contributors += 1

    def result(self) -> list[np.ndarray]:
        """The weighted average as float32 layers."""
        if self._broken:
            raise SimulationError("the running sum is incomplete: an update failed while it was folded in")
        if not self.contributors:
            raise SimulationError("no update was folded in")
        return [(layer_sum / self.examples).astype(np.float32) for layer_sum in self._sums]


@dataclass(frozen=True)
class Update:
    """What a client tells the combiner about its update (FEDn sends this over gRPC, not storage)."""

    model_id: str
    examples: int


def aggregate_updates(
    store: ModelStorage,
    updates: Sequence[Update],
    spec: ModelSpec,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> FedAvg:
    """The combiner's side: FedAvg of ``updates``, streamed from the store one at a time.

    Each update must have FEDn status OK and be exactly a model of ``spec``;
    its bytes are checked against the SHA-256 recorded when it was written.
    Raises SimulationError (or a StorageError) otherwise.
    """
    fedavg = FedAvg(spec)
    for update in updates:
        status = store.get_model_metadata(update.model_id)
        if type(status) is not int or status != OK:
            raise SimulationError(f"update {update.model_id!r} has status {status!r}, not OK ({OK})")
        with store.open(update.model_id, verify=True) as stream:
            fedavg.fold(iter_layers(_CountingReader(stream, on_bytes), spec, update.model_id), update.examples)
    return fedavg


@dataclass(frozen=True)
class Comparison:
    matched: bool
    max_abs_difference: float


def compare_models(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> Comparison:
    """Whether two models agree within RTOL/ATOL, and their largest difference."""
    if len(actual) != len(expected) or any(a.shape != e.shape for a, e in zip(actual, expected, strict=True)):
        return Comparison(False, float("inf"))
    matched = all(np.allclose(a, e, rtol=RTOL, atol=ATOL) for a, e in zip(actual, expected, strict=True))
    largest = max(
        (float(np.max(np.abs(a - e), initial=0.0)) for a, e in zip(actual, expected, strict=True)), default=0.0
    )
    return Comparison(matched, largest)


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


def run_client(
    store: ModelStorage,
    global_id: str,
    spec: ModelSpec,
    rng: np.random.Generator,
    reference: FedAvg,
    progress: Progress,
    tasks: dict[str, int],
) -> ClientResult:
    """One client's round: download the global model, train, upload the update FEDn's way."""
    started = time.perf_counter()
    with store.open(global_id, verify=True) as stream:
        reader = _CountingReader(stream, lambda n: progress.advance(tasks["download"], n))
        layers = list(iter_layers(reader, spec, global_id))
    download = Transfer(reader.count, started, time.perf_counter())

    examples = train(layers, rng)
    reference.fold(layers, examples)

    upload = FednUpload(store, str(uuid.uuid4()), lambda n: progress.advance(tasks["upload"], n))
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
    rounds: list[RoundReport]
    kept: list[str]
    seconds: float

    @property
    def all_matched(self) -> bool:
        return len(self.rounds) == self.config.rounds and all(r.comparison.matched for r in self.rounds)


def global_model_id(round_number: int) -> str:
    return f"global-round-{round_number}"


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


def _run_clients(
    store: ModelStorage,
    global_id: str,
    spec: ModelSpec,
    rngs: list[np.random.Generator],
    reference: FedAvg,
    progress: Progress,
    tasks: dict[str, int],
) -> list[ClientResult]:
    with ThreadPoolExecutor(len(rngs), thread_name_prefix="client") as pool:
        futures = [pool.submit(run_client, store, global_id, spec, rng, reference, progress, tasks) for rng in rngs]
        wait(futures)
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        for future in futures:  # the combiner will not aggregate this round: drop what arrived
            if future.exception() is None:
                with contextlib.suppress(StorageError):
                    store.delete(future.result().update.model_id)
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
) -> tuple[RoundReport, ModelStat]:
    """One combiner round from ``global-round-{r-1}`` to ``global-round-{r}``."""
    total = config.clients * model_bytes
    for phase in ("download", "upload", "aggregate"):
        progress.reset(
            tasks[phase], total=total, description=f"round {round_number}/{config.rounds} {phase}", visible=True
        )

    reference = FedAvg(spec)
    rngs = [np.random.default_rng([seed, round_number, client]) for client in range(config.clients)]
    results = _run_clients(store, global_model_id(round_number - 1), spec, rngs, reference, progress, tasks)
    updates = [result.update for result in results]

    try:
        with _traced_peak() as traced_peak:
            started = time.perf_counter()
            fedavg = aggregate_updates(store, updates, spec, lambda n: progress.advance(tasks["aggregate"], n))
            aggregate = fedavg.result()
            del fedavg  # the float64 sums; the float32 result is what is stored
            stat = store_global_model(store, global_model_id(round_number), aggregate, round_number, len(updates))
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


def run_simulation(store: ModelStorage, config: SimulationConfig, progress: Progress) -> SimulationReport:
    """Seed ``global-round-0``, run ``config.rounds`` rounds, clean up unless ``config.keep``."""
    if config.clients < 1 or config.rounds < 1:
        raise ValueError("a simulation needs at least one client and one round")
    spec = ModelSpec.with_parameters(config.parameters)
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    started = time.perf_counter()
    written: list[str] = []
    reports: list[RoundReport] = []
    # Hidden until the first round starts: seeding global-round-0 has nothing to show.
    tasks = {
        phase: progress.add_task(phase, total=None, visible=False) for phase in ("download", "upload", "aggregate")
    }
    try:
        stat = store_global_model(store, global_model_id(0), initial_model(spec, np.random.default_rng([seed])), 0, 0)
        written.append(stat.model_id)
        for round_number in range(1, config.rounds + 1):
            report, stat = run_round(store, spec, config, seed, round_number, stat.size, progress, tasks)
            written.append(stat.model_id)
            reports.append(report)
            logger.info(
                "round %d: %s, aggregated in %.2fs",
                round_number,
                "matched" if report.comparison.matched else "MISMATCH",
                report.aggregation_seconds,
            )
    finally:
        if not config.keep:
            for model_id in written:
                try:
                    store.delete(model_id)
                except StorageError as exc:
                    logger.warning("could not delete %s: %s", model_id, exc)
    return SimulationReport(
        store=repr(store),
        config=config,
        seed=seed,
        spec=spec,
        rounds=reports,
        kept=written if config.keep else [],
        seconds=time.perf_counter() - started,
    )


# -- the report ---------------------------------------------------------------------------


def _mib(nbytes: float) -> str:
    return f"{nbytes / MiB:,.1f}"


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MiB / seconds:,.0f}" if seconds > 0 else "-"


def render_report(report: SimulationReport, console: Console) -> None:
    """The per-round table, what its columns mean, and a one-line verdict, on ``console`` (stdout)."""
    config = report.config
    console.print(
        f"{config.rounds} round(s) x {config.clients} client(s), {report.spec.parameters:,} float32 parameters, "
        f"seed {report.seed}, on {report.store}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    headers = (
        "round",
        "model\nMiB",
        "upload\nMiB/s",
        "agg.\ns",
        "agg.\nMiB/s",
        "download\nMiB/s",
        "agg. mem\nMiB",
        "peak RSS\nMiB",
    )
    for header in headers:
        table.add_column(header, justify="right")
    table.add_column("result")
    for r in report.rounds:
        table.add_row(
            str(r.round_number),
            _mib(r.model_bytes),
            _rate(r.upload_bytes, r.upload_seconds),
            f"{r.aggregation_seconds:.2f}",
            _rate(r.aggregation_bytes, r.aggregation_seconds),
            _rate(r.download_bytes, r.download_seconds),
            _mib(r.aggregation_peak_bytes),
            _mib(r.rss_high_water_bytes),
            "match" if r.comparison.matched else "MISMATCH",
            style=None if r.comparison.matched else "bold red",
        )
    console.print(table)
    for note in (
        "upload, download: bytes of all clients / wall time from the first start to the last end",
        "agg.: the combiner reading the updates, FedAvg, storing the global model",
        "agg. mem: tracemalloc peak of what the aggregation allocated (running sum + one layer + result)",
        "peak RSS: resource.getrusage high-water mark of the whole process so far, clients included",
    ):
        console.print(f"  {note}", style="dim", markup=False, highlight=False, soft_wrap=True)
    matched = sum(r.comparison.matched for r in report.rounds)
    worst = max((r.comparison.max_abs_difference for r in report.rounds), default=0.0)
    verdict = "matched" if report.all_matched else "did NOT all match"
    console.print(
        f"{matched}/{config.rounds} rounds' aggregates {verdict} the in-memory FedAvg reference "
        f"(rtol {RTOL:g}, atol {ATOL:g}; largest difference {worst:.3g}); {report.seconds:.1f} s in all",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if report.kept:
        console.print(f"kept: {', '.join(report.kept)}", markup=False, highlight=False, soft_wrap=True)
