"""A read-through cache on local disk in front of any store: ``CachedModelStorage``.

Every round, every client downloads the same global model, and FEDn's
``ModelService.Download`` reads it from the combiner's store once per client:
with an object store behind the combiner, N full GETs of the same bytes.
``CachedModelStorage(store, directory, max_bytes)`` is a ``ModelStorage`` that
keeps what it reads in a folder and serves it from there, for as long as it is
still the model's current version.

- Freshness: a read first asks the store for the model's stat (on an object
  store a HEAD and one small GET of its record) and is served from the cache
  only if an entry holds bytes of exactly that size and recorded SHA-256. A
  model replaced through any instance, process or machine has another
  SHA-256, so it is never served stale. A model with no recorded SHA-256
  (written by another tool), whose bytes changed outside the store since it
  recorded them, or larger than ``max_bytes`` is read from the store, uncached.
- Entries are named by the SHA-256 of their bytes and checked against it when
  filled (``storage.cachefolder``): ids, stores or combiners on one machine
  that hold the same model share one entry. A fill whose bytes do not check
  out caches nothing, and the read goes to the store as if there were no cache
  (``get(verify=True)`` then raises IntegrityError as the store does).
- Single flight: threads and processes that miss the same entry at once make
  one GET of it; the others wait for it and read the entry.
- Bounded by ``max_bytes``, least recently used out first. The folder holds
  only the cache's own files, and the cache removes nothing else from it.
- Writes (``put``, ``get_ptr`` writers, ``set_model_metadata``) and deletes
  (``delete``, ``delete_all``) go through to the store and drop the entry of
  the version this process last read of that id, to free its space sooner;
  a version replaced elsewhere is never served anyway, and its entry ages out.
- Metadata, ``stat``, ``list`` and ``exist`` always come from the store.
- A cache folder that fails (a full disk, permissions) is logged and bypassed:
  reads go to the store.

``close()`` closes the store too.

Any store URL takes the cache as options, which ``open_storage`` removes
before the backend sees the URL::

    s3://bucket/prefix?cache_dir=/var/cache/models&cache_max_bytes=20GiB
    minio://host:9000/bucket/prefix?secure=false&cache_dir=/var/cache/models

``cache_dir`` names the folder (made if missing, ``~`` expanded; give a folder of
its own, not a file store's folder). ``cache_max_bytes`` bounds it, as
``storage.options.parse_quantity`` reads sizes (``20GiB``, ``500M``); 10 GiB by
default. From FEDn's settings, wrap the store::

    CachedModelStorage(from_fedn_config(prefix="combiner-1/"), "/var/cache/models", "20GiB")
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from storage.cachefolder import CacheFolder, CacheFolderError, is_sha256
from storage.errors import ConfigurationError, IntegrityError, ModelNotFoundError
from storage.ids import check_model_id
from storage.model import Metadata, ModelStat
from storage.modelstorage import ModelStorage
from storage.options import StorageURL, parse_quantity
from storage.process import ProcessLocal
from storage.tempmodelstorage import TempModelStorage
from storage.verify import VerifyingReader
from storage.writer import CHUNK_SIZE, Sink

logger = logging.getLogger("modelstorage")

CACHE_DIR_OPTION = "cache_dir"
CACHE_MAX_BYTES_OPTION = "cache_max_bytes"
DEFAULT_MAX_BYTES = 10 * 2**30

KNOWN_IDS = 10_000
"""How many ids this process remembers the last read version of, to drop its entry when the id is written."""


class _KnownVersions:
    """Per process: model id -> SHA-256 of the version last read through the cache, oldest forgotten first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: OrderedDict[str, str] = OrderedDict()

    def remember(self, model_id: str, sha256: str) -> None:
        with self.lock:
            self.versions[model_id] = sha256
            self.versions.move_to_end(model_id)
            while len(self.versions) > KNOWN_IDS:
                self.versions.popitem(last=False)

    def forget(self, model_id: str) -> str | None:
        with self.lock:
            return self.versions.pop(model_id, None)

    def forget_all(self) -> list[str]:
        with self.lock:
            known = list(self.versions.values())
            self.versions.clear()
        return known


class _InvalidatingSink:
    """The store's sink for a write, which drops the id's cache entry once the write has committed (or failed)."""

    def __init__(self, sink: Sink, invalidate: Callable[[], None]) -> None:
        self._sink = sink
        self._invalidate = invalidate

    def write(self, data: memoryview) -> None:
        self._sink.write(data)

    def commit(self, metadata: Metadata, sha256: str, size: int) -> datetime | None:
        try:
            return self._sink.commit(metadata, sha256, size)
        finally:
            self._invalidate()

    def abort(self) -> None:
        self._sink.abort()


