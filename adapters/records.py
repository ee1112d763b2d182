"""How an object store keeps each model's metadata and SHA-256: a sidecar JSON object, or the model's tags.

``MetadataRecords`` is the part of ``ObjectStoreModelStorage`` that reads and
writes those records: the mode a store was opened in, refusing to read or
write a record the other mode keeps, and the conditional sidecar update that
tells its own lost attempts from another writer's.
"""

from __future__ import annotations

import hashlib
import uuid

from adapters import metadata as codec
from adapters.client import CREATE, ObjectNotFound, PreconditionFailed, PutMode
from storage.errors import MetadataError, StorageError
from storage.model import Metadata
from storage.options import hint


class MetadataRecords:
    """The metadata methods of ``ObjectStoreModelStorage`` (which supplies what they use)."""

    def _record(self, model_id: str) -> tuple[Metadata, str | None] | None:
        """(metadata, sha256) as stored, or None if there is no record.

        MetadataError if the record is where the other metadata mode keeps it:
        opened in the wrong mode, a store would show no metadata, verify nothing,
        and on the next update keep two records of one model.
        """
        if self.metadata_mode == codec.SIDECAR:
            found = self._sidecar(model_id)
            if found is None:
                self._refuse_record_in(codec.TAGS, model_id)
                return None
            return found[0].metadata, found[0].sha256
        tags = self._tags(model_id)
        if tags is None:
            return None
        if codec.SHA256_TAG not in tags:
            self._refuse_record_in(codec.SIDECAR, model_id)
        return codec.decode_tags(tags)

    def _tags(self, model_id: str) -> dict[str, str] | None:
        try:
            return self.call(f"get tags of {model_id!r}", self.client.get_tags, self.keys.model_key(model_id))
        except ObjectNotFound:
            return None

    def _refuse_record_in(self, mode: str, model_id: str) -> None:
        """MetadataError if ``model_id`` has its record where the ``mode`` store keeps them."""
        if mode == codec.TAGS:
            there = codec.SHA256_TAG in (self._tags(model_id) or {})
        else:
            there = self._sidecar(model_id) is not None
        if there:
            raise MetadataError(
                f"model {model_id!r} keeps its metadata in {'the object tags' if mode == codec.TAGS else 'a sidecar'}, "
                f"and this store in {'a sidecar' if mode == codec.TAGS else 'the object tags'}: open it with "
                f"{hint('metadata', mode)}"
            )

    def _sidecar(self, model_id: str) -> tuple[codec.Sidecar, str] | None:
        """The sidecar and its ETag, or None if there is none."""
        try:
            body, etag = self.call(f"get metadata of {model_id!r}", self._read_small, self.keys.metadata_key(model_id))
        except ObjectNotFound:
            return None
        return codec.decode_sidecar(body), etag

    def _read_small(self, key: str) -> tuple[bytes, str]:
        response = self.client.get(key)
        with response.body:
            return response.body.read(), response.info.etag

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

    def _check_metadata(self, value: Metadata) -> None:
        if self.metadata_mode == codec.TAGS:
            codec.check_tag_metadata(value)

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
        found = self._sidecar(model_id)
        if self._head(model_id) is None:  # the model object decides, as in _read_metadata
            raise self._not_found(model_id)
        if found is None:
            self._refuse_record_in(codec.TAGS, model_id)  # never a second record beside the tags
        sidecar = codec.Sidecar(value, found[0].sha256 if found else None, uuid.uuid4().hex)
        mode = PutMode.update(self._if_match_form(found[1])) if found else CREATE
        self.call(f"put metadata of {model_id!r}", self._put_sidecar_unless_replaced, model_id, sidecar, mode)

    def _put_sidecar_unless_replaced(self, model_id: str, sidecar: codec.Sidecar, mode: PutMode) -> None:
        """One attempt of ``_replace_sidecar``'s conditional PUT, and what a refusal means.

        A refusal is another write that stood (done), or an earlier attempt of
        this one that landed while its answer was lost (done), or a server that
        refused the ETag it gave in the form it was sent: once more in the
        other form, remembered for this store. Anything else raises.
        """
        key, body = self.keys.metadata_key(model_id), codec.encode_sidecar(sidecar)
        try:
            self.client.put(key, body, sha256=hashlib.sha256(body).hexdigest(), mode=mode)
            return
        except (PreconditionFailed, ObjectNotFound):
            pass
        try:
            now, etag = self._read_small(key)
        except ObjectNotFound:
            return  # removed meanwhile (a delete, or a model replaced and rewritten): that stands
        if codec.decode_sidecar(now).write == sidecar.write:
            return  # this write, by an attempt whose answer was lost
        if mode.kind == "create" or _unquoted(etag) != _unquoted(mode.etag or ""):
            return  # another write replaced it meanwhile: it stands
        other = _unquoted(etag) if mode.etag == etag else etag  # the server wants the ETag in the other form
        try:
            self.client.put(key, body, sha256=hashlib.sha256(body).hexdigest(), mode=PutMode.update(other))
        except PreconditionFailed:
            if codec.decode_sidecar(self._read_small(key)[0]).write != sidecar.write:
                raise StorageError(
                    f"the store refused to replace the metadata of model {model_id!r} although it had not changed; "
                    "it may not support conditional writes (If-Match)"
                ) from None
        self._unquoted_if_match = other == _unquoted(etag)

    def _if_match_form(self, etag: str) -> str:
        return _unquoted(etag) if self._unquoted_if_match else etag

    def _put_sidecar(self, model_id: str, metadata: Metadata, model_sha256: str | None) -> None:
        body = codec.encode_sidecar(codec.Sidecar(metadata, model_sha256, uuid.uuid4().hex))
        key = self.keys.metadata_key(model_id)
        self.call(f"put metadata of {model_id!r}", self.client.put, key, body, sha256=hashlib.sha256(body).hexdigest())


def _unquoted(etag: str) -> str:
    return etag.strip('"')
