"""The folder behind ``CachedModelStorage``: entries named by their content, filled once, evicted oldest first.

Layout (the cache touches nothing else in its folder, and nothing outside it):

- ``{sha256}.model``                    an entry: exactly the bytes whose SHA-256 is its name
- ``{sha256}.{8 characters}.filling``   an entry being filled; renamed to ``.model`` once its bytes check out
- ``{sha256}.lock``                     locked (``fcntl.flock``) by whoever fills that entry; exists only while locked

An entry is named by what it holds, not by a model id: bytes whose SHA-256 is
X are the same bytes whichever id, prefix, store or combiner they came from,
so all of them share one entry, and an entry is never stale, only unused.
Whether an entry is the current version of a model is the caller's question,
answered by the store's stat (see ``storage.cache``).

- Filling: the bytes go to a temporary file, hashed as they arrive, and are
  fsynced and renamed into place only if their size and SHA-256 are the
  entry's name, so a crash (of the process or the machine) never leaves a
  partial entry. A temporary file left by a process killed while filling is
  removed by the sweep after the next fill, or when a cache opens the
  folder, once no one holds its entry's lock.
- Single flight: a fill holds the entry's lock, a ``threading.Lock`` for the
  threads of this process and an ``fcntl.flock`` for other processes (where
  there is no ``fcntl``, threads only); whoever waited finds the entry filled.
- Eviction: every hit sets the entry's modification time; after each fill,
  the least recently used entries go until the rest fit in ``max_bytes``.
  Fills under way are not counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage.process import ProcessLocal
from storage.writer import CHUNK_SIZE

try:
    import fcntl
except ImportError:  # no flock here (Windows): single flight among the threads of one process only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("modelstorage")

_ENTRY = ".model"
_FILLING = ".filling"
_LOCK = ".lock"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_OURS = re.compile(
    rf"(?P<sha256>[0-9a-f]{{64}})(?:{re.escape(_ENTRY)}|\.[a-z0-9_]{{8}}{re.escape(_FILLING)}|{re.escape(_LOCK)})"
)
"""Every name the cache writes (mkstemp's 8 random characters for a fill); it removes nothing else."""

ABANDONED_AFTER = 3600.0
"""Without flock, a fill whose file has not changed for this many seconds is taken for one whose process died."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def is_sha256(value: object) -> bool:
    """True for a hex SHA-256 as the stores record it: only such a name ever becomes a path here."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


class CacheFolderError(Exception):
    """The cache folder failed (full disk, permissions): the read goes to the store instead."""


@contextlib.contextmanager
def _local(action: str) -> Iterator[None]:
    """Tell a failure of the local folder apart from one of the store, whose errors may be OSErrors too."""
    try:
        yield
    except OSError as exc:
        raise CacheFolderError(f"could not {action}: {exc.strerror or exc}") from exc


class _ThreadLocks:
    """One ``threading.Lock`` per entry being filled in this process, dropped when no thread wants it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # sha256 -> [lock, threads holding or waiting]

    @contextlib.contextmanager
    def held(self, key: str, *, blocking: bool = True) -> Iterator[bool]:
        with self._guard:
            slot = self._locks.setdefault(key, [threading.Lock(), 0])
            slot[1] += 1
        try:
            got = slot[0].acquire(blocking)
            try:
                yield got
            finally:
                if got:
                    slot[0].release()
        finally:
            with self._guard:
                slot[1] -= 1
                if not slot[1]:
                    del self._locks[key]


class CacheFolder:
    """Entries of verified model bytes in ``directory``, at most ``max_bytes`` of them (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._root = os.fspath(self.directory)
        self._locks = ProcessLocal(_ThreadLocks)
        with _local(f"create the cache folder {self.directory}"):
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.directory.is_dir():
                raise NotADirectoryError(f"{self.directory} is not a folder")
        self.sweep()  # a restart removes what a killed process left and applies a smaller bound

    def _path(self, sha256: str, suffix: str) -> str:
        assert is_sha256(sha256)
        return os.path.join(self._root, sha256 + suffix)

    # -- reading --------------------------------------------------------------

    def open(self, sha256: str, size: int) -> BinaryIO | None:
        """The entry holding these bytes, opened for reading and marked used; None if there is none."""
        path = self._path(sha256, _ENTRY)
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheFolderError(f"could not open cache entry {path}: {exc.strerror or exc}") from exc
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode) or held.st_size != size:
            # Not an entry of ours, or a record that disagrees with its own SHA-256: read the store.
            os.close(fd)
            return None
        self._mark_used(path)
        return os.fdopen(fd, "rb")

    def _mark_used(self, path: str) -> None:
        now = time.time_ns()  # explicit nanoseconds: the file system's own clock ticks too coarsely to order hits
        with contextlib.suppress(FileNotFoundError):  # evicted meanwhile: the reader keeps its open file
            os.utime(path, ns=(now, now))

    # -- filling ----------------------------------------------------------------

    def fill(self, sha256: str, size: int, source: Callable[[], BinaryIO]) -> BinaryIO | None:
        """The entry for these bytes, read from ``source()`` unless another thread or process filled it meanwhile.

        None if what ``source()`` gave is not ``size`` bytes of that SHA-256
        (the model was replaced while it was read, or its bytes are corrupt):
        nothing is cached then. Errors of ``source`` pass through as they are.
        """
        with self._held(sha256):
            found = self.open(sha256, size)
            if found is not None:
                return found  # filled while this call waited: the single flight
            reader = self._write(sha256, size, source)
        if reader is not None:
            self.sweep()  # also removes what a process killed while filling this entry left
        return reader

    def _write(self, sha256: str, size: int, source: Callable[[], BinaryIO]) -> BinaryIO | None:
        with _local(f"start a cache entry in {self.directory}"):
            fd, tmp = tempfile.mkstemp(dir=self._root, prefix=f"{sha256}.", suffix=_FILLING)
        try:
            out = os.fdopen(fd, "wb")
            try:
                digest, written = hashlib.sha256(), 0
                with source() as reader:
                    while written <= size:  # more than the record says: not these bytes, stop reading
                        chunk = reader.read(CHUNK_SIZE)
                        if not chunk:
                            break
                        digest.update(chunk)
                        with _local(f"write cache entry {tmp}"):
                            out.write(chunk)
                        written += len(chunk)
                with _local(f"write cache entry {tmp}"):
                    out.flush()
                    os.fsync(out.fileno())  # the bytes are on disk before the name that vouches for them
            finally:
                with contextlib.suppress(OSError):
                    out.close()
            if written != size or digest.hexdigest() != sha256:
                os.unlink(tmp)
                return None
            with _local(f"install cache entry {sha256}{_ENTRY}"):
                # Opened before the rename, so an eviction right after cannot take it; the caller closes it.
                reader = open(tmp, "rb")  # noqa: SIM115
                try:
                    now = time.time_ns()
                    os.utime(tmp, ns=(now, now))
                    os.replace(tmp, self._path(sha256, _ENTRY))
                except BaseException:
                    reader.close()
                    raise
            return reader
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def discard(self, sha256: str) -> None:
        """Remove the entry, if there is one (a reader that has it open keeps reading it)."""
        try:
            os.unlink(self._path(sha256, _ENTRY))
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove cache entry %s%s: %s", sha256, _ENTRY, exc.strerror or exc)

    # -- locks --------------------------------------------------------------------

    @contextlib.contextmanager
    def _held(self, sha256: str, *, blocking: bool = True) -> Iterator[bool]:
        """The entry's lock, among the threads of this process and (with flock) among processes."""
        with self._locks.get().held(sha256, blocking=blocking) as got:
            if not got or fcntl is None:
                yield got
                return
            with _local(f"lock cache entry {sha256}"):
                fd = self._flock(self._path(sha256, _LOCK), blocking)
            if fd is None:
                yield False
                return
            try:
                yield True
            finally:
                self._unflock(self._path(sha256, _LOCK), fd)

    @staticmethod
    def _flock(path: str, blocking: bool) -> int | None:
        """A descriptor holding ``path`` locked, or None if someone else holds it and ``blocking`` is False."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            held = os.fstat(fd)
            try:
                current = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                return fd
            # Its last holder removed this file while this process waited on it: lock the one at the path now.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _unflock(path: str, fd: int) -> None:
        try:
            # Removed while still locked, so no two processes can ever hold the lock through different files.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            # Unlocked explicitly: a child forked meanwhile shares this descriptor and would keep the lock.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- sweeping -------------------------------------------------------------------

    def sweep(self) -> None:
        """Evict the least recently used entries beyond ``max_bytes``; remove fills and locks left by dead processes."""
        entries: list[tuple[int, str, int]] = []
        leftovers: dict[str, list[os.DirEntry]] = {}
        try:
            with os.scandir(self._root) as found:
                for item in found:
                    ours = _OURS.fullmatch(item.name)
                    if ours is None or not item.is_file(follow_symlinks=False):
                        continue
                    if item.name.endswith(_ENTRY):
                        try:
                            st = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # evicted by another process meanwhile
                        entries.append((st.st_mtime_ns, item.name, st.st_size))
                    else:
                        leftovers.setdefault(ours["sha256"], []).append(item)
        except OSError as exc:
            logger.warning("could not sweep the cache folder %s: %s", self.directory, exc.strerror or exc)
            return
        total = sum(size for _, _, size in entries)
        for _, name, size in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                os.unlink(os.path.join(self._root, name))
            except FileNotFoundError:
                pass  # evicted by another process's sweep
            except OSError as exc:
                logger.warning("could not evict cache entry %s: %s", name, exc.strerror or exc)
                continue
            total -= size
        for sha256, items in leftovers.items():
            self._remove_abandoned(sha256, items)

    def _remove_abandoned(self, sha256: str, items: list[os.DirEntry]) -> None:
        fills = [item for item in items if item.name.endswith(_FILLING)]
        if fcntl is None:
            stale = time.time() - ABANDONED_AFTER
            for item in fills:
                with contextlib.suppress(OSError):
                    if item.stat(follow_symlinks=False).st_mtime < stale:
                        os.unlink(item.path)
            return
        try:
            # Whoever holds the lock is filling; while it is free, what is left belongs to no one
            # (and releasing it removes the lock file itself).
            with self._held(sha256, blocking=False) as free:
                if free:
                    for item in fills:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(item.path)
        except (CacheFolderError, OSError) as exc:
            logger.warning("could not remove what a fill of cache entry %s left: %s", sha256, exc)
