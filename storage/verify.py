"""Checking the bytes read against the SHA-256 recorded when they were written.

Every backend reads one whole version of a model, but a model replaced while
it is read is not corrupt, and an object store records a model's digest (in
its sidecar) just after the bytes. So the digest the bytes are checked against
is taken before the read, and on a mismatch looked at again: the bytes are
corrupt only if the record stays what it was and still disagrees. A record
that moved means the model was replaced meanwhile: ``ModelReplaced`` is
transient, and the store's retry policy reads again.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from typing import BinaryIO

from storage.errors import IntegrityError
from storage.model import ModelStat
from storage.retry import TransientError

RECORD_PAUSES = (0.1, 0.2, 0.4)
"""How long a mismatching record is watched for a commit under way before the bytes count as corrupt.

Not retries: nothing failed. The requests made meanwhile belong to the
caller's policy call, and a failing one ends it."""


class ModelReplaced(TransientError):
    """A verified read could not be checked: the model was replaced while it was read."""

    advice = "it kept being replaced while it was read; read it again"


def check_read(model_id: str, before: ModelStat | None, actual: str, stat: Callable[[], ModelStat | None]) -> None:
    """Raise IntegrityError unless ``actual`` is the SHA-256 recorded for the bytes read.

    ``before`` is the model's stat taken before the read, ``stat`` takes it again.
    """
    recorded = before
    for pause in (0.0, *RECORD_PAUSES):
        if recorded is not None and recorded.sha256 == actual:
            return
        time.sleep(pause)
        now = stat()
        if pause and now == recorded:
            break  # the record stands still
        recorded = now
    if recorded is not None and recorded.sha256 == actual:
        return
    if recorded != before:
        raise ModelReplaced(f"model {model_id!r} was replaced while being read with verify=True")
    if recorded is None or recorded.sha256 is None:
        raise IntegrityError(f"model {model_id!r} has no recorded SHA-256 to verify against")
    raise IntegrityError(
        f"model {model_id!r} is corrupt: its SHA-256 is {actual}, "
        f"but {recorded.sha256} was recorded when it was written"
    )


class VerifyingReader(io.RawIOBase):
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
