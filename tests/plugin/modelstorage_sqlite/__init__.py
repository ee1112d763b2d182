"""A third-party backend, as another distribution would ship it: models in one SQLite file.

It joins with its entry point (``../modelstorage_sqlite-0.1.dist-info/entry_points.txt``,
what ``pip install`` writes from a ``pyproject.toml``) and implements only
``ModelStorage``'s primitives; every public method, and the contract the
conformance suite checks, comes from the base class.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone

from storage import ConfigurationError, ModelExistsError, ModelNotFoundError, ModelStat, ModelStorage
from storage.options import StorageURL, reject_unknown
from storage.process import ProcessLocal

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS models (id TEXT PRIMARY KEY, data BLOB, sha256 TEXT, metadata TEXT, modified REAL)"
)


class _Database:
    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(_SCHEMA)
        self.lock = threading.Lock()

    def run(self, sql: str, *args):
        with self.lock:
            return self.connection.execute(sql, args)


class SQLiteModelStorage(ModelStorage):
    """``sqlite:///path/to/models.db``"""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._db = ProcessLocal(lambda: _Database(path))
        self._db.get()

    def __repr__(self) -> str:
        return f"SQLiteModelStorage({self.path!r})"

    @classmethod
    def from_url(cls, url: StorageURL, *, create: bool = True) -> SQLiteModelStorage:
        reject_unknown("sqlite:// URLs", url.options, set())
        if not create and not os.path.isfile(url.path):
            raise ConfigurationError(f"{url.path} does not exist: name the file of a model store")
        return cls(url.path)

    def _row(self, model_id: str, columns: str):
        return self._db.get().run(f"SELECT {columns} FROM models WHERE id = ?", model_id).fetchone()

    def _stat(self, model_id: str) -> ModelStat | None:
        row = self._row(model_id, "length(data), sha256, modified")
        if row is None:
            return None
        return ModelStat(model_id, row[0], row[1], datetime.fromtimestamp(row[2], timezone.utc))

    def _open_reader(self, model_id: str) -> io.BytesIO:
        row = self._row(model_id, "data")
        if row is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return io.BytesIO(row[0])

    def _open_sink(self, model_id: str, *, overwrite: bool) -> _Sink:
        return _Sink(self, model_id, overwrite)

    def _read_metadata(self, model_id: str):
        row = self._row(model_id, "metadata")
        if row is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        return json.loads(row[0])

    def _write_metadata(self, model_id: str, value) -> None:
        if not self._db.get().run("UPDATE models SET metadata = ? WHERE id = ?", json.dumps(value), model_id).rowcount:
            raise ModelNotFoundError(f"model {model_id!r} not found")

    def _delete(self, model_id: str) -> bool:
        return self._db.get().run("DELETE FROM models WHERE id = ?", model_id).rowcount > 0

    def _list_ids(self) -> list[str]:
        return [row[0] for row in self._db.get().run("SELECT id FROM models")]

    def close(self) -> None:
        super().close()
        database = self._db.made()
        if database is not None:
            database.connection.close()


class _Sink:
    def __init__(self, store: SQLiteModelStorage, model_id: str, overwrite: bool) -> None:
        self._store, self._model_id, self._overwrite = store, model_id, overwrite
        self._buffer = io.BytesIO()

    def write(self, data: memoryview) -> None:
        self._buffer.write(data)

    def commit(self, metadata, sha256: str, size: int) -> datetime:
        verb = "INSERT OR REPLACE" if self._overwrite else "INSERT"
        now = time.time()
        row = (self._model_id, self._buffer.getvalue(), sha256, json.dumps(metadata), now)
        try:
            self._store._db.get().run(f"{verb} INTO models VALUES (?, ?, ?, ?, ?)", *row)
        except sqlite3.IntegrityError:
            raise ModelExistsError(f"model {self._model_id!r} already exists") from None
        return datetime.fromtimestamp(now, timezone.utc)

    def abort(self) -> None:
        self._buffer = io.BytesIO()
