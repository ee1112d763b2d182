"""Models in this process's memory: for tests, notebooks and single-process combiners."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from storage.errors import ModelExistsError, ModelNotFoundError
from storage.model import Metadata, ModelStat
from storage.modelstorage import ModelStorage
from storage.options import StorageURL, reject_unknown
from storage.process import ProcessLocal


@dataclass(frozen=True)
class _Entry:
    data: bytes
    metadata_json: str
    sha256: str
    last_modified: datetime


class MemoryModelStorage(ModelStorage):
    """A thread-safe dict of immutable models.

    ``get`` wraps the stored bytes in a new BytesIO without copying them;
    CPython copies lazily only if the caller writes to it, so every caller gets
    an independent buffer at the cost of at most one copy.
    """

    def __init__(self) -> None:
        super().__init__()
        self._models: dict[str, _Entry] = {}
        self._lock = ProcessLocal(threading.Lock)

    def __repr__(self) -> str:
        return f"MemoryModelStorage(models={len(self._models)})"

    @classmethod
    def from_url(cls, url: StorageURL, *, create: bool = True) -> MemoryModelStorage:
        """``memory://``: lives as long as the object."""
        reject_unknown("memory:// URLs", url.options, set())
        return cls()

    def _entry(self, model_id: str) -> _Entry | None:
        with self._lock.get():
            return self._models.get(model_id)

    def _stat(self, model_id: str) -> ModelStat | None:
        entry = self._entry(model_id)
        if entry is None:
            return None
        return ModelStat(model_id, len(entry.data), entry.sha256, entry.last_modified)

    def _read(self, model_id: str) -> io.BytesIO | None:
        entry = self._entry(model_id)
        return None if entry is None else io.BytesIO(entry.data)

    def _open_reader(self, model_id: str) -> io.BytesIO:
        buffer = self._read(model_id)
        if buffer is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return buffer

    def _open_sink(self, model_id: str, *, overwrite: bool) -> _MemorySink:
        return _MemorySink(self, model_id, overwrite)

    def _read_metadata(self, model_id: str) -> Metadata:
        entry = self._entry(model_id)
        if entry is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return json.loads(entry.metadata_json)

    def _write_metadata(self, model_id: str, value: Metadata) -> None:
        with self._lock.get():
            entry = self._models.get(model_id)
            if entry is None:
                raise ModelNotFoundError(f"model {model_id!r} not found")
            self._models[model_id] = replace(entry, metadata_json=json.dumps(value))

    def _delete(self, model_id: str) -> bool:
        with self._lock.get():
            return self._models.pop(model_id, None) is not None

    def _list_ids(self) -> list[str]:
        with self._lock.get():
            return list(self._models)

    def _delete_all(self) -> None:
        with self._lock.get():
            self._models.clear()

    def _commit(self, model_id: str, entry: _Entry, overwrite: bool) -> None:
        with self._lock.get():
            if not overwrite and model_id in self._models:
                raise ModelExistsError(f"model {model_id!r} already exists")
            self._models[model_id] = entry


class _MemorySink:
    def __init__(self, store: MemoryModelStorage, model_id: str, overwrite: bool) -> None:
        self._store = store
        self._model_id = model_id
        self._overwrite = overwrite
        self._buffer: io.BytesIO | None = io.BytesIO()

    def write(self, data: memoryview) -> None:
        assert self._buffer is not None
        self._buffer.write(data)

    def commit(self, metadata: Metadata, sha256: str, size: int) -> datetime:
        assert self._buffer is not None
        # getvalue() hands over the buffer's own bytes when nothing else shares it.
        data, self._buffer = self._buffer.getvalue(), None
        now = datetime.now(timezone.utc)
        self._store._commit(self._model_id, _Entry(data, json.dumps(metadata), sha256, now), self._overwrite)
        return now

    def abort(self) -> None:
        self._buffer = None
