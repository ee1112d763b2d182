"""The server acted, its answer never arrived: every retry recognises its own earlier success.

The proxy forwards the request, reads the server's whole answer and resets the
client's connection (``LOST``). The adapter sees a reset, retries, and meets
the effect of its own first attempt: a 412 for a create, NoSuchUpload (or a
second 200) for a completed upload, a sidecar that is already its own. None
of that may turn into an error, lose metadata, abort what completed, or leave
an upload behind. Both adapters, both metadata modes, SeaweedFS behind.
"""

from __future__ import annotations

import pytest
from chaos import PART_SIZE, MiB, blob, raw_keys, raw_uploads
from faultproxy import LOST, Entry, Reply

from storage import ModelExistsError, StorageError

pytestmark = [pytest.mark.objectstore, pytest.mark.tier4]

SMALL = 100_000
LARGE = 3 * PART_SIZE + 1234  # four parts


@pytest.fixture(params=["sidecar", "tags"])
def metadata_mode(request) -> str:
    return request.param


@pytest.fixture
def store(make_store, metadata_mode):
    return make_store(metadata=metadata_mode)


def lose(proxy, operation: str, *, nth: int = 1, then: Reply | None = None, key_part: str = "/models/"):
    """Lose the answer of the ``nth`` request of ``operation`` on a model key; answer later ones with ``then``."""
    seen = []

    def rule(request):
        if request.operation != operation or key_part not in request.path:
            return None
        seen.append(request.index)
        if len(seen) == nth:
            return LOST
        if len(seen) > nth and then is not None:
            return then
        return None

    proxy.rules.append(rule)
    return seen


def lost(proxy) -> list[Entry]:
    return [entry for entry in proxy.entries() if entry.fault == LOST]


def _fedn_upload(store, model_id: str, data: bytes, status) -> None:
    writer = store.get_ptr(model_id)
    for offset in range(0, len(data), MiB):
        store.get_ptr(model_id).write(data[offset : offset + MiB])
        store.set_model_metadata(model_id, 1)
    store.set_model_metadata(model_id, status)
    writer.close()


def _assert_whole(store, model_id, data, metadata, raw, bucket, prefix):
    assert store.get(model_id, verify=True).getvalue() == data
    assert store.get_model_metadata(model_id) == metadata
    assert raw_uploads(raw, bucket, prefix) == []


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["one PUT", "multipart"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["create", "overwrite"])
def test_a_write_whose_answer_was_lost_succeeds_with_its_metadata(store, proxy, raw, bucket, prefix, size, overwrite):
    data = blob("m", 1, size)
    lose(proxy, "PutObject" if size == SMALL else "CompleteMultipartUpload")
    store.put("m", data, {"round": 3}, overwrite=overwrite)
    assert len(lost(proxy)) == 1
    _assert_whole(store, "m", data, {"round": 3}, raw, bucket, prefix)
    assert not [e for e in proxy.entries() if e.operation == "AbortMultipartUpload"]


def test_a_completed_upload_retried_into_no_such_upload_is_recognised(store, proxy, raw, bucket, prefix):
    """SeaweedFS answers a repeated CompleteMultipartUpload with 200; AWS, MinIO and LocalStack with NoSuchUpload."""
    data = blob("m", 1, LARGE)
    lose(proxy, "CompleteMultipartUpload", then=Reply(404, "NoSuchUpload"))
    store.put("m", data, {"v": 1})
    _assert_whole(store, "m", data, {"v": 1}, raw, bucket, prefix)


def test_a_fedn_upload_whose_complete_answer_was_lost_keeps_its_status(store, proxy, raw, bucket, prefix):
    data = blob("m", 1, LARGE)
    lose(proxy, "CompleteMultipartUpload")
    _fedn_upload(store, "m", data, 0)
    _assert_whole(store, "m", data, 0, raw, bucket, prefix)


@pytest.mark.parametrize("how", ["put", "get_ptr"])
def test_a_lost_create_multipart_upload_answer_leaves_no_upload_behind(store, proxy, raw, bucket, prefix, how):
    data = blob("m", 1, LARGE)
    lose(proxy, "CreateMultipartUpload")
    if how == "put":
        store.put("m", data, {"v": 1})
    else:
        _fedn_upload(store, "m", data, {"v": 1})
    creates = [e for e in proxy.entries() if e.operation == "CreateMultipartUpload"]
    assert len(creates) == 2 and creates[0].fault == LOST
    _assert_whole(store, "m", data, {"v": 1}, raw, bucket, prefix)


def test_another_writers_upload_is_never_taken_for_a_lost_one(store, proxy, raw, bucket, prefix, make_store):
    """An upload of the same key that another writer started, and sends parts to, is left alone."""
    other = raw.create_multipart_upload(Bucket=bucket, Key=store.keys.model_key("m"))["UploadId"]
    raw.upload_part(Bucket=bucket, Key=store.keys.model_key("m"), UploadId=other, PartNumber=1, Body=b"x" * PART_SIZE)
    lose(proxy, "CreateMultipartUpload")
    store.put("m", blob("m", 1, LARGE))
    assert [upload_id for _, upload_id in raw_uploads(raw, bucket, prefix)] == [other]


def test_a_sidecar_update_whose_answer_was_lost_is_not_mistaken_for_another_writers(
    make_store, proxy, raw, bucket, prefix
):
    store = make_store(metadata="sidecar")
    store.put("m", b"weights", {"v": 1})
    lose(proxy, "PutObject", key_part="/metadata/")
    assert store.set_model_metadata("m", {"v": 2}) is True
    assert len(lost(proxy)) == 1
    assert store.get_model_metadata("m") == {"v": 2}
    assert store.get("m", verify=True).getvalue() == b"weights"


def test_a_refused_metadata_update_whose_condition_held_raises_instead_of_passing_for_done(make_store, proxy):
    """A server that refuses If-Match in either form: the old metadata stays, and the call says so."""
    store = make_store(metadata="sidecar")
    store.put("m", b"weights", {"v": 1})
    proxy.rules.append(
        lambda r: Reply(412, "PreconditionFailed") if r.operation == "PutObject" and "/metadata/" in r.path else None
    )
    with pytest.raises(StorageError, match="conditional writes"):
        store.set_model_metadata("m", {"v": 2})
    assert store.get_model_metadata("m") == {"v": 1}


def test_tags_replaced_by_a_request_whose_answer_was_lost_are_in_place(make_store, proxy):
    store = make_store(metadata="tags")
    store.put("m", b"weights", {"v": 1})
    lose(proxy, "PutObjectTagging")
    assert store.set_model_metadata("m", {"v": 2}) is True
    assert store.get_model_metadata("m") == {"v": 2}


def test_a_create_that_meets_another_writers_model_still_fails(store, proxy, raw, bucket, prefix):
    store.put("m", b"first", {"v": 1})
    with pytest.raises(ModelExistsError):
        store.put("m", blob("m", 2, SMALL), {"v": 2}, overwrite=False)
    with pytest.raises(ModelExistsError):
        store.put("m", blob("m", 2, LARGE), {"v": 2}, overwrite=False)
    assert store.get("m").getvalue() == b"first"
    assert store.get_model_metadata("m") == {"v": 1}
    assert raw_uploads(raw, bucket, prefix) == []
    assert len(raw_keys(raw, bucket, prefix)) == (2 if store.metadata_mode == "sidecar" else 1)
