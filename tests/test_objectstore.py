"""What only object stores do: multipart, tags, key layout, buckets, credentials.

These run on every object-store backend of the registry (every adapter on
every S3 server, both metadata modes) through the same ``store`` fixture.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from chaos import adapter_store
from objectstore_backends import raw_uploads, reopen
from server_fixtures import EVERY_SERVER

from adapters import metadata as codec
from adapters.objectstore import ObjectStoreModelStorage
from storage import MetadataError, ModelExistsError, StoragePermissionError

MiB = 1024 * 1024

objectstores = pytest.mark.backends(lambda spec: "objectstore" in {m.name for m in spec.marks})
tag_stores = pytest.mark.backends(lambda spec: not spec.nested_metadata)
# Bulk byte paths do not depend on the metadata mode: one mode per adapter and server is enough.
one_mode_per_adapter = pytest.mark.backends(
    lambda spec: "objectstore" in {m.name for m in spec.marks} and spec.nested_metadata
)


def _uploads(store: ObjectStoreModelStorage) -> list:
    """Asked of the server with a raw client, not through the adapter under test."""
    return raw_uploads(store)


@pytest.mark.parametrize("server", EVERY_SERVER)
@pytest.mark.parametrize("adapter", ["s3", "minio"])
def test_the_lifecycle_rule_that_aborts_this_stores_uploads_is_found(request, server, adapter):
    endpoint = request.getfixturevalue(server)
    raw, bucket = endpoint.boto3_client(), f"lifecycle-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=bucket)
    with adapter_store(adapter, endpoint, bucket, "team/combiner-1") as store:
        assert store.upload_backstop() is None
        rules = [("other/", 1), ("team/", 3), ("", 9)]
        lifecycle = [
            {
                "ID": f"r{days}",
                "Status": "Enabled",
                "Filter": {"Prefix": prefix},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
            }
            for prefix, days in rules
        ]
        raw.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle})
        assert store.upload_backstop() == 3  # the shortest rule covering team/combiner-1/models/


@objectstores
def test_delete_all_aborts_the_uploads_under_way_to_this_stores_models_and_no_other(store, plant_outside):
    ours = store.client.start_upload(store.keys.model_key("m"))
    ours.put_part(1, b"part")
    beside = store.client.start_upload(store.keys.prefix + "models/sub/m")  # under models/, but no model id
    store.delete_all()
    assert [upload_id for _, upload_id in _uploads(store)] == [beside.upload_id]
    beside.abort()


@objectstores
def test_pending_uploads_lists_what_the_server_has_under_way(store):
    key = store.keys.model_key("abandoned")
    upload = store.client.start_upload(key)
    upload.put_part(1, b"part")
    assert store.pending_uploads() == [(key, upload.upload_id)] == _uploads(store)
    upload.abort()
    assert store.pending_uploads() == [] == _uploads(store)


@objectstores
def test_get_is_one_request_unless_the_model_is_above_the_ranged_get_threshold(store, monkeypatch):
    # The registry gives sidecar stores a threshold of one part and tag stores none, so both paths run here.
    part = store.options.part_size
    data = os.urandom(3 * part + 123)
    store.put("model", data)
    gets = []
    real_get = store.client.get

    def counting_get(key, *args, **kwargs):
        if key == store.keys.model_key("model"):  # not the sidecar a verified read consults
            gets.append(args)
        return real_get(key, *args, **kwargs)

    monkeypatch.setattr(store.client, "get", counting_get)
    assert store.get("model").getbuffer() == data
    threshold = store.options.ranged_get_threshold
    if threshold is None or len(data) <= threshold:
        assert gets == [()]
    else:
        assert gets[0] == ()  # the first GET asks for everything and keeps one part
        assert sorted(start for start, _end in gets[1:]) == [part, 2 * part, 3 * part]
    gets.clear()
    assert store.get("model", verify=True).getbuffer() == data
    assert len(gets) == (1 if threshold is None else 4)


@one_mode_per_adapter
def test_a_64_mib_model_streamed_in_1_mib_chunks_reads_back_bit_exact(store):
    data = os.urandom(64 * MiB)
    writer = store.get_ptr("big")
    for offset in range(0, len(data), MiB):
        store.get_ptr("big").write(data[offset : offset + MiB])
        store.set_model_metadata("big", 1)
    store.set_model_metadata("big", 0)
    writer.close()
    assert store.get_model_metadata("big") == 0
    assert store.stat("big").sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("big", verify=True).getbuffer() == data
    with store.open("big", verify=True) as streamed:
        assert streamed.read() == data
    assert _uploads(store) == []


@objectstores
def test_an_exception_during_a_multipart_write_leaves_no_upload_and_the_old_model(store):
    store.put("model", b"version 1", {"v": 1})
    with pytest.raises(RuntimeError), store.get_ptr("model") as writer:
        for _ in range(3 * store.options.part_size // MiB):
            writer.write(os.urandom(MiB))
        raise RuntimeError("the client went away")
    assert _uploads(store) == []
    assert store.get("model").read() == b"version 1"
    assert store.get_model_metadata("model") == {"v": 1}


@objectstores
def test_a_part_that_keeps_failing_aborts_the_upload(store, monkeypatch):
    store.put("model", b"version 1")

    def refuse(*args, **kwargs):
        raise StoragePermissionError("part refused")

    start_upload = store.client.start_upload

    def start_refusing_parts(key, **kwargs):
        upload = start_upload(key, **kwargs)
        monkeypatch.setattr(upload, "put_part", refuse)
        return upload

    monkeypatch.setattr(store.client, "start_upload", start_refusing_parts)
    writer = store.get_ptr("model")
    with pytest.raises(StoragePermissionError):
        for _ in range(4 * store.options.part_size // MiB):
            writer.write(os.urandom(MiB))
        writer.close()
    monkeypatch.undo()
    assert writer.closed
    assert _uploads(store) == []
    assert store.get("model").read() == b"version 1"


@objectstores
def test_an_atomic_create_of_a_large_model_refuses_a_taken_id_and_leaves_no_upload(store):
    store.put("model", b"version 1")
    with pytest.raises(ModelExistsError):
        store.put("model", os.urandom(2 * store.options.part_size + 1), overwrite=False)
    assert _uploads(store) == []
    assert store.get("model").read() == b"version 1"


@objectstores
def test_keys_follow_the_documented_layout(store, footprint):
    store.put("model-1", b"weights", {"round": 1})
    ours = {key for key in footprint() if key.startswith(store.keys.prefix)}
    expected = {store.keys.prefix + "models/model-1"}
    if store.metadata_mode == codec.SIDECAR:
        expected.add(store.keys.prefix + "metadata/model-1.json")
    assert ours == expected


@pytest.mark.backends(lambda spec: spec.name in ("s3-seaweedfs-sidecar", "minio-seaweedfs-sidecar"))
def test_delete_all_works_in_batches_beyond_one_listing_page(store, monkeypatch):
    # Over a thousand real keys on the real server, once per adapter: the listing and
    # batching code is shared, and moto adds minutes here without adding coverage.
    ids = [f"m{n:04d}" for n in range(1050)]
    x_sha256 = hashlib.sha256(b"x").hexdigest()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda model_id: store.client.put(store.keys.model_key(model_id), b"x", sha256=x_sha256), ids))
    batches: list[int] = []
    delete_many = store.client.delete_many
    monkeypatch.setattr(store.client, "delete_many", lambda keys: (batches.append(len(keys)), delete_many(keys))[1])
    assert store.list() == ids
    store.delete_all()
    assert store.list() == []
    assert sum(batches) == len(ids) and max(batches) <= 1000


@tag_stores
@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({f"k{n}": n for n in range(10)}, id="10-entries"),
        pytest.param({"k" * 129: 1}, id="key-129-chars"),
        pytest.param({"k": "v" * 257}, id="value-257-chars"),
        pytest.param({"k": "semi;colon"}, id="refused-character"),
        pytest.param({"k": "line\nbreak"}, id="newline"),
        pytest.param({"modelstorage.sha256": "x"}, id="reserved-key"),
        pytest.param({"aws:createdBy": "x"}, id="aws-key"),
        pytest.param({"": 1}, id="empty-key"),
        pytest.param({"k": [1, 2]}, id="list-value"),
        pytest.param({"k": {"nested": 1}}, id="dict-value"),
        pytest.param([1, 2], id="list"),
    ],
)
def test_metadata_beyond_tag_limits_raises_and_writes_nothing(store, footprint, metadata):
    store.put("model", b"weights", {"round": 1})
    before = footprint()
    with pytest.raises(MetadataError):
        store.set_model_metadata("model", metadata)
    with pytest.raises(MetadataError):
        store.put("other", b"weights", metadata)
    assert footprint() == before
    assert store.get_model_metadata("model") == {"round": 1}


@tag_stores
def test_tags_are_readable_by_lifecycle_rules(store):
    store.put("model", b"weights", {"status": 0, "name": "resnet", "zero": "0", "lr": 0.5, "ok": True, "none": None})
    tags = store.client.get_tags(store.keys.model_key("model"))
    assert tags["status"] == "0"
    assert tags["name"] == "resnet"
    assert tags["zero"] == "=0"
    assert tags[codec.SHA256_TAG] == hashlib.sha256(b"weights").hexdigest()
    assert store.get_model_metadata("model") == {
        "status": 0,
        "name": "resnet",
        "zero": "0",
        "lr": 0.5,
        "ok": True,
        "none": None,
    }


@objectstores
def test_repr_names_the_bucket_and_never_a_secret(store):
    text = repr(store)
    assert store.bucket in text
    assert "secret" not in text.lower()


def test_a_missing_bucket_says_how_to_create_it(seaweedfs_endpoint):
    from adapters import MinioModelStorage, S3ModelStorage
    from storage import BucketNotFoundError

    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    ep = seaweedfs_endpoint
    stores = [
        S3ModelStorage(
            bucket, endpoint_url=ep.endpoint_url, region=ep.region, access_key=ep.access_key, secret_key=ep.secret_key
        ),
        MinioModelStorage(ep.netloc, bucket, access_key=ep.access_key, secret_key=ep.secret_key, secure=False),
    ]
    for store in stores:
        for operation in (partial(store.exist, "m"), partial(store.put, "m", b"x"), store.list):
            with pytest.raises(BucketNotFoundError, match="create_bucket=True"):
                operation()
        store.close()


def test_create_bucket_creates_it(seaweedfs_endpoint):
    from adapters import MinioModelStorage, S3ModelStorage

    ep = seaweedfs_endpoint
    for make in (
        lambda b: S3ModelStorage(
            b,
            endpoint_url=ep.endpoint_url,
            region=ep.region,
            access_key=ep.access_key,
            secret_key=ep.secret_key,
            create_bucket=True,
        ),
        lambda b: MinioModelStorage(
            ep.netloc, b, access_key=ep.access_key, secret_key=ep.secret_key, secure=False, create_bucket=True
        ),
    ):
        bucket = f"created-{uuid.uuid4().hex[:12]}"
        with make(bucket) as store:
            store.put("m", b"x")
            assert store.list() == ["m"]
            store.delete_all()
        ep.boto3_client().delete_bucket(Bucket=bucket)


def test_wrong_credentials_raise_permission_error_without_the_secret(seaweedfs_endpoint, caplog):
    from adapters import MinioModelStorage, S3ModelStorage

    ep = seaweedfs_endpoint
    secret = "wrong-secret-" + uuid.uuid4().hex
    raw = ep.boto3_client()
    bucket = f"creds-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=bucket)
    stores = [
        S3ModelStorage(
            bucket, endpoint_url=ep.endpoint_url, region=ep.region, access_key=ep.access_key, secret_key=secret
        ),
        MinioModelStorage(ep.netloc, bucket, access_key=ep.access_key, secret_key=secret, secure=False),
    ]
    for store in stores:
        assert secret not in repr(store)
        for operation in (partial(store.put, "m", b"x"), partial(store.get, "m"), store.list):
            with pytest.raises(StoragePermissionError) as raised:
                operation()
            assert secret not in str(raised.value)
        store.close()
    assert all(secret not in record.getMessage() for record in caplog.records)
    raw.delete_bucket(Bucket=bucket)


@one_mode_per_adapter
def test_metadata_set_while_the_model_is_replaced_leaves_the_new_model_with_its_own_sha256(store, monkeypatch):
    """The sidecar is read, then written: a replacement in between must not pair the new bytes with
    the old SHA-256, or verified reads would call a sound model corrupt. The replacement stands,
    as if the metadata had been set just before it."""
    old, new = os.urandom(1000), os.urandom(2000)
    store.put("model", old, {"v": 1})
    real_head = store._head
    replaced = []

    def head_after_a_replacement(model_id):
        if not replaced:
            replaced.append(model_id)
            store.put(model_id, new, {"v": 2})  # another writer commits between the read and the write
        return real_head(model_id)

    monkeypatch.setattr(store, "_head", head_after_a_replacement)
    store.set_model_metadata("model", {"v": 3})
    monkeypatch.undo()
    assert replaced == ["model"]
    assert store.stat("model").sha256 == hashlib.sha256(new).hexdigest()
    assert store.get("model", verify=True).getvalue() == new
    assert store.get_model_metadata("model") == {"v": 2}


@one_mode_per_adapter
def test_metadata_set_on_a_model_without_a_sidecar_creates_one(store):
    """A model another tool wrote has no sidecar: setting metadata creates it (If-None-Match)."""
    store.put("model", b"bytes", {"v": 1})
    store.client.delete_many([store.keys.metadata_key("model")])
    assert store.get_model_metadata("model") == {}
    store.set_model_metadata("model", {"v": 2})
    assert store.get_model_metadata("model") == {"v": 2}
    assert store.stat("model").sha256 is None


@objectstores
def test_a_store_opened_in_the_other_metadata_mode_says_so_and_forks_nothing(store, footprint):
    store.put("m", b"weights", {"round": 1})
    other_mode = "tags" if store.metadata_mode == "sidecar" else "sidecar"
    before = footprint()
    with reopen(store, metadata=other_mode) as other:
        for call in (
            lambda: other.get_model_metadata("m"),
            lambda: other.set_model_metadata("m", {"round": 2}),
            lambda: other.stat("m"),
            lambda: other.get("m", verify=True),
        ):
            with pytest.raises(MetadataError, match=f"metadata='{store.metadata_mode}'"):
                call()
    assert footprint() == before
    assert store.get_model_metadata("m") == {"round": 1}
