"""The object-store core both adapters share: key layout, metadata modes, errors.

An SDK file supplies an ``ObjectClient``: a dozen calls that speak S3 and
raise only the errors below. Everything else (retries, multipart, ranged
reads, metadata, verification, listing and batch deletes) is written here and
in ``adapters.transfer``, once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from adapters import metadata as codec
from adapters.client import ObjectClient, ObjectInfo, ObjectNotFound, PreconditionFailed, classify
from adapters.retry import RetryPolicy
from adapters.transfer import MultipartSink, ObjectReader, read_whole
from storage.config import parse_bool, reject_unknown_options
from storage.errors import ConfigurationError, ModelNotFoundError, StorageUnavailableError
from storage.ids import is_model_id
from storage.modelstorage import Metadata, ModelStat, ModelStorage

logger = logging.getLogger("modelstorage")

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
DEFAULT_PART_SIZE = 16 * MiB
DEFAULT_MAX_CONCURRENCY = 4
DELETE_BATCH = 1000  # S3's DeleteObjects limit


_URL_INTS = {"part_size", "max_concurrency", "ranged_get_threshold"}
_URL_SHARED = {"metadata", "create_bucket"} | _URL_INTS
_URL_BOOLS = {"create_bucket", "verify", "secure"}


def url_settings(scheme: str, options: dict[str, str], *, extra: set[str]) -> dict[str, object]:
    """Constructor keywords from a URL's query: the shared ones plus ``extra``."""
    reject_unknown_options(scheme, options, _URL_SHARED | extra)
    settings: dict[str, object] = {}
    for name, value in options.items():
        if name in _URL_INTS:
            try:
                settings[name] = int(value)
            except ValueError:
                raise ConfigurationError(f"{name} must be a whole number, not {value!r}") from None
        elif name in _URL_BOOLS:
            settings[name] = parse_bool(name, value)
        else:
            settings[name] = value
    return settings


@dataclass(frozen=True)
class KeyLayout:
    """``{prefix}models/{id}`` and ``{prefix}metadata/{id}.json``; nothing else is ours."""

    prefix: str = ""

    @classmethod
    def normalized(cls, prefix: str) -> KeyLayout:
        prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigurationError(f"prefix {prefix!r} has an empty, '.' or '..' segment")
        return cls(prefix + "/" if prefix else "")

    @property
    def models(self) -> str:
        return self.prefix + "models/"

    @property
    def metadata(self) -> str:
        return self.prefix + "metadata/"

    def model_key(self, model_id: str) -> str:
        return f"{self.models}{model_id}"

    def metadata_key(self, model_id: str) -> str:
        return f"{self.metadata}{model_id}.json"

    def id_of_model_key(self, key: str) -> str | None:
        name = key[len(self.models) :] if key.startswith(self.models) else ""
        return name if is_model_id(name) else None

    def is_metadata_key(self, key: str) -> bool:
        name = key[len(self.metadata) :] if key.startswith(self.metadata) else ""
        return name.endswith(".json") and is_model_id(name[: -len(".json")])


