"""Moving a model's bytes: multipart writes in bounded memory, whole and ranged reads, streamed reads.

``Transfers`` holds what every transfer needs and nothing of the store: the
SDK client, the retry policy, a thread pool and the options. Each request, or
each part and range, is one step of the retry policy: a failed part is
retried without resending the others, a connection lost mid-stream resumes
at the same offset, and a model replaced during a ranged read is read again.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from adapters.client import ObjectClient, ObjectInfo, ObjectNotFound, PreconditionFailed, Upload
from adapters.options import ObjectStoreOptions
from storage.errors import StorageError, StoragePermissionError, StorageUnavailableError
from storage.process import ProcessLocal, submit_or_run
from storage.retry import RetryPolicy, TransientError
from storage.verify import ModelReplaced

logger = logging.getLogger("modelstorage")

CLEANUP = RetryPolicy(max_attempts=1, deadline=1.0)
"""An abort after a failed write: one attempt of at most a second; what it cannot reach is aborted later."""


class _Abandoned:
    """Uploads an outage kept this process from aborting, to abort at the next chance."""

    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.lock = threading.Lock()


class Transfers:
    """The SDK client, retry policy, thread pool and options that move one store's bytes."""

    def __init__(
        self,
        client: Callable[[], ObjectClient],
        policy: RetryPolicy,
        options: ObjectStoreOptions,
        explain_denied: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self.policy = policy
        self.options = options
        self._explain_denied = explain_denied
        self._executor = ProcessLocal(
            lambda: ThreadPoolExecutor(options.max_concurrency, thread_name_prefix="modelstorage")
        )
        self._abandoned = ProcessLocal(_Abandoned)

    @property
    def client(self) -> ObjectClient:
        return self._client()

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor.get()

    def call(self, operation: str, fn, *args, **kwargs):
        """One step under the retry policy; access denied may be told more truly (a missing bucket)."""
        try:
            return self.policy.call(operation, fn, *args, **kwargs)
        except StoragePermissionError:
            self._explain_denied()
            raise

    # -- multipart uploads that could not be finished -------------------------

    def abort(self, upload: Upload, what: str) -> None:
        """Abort a failed or discarded upload; if the store is unreachable, abort it later.

        A write usually fails because the store stopped answering, and then the
        abort cannot get through either: it is tried once, briefly, and an upload
        it could not abort is aborted by the next write, ``abort_abandoned`` or
        ``close``.
        """
        try:
            self._abort(upload, CLEANUP)
        except StorageUnavailableError:
            logger.warning("could not abort the upload of %s now; will abort it later", what)
            abandoned = self._abandoned.get()
            with abandoned.lock:
                abandoned.uploads.append(upload)

    def abort_abandoned(self, policy: RetryPolicy = CLEANUP) -> int:
        """Abort the uploads left by earlier failures; how many are still left."""
        abandoned = self._abandoned.made()
        if abandoned is None or not abandoned.uploads:
            return 0
        with abandoned.lock:
            pending, abandoned.uploads = abandoned.uploads, []
        failed = []
        for upload in pending:
            try:
                self._abort(upload, policy)
            except StorageUnavailableError:
                failed.append(upload)
        with abandoned.lock:
            abandoned.uploads[:0] = failed
            return len(abandoned.uploads)

    def _abort(self, upload: Upload, policy: RetryPolicy) -> None:
        with contextlib.suppress(ObjectNotFound):  # already gone
            policy.call(f"abort upload of {upload.key!r}", upload.abort)

    def close(self) -> None:
        left = self.abort_abandoned()
        if left:
            logger.warning(
                "%d multipart upload(s) could not be aborted: abort them, or let a lifecycle rule "
                "(AbortIncompleteMultipartUpload) remove them",
                left,
            )
        executor = self._executor.made()
        if executor is not None:
            executor.shutdown(wait=True)

    # -- reads -----------------------------------------------------------------

    def read_whole(self, key: str) -> io.BytesIO | None:
        """The whole object; None if missing.

        One GET, read in one call: on a fast link nothing beats it, and it
        costs the least CPU. An object above ``ranged_get_threshold`` keeps
        only that GET's first part; the rest comes by concurrent ranged GETs,
        each naming the first response's ETag (If-Match), so an object
        replaced mid-read is read again rather than stitched together.
        """
        try:
            return self.call(f"get {key!r}", self._read_once, key)
        except ObjectNotFound:
            return None

    def _read_once(self, key: str) -> io.BytesIO:
        part = self.options.part_size
        info, head = _get_head(self.client, key, self.options.ranged_get_threshold, part)
        if info.size <= len(head):
            return io.BytesIO(head)  # shares ``head``: no copy
        # One buffer of the final size that every range reads into; BytesIO's own,
        # so the caller gets it without a copy.
        buffer = io.BytesIO()
        buffer.seek(info.size - 1)
        buffer.write(b"\0")
        with buffer.getbuffer() as view:
            view[: len(head)] = head
            del head
            # Each range runs in a copy of this context: one attempt under this call's deadline.
            futures = [
                submit_or_run(
                    self.executor,
                    contextvars.copy_context().run,
                    _get_range_into,
                    self.client,
                    key,
                    info.etag,
                    start,
                    view[start : start + length],
                )
                for start, length in _ranges(part, info.size, part)
            ]
            try:
                for future in futures:
                    future.result()
            except PreconditionFailed:
                raise ModelReplaced(f"{key!r} was replaced while being read") from None
            finally:
                for future in futures:
                    future.cancel()
                wait(futures)
        buffer.seek(0)
        return buffer

    def reader(self, key: str) -> ObjectReader:
        """A stream of the object; ObjectNotFound if it is missing."""
        return ObjectReader(self, key)


def _ranges(start: int, size: int, part: int):
    for first in range(start, size, part):
        yield first, min(part, size - first)


def _get_head(client: ObjectClient, key: str, threshold: int | None, part: int) -> tuple[ObjectInfo, bytes]:
    """The whole object, or only its first ``part`` bytes when it is larger than ``threshold``."""
    response = client.get(key)
    with response.body:
        size = response.info.size
        if threshold is not None and size > threshold:
            expected = min(part, size)
            data = response.body.read(expected)  # closing the body then drops the connection
        else:
            expected = size
            data = response.body.readall()
    if len(data) != expected:
        raise TransientError(f"short read of {key!r}: {len(data)} of {expected} bytes")
    return response.info, data


def _get_range_into(client: ObjectClient, key: str, etag: str, start: int, target: memoryview) -> None:
    response = client.get(key, start, start + len(target) - 1, if_match=etag)
    with response.body:
        filled = 0
        while filled < len(target):
            n = response.body.readinto(target[filled:])
            if not n:
                raise TransientError(f"short read of {key!r} at byte {start + filled}")
            filled += n


class ObjectReader(io.RawIOBase):
    """An object streamed in one GET. Each read is a step of the retry policy: a connection lost
    mid-body resumes at the same offset, If-Match keeping it the same version. Closing releases
    the connection."""

    def __init__(self, transfers: Transfers, key: str) -> None:
        super().__init__()
        self._transfers = transfers
        self._key = key
        response = transfers.call(f"get {key!r}", transfers.client.get, key)
        self._info = response.info
        self._body: io.RawIOBase | None = response.body  # type: ignore[assignment]
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self._info.size or not len(view):
            return 0
        return self._transfers.call(f"read {self._key!r} at byte {self._position}", self._read_some, view)

    def _read_some(self, view: memoryview) -> int:
        if self._body is None:
            try:
                response = self._transfers.client.get(self._key, self._position, None, if_match=self._info.etag)
            except PreconditionFailed:
                raise StorageError(f"{self._key!r} was replaced while being read; open it again") from None
            self._body = response.body  # type: ignore[assignment]
        try:
            n = self._body.readinto(view)  # type: ignore[union-attr]
        except TransientError:
            self._release()
            raise
        if not n:
            self._release()
            raise TransientError(f"short read of {self._key!r} at byte {self._position}")
        self._position += n
        return n

    def _release(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                body.close()

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()
