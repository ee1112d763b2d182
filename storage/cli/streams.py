"""The wrappers models pass through on their way between a store and a file or an array.

Plain Python, neither rich nor numpy: the commands and the simulation both
use them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from storage import CHUNK_SIZE


class ProgressReader:
    """A binary reader that reports every read's size to ``advance`` and keeps the total in ``count``.

    ``advance`` usually moves a progress bar; ``count`` is what the simulation's
    throughput is computed from.
    """

    def __init__(self, raw, advance: Callable[[int], None]) -> None:
        self._raw = raw
        self._advance = advance
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self.count += len(data)
            self._advance(len(data))
        return data


class HashingWriter:
    """Passes writes on and keeps their SHA-256, for metadata that must be set before the commit."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()

    def write(self, data) -> int:
        self._hash.update(data)
        return self._raw.write(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def copy_stream(reader, writer, advance: Callable[[int], None]) -> None:
    """Copy ``reader`` to ``writer`` in CHUNK_SIZE pieces, reporting each to ``advance``."""
    while chunk := reader.read(CHUNK_SIZE):
        writer.write(chunk)
        advance(len(chunk))


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A file that replaces ``path`` only when complete, so a failed or interrupted get leaves no partial model.

    The temporary file's name (48 random bits) is chosen before it is created,
    not by mkstemp, so an interrupt that arrives just after its creation,
    before its name came back, still finds it to remove.
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    try:
        try:
            # 0o666 less the umask: what a plain download gets.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the file the user asked for
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
