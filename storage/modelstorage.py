"""The ModelStorage contract: FEDn's method names, one behaviour on every backend.

A backend implements a handful of primitives (``_stat``, ``_open_reader``,
``_open_sink``, ``_read_metadata``, ``_write_metadata``, ``_delete``,
``_list_ids``); everything a caller sees is written once here: id checks,
metadata normalisation, the open-write registry behind ``get_ptr``, hashing,
verification, and the FEDn semantics of pending metadata.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, ClassVar

from storage.errors import ConfigurationError, ModelNotFoundError
from storage.ids import check_model_id
from storage.model import Metadata, ModelStat, normalize_metadata
from storage.process import ProcessLocal
from storage.retention import STALE_WRITES_AFTER, Retention
from storage.retry import RetryPolicy
from storage.verify import VerifyingReader, check_read
from storage.writer import CHUNK_SIZE, ModelWriter, Sink, iter_chunks

logger = logging.getLogger("modelstorage")


class _OpenWrites:
    """The writers ``get_ptr`` handed out in this process and not yet closed, by model id."""

    def __init__(self) -> None:
        self.writers: dict[str, ModelWriter] = {}
        self.lock = threading.Lock()


class ModelStorage(ABC):
    """Where a combiner keeps model updates and aggregated models.

    The FEDn methods (``exist``, ``get``, ``get_ptr``, ``get_model_metadata``,
    ``set_model_metadata``, ``delete``, ``delete_all``) behave as FEDn's
    combiner expects; ``put``, ``open``, ``list`` and ``stat`` extend them.
    """

    fedn_storage_type: ClassVar[str | None] = None
    """The ``storage_type`` of FEDn's settings this backend serves (see ``storage.registry``)."""

    retry: RetryPolicy = RetryPolicy()
    """The policy every retried step of this store runs under (see ``storage.retry``)."""

    def __init__(self) -> None:
        self._open_writes = ProcessLocal(_OpenWrites)

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
        return self.retry.call(f"verified read of model {model_id!r}", self._read_verified, model_id)

    def get_ptr(self, model_id: str) -> ModelWriter:
        """The open writer for ``model_id``: the same object until it is closed."""
        check_model_id(model_id)
        open_writes = self._open_writes.get()
        with open_writes.lock:
            writer = open_writes.writers.get(model_id)
            if writer is None:
                writer = ModelWriter(model_id, self._open_sink(model_id, overwrite=True), self._forget_writer)
                open_writes.writers[model_id] = writer
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
        open_writes = self._open_writes.get()
        with open_writes.lock:
            writer = open_writes.writers.get(model_id)
            if writer is not None:
                writer.set_pending_metadata(text)
                return True
        self._write_metadata(model_id, value)
        return True

    def delete(self, model_id: str) -> bool:
        """Remove the model and its metadata, aborting an open write; True if anything went."""
        check_model_id(model_id)
        open_writes = self._open_writes.get()
        with open_writes.lock:
            writer = open_writes.writers.pop(model_id, None)
        if writer is not None:
            _abort_quietly(writer)
        return self._delete(model_id) or writer is not None

    def delete_all(self) -> bool:
        """Remove every model of this store's namespace, also those others wrote."""
        self._abort_open_writes()
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
        checked = VerifyingReader(
            reader, lambda actual: check_read(model_id, before, actual, lambda: self._stat(model_id))
        )
        return io.BufferedReader(checked, CHUNK_SIZE)  # type: ignore[return-value]

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

    def prune(
        self,
        *rules: Retention,
        dry_run: bool = False,
        stale_writes_after: timedelta = STALE_WRITES_AFTER,
        now: datetime | None = None,
    ) -> list[str]:
        """Remove the models ``rules`` let go (see ``storage.retention``) and what stale writes left behind.

        Returns the ids removed, or with ``dry_run`` those that would be,
        removing nothing. Only models of this store's namespace are looked at.
        ``now`` prunes as of another time ("what goes by Friday", with ``dry_run``).
        """
        if not rules:
            raise ConfigurationError("prune needs at least one Retention rule")
        now = now or datetime.now(timezone.utc)
        reads_metadata = any(rule.reads_metadata for rule in rules)
        models = []
        for model_id in self.list():
            try:
                models.append((self.stat(model_id), self.get_model_metadata(model_id) if reads_metadata else None))
            except ModelNotFoundError:
                continue  # deleted meanwhile
        doomed = sorted(set().union(*(rule.doomed(models, now) for rule in rules)))
        if not dry_run:
            for model_id in doomed:
                self.delete(model_id)
        stale = self._stale_writes(now - stale_writes_after, remove=not dry_run)
        if stale:
            logger.info("%s %d stale write(s): %s", "would remove" if dry_run else "removed", len(stale), stale)
        return doomed

    def presign_get(self, model_id: str, *, expires: object = 900):
        """A GET of the model that any HTTP client may send: object stores only."""
        raise self._cannot_presign()

    def presign_put(self, model_id: str, *, size: int, sha256: str, expires: object = 900):
        """A plan to upload the model straight to the store: object stores only."""
        raise self._cannot_presign()

    def commit_upload(self, model_id: str, metadata: Metadata = None, *, overwrite: bool = True) -> ModelStat:
        """Make a direct upload the model: object stores only."""
        raise self._cannot_presign()

    def _cannot_presign(self) -> ConfigurationError:
        return ConfigurationError(
            f"{type(self).__name__} has no presigned URLs: a client can upload or download directly only "
            "with an object store (s3:// or minio://)"
        )

    def close(self) -> None:
        """Abort open writes and release resources; committed models stay."""
        self._abort_open_writes()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------

    def _validated_metadata(self, value: Metadata) -> tuple[Metadata, str]:
        normalized, text = normalize_metadata(value)
        self._check_metadata(normalized)
        return normalized, text

    def _abort_open_writes(self) -> None:
        """Discard this process's open writes (a forked child has none: its parent's stay the parent's)."""
        open_writes = self._open_writes.made()
        if open_writes is None:
            return
        with open_writes.lock:
            writers = list(open_writes.writers.values())
            open_writes.writers.clear()
        for writer in writers:
            _abort_quietly(writer)

    def _open_writer(self, model_id: str) -> ModelWriter | None:
        open_writes = self._open_writes.get()
        with open_writes.lock:
            return open_writes.writers.get(model_id)

    def _forget_writer(self, writer: ModelWriter) -> None:
        open_writes = self._open_writes.get()
        with open_writes.lock:
            if open_writes.writers.get(writer.model_id) is writer:
                del open_writes.writers[writer.model_id]

    def _read_verified(self, model_id: str) -> io.BytesIO | None:
        before = self._stat(model_id)
        buffer = self._read(model_id)
        if buffer is not None:
            actual = hashlib.sha256(buffer.getbuffer()).hexdigest()
            check_read(model_id, before, actual, lambda: self._stat(model_id))
        return buffer

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

    def _stale_writes(self, before: datetime, *, remove: bool) -> list[str]:
        """What writes started before ``before`` left behind and never finished (removed if ``remove``)."""
        return []

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
    if writer.state != "open":
        return  # committed (or discarded) while this was deciding: nothing to abort
    try:
        writer.abort()
    except Exception:  # noqa: BLE001 - the caller asked to discard it anyway
        logger.warning("could not abort the open write of model %r", writer.model_id, exc_info=True)
