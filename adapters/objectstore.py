"""The object-store core both adapters share: key layout, metadata modes, the store's primitives.

An SDK file supplies an ``ObjectClient`` (``adapters.client``): a dozen calls
that speak S3 and raise only the library's errors. Everything else is here and
in ``transfer``/``multipart``, once: retries, multipart, ranged reads,
metadata, verification, listing and batch deletes.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import BinaryIO

from adapters.client import (
    ENCRYPTED_HINT,
    BadRequest,
    ObjectClient,
    ObjectInfo,
    ObjectNotFound,
    classify,
)
from adapters.direct import DirectTransfers
from adapters.keys import KeyLayout
from adapters.lifecycle import lifecycle_rules, rule_prefix
from adapters.multipart import MultipartSink
from adapters.options import ObjectStoreOptions
from adapters.records import MetadataRecords
from adapters.transfer import Transfers
from storage.errors import ConfigurationError, ModelNotFoundError, StorageError, StoragePermissionError
from storage.model import ModelStat
from storage.modelstorage import ModelStorage
from storage.options import StorageURL
from storage.process import ProcessLocal
from storage.retention import STALE_WRITES_AFTER

logger = logging.getLogger("modelstorage")

MiB = 1024 * 1024
DELETE_BATCH = 1000  # S3's DeleteObjects limit


class ObjectStoreModelStorage(MetadataRecords, DirectTransfers, ModelStorage):
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
        self.transfers = Transfers(self._client.get, self.retry, self.options, self._explain_denied)
        self._bucket_confirmed = False
        self._unquoted_if_match = False
        """Ceph RGW refuses If-Match with the quoted ETag it returns; set once a server did."""
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
        """One step under the retry policy (see ``Transfers.call``)."""
        return self.transfers.call(operation, fn, *args, **kwargs)

    def close(self) -> None:
        super().close()
        self.transfers.close()
        client = self._client.made()
        if client is not None:
            client.close()

    def upload_backstop(self) -> int | None:
        """Days after which the bucket's lifecycle aborts an incomplete upload of this store; None without a rule.

        Every failed write aborts its upload, and ``delete_all`` those under the
        prefix; a process killed mid-write cannot, and only such a rule
        (AbortIncompleteMultipartUpload) removes what it leaves.
        """
        rules = self.call("read the bucket's lifecycle rules", self.client.abort_rules)
        covering = [days for prefix, days in rules if self.keys.models.startswith(prefix)]
        return min(covering) if covering else None

    def lifecycle_rules(
        self,
        *,
        expire_after: timedelta | None = None,
        where: Mapping[str, object] | None = None,
        abort_uploads_after: timedelta = STALE_WRITES_AFTER,
    ) -> list[dict]:
        """Bucket lifecycle rules that prune this store on the server side (see ``adapters.lifecycle``)."""
        return lifecycle_rules(
            self.keys,
            self.metadata_mode,
            expire_after=expire_after,
            where=where,
            abort_uploads_after=abort_uploads_after,
        )

    def apply_lifecycle(self, rules: list[dict]) -> None:
        """Set ``rules`` on the bucket in place of this store's earlier ones; the bucket's other rules stay."""
        self.call(
            "set the bucket's lifecycle rules", self.client.replace_lifecycle_rules, rule_prefix(self.keys), rules
        )

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
        if not self.retry.call("check bucket", self.client.bucket_exists):
            raise classify(404, "NoSuchBucket", "", bucket=self.bucket)
        self._bucket_confirmed = True

    def _explain_denied(self) -> None:
        """Some servers deny a write into a missing bucket (SeaweedFS): say the bucket is missing, if it is."""
        if not self._bucket_confirmed:
            with contextlib.suppress(StoragePermissionError):  # denied that too: the denial stands
                self._confirm_bucket()

    def _head(self, model_id: str) -> ObjectInfo | None:
        try:
            return self.call(f"head model {model_id!r}", self.client.head, self.keys.model_key(model_id))
        except ObjectNotFound:
            self._confirm_bucket()
            return None
        except BadRequest as refused:
            if self.options.server_side.sse_customer_key is not None:
                raise
            # A HEAD answer has no body to say why; an object stored with a customer key is the usual one.
            raise StorageError(
                f"the store refused to read model {model_id!r} ({refused}): if it was written with a customer "
                f"key (SSE-C), {ENCRYPTED_HINT}"
            ) from None

    def _not_found(self, model_id: str) -> ModelNotFoundError:
        self._confirm_bucket()
        return ModelNotFoundError(f"model {model_id!r} not found in bucket {self.bucket!r}")

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

    def _stale_writes(self, before: datetime, *, remove: bool) -> list[str]:
        """Uploads of this store's models and direct uploads started before ``before`` and never finished."""
        stale = []
        for prefix, ours in self._areas()[1:]:
            for upload in self.call(f"list uploads under {prefix!r}", self.client.uploads, prefix):
                if ours(upload.key) and upload.initiated is not None and upload.initiated < before:
                    stale.append(f"upload {upload.key}")
                    if remove:
                        self.transfers.abort(upload, f"the stale upload of {upload.key!r}")
        for page in self._keys_under(self.keys.uploads):
            for key in filter(self.keys.is_upload_key, page):
                with contextlib.suppress(ObjectNotFound):
                    if self.call(f"head {key!r}", self.client.head, key).last_modified < before:
                        stale.append(key)
                        if remove:
                            self._delete_keys([key])
        return stale

    def _areas(self):
        """(prefix, whether a key there is this store's) of models, metadata and direct uploads."""
        return (
            (self.keys.metadata, self.keys.is_metadata_key),
            (self.keys.models, lambda key: self.keys.id_of_model_key(key) is not None),
            (self.keys.uploads, self.keys.is_upload_key),
        )

    def _delete_all(self) -> None:
        """Every model and sidecar of the namespace, its direct uploads, and the uploads under way to them."""
        ours_by_area = self._areas()
        for prefix, ours in ours_by_area:
            for page in self._keys_under(prefix):
                self._delete_keys([key for key in page if ours(key)])
        for prefix, ours in ours_by_area[1:]:
            for upload in self.call(f"list uploads under {prefix!r}", self.client.uploads, prefix):
                if ours(upload.key):
                    with contextlib.suppress(ObjectNotFound):  # finished or aborted meanwhile
                        self.call(f"abort upload of {upload.key!r}", upload.abort)


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
