"""Models as files in one folder, as FEDn's combiner keeps them, done safely.

Layout of the folder (ids never start with a dot, so nothing else collides):

- ``{dir}/{id}``              the model's bytes, exactly as FEDn writes them
- ``{dir}/.{id}.meta.json``   its record: metadata, SHA-256, and the file version they were written for
- ``{dir}/.{id}.*.part``      a write in progress; renamed into place at commit

A model of this store is a file with its record: ``list`` and ``delete_all``
see those and nothing else, so a folder shared with other files keeps them.
A file another tool put there (FEDn's own class) is still read by its id. A
model whose file changed outside the store keeps its record, shows as
``changed`` in ``stat``, and fails a verified read unless its bytes still
match the recorded SHA-256.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from storage.errors import (
    ConfigurationError,
    ModelExistsError,
    ModelNotFoundError,
    StorageError,
    StoragePermissionError,
)
from storage.ids import is_model_id
from storage.model import Metadata, ModelStat
from storage.modelstorage import ModelStorage
from storage.options import StorageURL, parse_bool, reject_unknown
from storage.process import ProcessLocal

try:
    import fcntl
except ImportError:  # no flock here (Windows): changes are serialised among the threads of one process only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("modelstorage")

_RECORD_SUFFIX = ".meta.json"
_PART_SUFFIX = ".part"


def default_directory() -> Path:
    """``$FEDN_MODEL_DIR``, else a per-user folder under the system temp dir."""
    configured = os.environ.get("FEDN_MODEL_DIR")
    if configured:
        return Path(configured)
    owner = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"modelstorage-{owner}"


@contextlib.contextmanager
def _os_errors(action: str):
    """Turn OSErrors into the library's typed errors, with a sentence to act on."""
    try:
        yield
    except PermissionError as exc:
        raise StoragePermissionError(f"permission denied to {action}: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageError(f"no space left on device to {action}; free space and retry") from exc
        if isinstance(exc, (FileNotFoundError, FileExistsError)):
            raise
        raise StorageError(f"could not {action}: {exc.strerror or exc}") from exc


def _version(st: os.stat_result) -> list[int]:
    # A rename keeps inode, size and mtime, so a record written for the
    # temporary file still names the committed one; any other file differs.
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class TempModelStorage(ModelStorage):
    """Models as files in ``directory`` (default: ``default_directory()``).

    Writes go to a temporary file in the same folder and are renamed into
    place at commit, so readers see the old model or the new one, whole.
    ``fsync=True`` also makes each commit durable across a power loss.
    ``create=False`` opens an existing folder only (ConfigurationError if there
    is none), so reading never makes a folder where a path was mistyped.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, fsync: bool = False, create: bool = True
    ) -> None:
        super().__init__()
        self.directory = Path(directory) if directory is not None else default_directory()
        self.fsync = fsync
        # Paths as plain strings: for a small model, pathlib would cost more than the syscalls.
        self._root = os.fspath(self.directory)
        self._in_root = os.path.join(self._root, "")
        self._lock = ProcessLocal(threading.Lock)
        if not create and not self.directory.is_dir():
            what = "is not a folder" if self.directory.exists() else "does not exist"
            raise ConfigurationError(f"{self.directory} {what}: name the folder of a model store")
        with _os_errors(f"create model folder {self.directory}"):
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except FileExistsError:
                raise ConfigurationError(f"{self.directory} exists and is not a folder; name a folder") from None

    @contextlib.contextmanager
    def _changing(self, action: str):
        """Held while a model's file and record change, so they change together.

        A commit is two renames (bytes, then record); two processes committing
        one id at once could otherwise leave one's record beside the other's
        bytes. ``flock`` on the folder itself orders them without a lock file.
        """
        with self._lock.get(), _os_errors(action):
            if fcntl is None:
                yield
                return
            fd = os.open(self._root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                with contextlib.suppress(OSError):  # a file system without flock (some NFS): threads only
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                # Unlocked explicitly: a child forked meanwhile shares this descriptor and would keep the lock.
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __repr__(self) -> str:
        return f"TempModelStorage({str(self.directory)!r}, fsync={self.fsync})"

    @classmethod
    def from_url(cls, url: StorageURL, *, create: bool = True) -> TempModelStorage:
        """``file:///path/to/models?fsync=true``."""
        if url.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file URLs name a local folder: file:///path, not file://{url.netloc}/...")
        if not url.path:
            raise ConfigurationError("file URL names no folder: use file:///path/to/models")
        reject_unknown("file:// URLs", url.options, {"fsync"})
        return cls(url.path, fsync=parse_bool("URL option fsync", url.options.get("fsync", "false")), create=create)

    # -- paths and records -------------------------------------------------

    def _model_path(self, model_id: str) -> str:
        return self._in_root + model_id

    def _record_path(self, model_id: str) -> str:
        return f"{self._in_root}.{model_id}{_RECORD_SUFFIX}"

    def _model_version(self, model_id: str) -> os.stat_result | None:
        try:
            st = os.lstat(self._model_path(model_id))
        except (FileNotFoundError, NotADirectoryError):
            return None
        # Only regular files are models: a symlink could point outside the
        # folder, and a subfolder is not ours.
        return st if stat.S_ISREG(st.st_mode) else None

    def _record(self, model_id: str) -> dict | None:
        """The model's record (its metadata, SHA-256 and the file version they were written for), or None."""
        try:
            with open(self._record_path(model_id), "rb") as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            logger.warning("ignoring unreadable metadata record of model %r", model_id)
            return None
        return record if isinstance(record, dict) else None

    def _write_record(self, model_id: str, version: list[int], sha256: str | None, metadata: Metadata) -> None:
        tmp = self._prepare_record(model_id, version, sha256, metadata)
        try:
            os.replace(tmp, self._record_path(model_id))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _prepare_record(self, model_id: str, version: list[int], sha256: str | None, metadata: Metadata) -> str:
        """Write the record to a temporary file (where a full disk shows) and return its path."""
        record = {"version": version, "sha256": sha256, "metadata": metadata}
        fd, tmp = tempfile.mkstemp(dir=self._root, prefix=f".{model_id}.", suffix=_PART_SUFFIX)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    # -- primitives --------------------------------------------------------

    def _exists(self, model_id: str) -> bool:
        return self._model_version(model_id) is not None

    def _stat(self, model_id: str) -> ModelStat | None:
        st = self._model_version(model_id)
        if st is None:
            return None
        record = self._record(model_id) or {}
        modified = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        # A record written for another version of the file: the bytes changed outside the store.
        changed = bool(record) and record.get("version") != _version(st)
        return ModelStat(model_id, st.st_size, record.get("sha256"), modified, changed)

    def _open_reader(self, model_id: str) -> BinaryIO:
        try:
            fd = os.open(self._model_path(model_id), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except (FileNotFoundError, NotADirectoryError):
            fd = None
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # ELOOP: a symlink, which is never a model
                with _os_errors(f"read model {model_id!r}"):
                    raise
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb")
        if fd is not None:
            os.close(fd)
        raise ModelNotFoundError(f"model {model_id!r} not found in {self.directory}")

    def _open_sink(self, model_id: str, *, overwrite: bool) -> _FileSink:
        return _FileSink(self, model_id, overwrite)

    def _read_metadata(self, model_id: str) -> Metadata:
        st = self._model_version(model_id)
        if st is None:
            raise ModelNotFoundError(f"model {model_id!r} not found in {self.directory}")
        record = self._record(model_id)
        return {} if record is None else record.get("metadata", {})

    def _write_metadata(self, model_id: str, value: Metadata) -> None:
        with self._changing(f"write metadata of model {model_id!r}"):
            st = self._model_version(model_id)
            if st is None:
                raise ModelNotFoundError(f"model {model_id!r} not found in {self.directory}")
            # The record keeps the file version it was made for: new metadata never adopts bytes changed outside.
            record = self._record(model_id) or {"version": _version(st)}
            self._write_record(model_id, record.get("version"), record.get("sha256"), value)

    def _delete(self, model_id: str) -> bool:
        with self._changing(f"delete model {model_id!r}"):
            removed = self._model_version(model_id) is not None
            if removed:
                try:
                    os.unlink(self._model_path(model_id))
                except FileNotFoundError:
                    removed = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._record_path(model_id))
        return removed

    def _files(self) -> dict[str, os.DirEntry]:
        """The regular files of the folder by name (never a symlink or a subfolder)."""
        with _os_errors(f"list {self.directory}"), os.scandir(self.directory) as entries:
            return {entry.name: entry for entry in entries if entry.is_file(follow_symlinks=False)}

    def _list_ids(self) -> list[str]:
        """The models this store wrote: each file with its record. Other files are not its models."""
        files = self._files()
        return [name for name in files if is_model_id(name) and f".{name}{_RECORD_SUFFIX}" in files]

    def _delete_all(self) -> None:
        """Remove this store's models, their records and its leftover partial writes; nothing else."""
        with self._changing(f"empty {self.directory}"):
            files = self._files()
            ours = {name for name in files if _is_record_or_part(name)}
            ours |= {name for name in files if is_model_id(name) and f".{name}{_RECORD_SUFFIX}" in files}
            for name in ours:
                with contextlib.suppress(FileNotFoundError), _os_errors(f"empty {self.directory}"):
                    os.unlink(files[name].path)

    def _stale_writes(self, before: datetime, *, remove: bool) -> list[str]:
        """Partial files of writes a crash left: this store's own ``.part`` files, untouched since ``before``."""
        stale = []
        for name, entry in self._files().items():
            if _is_record_or_part(name) and name.endswith(_PART_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    if datetime.fromtimestamp(entry.stat(follow_symlinks=False).st_mtime, timezone.utc) < before:
                        stale.append(name)
                        if remove:
                            os.unlink(entry.path)
        return stale

    def _commit(
        self, model_id: str, tmp: str, st: os.stat_result, overwrite: bool, sha256: str, metadata: Metadata
    ) -> None:
        target = self._model_path(model_id)
        with self._changing(f"commit model {model_id!r}"):
            # The record is written before the model moves into place, so a
            # full disk (or a crash) while writing it leaves the previous
            # version as it was; what remains are two renames.
            record_tmp = self._prepare_record(model_id, _version(st), sha256, metadata)
            try:
                try:
                    if overwrite:
                        os.replace(tmp, target)
                    else:
                        try:
                            os.link(tmp, target)  # fails if the id is taken, atomically across processes
                        except FileExistsError:
                            raise ModelExistsError(f"model {model_id!r} already exists") from None
                        os.unlink(tmp)
                except FileNotFoundError:
                    raise StorageError(
                        f"the write of model {model_id!r} was discarded: its temporary file was removed "
                        "(by delete_all of another process?)"
                    ) from None
                os.replace(record_tmp, self._record_path(model_id))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(record_tmp)
                raise
            if self.fsync:
                _fsync_directory(self.directory)


class _FileSink:
    def __init__(self, store: TempModelStorage, model_id: str, overwrite: bool) -> None:
        self._store = store
        self._model_id = model_id
        self._overwrite = overwrite
        self._done = False
        # The name before the file: an interrupt (a signal the command turns into one) at any point
        # after this leaves nothing that abort, or this sink's finalizer, does not remove.
        self._tmp = f"{store._in_root}.{model_id}.{_random_part_name()}{_PART_SUFFIX}"
        with _os_errors(f"start writing model {model_id!r}"):
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            self._file = os.fdopen(fd, "wb")

    def write(self, data: memoryview) -> None:
        with _os_errors(f"write model {self._model_id!r}"):
            self._file.write(data)

    def commit(self, metadata: Metadata, sha256: str, size: int) -> datetime:
        with _os_errors(f"write model {self._model_id!r}"):
            self._file.flush()
            if self._store.fsync:
                os.fsync(self._file.fileno())
            st = os.fstat(self._file.fileno())
            self._file.close()
        self._done = True
        self._store._commit(self._model_id, self._tmp, st, self._overwrite, sha256, metadata)
        return datetime.fromtimestamp(st.st_mtime, timezone.utc)

    def abort(self) -> None:
        self._done = True
        with contextlib.suppress(OSError, AttributeError):  # AttributeError: interrupted before the file was open
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            with contextlib.suppress(Exception):  # nothing can be reported from a finalizer
                self.abort()


def _random_part_name() -> str:
    """Eight characters of what mkstemp draws from: ``_RECORD_OR_PART`` knows the name as this store's."""
    return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(8))


_RECORD_OR_PART = re.compile(
    rf"\.(?P<id>[^/]+?)(?:{re.escape(_RECORD_SUFFIX)}|\.[a-z0-9_]{{8}}{re.escape(_PART_SUFFIX)})"
)
"""``.{id}.meta.json``, or ``.{id}.<8 random characters>.part``: how mkstemp names this store's partial writes."""


def _is_record_or_part(name: str) -> bool:
    found = _RECORD_OR_PART.fullmatch(name)
    return found is not None and is_model_id(found["id"])


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
