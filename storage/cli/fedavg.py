"""The simulated model, how FEDn moves it through a store, and FedAvg over it.

A model is its float32 layers written back to back in NumPy's ``.npy`` format
(what ``np.save`` writes, one record per layer). That streams both ways;
``.npz`` does not read from a stream, since its zip directory is at the end.

Clients upload with FEDn's status protocol (``FednUpload``): per chunk
``get_ptr(id).write(chunk)`` then ``set_model_metadata(id, IN_PROGRESS)``; at
the end ``set_model_metadata(id, OK)``, ``get_ptr(id).flush()``,
``get_ptr(id).close()``. The combiner (``aggregate_updates``) checks each
update's status and folds it into a running FedAvg sum weighted by the
client's example count, reading one layer of one update at a time: it never
holds more than the sum and that layer.

This module and ``simulate`` are the only ones that import numpy (the
``simulate`` extra); neither imports rich.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from storage import CHUNK_SIZE, ModelStat, ModelStorage
from storage.cli.streams import HashingWriter, ProgressReader

OK = 0
"""FEDn's ``ModelStatus.OK``: the update is complete."""
IN_PROGRESS = 1
"""FEDn's ``ModelStatus.IN_PROGRESS``: chunks are still arriving."""

MIN_PARAMETERS = 8  # four layers of at least one weight each
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


# -- into the store, FEDn's way -------------------------------------------------------


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
        hashing = HashingWriter(pointer)
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
            fedavg.fold(iter_layers(ProgressReader(stream, on_bytes), spec, update.model_id), update.examples)
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
