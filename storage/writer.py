"""Writing a model: the file object ``get_ptr`` returns, and the sink a backend gives it.

A ``ModelWriter`` hashes what it is given and streams it into its backend's
``Sink``; ``close()`` commits the model whole, with the metadata set while it
was open. Everything a backend must do for a write is the three methods of
``Sink``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Protocol

from storage.model import Metadata, ModelStat
from storage.process import ProcessLocal, submit_or_run

CHUNK_SIZE = 1024 * 1024
"""The unit FEDn streams models in, and the unit ``put`` reads files in."""

SLICE_SIZE = 8 * CHUNK_SIZE
"""The unit ``put`` hands in-memory data to a backend in."""

PARALLEL_HASH_MIN = 256 * 1024
"""Writes from this size are hashed on a helper thread while the backend stores them."""

# hashlib lets go of the GIL while it hashes, so a large write is hashed and
# stored at once: a put then costs the slower of the two, not their sum.
_hash_pool = ProcessLocal(
    lambda: ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="modelstorage-sha256")
)


class Sink(Protocol):
    """A backend's destination for one write; the writer drives it.

    ``write`` must not keep a reference to the view it is given: callers may
    reuse their buffers once ``write`` returns.
    """

    def write(self, data: memoryview) -> None: ...

    def commit(self, metadata: Metadata, sha256: str, size: int) -> datetime | None: ...

    def abort(self) -> None: ...


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
    collection of an unfinished writer discards it too, never commits it. A
    writer belongs to the process that opened it: a forked child can neither
    commit nor discard it.
    """

    def __init__(self, model_id: str, sink: Sink, on_finish: Callable[[ModelWriter], Any] | None = None) -> None:
        super().__init__()
        self.model_id = model_id
        self._sink = sink
        self._on_finish = on_finish
        self._pid = os.getpid()
        self._hash = hashlib.sha256()
        self._size = 0
        self._metadata_text = "{}"
        self._lock = ProcessLocal(threading.Lock)
        self._state = "open"  # -> "committed" | "aborted"
        self.stat: ModelStat | None = None
        """Set once the model is committed."""

    @property
    def state(self) -> str:
        return self._state if os.getpid() == self._pid else "in the parent process"

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        with self._lock.get():
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
        hashed = submit_or_run(_hash_pool.get(), self._hash.update, view)
        try:
            yield
        finally:
            hashed.result()

    def flush(self) -> None:
        if self.closed:
            raise ValueError(f"cannot flush model {self.model_id!r}: its writer is {self.state}")

    def pending_metadata(self) -> Metadata:
        return json.loads(self._metadata_text)

    def set_pending_metadata(self, text: str) -> None:
        self._metadata_text = text

    def close(self) -> None:
        with self._lock.get():
            if self.state != "open":
                return
            sha256 = self._hash.hexdigest()
            try:
                modified = self._sink.commit(json.loads(self._metadata_text), sha256, self._size)
            except BaseException:
                self._finish("aborted", discard=True)
                raise
            self.stat = ModelStat(self.model_id, self._size, sha256, modified or datetime.now(timezone.utc))
            self._finish("committed")

    def abort(self) -> None:
        """Discard everything written; the store keeps its previous version."""
        with self._lock.get():
            if self.state == "committed":
                raise ValueError(f"cannot abort model {self.model_id!r}: it is already committed")
            if self.state == "open":
                self._finish("aborted", discard=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        if getattr(self, "_state", None) == "open" and self.state == "open":
            with contextlib.suppress(Exception):  # nothing can be reported from a finalizer
                self.abort()

    def _check_open(self, action: str) -> None:
        if self.state != "open":
            raise ValueError(f"cannot {action} model {self.model_id!r}: its writer is {self.state}")

    def _finish(self, state: str, *, discard: bool = False) -> None:
        self._state = state
        try:
            if discard:
                self._sink.abort()
        finally:
            super().close()
            if self._on_finish is not None:
                self._on_finish(self)