class ObjectStoreModelStorage(ModelStorage):
    """ModelStorage over any ``ObjectClient``; the adapters only build the client."""

    def __init__(
        self,
        client: ObjectClient,
        prefix: str = "",
        *,
        metadata: str = codec.SIDECAR,
        retry: RetryPolicy | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        ranged_get_threshold: int | None = None,
        create_bucket: bool = False,
    ) -> None:
        super().__init__()
        if metadata not in codec.MODES:
            raise ConfigurationError(f"metadata must be one of {', '.join(codec.MODES)}, not {metadata!r}")
        if not MIN_PART_SIZE <= part_size <= 5 * 1024 * MiB:
            raise ConfigurationError(f"part_size must be between 5 MiB and 5 GiB, not {part_size}")
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency must be at least 1")
        if ranged_get_threshold is not None and ranged_get_threshold < 1:
            raise ConfigurationError("ranged_get_threshold must be a positive size in bytes, or None")
        self.client = client
        self.keys = KeyLayout.normalized(prefix)
        self.metadata_mode = metadata
        self.retry = retry or RetryPolicy()
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.ranged_get_threshold = ranged_get_threshold
        self.executor = self._new_executor()
        self._bucket_confirmed = False
        self._shares_parents_connections = False
        self._abandoned: list[tuple[str, str]] = []  # (key, upload id) an outage kept us from aborting
        self._abandoned_lock = threading.Lock()
        if create_bucket:
            if not self.call("check bucket", client.bucket_exists):
                self.call("create bucket", client.create_bucket)
            self._bucket_confirmed = True

    @property
    def bucket(self) -> str:
        return self.client.bucket

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(bucket={self.bucket!r}, prefix={self.keys.prefix!r}, "
            f"metadata={self.metadata_mode!r})"
        )

    def call(self, operation: str, fn, *args, **kwargs):
        """One SDK call under the retry policy."""
        self._own_connections()
        return self.retry.call(operation, fn, *args, **kwargs)

    def close(self) -> None:
        super().close()
        self._abort_abandoned(self.retry)
        with self._abandoned_lock:
            if self._abandoned:
                logger.warning(
                    "%d multipart upload(s) under %r could not be aborted: abort them, or let a lifecycle rule "
                    "(AbortIncompleteMultipartUpload) remove them",
                    len(self._abandoned),
                    self.keys.prefix,
                )
        self.executor.shutdown(wait=True)
        self.client.close()

    def _after_fork_in_child(self) -> None:
        # Only lock-free work here, inside the fork (dropping connections takes the
        # SDK's pool lock, which a parent thread may have held): the connections go
        # before the child's first request.
        self.executor = self._new_executor()
        self._abandoned_lock = threading.Lock()
        self._shares_parents_connections = True
        super()._after_fork_in_child()

    def _new_executor(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="modelstorage")

    def _own_connections(self) -> None:
        """A forked child shares its parent's pooled connections, and requests of both on one
        connection would mix: before its first request, the child drops its copies."""
        if self._shares_parents_connections:
            self._shares_parents_connections = False
            self.client.close()

    def pending_uploads(self) -> list[tuple[str, str]]:
        """Multipart uploads under this store's prefix that were never finished."""
        self._abort_abandoned(self.retry)
        return self.call("list uploads", self.client.list_uploads, self.keys.prefix)

    def abort_upload(self, model_id: str, key: str, upload_id: str) -> None:
        """Abort a failed or discarded multipart upload; if the store is unreachable, abort it later.

        A write usually fails because the store stopped answering, and then
        the abort cannot get through either. So it is tried once, keeping the
        failure within the retry deadline, and an upload it could not abort is
        aborted by this store's next write, ``pending_uploads`` or ``close``.
        """
        try:
            self._abort(key, upload_id, RetryPolicy.none())
        except StorageUnavailableError:
            logger.warning("could not abort the upload of model %r now; will abort it later", model_id)
            with self._abandoned_lock:
                self._abandoned.append((key, upload_id))

    def _abort(self, key: str, upload_id: str, policy: RetryPolicy) -> None:
        self._own_connections()
        with contextlib.suppress(ObjectNotFound):  # already gone
            policy.call(f"abort upload of {key!r}", self.client.abort_multipart, key, upload_id)

    def _abort_abandoned(self, policy: RetryPolicy) -> None:
        with self._abandoned_lock:
            pending, self._abandoned = self._abandoned, []
        failed = []
        for key, upload_id in pending:
            try:
                self._abort(key, upload_id, policy)
            except StorageUnavailableError:
                failed.append((key, upload_id))
        if failed:
            with self._abandoned_lock:
                self._abandoned[:0] = failed

    # -- helpers ------------------------------------------------------------

    def _confirm_bucket(self) -> None:
        """A 404 on HEAD cannot tell a missing key from a missing bucket: ask once."""
        if self._bucket_confirmed:
            return
        if not self.call("check bucket", self.client.bucket_exists):
            raise classify(404, "NoSuchBucket", "", bucket=self.bucket)
        self._bucket_confirmed = True

    def _head(self, model_id: str) -> ObjectInfo | None:
        try:
            return self.call(f"head model {model_id!r}", self.client.head, self.keys.model_key(model_id))
        except ObjectNotFound:
            self._confirm_bucket()
            return None

    def _record(self, model_id: str) -> tuple[Metadata, str | None] | None:
        """(metadata, sha256) as stored, or None if there is no record."""
        if self.metadata_mode == codec.SIDECAR:
            sidecar = self._sidecar(model_id)
            return None if sidecar is None else sidecar[0]
        try:
            tags = self.call(f"get tags of {model_id!r}", self.client.get_tags, self.keys.model_key(model_id))
        except ObjectNotFound:
            return None
        return codec.decode_tags(tags)

    def _sidecar(self, model_id: str) -> tuple[tuple[Metadata, str | None], str] | None:
        """The sidecar's (metadata, sha256) and its ETag, or None if there is none."""
        try:
            body, etag = self.call(f"get metadata of {model_id!r}", self._read_small, self.keys.metadata_key(model_id))
        except ObjectNotFound:
            return None
        return codec.decode_sidecar(body), etag

    def _read_small(self, key: str) -> tuple[bytes, str]:
        response = self.client.get(key)
        with response.body:
            return response.body.read(), response.info.etag

    def _not_found(self, model_id: str) -> ModelNotFoundError:
        self._confirm_bucket()
        return ModelNotFoundError(f"model {model_id!r} not found in bucket {self.bucket!r}")

    def tags_for_put(self, metadata: Metadata, sha256: str) -> dict[str, str] | None:
        """Tags sent with the model's own PUT (tags mode), so both land in one request."""
        return codec.encode_tags(metadata, sha256) if self.metadata_mode == codec.TAGS else None

    def finish_commit(self, model_id: str, metadata: Metadata, sha256: str, *, tagged: bool) -> None:
        """Store the metadata record right after the bytes are committed."""
        if self.metadata_mode == codec.SIDECAR:
            self._put_sidecar(model_id, metadata, sha256)
        elif not tagged:
            tags = codec.encode_tags(metadata, sha256)
            self.call(f"put tags of {model_id!r}", self.client.put_tags, self.keys.model_key(model_id), tags)

    def _delete_keys(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            self.call(f"delete {len(batch)} object(s)", self.client.delete_many, batch)

    def _keys_under(self, prefix: str) -> Iterator[list[str]]:
        """Pages of keys under ``prefix``, each page fetched (and retried) on its own."""
        start_after = None
        while True:
            page, more = self.call(f"list {prefix!r}", self.client.list_page, prefix, start_after)
            if page:
                yield page
                start_after = page[-1]
            if not more or not page:
                return

    # -- primitives ---------------------------------------------------------

    def _check_metadata(self, value: Metadata) -> None:
        if self.metadata_mode == codec.TAGS:
            codec.check_tag_metadata(value)

    def _exists(self, model_id: str) -> bool:
        return self._head(model_id) is not None

    def _stat(self, model_id: str) -> ModelStat | None:
        info = self._head(model_id)
        if info is None:
            return None
        record = self._record(model_id)
        return ModelStat(model_id, info.size, record[1] if record else None, info.last_modified)

    def _read(self, model_id: str) -> io.BytesIO | None:
        found = read_whole(self, self.keys.model_key(model_id))
        if found is None:
            self._confirm_bucket()
        return found

    def _open_reader(self, model_id: str) -> BinaryIO:
        try:
            reader = ObjectReader(self, self.keys.model_key(model_id))
        except ObjectNotFound:
            raise self._not_found(model_id) from None
        return io.BufferedReader(reader, buffer_size=MiB)  # type: ignore[return-value]

    def _open_sink(self, model_id: str, *, overwrite: bool) -> MultipartSink:
        if self._abandoned:
            self._abort_abandoned(RetryPolicy.none())
        return MultipartSink(self, self.client, self.executor, model_id, overwrite=overwrite)

    def _read_metadata(self, model_id: str) -> Metadata:
        record = self._record(model_id)
        if self.metadata_mode == codec.SIDECAR:
            # The model object decides whether there is a model: a sidecar alone (one a write
            # racing a delete put back) is not one; a model without one has {} (another tool wrote it).
            if self._head(model_id) is None:
                raise self._not_found(model_id)
            return {} if record is None else record[0]
        if record is None:
            raise self._not_found(model_id)
        return record[0]

    def _write_metadata(self, model_id: str, value: Metadata) -> None:
        if self.metadata_mode == codec.SIDECAR:
            self._replace_sidecar(model_id, value)
            return
        record = self._record(model_id)
        if record is None:
            raise self._not_found(model_id)
        tags = codec.encode_tags(value, record[1])
        try:
            self.call(f"put tags of {model_id!r}", self.client.put_tags, self.keys.model_key(model_id), tags)
        except ObjectNotFound:
            raise self._not_found(model_id) from None

    def _replace_sidecar(self, model_id: str, value: Metadata) -> None:
        """New metadata beside the SHA-256 of the model as it is now.

        The sidecar is replaced only if it is still the one read (If-Match, or
        If-None-Match where there was none). If another write replaced or
        removed it meanwhile, that write stands, as if this call had come just
        before it: never the new bytes beside the old SHA-256.
        """
        sidecar = self._sidecar(model_id)
        if self._head(model_id) is None:  # the model object decides, as in _read_metadata
            raise self._not_found(model_id)
        sha256 = sidecar[0][1] if sidecar else None
        only_over = {"if_match": sidecar[1]} if sidecar else {"if_none_match": True}
        with contextlib.suppress(PreconditionFailed, ObjectNotFound):
            self._put_sidecar(model_id, value, sha256, **only_over)

    def _put_sidecar(self, model_id: str, metadata: Metadata, model_sha256: str | None, **conditions) -> None:
        """PUT the sidecar; ``conditions`` (``if_match``, ``if_none_match``) as ``ObjectClient.put`` takes them."""
        body = codec.encode_sidecar(metadata, model_sha256)
        key = self.keys.metadata_key(model_id)
        sha256 = hashlib.sha256(body).hexdigest()
        self.call(f"put metadata of {model_id!r}", self.client.put, key, body, sha256=sha256, **conditions)

    def _delete(self, model_id: str) -> bool:
        existed = self._head(model_id) is not None
        self._delete_keys([self.keys.metadata_key(model_id), self.keys.model_key(model_id)])
        return existed

    def _list_ids(self) -> Iterator[str]:
        for page in self._keys_under(self.keys.models):
            for key in page:
                model_id = self.keys.id_of_model_key(key)
                if model_id is not None:
                    yield model_id

    def _delete_all(self) -> None:
        for prefix, ours in (
            (self.keys.metadata, self.keys.is_metadata_key),
            (self.keys.models, lambda key: self.keys.id_of_model_key(key) is not None),
        ):
            for page in self._keys_under(prefix):
                self._delete_keys([key for key in page if ours(key)])
