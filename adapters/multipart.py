"""A model's write to an object store: one PUT, or a multipart upload whose parts go up while it is written."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, wait
from datetime import timedelta

from adapters.client import CREATE, OVERWRITE, ObjectNotFound, PreconditionFailed, Upload
from adapters.transfer import Transfers
from storage.errors import ModelExistsError, StorageError
from storage.model import Metadata
from storage.process import submit_or_run

TagsFor = Callable[[Metadata, str], "dict[str, str] | None"]
"""The tags a model's own PUT carries (tags mode), from its metadata and SHA-256."""
logger = logging.getLogger("modelstorage")

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
        self._token = uuid.uuid4().hex
        """Goes with the object, so a retry recognises the object its own lost attempt made."""
        self._unheard = UnheardUploads()

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

    def copy_from(self, source_key: str, size: int) -> None:
        """Make the ``size`` bytes of ``source_key`` this write's, copied by the server part by part."""
        if not size:
            return  # commit PUTs the empty body
        if self._upload is None:
            self._upload = self._start_upload()
        for start in range(0, size, self._part_size):
            end = min(start + self._part_size, size) - 1
            self._submit(self._copy_part, len(self._parts) + 1, source_key, start, end)

    def commit(self, metadata: Metadata, sha256: str, size: int) -> None:
        transfers = self._transfers
        if self._upload is None:
            body, tags = self._take_buffer(), self._tags_for(metadata, sha256)
            etag = transfers.call(f"put model {self._model_id!r}", self._put_whole, body, sha256, tags)
        else:
            if self._buffer.tell():
                self._send_part()
            etags = [(number, part.result()) for number, part in enumerate(self._parts, 1)]
            if self._mode is CREATE:
                # Some servers (Ceph RGW) ignore If-None-Match on CompleteMultipartUpload.
                transfers.call(f"check model {self._model_id!r}", self._refuse_if_taken)
            etag = transfers.call(f"complete upload of {self._model_id!r}", self._complete, etags)
            self._upload = None
            self._unheard.abort_if_idle()
        self._record(metadata, sha256, etag, not self._parts)

    def _put_whole(self, body: bytes, sha256: str, tags: dict[str, str] | None) -> str:
        client = self._transfers.client
        try:
            return client.put(self._key, body, sha256=sha256, mode=self._mode, tags=tags, token=self._token)
        except PreconditionFailed:
            return self._ours_or(self._exists())

    def _complete(self, etags: list[tuple[int, str]]) -> str:
        assert self._upload is not None
        try:
            etag = self._upload.complete(etags, self._mode)
        except PreconditionFailed:
            return self._ours_or(self._exists())
        except ObjectNotFound:  # NoSuchUpload: completed by an attempt whose answer was lost, or aborted
            gone = StorageError(
                f"the upload of model {self._model_id!r} was aborted before it completed "
                "(by delete_all, or a lifecycle rule); write it again"
            )
            return self._ours_or(gone)
        # Ceph RGW answers an empty ETag; HeadObject has the right one.
        return etag if etag.strip('"') else self._transfers.client.head(self._key).etag

    def _ours_or(self, error: StorageError) -> str:
        """The ETag of the object at the key if this write made it (an attempt whose answer was lost), else raise."""
        try:
            info = self._transfers.client.head(self._key)
        except (ObjectNotFound, PreconditionFailed):
            raise error from None
        if info.write_token == self._token:
            return info.etag
        raise error

    def _refuse_if_taken(self) -> None:
        try:
            info = self._transfers.client.head(self._key)
        except ObjectNotFound:
            return
        if info.write_token != self._token:
            raise self._exists()

    def _exists(self) -> ModelExistsError:
        return ModelExistsError(f"model {self._model_id!r} already exists")

    def abort(self) -> None:
        self._buffer = io.BytesIO()
        for part in self._parts:
            part.cancel()
        wait(self._parts)  # a part still in flight would otherwise outlive the abort
        if self._upload is not None:
            upload, self._upload = self._upload, None
            self._transfers.abort(upload, f"model {self._model_id!r}")
        self._unheard.abort_if_idle()

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
            transfers.call(f"check model {self._model_id!r}", self._refuse_if_taken)
        attempts: list[float] = []

        def start() -> Upload:
            attempts.append(time.monotonic())
            # Known to the sink at once: an interrupt from here on still has it aborted.
            self._upload = client.start_upload(self._key, token=self._token)
            return self._upload

        upload = transfers.call(f"start upload of {self._model_id!r}", start)
        if len(attempts) > 1:
            # An attempt failed: if the server had started an upload before its answer was lost,
            # nobody knows that upload's id but the listing.
            self._unheard = UnheardUploads.look(transfers, upload, attempts[-1] - attempts[0])
        return upload

    def _send_part(self) -> None:
        self._raise_failed_part()
        if self._upload is None:
            self._upload = self._start_upload()
        self._submit(self._upload_part, len(self._parts) + 1, self._take_buffer())

    def _submit(self, send, number: int, *args) -> None:
        """Part ``number`` to the thread pool, once one of ``max_concurrency`` slots is free."""
        self._slots.acquire()  # blocks the writer while max_concurrency parts are in flight
        try:
            # The slot may have been freed by a part that failed: then no new part starts
            # its own retries, and the write fails within one retry deadline.
            self._raise_failed_part()
            part = submit_or_run(self._transfers.executor, send, number, *args)
        except BaseException:
            self._slots.release()
            raise
        part.add_done_callback(lambda _: self._slots.release())
        self._parts.append(part)

    def _upload_part(self, number: int, body: bytes) -> str:
        assert self._upload is not None
        return self._transfers.call(f"upload part {number} of {self._model_id!r}", self._upload.put_part, number, body)

    def _copy_part(self, number: int, source_key: str, start: int, end: int) -> str:
        assert self._upload is not None
        operation = f"copy part {number} of {self._model_id!r}"
        return self._transfers.call(operation, self._upload.copy_part, number, source_key, start, end)


