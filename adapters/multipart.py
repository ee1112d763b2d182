"""A model's write to an object store: one PUT, or a multipart upload whose parts go up while it is written."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait

from adapters.client import CREATE, OVERWRITE, ObjectNotFound, PreconditionFailed, Upload
from adapters.transfer import Transfers
from storage.errors import ModelExistsError
from storage.model import Metadata
from storage.process import submit_or_run

TagsFor = Callable[[Metadata, str], "dict[str, str] | None"]
"""The tags a model's own PUT carries (tags mode), from its metadata and SHA-256."""
Record = Callable[[Metadata, str, str, bool], None]
"""Stores the metadata record once the bytes are committed: (metadata, sha256, etag, tagged)."""


class MultipartSink:
    """Gathers writes into parts and uploads them while the caller keeps writing.

    Memory stays within part_size x (max_concurrency + 1): at most
    ``max_concurrency`` parts in flight plus the one being filled. A model of
    at most one part goes up in a single PUT: the upload starts only when a
    byte arrives past a full part.
    """

    def __init__(
        self, transfers: Transfers, key: str, model_id: str, *, overwrite: bool, tags_for: TagsFor, record: Record
    ) -> None:
        self._transfers = transfers
        self._key = key
        self._model_id = model_id
        self._mode = OVERWRITE if overwrite else CREATE
        self._tags_for = tags_for
        self._record = record
        self._part_size = transfers.options.part_size
        self._slots = threading.BoundedSemaphore(transfers.options.max_concurrency)
        # A BytesIO hands its buffer over as bytes without a copy (getvalue), and
        # both SDKs send bytes as they are: each byte is copied once, into the part.
        self._buffer = io.BytesIO()
        self._upload: Upload | None = None
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
        transfers = self._transfers
        try:
            if self._upload is None:
                tags = self._tags_for(metadata, sha256)
                client = transfers.client
                etag = transfers.call(
                    f"put model {self._model_id!r}",
                    client.put,
                    self._key,
                    self._take_buffer(),
                    sha256=sha256,
                    mode=self._mode,
                    tags=tags,
                )
            else:
                if self._buffer.tell():
                    self._send_part()
                etags = [(number, part.result()) for number, part in enumerate(self._parts, 1)]
                etag = transfers.call(
                    f"complete upload of {self._model_id!r}", self._upload.complete, etags, self._mode
                )
                self._upload = None
        except PreconditionFailed:
            raise ModelExistsError(f"model {self._model_id!r} already exists") from None
        self._record(metadata, sha256, etag, not self._parts)

    def abort(self) -> None:
        self._buffer = io.BytesIO()
        for part in self._parts:
            part.cancel()
        wait(self._parts)  # a part still in flight would otherwise outlive the abort
        if self._upload is not None:
            upload, self._upload = self._upload, None
            self._transfers.abort(upload, f"model {self._model_id!r}")

    def _take_buffer(self) -> bytes:
        body, self._buffer = self._buffer.getvalue(), io.BytesIO()
        return body

    def _raise_failed_part(self) -> None:
        for part in self._parts:
            if part.done() and part.exception() is not None:
                raise part.exception()  # type: ignore[misc]

    def _start_upload(self) -> Upload:
        transfers = self._transfers
        client = transfers.client
        if self._mode is CREATE:
            # Complete would refuse it anyway (If-None-Match); fail before sending the parts.
            try:
                transfers.call(f"head model {self._model_id!r}", client.head, self._key)
            except ObjectNotFound:
                pass
            else:
                raise ModelExistsError(f"model {self._model_id!r} already exists")
        return transfers.call(f"start upload of {self._model_id!r}", client.start_upload, self._key)

    def _send_part(self) -> None:
        self._raise_failed_part()
        if self._upload is None:
            self._upload = self._start_upload()
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
            part = submit_or_run(self._transfers.executor, self._upload_part, self._upload, number, body)
        except BaseException:
            self._slots.release()
            raise
        part.add_done_callback(lambda _: self._slots.release())
        self._parts.append(part)

    def _upload_part(self, upload: Upload, number: int, body: bytes) -> str:
        return self._transfers.call(f"upload part {number} of {self._model_id!r}", upload.put_part, number, body)
