"""Streaming transfers: multipart writes in bounded memory, ranged and resumable reads.

Every request goes through the store's retry policy on its own: a failed part
is retried without resending the others, a reset read resumes where it broke.
"""

from __future__ import annotations

import contextlib
import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from adapters.client import ObjectClient, ObjectInfo, ObjectNotFound, PreconditionFailed
from adapters.retry import TransientError
from storage.errors import ModelExistsError, StorageError, StorageUnavailableError
from storage.modelstorage import Metadata, submit_or_run

if TYPE_CHECKING:
    from adapters.objectstore import ObjectStoreModelStorage

_REREADS = 3  # whole-model reads restarted because the model was replaced meanwhile


class MultipartSink:
    """Gathers writes into parts and uploads them while the caller keeps writing.

    Memory stays within part_size x (max_concurrency + 1): at most
    ``max_concurrency`` parts in flight plus the one being filled. A model of
    at most one part goes up in a single PUT: the upload starts only when a
    byte arrives past a full part.
    """

    def __init__(
        self,
        store: ObjectStoreModelStorage,
        client: ObjectClient,
        executor: ThreadPoolExecutor,
        model_id: str,
        *,
        overwrite: bool,
    ) -> None:
        self._store = store
        self._client = client
        self._executor = executor
        self._model_id = model_id
        self._key = store.keys.model_key(model_id)
        self._create = not overwrite
        self._part_size = store.part_size
        self._slots = threading.BoundedSemaphore(store.max_concurrency)
        # A BytesIO hands its buffer over as bytes without a copy (getvalue), and
        # both SDKs send bytes as they are: each byte is copied once, into the part.
        self._buffer = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: list[Future[str]] = []

    def write(self, data: memoryview) -> None:
        offset, size = 0, len(data)
        while offset < size:
            room = self._part_size - self._buffer.tell()
            if not room:  # a full part and more to come: it goes as a part of an upload
                self._send_part()
                room = self._part_size
            take = min(room, size - offset)
            self._buffer.write(data[offset : offset + take])
            offset += take

    def commit(self, metadata: Metadata, sha256: str, size: int) -> None:
        store = self._store
        try:
            if self._upload_id is None:
                tags = store.tags_for_put(metadata, sha256)
                store.call(
                    f"put model {self._model_id!r}",
                    self._client.put,
                    self._key,
                    self._take_buffer(),
                    sha256=sha256,
                    tags=tags,
                    if_none_match=self._create,
                )
            else:
                if self._buffer.tell():
                    self._send_part()
                etags = [(number, part.result()) for number, part in enumerate(self._parts, 1)]
                store.call(
                    f"complete upload of {self._model_id!r}",
                    self._client.complete_multipart,
                    self._key,
                    self._upload_id,
                    etags,
                    if_none_match=self._create,
                )
                self._upload_id = None
        except PreconditionFailed:
            raise ModelExistsError(f"model {self._model_id!r} already exists") from None
        tagged = not self._parts
        store.finish_commit(self._model_id, metadata, sha256, tagged=tagged)

    def abort(self) -> None:
        self._buffer = io.BytesIO()
        for part in self._parts:
            part.cancel()
        wait(self._parts)  # a part still in flight would otherwise outlive the abort
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._store.abort_upload(self._model_id, self._key, upload_id)

    def _take_buffer(self) -> bytes:
        body, self._buffer = self._buffer.getvalue(), io.BytesIO()
        return body

    def _raise_failed_part(self) -> None:
        for part in self._parts:
            if part.done() and part.exception() is not None:
                raise part.exception()  # type: ignore[misc]

    def _send_part(self) -> None:
        self._raise_failed_part()
        if self._upload_id is None:
            if self._create and self._store.exist(self._model_id):
                # Complete would refuse it anyway (If-None-Match); fail before sending the parts.
                raise ModelExistsError(f"model {self._model_id!r} already exists")
            self._upload_id = self._store.call(
                f"start upload of {self._model_id!r}", self._client.create_multipart, self._key
            )
        self._slots.acquire()  # blocks the writer while max_concurrency parts are in flight
        try:
            # The slot may have been freed by a part that failed: then no new part starts
            # its own retries, and the write fails within one retry deadline.
            self._raise_failed_part()
        except BaseException:
            self._slots.release()
            raise
        body = self._take_buffer()
        number = len(self._parts) + 1
        try:
            part = submit_or_run(self._executor, self._upload_part, self._upload_id, number, body)
        except BaseException:
            self._slots.release()
            raise
        part.add_done_callback(lambda _: self._slots.release())
        self._parts.append(part)

    def _upload_part(self, upload_id: str, number: int, body: bytes) -> str:
        return self._store.call(
            f"upload part {number} of {self._model_id!r}",
            self._client.upload_part,
            self._key,
            upload_id,
            number,
            body,
        )


def read_whole(store: ObjectStoreModelStorage, key: str) -> io.BytesIO | None:
    """The whole object; None if missing.

    One GET, read in one call: on a fast link nothing beats it, and it costs
    the least CPU. A model above the store's ``ranged_get_threshold`` keeps
    only that GET's first part; the rest comes by concurrent ranged GETs, each
    naming the first response's ETag (If-Match), so a model replaced mid-read
    is read again rather than stitched together.
    """
    for _ in range(_REREADS):
        try:
            return _read_once(store, key)
        except PreconditionFailed:
            continue
    raise StorageError(f"object {key!r} was replaced {_REREADS} times while being read; try again")


def _read_once(store: ObjectStoreModelStorage, key: str) -> io.BytesIO | None:
    client, part = store.client, store.part_size
    try:
        info, head = store.call(f"get {key!r}", _get_head, client, key, store.ranged_get_threshold, part)
    except ObjectNotFound:
        return None
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
        futures = [
            submit_or_run(
                store.executor,
                store.call,
                f"get {key!r} bytes {start}-{end}",
                _get_range_into,
                client,
                key,
                info.etag,
                start,
                view[start : end + 1],
            )
            for start, end in _ranges(part, info.size, part)
        ]
        try:
            for future in futures:
                future.result()
        finally:
            for future in futures:
                future.cancel()
            wait(futures)
    buffer.seek(0)
    return buffer


def _ranges(start: int, size: int, part: int):
    for first in range(start, size, part):
        yield first, min(first + part, size) - 1


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
    """A model streamed in one GET; a connection lost mid-body resumes at the
    same offset (If-Match keeps it the same version). Closing releases the
    connection."""

    def __init__(self, store: ObjectStoreModelStorage, key: str) -> None:
        super().__init__()
        self._store = store
        self._key = key
        response = store.call(f"get {key!r}", store.client.get, key)
        self._info = response.info
        self._body = response.body
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self._info.size or not len(view):
            return 0
        for _ in range(self._store.retry.max_attempts):
            try:
                n = self._body.readinto(view)
            except TransientError:
                n = 0
            if n:
                self._position += n
                return n
            self._resume()
        raise StorageUnavailableError(f"reading {self._key!r} kept failing at byte {self._position}; try again")

    def _resume(self) -> None:
        self._release()
        try:
            response = self._store.call(
                f"resume {self._key!r} at byte {self._position}",
                self._store.client.get,
                self._key,
                self._position,
                None,
                if_match=self._info.etag,
            )
        except PreconditionFailed:
            raise StorageError(f"{self._key!r} was replaced while being read; open it again") from None
        self._body = response.body

    def _release(self) -> None:
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            self._body.close()

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()