class UnheardUploads:
    """Uploads that a CreateMultipartUpload whose answer was lost may have started, to abort once idle.

    S3 lists an upload's key, id and start time, nothing that names its writer.
    So after a start that took more than one attempt, the uploads of the same
    key that the server started in the time those attempts took, just before
    the one that answered, are candidates; one is aborted at the end of the
    write only if it still has no part then: an upload whose id was lost never
    gets one, while another writer's gets its first part as soon as it starts.
    """

    def __init__(self, transfers: Transfers | None = None, candidates: list[Upload] | None = None) -> None:
        self._transfers = transfers
        self._candidates = candidates or []

    @classmethod
    def look(cls, transfers: Transfers, ours: Upload, seconds: float) -> UnheardUploads:
        try:
            listed = transfers.call(f"list uploads of {ours.key!r}", transfers.client.uploads, ours.key)
        except StorageError as exc:
            logger.warning("could not look for an upload a lost answer left behind: %s", exc)
            return cls()
        mine = next((u for u in listed if u.upload_id == ours.upload_id), None)
        started = getattr(mine, "initiated", None)
        if started is None:
            logger.warning("the store does not say when uploads started; an upload a lost answer left may stay")
            return cls()
        earliest = started - timedelta(seconds=seconds + 1)  # start times may be whole seconds
        candidates = [
            u
            for u in listed
            if u.key == ours.key and u.upload_id != ours.upload_id and earliest <= (u.initiated or started) <= started
        ]
        return cls(transfers, candidates)

    def abort_if_idle(self) -> None:
        transfers, candidates, self._candidates = self._transfers, self._candidates, []
        for upload in candidates:
            assert transfers is not None
            try:
                if not transfers.call(f"list parts of {upload.key!r}", upload.has_parts):
                    transfers.abort(upload, f"{upload.key!r} (started by an attempt whose answer was lost)")
            except ObjectNotFound:
                continue  # gone already
            except StorageError as exc:
                logger.warning("could not check an upload a lost answer may have left: %s", exc)