class CachedModelStorage(ModelStorage):
    """``store`` with a read-through cache of at most ``max_bytes`` in ``directory`` (see the module docstring)."""

    def __init__(
        self, store: ModelStorage, directory: str | os.PathLike[str], max_bytes: int | str = DEFAULT_MAX_BYTES
    ) -> None:
        super().__init__()
        if not isinstance(store, ModelStorage):
            raise ConfigurationError(f"a cache goes in front of a ModelStorage, not {type(store).__name__}")
        self.store = store
        self.max_bytes = parse_quantity("max_bytes", max_bytes)
        self.directory = Path(os.path.expanduser(os.fspath(directory)))
        _refuse_a_store_folder(store, self.directory)
        self.retry = store.retry
        try:
            self.folder = CacheFolder(self.directory, self.max_bytes)
        except CacheFolderError as exc:
            raise ConfigurationError(f"cannot use {self.directory} as a model cache: {exc}") from None
        self._known = ProcessLocal(_KnownVersions)

    def __repr__(self) -> str:
        return f"CachedModelStorage({self.store!r}, {str(self.directory)!r}, max_bytes={self.max_bytes})"

    def close(self) -> None:
        super().close()
        self.store.close()

    # -- reads: from the cache while it holds the current version ----------------

    def get(self, model_id: str, *, verify: bool = False) -> io.BytesIO | None:
        check_model_id(model_id)
        if verify:
            return self.retry.call(f"verified read of model {model_id!r}", self._get_verified, model_id)
        stat = self._stat(model_id)
        if stat is None:
            return None
        try:
            reader, _ = self._cached(model_id, stat)
        except ModelNotFoundError:
            return None  # deleted since its stat
        data = self._read_entry(model_id, reader)
        return self.store.get(model_id) if data is None else io.BytesIO(data)

    def _get_verified(self, model_id: str) -> io.BytesIO | None:
        stat = self._stat(model_id)
        if stat is None:
            return None
        for _ in range(2):  # an entry found changed on local disk is dropped and filled once more
            try:
                reader, checked = self._cached(model_id, stat)
            except ModelNotFoundError:
                return None
            data = self._read_entry(model_id, reader)
            if data is None:
                break
            if checked or hashlib.sha256(data).hexdigest() == stat.sha256:
                return io.BytesIO(data)
            self._drop_changed_entry(model_id, stat)
        return self.store.get(model_id, verify=True)

    def open(self, model_id: str, *, verify: bool = False) -> BinaryIO:
        check_model_id(model_id)
        stat = self._stat(model_id)
        if stat is None:
            raise ModelNotFoundError(f"model {model_id!r} not found")
        reader, checked = self._cached(model_id, stat)
        if reader is None:
            return self.store.open(model_id, verify=verify)
        if not verify or checked:
            return reader

        def check(actual: str) -> None:
            if actual != stat.sha256:
                self._drop_changed_entry(model_id, stat)
                raise IntegrityError(
                    f"the cached copy of model {model_id!r} in {self.directory} no longer matches its SHA-256 "
                    f"{stat.sha256} (it changed on local disk); it was removed, read the model again"
                )

        return io.BufferedReader(VerifyingReader(reader, check), CHUNK_SIZE)  # type: ignore[return-value]

    def _cached(self, model_id: str, stat: ModelStat) -> tuple[BinaryIO | None, bool]:
        """(the entry of ``stat``'s version opened for reading, whether it was filled and so checked just now,
        by this call or the one it waited for); (None, False) where the model is not to be cached or the cache
        cannot serve it: read the store."""
        sha256 = stat.sha256
        if not (is_sha256(sha256) and not stat.changed and stat.size <= self.max_bytes):
            return None, False
        assert sha256 is not None
        checked = False
        try:
            reader = self.folder.open(sha256, stat.size)
            if reader is None:
                reader = self.folder.fill(sha256, stat.size, lambda: self.store.open(model_id))
                checked = reader is not None
        except CacheFolderError as exc:
            logger.warning("reading model %r from the store, past its cache: %s", model_id, exc)
            return None, False
        if reader is not None:
            self._known.get().remember(model_id, sha256)
        return reader, checked

    def _read_entry(self, model_id: str, reader: BinaryIO | None) -> bytes | None:
        if reader is None:
            return None
        try:
            with reader:
                return reader.read()
        except OSError as exc:
            logger.warning("reading model %r from the store, past its cache: %s", model_id, exc.strerror or exc)
            return None

    def _drop_changed_entry(self, model_id: str, stat: ModelStat) -> None:
        logger.warning("the cached copy of model %r changed on local disk; removing it", model_id)
        assert stat.sha256 is not None
        self.folder.discard(stat.sha256)

    # -- invalidation -------------------------------------------------------------

    def _invalidate(self, model_id: str) -> None:
        sha256 = self._known.get().forget(model_id)
        if sha256 is not None:
            self.folder.discard(sha256)

    def _invalidate_all(self) -> None:
        for sha256 in set(self._known.get().forget_all()):
            self.folder.discard(sha256)

    # -- primitives: the store's, with writes dropping what they replace -----------

    def _check_metadata(self, value: Metadata) -> None:
        self.store._check_metadata(value)

    def _exists(self, model_id: str) -> bool:
        return self.store.exist(model_id)

    def _stat(self, model_id: str) -> ModelStat | None:
        try:
            return self.store.stat(model_id)
        except ModelNotFoundError:
            return None

    def _read(self, model_id: str) -> io.BytesIO | None:
        return self.get(model_id)

    def _open_reader(self, model_id: str) -> BinaryIO:
        return self.open(model_id)

    def _open_sink(self, model_id: str, *, overwrite: bool) -> Sink:
        sink = self.store._open_sink(model_id, overwrite=overwrite)
        return _InvalidatingSink(sink, lambda: self._invalidate(model_id))

    def _read_metadata(self, model_id: str) -> Metadata:
        return self.store.get_model_metadata(model_id)

    def _write_metadata(self, model_id: str, value: Metadata) -> None:
        try:
            self.store.set_model_metadata(model_id, value)
        finally:
            self._invalidate(model_id)

    def _delete(self, model_id: str) -> bool:
        try:
            return self.store.delete(model_id)
        finally:
            self._invalidate(model_id)

    def _delete_all(self) -> None:
        try:
            self.store.delete_all()
        finally:
            self._invalidate_all()

    def _list_ids(self) -> Iterable[str]:
        return self.store.list()

    def _stale_writes(self, before: datetime, *, remove: bool) -> list[str]:
        return self.store._stale_writes(before, remove=remove)

    # Direct transfers are the store's: a URL reaches it, never this cache.
    def presign_get(self, model_id: str, *, expires: object = 900):
        return self.store.presign_get(model_id, expires=expires)

    def presign_put(self, model_id: str, *, size: int, sha256: str, expires: object = 900):
        return self.store.presign_put(model_id, size=size, sha256=sha256, expires=expires)

    def commit_upload(self, model_id: str, metadata: Metadata = None, *, overwrite: bool = True) -> ModelStat:
        try:
            return self.store.commit_upload(model_id, metadata, overwrite=overwrite)
        finally:
            self._invalidate(model_id)


