"""The ModelStorage contract: FEDn's method names, one behaviour on every backend.

A backend implements a handful of primitives (``_stat``, ``_open_reader``,
``_open_sink``, ``_read_metadata``, ``_write_metadata``, ``_delete``,
``_list_ids``); everything a caller sees is written once here: id checks,
metadata normalisation, the open-write registry behind ``get_ptr``, hashing,
verification, and the FEDn semantics of pending metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO, Protocol, TypeVar

from storage.errors import IntegrityError, MetadataError, ModelNotFoundError, StorageError
from storage.ids import check_model_id

logger = logging.getLogger("modelstorage")

CHUNK_SIZE = 1024 * 1024
"""The unit FEDn streams models in, and the unit ``put`` reads files in."""

SLICE_SIZE = 8 * CHUNK_SIZE
"""The unit ``put`` hands in-memory data to a backend in."""

MAX_METADATA_BYTES = 1024 * 1024
"""Largest metadata value, as compact JSON, that any backend accepts."""

Metadata = Any
"""A JSON value: a dict, or a scalar such as FEDn's integer ``ModelStatus``."""

T = TypeVar("T")

PARALLEL_HASH_MIN = 256 * 1024
"""Writes from this size are hashed on a helper thread while the backend stores them."""


def _new_hashing_pool() -> ThreadPoolExecutor:
    # hashlib lets go of the GIL while it hashes, so a large write is hashed and
    # stored at once: a put then costs the slower of the two, not their sum.
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="modelstorage-sha256")


_hash_pool = _new_hashing_pool()
_stores: weakref.WeakSet[ModelStorage] = weakref.WeakSet()


def _renew_after_fork() -> None:
    # A forked child has only the thread that forked: a pool that thinks it has
    # idle threads would leave submitted work waiting forever, and a lock some
    # other thread held stays held. Each store renews what it owns.
    global _hash_pool
    _hash_pool = _new_hashing_pool()
    for store in list(_stores):
        # A store another thread was still building has nothing to renew yet.
        with contextlib.suppress(AttributeError):
            store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_after_fork)


