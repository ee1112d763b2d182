"""Direct transfers: clients download and upload models straight from and to the object store.

A combiner hands a client a presigned URL instead of proxying every byte:

- ``presign_get(id)``: a GET anyone may send for a while, for a committed model.
- ``presign_put(id, size=..., sha256=...)``: an ``UploadPlan``. A model of at
  most one part is one PUT whose ``content-length`` and ``x-amz-checksum-sha256``
  are signed, so the server refuses a body of another length (and, where it
  checks checksums, of other bytes); a larger one is a multipart upload, one
  presigned PUT per part with its length signed.
- ``commit_upload(id)``: the upload goes to ``{prefix}uploads/{id}``, where it is
  no model. Committing checks its size and SHA-256 (the server's checksum, or
  a read of the bytes), then has the server copy it into place with the same
  create/overwrite semantics as ``put``, writes the record or tags, and
  removes the staged upload. A wrong upload is removed and never a model.

Uploads never committed are removed by ``delete_all`` and by ``prune``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from adapters.client import OVERWRITE, NotSupported, ObjectNotFound, Upload, checksum_sha256
from adapters.presign import PresignedRequest
from storage.errors import ConfigurationError, IntegrityError, ModelNotFoundError
from storage.ids import check_model_id
from storage.model import Metadata, ModelStat
from storage.options import parse_seconds

logger = logging.getLogger("modelstorage")

MAX_EXPIRES = 7 * 24 * 3600  # what Signature Version 4 allows
_BINARY = {"content-type": "application/octet-stream"}
"""Said, so an HTTP client does not say a form instead (urllib does, and some servers then read the body twice)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class UploadPlan:
    """What a client needs to upload model ``model_id`` itself: ``requests``, sent in any order.

    One PUT of the whole model, or one PUT per part: part ``n`` (from 1) holds
    bytes ``(n - 1) * part_size`` up to ``n * part_size`` of the model.
    """

    model_id: str
    size: int
    sha256: str
    part_size: int
    requests: list[PresignedRequest]

    def as_dict(self) -> dict:
        return {
            "model_id": self.model_id,
            "size": self.size,
            "sha256": self.sha256,
            "part_size": self.part_size,
            "requests": [request.as_dict() for request in self.requests],
        }


def _seconds(expires: object) -> int:
    seconds = expires.total_seconds() if isinstance(expires, timedelta) else parse_seconds("expires", expires)
    if not 1 <= seconds <= MAX_EXPIRES:
        raise ConfigurationError(f"presigned URLs expire after 1 second to 7 days, not {expires!r}")
    return int(seconds)


