"""The object-store core both adapters share: key layout, metadata modes, the store's primitives.

An SDK file supplies an ``ObjectClient`` (``adapters.client``): a dozen calls
that speak S3 and raise only the library's errors. Everything else is here and
in ``transfer``/``multipart``, once: retries, multipart, ranged reads,
metadata, verification, listing and batch deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from adapters import metadata as codec
from adapters.client import CREATE, ObjectClient, ObjectInfo, ObjectNotFound, PreconditionFailed, PutMode, classify
from adapters.multipart import MultipartSink
from adapters.options import ObjectStoreOptions
from adapters.transfer import Transfers
from storage.errors import ConfigurationError, ModelNotFoundError
from storage.ids import is_model_id
from storage.model import Metadata, ModelStat
from storage.modelstorage import ModelStorage
from storage.options import StorageURL
from storage.process import ProcessLocal

logger = logging.getLogger("modelstorage")

MiB = 1024 * 1024
DELETE_BATCH = 1000  # S3's DeleteObjects limit


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
    """ModelStorage over any ``ObjectClient``; an adapter only says how to build its client.

    ``make_client(options)`` makes the SDK client of the process it is called
    in; ``passed_in`` says it returns a client the caller built. ``settings``
    are ``ObjectStoreOptions`` as keyword arguments, applied over ``options``.
    """

    def __init__(
        self,
        make_client: Callable[[ObjectStoreOptions], ObjectClient],
        prefix: str = "",
        *,
        options: ObjectStoreOptions | None = None,
        passed_in: bool = False,
        **settings: object,
    ) -> None:
        super().__init__()
        self.options = ObjectStoreOptions.parse(settings, base=options)
        # A client built here is built anew in a forked child; one passed in is reused there,
        # without the connections the parent pooled.
        self._client = ProcessLocal(
            lambda: make_client(self.options), inherit=without_shared_connections if passed_in else None
        )
        self.keys = KeyLayout.normalized(prefix)
        self.retry = self.options.retry
        self.transfers = Transfers(self._client.get, self.retry, self.options)
        self._bucket_confirmed = False
        self._client.get()  # a client that cannot be made (no credentials, a bad endpoint) fails here
        if self.options.create_bucket:
            if not self.call("check bucket", self.client.bucket_exists):
                self.call("create bucket", self.client.create_bucket)
            self._bucket_confirmed = True

    @property
    def client(self) -> ObjectClient:
        """This process's SDK client."""
        return self._client.get()

    @property
    def bucket(self) -> str:
        return self.client.bucket

    @property
    def metadata_mode(self) -> str:
        return self.options.metadata

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(bucket={self.bucket!r}, prefix={self.keys.prefix!r}, "
            f"metadata={self.metadata_mode!r})"
        )

    def call(self, operation: str, fn, *args, **kwargs):
        """One step under the retry policy."""
        return self.retry.call(operation, fn, *args, **kwargs)

    def close(self) -> None:
        super().close()
        self.transfers.close()
        client = self._client.made()
        if client is not None:
            client.close()

    def pending_uploads(self) -> list[tuple[str, str]]:
        """Multipart uploads under this store's prefix that were never finished: (key, upload id)."""
        self.transfers.abort_abandoned()
        uploads = self.call("list uploads", self.client.uploads, self.keys.prefix)
        return [(upload.key, upload.upload_id) for upload in uploads]

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

    def _tags_for_put(self, metadata: Metadata, sha256: str) -> dict[str, str] | None:
        """Tags sent with the model's own PUT (tags mode), so both land in one request."""
        return codec.encode_tags(metadata, sha256) if self.metadata_mode == codec.TAGS else None

    def _record_commit(self, model_id: str, metadata: Metadata, sha256: str, etag: str, tagged: bool) -> None:
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
        found = self.transfers.read_whole(self.keys.model_key(model_id))
        if found is None:
            self._confirm_bucket()
        return found

    def _open_reader(self, model_id: str) -> BinaryIO:
        try:
            reader = self.transfers.reader(self.keys.model_key(model_id))
        except ObjectNotFound:
            raise self._not_found(model_id) from None
        return io.BufferedReader(reader, buffer_size=MiB)  # type: ignore[return-value]

    def _open_sink(self, model_id: str, *, overwrite: bool) -> MultipartSink:
        self.transfers.abort_abandoned()
        return MultipartSink(
            self.transfers,
            self.keys.model_key(model_id),
            model_id,
            overwrite=overwrite,
            tags_for=self._tags_for_put,
            record=lambda metadata, sha256, etag, tagged: self._record_commit(model_id, metadata, sha256, etag, tagged),
        )

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
        mode = PutMode.update(sidecar[1]) if sidecar else CREATE
        with contextlib.suppress(PreconditionFailed, ObjectNotFound):
            self._put_sidecar(model_id, value, sha256, mode)

    def _put_sidecar(
        self, model_id: str, metadata: Metadata, model_sha256: str | None, mode: PutMode | None = None
    ) -> None:
        body = codec.encode_sidecar(metadata, model_sha256)
        key = self.keys.metadata_key(model_id)
        sha256 = hashlib.sha256(body).hexdigest()
        extra = {} if mode is None else {"mode": mode}
        self.call(f"put metadata of {model_id!r}", self.client.put, key, body, sha256=sha256, **extra)

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


def split_url_options(url: StorageURL, connection: set[str]) -> tuple[dict[str, str], ObjectStoreOptions]:
    """A URL's options: the adapter's own connection settings (``connection``), and the store's options."""
    own = {name: value for name, value in url.options.items() if name in connection}
    rest = {name: value for name, value in url.options.items() if name not in connection}
    try:
        return own, ObjectStoreOptions.parse(rest, from_url=True)
    except ConfigurationError as exc:
        if "unknown option" not in str(exc):
            raise
        raise ConfigurationError(f"{exc}; {url.scheme}:// URLs also take {', '.join(sorted(connection))}") from None


def without_shared_connections(client: ObjectClient) -> ObjectClient:
    """A client passed in, as a forked child uses it: the same, minus the connections its parent pooled."""
    client.close()
    return client