def submit_or_run(executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """``executor.submit(fn, *args)``, or ``fn`` run right here once the executor takes no more work.

    While the interpreter exits (an ``atexit`` handler storing a last model),
    every thread pool refuses new work; the call then runs on this thread.
    """
    try:
        return executor.submit(fn, *args)
    except RuntimeError:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the future hands it to whoever waits on it
            done.set_exception(exc)
        return done


@dataclass(frozen=True)
class ModelStat:
    """What a store knows about a committed model without reading it."""

    model_id: str
    size: int
    sha256: str | None
    """Hex digest recorded at write time; None for bytes written by other tools."""
    last_modified: datetime


class Sink(Protocol):
    """A backend's destination for one write; the base drives it.

    ``write`` must not keep a reference to the view it is given: callers may
    reuse their buffers once ``write`` returns.
    """

    def write(self, data: memoryview) -> None: ...

    def commit(self, metadata: Metadata, sha256: str, size: int) -> datetime | None: ...

    def abort(self) -> None: ...


def normalize_metadata(value: Metadata) -> tuple[Metadata, str]:
    """Return ``(copy, json_text)`` of a metadata value, or raise MetadataError.

    The copy is what every backend stores and returns, so a caller's later
    mutation of ``value`` never changes what was stored.
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise MetadataError(f"metadata must be a JSON value without NaN or cycles: {exc}") from None
    if len(text) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is {len(text)} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return json.loads(text), text


def iter_chunks(data: object, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
    """Yield the bytes of a bytes-like object or a binary file, raising TypeError for others."""
    if isinstance(data, str):
        raise TypeError("model data must be bytes or a binary file, not str: encode it first")
    if isinstance(data, io.TextIOBase):
        raise TypeError("model data is a file opened in text mode: open it with 'rb'")
    read = getattr(data, "read", None)
    if read is None:
        try:
            view = memoryview(data).cast("B")  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"model data must be bytes-like or a binary file, not {type(data).__name__}") from None
        # Slices, so a backend can send one while the writer hashes the next.
        for start in range(0, view.nbytes, SLICE_SIZE):
            yield view[start : start + SLICE_SIZE]
        return
    while True:
        chunk = read(chunk_size)
        if not chunk and (chunk is None or isinstance(chunk, (bytes, bytearray, memoryview))):
            return
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"model file returned {type(chunk).__name__} from read(): open it in binary mode")
        yield memoryview(chunk).cast("B")


class ModelWriter(io.BufferedIOBase):
    """The writable file ``get_ptr`` returns: hashes and streams into a sink.

    ``close()`` commits the model whole, with the metadata set while it was
    open; an exception inside ``with`` or ``abort()`` discards it. Garbage
    collection of an unfinished writer discards it too, never commits it.
    """

    def __init__(self, model_id: str, sink: Sink, on_finish=None) -> None:
        super().__init__()
        self.model_id = model_id
        self._sink = sink
        self._on_finish = on_finish
        self._hash = hashlib.sha256()
        self._size = 0
        self._metadata_text = "{}"
        self._lock = threading.Lock()
        self._state = "open"  # -> "committed" | "aborted" | "in the parent process"
        self.stat: ModelStat | None = None
        """Set once the model is committed."""

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        with self._lock:
            self._check_open("write to")
            if view.nbytes:
                try:
                    with self._hashing(view):
                        self._sink.write(view)
                except BaseException:
                    self._finish("aborted", discard=True)
                    raise
                self._size += view.nbytes
        return view.nbytes

    @contextlib.contextmanager
    def _hashing(self, view: memoryview) -> Iterator[None]:
        """Hash ``view`` while the body stores it; the caller's buffer is free again on exit."""
        if view.nbytes < PARALLEL_HASH_MIN:
            self._hash.update(view)
            yield
            return
        hashed = submit_or_run(_hash_pool, self._hash.update, view)
        try:
            yield
        finally:
            hashed.result()

    def flush(self) -> None:
        if self.closed:
            raise ValueError(f"cannot flush model {self.model_id!r}: its writer is {self._state}")

    def pending_metadata(self) -> Metadata:
        return json.loads(self._metadata_text)

    def set_pending_metadata(self, text: str) -> None:
        self._metadata_text = text

    def close(self) -> None:
        with self._lock:
            if self._state != "open":
                return
            sha256 = self._hash.hexdigest()
            try:
                modified = self._sink.commit(json.loads(self._metadata_text), sha256, self._size)
            except BaseException:
                self._finish("aborted", discard=True)
                raise
            self.stat = ModelStat(self.model_id, self._size, sha256, modified or datetime.now(timezone.utc))
            self._finish("committed")

    def _leave_to_parent(self) -> None:
        """In a forked child: this write is the parent's, so the child neither commits nor discards it."""
        self._lock = threading.Lock()
        self._state = "in the parent process"

    def abort(self) -> None:
        """Discard everything written; the store keeps its previous version."""
        with self._lock:
            if self._state == "committed":
                raise ValueError(f"cannot abort model {self.model_id!r}: it is already committed")
            if self._state == "open":
                self._finish("aborted", discard=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_state", None) == "open":
            with contextlib.suppress(Exception):  # nothing can be reported from a finalizer
                self.abort()

    def _check_open(self, action: str) -> None:
        if self._state != "open":
            raise ValueError(f"cannot {action} model {self.model_id!r}: its writer is {self._state}")

    def _finish(self, state: str, *, discard: bool = False) -> None:
        self._state = state
        try:
            if discard:
                self._sink.abort()
        finally:
            super().close()
            if self._on_finish is not None:
                self._on_finish(self)


class _VerifyingReader(io.RawIOBase):
    """Streams a model and, at EOF, hands its SHA-256 to ``verify`` (which raises IntegrityError)."""

    def __init__(self, raw: BinaryIO, verify: Callable[[str], None]) -> None:
        super().__init__()
        self._raw = raw
        self._verify = verify
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        if n:
            self._hash.update(view[:n])
        elif view.nbytes:
            self._verify(self._hash.hexdigest())
        return n

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _check_digest(model_id: str, expected: str, actual: str) -> None:
    if expected != actual:
        raise IntegrityError(
            f"model {model_id!r} is corrupt: its SHA-256 is {actual}, but {expected} was recorded when it was written"
        )


_RECHECKS = (0.0, 0.1, 0.2, 0.4)
"""Pauses before re-reading a model's recorded SHA-256 after a mismatch (see ``ModelStorage._verify``)."""
_REREADS = 3
"""Verified ``get`` calls read a model replaced meanwhile again, this often in all."""


class _ModelReplaced(StorageError):
    """A verified read could not be checked: the model was replaced while it was read."""


class ModelStorage(ABC):
    """Where a combiner keeps model updates and aggregated models.

    The FEDn methods (``exist``, ``get``, ``get_ptr``, ``get_model_metadata``,
    ``set_model_metadata``, ``delete``, ``delete_all``) behave as FEDn's
    combiner expects; ``put``, ``open``, ``list`` and ``stat`` extend them.
    """

    def __init__(self) -> None:
        self._writers: dict[str, ModelWriter] = {}
        self._writers_lock = threading.Lock()
        _stores.add(self)

    # -- the FEDn contract -------------------------------------------------

    def exist(self, model_id: str) -> bool:
        """True iff a committed model ``model_id`` is in the store."""
        return self._exists(check_model_id(model_id))

    def get(self, model_id: str, *, verify: bool = False) -> io.BytesIO | None:
        """The whole model as a BytesIO at position 0, or None if there is none.

        With ``verify=True`` the bytes are checked against the SHA-256
        recorded at write time and IntegrityError is raised on a mismatch.
        """
        check_model_id(model_id)
        if not verify:
            return self._read(model_id)
        for _ in range(_REREADS - 1):
            try:
                return self._read_verified(model_id)
            except _ModelReplaced:
                continue
        return self._read_verified(model_id)

    def get_ptr(self, model_id: str) -> ModelWriter:
        """The open writer for ``model_id``: the same object until it is closed."""
        check_model_id(model_id)
        with self._writers_lock:
            writer = self._writers.get(model_id)
            if writer is None:
                writer = ModelWriter(model_id, self._open_sink(model_id, overwrite=True), self._forget_writer)
                self._writers[model_id] = writer
            return writer

    def get_model_metadata(self, model_id: str) -> Metadata:
        """The metadata last set: pending while a write is open, ``{}`` if none."""
        check_model_id(model_id)
        writer = self._open_writer(model_id)
        if writer is not None:
            return writer.pending_metadata()
        return self._read_metadata(model_id)

    def set_model_metadata(self, model_id: str, model_metadata: Metadata) -> bool:
        """Store metadata; while a write is open it is committed with the bytes."""
        check_model_id(model_id)
        value, text = self._validated_metadata(model_metadata)
        with self._writers_lock:
            writer = self._writers.get(model_id)
            if writer is not None:
                writer.set_pending_metadata(text)
                return True
        self._write_metadata(model_id, value)
        return True

    def delete(self, model_id: str) -> bool:
        """Remove the model and its metadata, aborting an open write; True if anything went."""
        check_model_id(model_id)
        with self._writers_lock:
            writer = self._writers.pop(model_id, None)
        if writer is not None:
            _abort_quietly(writer)
        return self._delete(model_id) or writer is not None

    def delete_all(self) -> bool:
        """Remove every model of this store's namespace, also those others wrote."""
        with self._writers_lock:
            writers = list(self._writers.values())
            self._writers.clear()
        for writer in writers:
            _abort_quietly(writer)
        self._delete_all()
        return True

    # -- extensions ---------------------------------------------------------

    def put(
        self,
        model_id: str,
        data: object,
        metadata: Metadata = None,
        *,
        overwrite: bool = True,
    ) -> ModelStat:
        """Store a whole model from bytes-like data or a binary file, streamed.

        ``overwrite=False`` is an atomic create: ModelExistsError if the id is
        already taken, by this process or any other.
        """
        check_model_id(model_id)
        _, text = self._validated_metadata({} if metadata is None else metadata)
        chunks = iter_chunks(data)
        first = next(chunks, None)  # type errors surface here, before any I/O
        writer = ModelWriter(model_id, self._open_sink(model_id, overwrite=overwrite))
        writer.set_pending_metadata(text)
        with writer:
            if first is not None:
                writer.write(first)
            for chunk in chunks:
                writer.write(chunk)
        assert writer.stat is not None
        return writer.stat

    def open(self, model_id: str, *, verify: bool = False) -> BinaryIO:
        """A streaming reader; ModelNotFoundError if the model is missing."""
        check_model_id(model_id)
        before = self._stat(model_id) if verify else None
        reader = self._open_reader(model_id)
        if not verify:
            return reader
        verifying = _VerifyingReader(reader, lambda actual: self._verify(model_id, before, actual))
        return io.BufferedReader(verifying, CHUNK_SIZE)  # type: ignore[return-value]

    def list(self) -> list[str]:
        """The ids of every committed model, sorted."""
        return sorted(self._list_ids())

    def stat(self, model_id: str) -> ModelStat:
        """Size, SHA-256 and modification time; ModelNotFoundError if missing."""
        check_model_id(model_id)
        found = self._stat(model_id)
        if found is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return found

    def close(self) -> None:
        """Abort open writes and release resources; committed models stay."""
        with self._writers_lock:
            writers = list(self._writers.values())
            self._writers.clear()
        for writer in writers:
            _abort_quietly(writer)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------

    def _validated_metadata(self, value: Metadata) -> tuple[Metadata, str]:
        normalized, text = normalize_metadata(value)
        self._check_metadata(normalized)
        return normalized, text

    def _after_fork_in_child(self) -> None:
        """Make this store usable in a forked child; the parent's open writes stay the parent's.

        Subclasses renew what they own (locks, thread pools, connections) and call this.
        """
        self._writers_lock = threading.Lock()
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer._leave_to_parent()

    def _open_writer(self, model_id: str) -> ModelWriter | None:
        with self._writers_lock:
            return self._writers.get(model_id)

    def _forget_writer(self, writer: ModelWriter) -> None:
        with self._writers_lock:
            if self._writers.get(writer.model_id) is writer:
                del self._writers[writer.model_id]

    def _read_verified(self, model_id: str) -> io.BytesIO | None:
        before = self._stat(model_id)
        buffer = self._read(model_id)
        if buffer is not None:
            self._verify(model_id, before, hashlib.sha256(buffer.getbuffer()).hexdigest())
        return buffer

    def _verify(self, model_id: str, before: ModelStat | None, actual: str) -> None:
        """Raise IntegrityError unless ``actual`` is the SHA-256 recorded for the bytes read.

        Every backend reads one whole version, but a model replaced meanwhile
        is not corrupt: its digest is recorded at (for an object store's
        sidecar, right after) the commit. So a mismatch is checked again after
        short pauses; it is corruption only if the model, as recorded before
        the read, is still the same and still disagrees with the bytes.
        Otherwise ``_ModelReplaced`` says the read should be repeated.
        """
        recorded = before
        for pause in _RECHECKS:
            if recorded is not None and recorded.sha256 == actual:
                return
            time.sleep(pause)
            now = self._stat(model_id)
            if pause and now == recorded:
                break  # the record stands still
            recorded = now
        if recorded is not None and recorded.sha256 == actual:
            return
        if recorded != before:
            raise _ModelReplaced(f"model {model_id!r} was replaced while being read with verify=True; read it again")
        if recorded is None or recorded.sha256 is None:
            raise IntegrityError(f"model {model_id!r} has no recorded SHA-256 to verify against")
        _check_digest(model_id, recorded.sha256, actual)

    # -- primitives: what a backend implements ------------------------------

    def _check_metadata(self, value: Metadata) -> None:  # noqa: B027 - optional hook
        """Raise MetadataError for values this backend cannot store."""

    def _exists(self, model_id: str) -> bool:
        return self._stat(model_id) is not None

    def _read(self, model_id: str) -> io.BytesIO | None:
        try:
            reader = self._open_reader(model_id)
        except ModelNotFoundError:
            return None
        with reader:
            return io.BytesIO(reader.read())

    def _delete_all(self) -> None:
        for model_id in self._list_ids():
            self._delete(model_id)

    @abstractmethod
    def _stat(self, model_id: str) -> ModelStat | None: ...

    @abstractmethod
    def _open_reader(self, model_id: str) -> BinaryIO:
        """A reader positioned at 0; raise ModelNotFoundError if missing."""

    @abstractmethod
    def _open_sink(self, model_id: str, *, overwrite: bool) -> Sink: ...

    @abstractmethod
    def _read_metadata(self, model_id: str) -> Metadata:
        """The committed metadata (``{}`` if none); ModelNotFoundError if no model."""

    @abstractmethod
    def _write_metadata(self, model_id: str, value: Metadata) -> None:
        """Replace a committed model's metadata; ModelNotFoundError if no model."""

    @abstractmethod
    def _delete(self, model_id: str) -> bool: ...

    @abstractmethod
    def _list_ids(self) -> Iterable[str]: ...


def _abort_quietly(writer: ModelWriter) -> None:
    try:
        writer.abort()
    except Exception:  # noqa: BLE001 - the caller asked to discard it anyway
        logger.warning("could not abort the open write of model %r", writer.model_id, exc_info=True)