class DirectTransfers:
    """The direct-transfer methods of ``ObjectStoreModelStorage`` (which supplies what they use)."""

    def presign_get(self, model_id: str, *, expires: object = 900) -> PresignedRequest:
        """A GET of the committed model ``model_id`` any HTTP client may send for ``expires`` (seconds, ``15m``)."""
        stat = self.stat(model_id)  # ModelNotFoundError if there is none
        seconds = _seconds(expires)
        url = self.client.presign_get(self.keys.model_key(stat.model_id), seconds)
        server_side = self.options.server_side
        return PresignedRequest(
            "GET", url, {**server_side.read_headers(), **server_side.owner_headers()}, _after(seconds)
        )

    def presign_put(self, model_id: str, *, size: int, sha256: str, expires: object = 900) -> UploadPlan:
        """An ``UploadPlan`` for ``size`` bytes whose SHA-256 (hex) is ``sha256``; commit with ``commit_upload``."""
        check_model_id(model_id)
        if not isinstance(size, int) or size < 0:
            raise ConfigurationError(f"size must be a whole number of bytes, not {size!r}")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
            raise ConfigurationError("sha256 must be the model's SHA-256, 64 hex digits")
        sha256, seconds = sha256.lower(), _seconds(expires)
        server_side, part_size = self.options.server_side, self.options.part_size
        writes = {**server_side.write_headers(), **server_side.owner_headers()}
        staged = self.keys.staged_key(model_id)
        self._forget_upload(model_id)  # an earlier plan for this id is void
        if size <= part_size:
            headers = {
                **_BINARY,
                "content-length": str(size),
                "x-amz-checksum-sha256": checksum_sha256(sha256),
                **writes,
            }
            url = self.client.presign_put(staged, seconds, headers)
            requests, upload_id = [PresignedRequest("PUT", url, headers, _after(seconds))], None
        else:
            upload = self.call(f"start direct upload of {model_id!r}", self.client.start_upload, staged)
            reads = {**server_side.read_headers(), **server_side.owner_headers()}
            requests = [
                PresignedRequest(
                    "PUT",
                    upload.presign_part(n, length, seconds),
                    {**_BINARY, "content-length": str(length), **reads},
                    _after(seconds),
                )
                for n, length in enumerate(_part_lengths(size, part_size), 1)
            ]
            upload_id = upload.upload_id
        plan = {"size": size, "sha256": sha256, "part_size": part_size, "upload_id": upload_id}
        body = json.dumps(plan).encode()
        key = self.keys.plan_key(model_id)
        self.call(f"put the plan of {model_id!r}", self.client.put, key, body, sha256=hashlib.sha256(body).hexdigest())
        return UploadPlan(model_id, size, sha256, part_size, requests)

    def commit_upload(self, model_id: str, metadata: Metadata = None, *, overwrite: bool = True) -> ModelStat:
        """Make the direct upload of ``model_id`` the model, once its size and SHA-256 are those presigned.

        ``overwrite=False`` is an atomic create, as for ``put``. IntegrityError
        (and the upload is removed) if the bytes are not those presigned;
        ModelNotFoundError if nothing was presigned or uploaded.
        """
        check_model_id(model_id)
        value, _ = self._validated_metadata({} if metadata is None else metadata)
        plan = self._plan(model_id)
        staged = self.keys.staged_key(model_id)
        if plan["upload_id"]:
            self._complete_staged(model_id, plan)
        try:
            info = self.call(f"head direct upload of {model_id!r}", self.client.head, staged)
        except ObjectNotFound:
            raise ModelNotFoundError(f"nothing was uploaded for model {model_id!r} yet") from None
        if info.size != plan["size"]:
            self._refuse(model_id, f"{info.size} bytes arrived, {plan['size']} were presigned")
        if self._sha256_of(staged) != plan["sha256"]:
            self._refuse(model_id, "its SHA-256 is not the one presigned")
        try:
            self._copy_into_place(model_id, staged, info.size, value, plan["sha256"], overwrite, by_server=True)
        except NotSupported:  # SeaweedFS copies no SSE-C object: the bytes come through this process once
            logger.info("the store cannot copy %r itself; copying it through this process", staged)
            self._copy_into_place(model_id, staged, info.size, value, plan["sha256"], overwrite, by_server=False)
        self._forget_upload(model_id)
        return self.stat(model_id)

    def _copy_into_place(
        self, model_id: str, staged: str, size: int, metadata: Metadata, sha256: str, overwrite: bool, *, by_server
    ) -> None:
        sink = self._open_sink(model_id, overwrite=overwrite)
        try:
            if by_server:
                sink.copy_from(staged, size)
            else:
                with self.transfers.reader(staged) as reader:
                    while chunk := reader.read(self.options.part_size):
                        sink.write(memoryview(chunk))
            sink.commit(metadata, sha256, size)
        except BaseException:
            sink.abort()
            raise

    # -- helpers ------------------------------------------------------------

    def _plan(self, model_id: str) -> dict:
        try:
            body, _ = self.call(f"get the plan of {model_id!r}", self._read_small, self.keys.plan_key(model_id))
        except ObjectNotFound:
            raise ModelNotFoundError(f"no direct upload of model {model_id!r} was presigned") from None
        return json.loads(body)

    def _complete_staged(self, model_id: str, plan: dict) -> None:
        staged = self.keys.staged_key(model_id)
        upload = self._staged_upload(staged, plan["upload_id"])
        if upload is None:
            return  # completed by an earlier commit (its answer lost) or never started: the HEAD tells
        parts = self.call(f"list parts of {model_id!r}", upload.parts)
        expected = list(enumerate(_part_lengths(plan["size"], plan["part_size"]), 1))
        if [(number, size) for number, _, size in parts] != expected:
            raise IntegrityError(
                f"the direct upload of model {model_id!r} is incomplete or wrong: {len(parts)} of "
                f"{len(expected)} parts, as presigned; upload the rest, or presign it again"
            )
        etags = [(number, etag) for number, etag, _ in parts]
        self.call(f"complete direct upload of {model_id!r}", upload.complete, etags, OVERWRITE)

    def _staged_upload(self, staged: str, upload_id: str) -> Upload | None:
        uploads = self.call(f"list uploads of {staged!r}", self.client.uploads, staged)
        return next((u for u in uploads if u.key == staged and u.upload_id == upload_id), None)

    def _sha256_of(self, key: str) -> str:
        """The SHA-256 of an object, read in bounded memory."""
        digest = hashlib.sha256()
        with self.transfers.reader(key) as reader:
            while chunk := reader.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()

    def _refuse(self, model_id: str, why: str) -> None:
        self._forget_upload(model_id)
        raise IntegrityError(f"the direct upload of model {model_id!r} was removed: {why}")

    def _forget_upload(self, model_id: str) -> None:
        """Remove the staged upload of ``model_id``, its plan, and any multipart upload of it under way."""
        staged = self.keys.staged_key(model_id)
        for upload in self.call(f"list uploads of {staged!r}", self.client.uploads, staged):
            if upload.key == staged:
                self.transfers.abort(upload, f"the direct upload of {model_id!r}")
        self._delete_keys([staged, self.keys.plan_key(model_id)])


def _part_lengths(size: int, part_size: int) -> list[int]:
    count = max(1, math.ceil(size / part_size))
    return [min(part_size, size - n * part_size) for n in range(count)]


def _after(seconds: int) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)