def _refuse_a_store_folder(store: ModelStorage, directory: Path) -> None:
    """A file store's folder cannot be its cache (the store would read cache files as models), nor can the
    folder of a cache already in front of the store (its fills would wait on their own locks)."""
    if not isinstance(store, (TempModelStorage, CachedModelStorage)):
        return
    if directory.is_dir() and directory.samefile(store.directory):
        raise ConfigurationError(f"the cache folder {directory} is the store's own folder: give the cache its own")


# -- the URL options -----------------------------------------------------------------


@dataclass(frozen=True)
class CacheSettings:
    """What a store URL's cache options ask for."""

    directory: str
    max_bytes: int

    def wrap(self, store: ModelStorage) -> CachedModelStorage:
        """``store`` behind this cache; the store is closed if the cache cannot be made."""
        try:
            return CachedModelStorage(store, self.directory, self.max_bytes)
        except BaseException:
            store.close()
            raise


def split_cache_options(url: StorageURL) -> tuple[StorageURL, CacheSettings | None]:
    """``url`` without the cache options, and the cache they ask for (None without ``cache``)."""
    options = dict(url.options)
    directory = options.pop(CACHE_DIR_OPTION, None)
    max_bytes = options.pop(CACHE_MAX_BYTES_OPTION, None)
    if directory is None:
        if max_bytes is not None:
            raise ConfigurationError(f"URL option {CACHE_MAX_BYTES_OPTION} needs {CACHE_DIR_OPTION}=/path/to/a/folder")
        return url, None
    if not directory.strip():
        raise ConfigurationError(
            f"URL option {CACHE_DIR_OPTION} names no folder: use {CACHE_DIR_OPTION}=/path/to/a/folder"
        )
    bound = DEFAULT_MAX_BYTES
    if max_bytes is not None:
        bound = parse_quantity(f"URL option {CACHE_MAX_BYTES_OPTION}", max_bytes)
    return replace(url, options=options), CacheSettings(directory, bound)
