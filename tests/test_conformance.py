"""The contract table of docs/architecture.md ("The contract"), row by row, on every registered backend.

Metadata comes in both shapes FEDn uses: dicts, and its integer ``ModelStatus``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import queue
import random
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy
import pytest

from storage import (
    IntegrityError,
    InvalidModelIdError,
    MetadataError,
    ModelExistsError,
    ModelNotFoundError,
    ModelStat,
    StorageError,
)
from storage.model import MAX_METADATA_BYTES
from storage.writer import CHUNK_SIZE

MiB = 1024 * 1024

# FEDn's ModelStatus values, as its combiner sets them.
OK, IN_PROGRESS, FAILED = 0, 1, 3

# Flat and short, so tag-based metadata can hold every one of them too.
METADATA = [
    pytest.param({"round": 3, "status": "ok", "loss": 0.25}, id="dict"),
    pytest.param({}, id="empty-dict"),
    pytest.param(OK, id="status-OK"),
    pytest.param(IN_PROGRESS, id="status-IN_PROGRESS"),
    pytest.param(FAILED, id="status-FAILED"),
    pytest.param("aggregated", id="string"),
    pytest.param(0.5, id="float"),
    pytest.param(True, id="bool"),
]


def new_id() -> str:
    return str(uuid.uuid4())


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = CHUNK_SIZE) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def as_json(value) -> str:
    # Python's == calls True equal to 1 and 0 equal to 0.0; JSON text does not.
    return json.dumps(value, sort_keys=True)


def assert_metadata(store, model_id, expected) -> None:
    assert as_json(store.get_model_metadata(model_id)) == as_json(expected)


def read(store, model_id) -> bytes | None:
    buffer = store.get(model_id)
    return None if buffer is None else buffer.read()


class Interrupted(Exception):
    """Stands for whatever can go wrong while a combiner receives a model."""


# -- exist ------------------------------------------------------------------------


def test_exist_is_false_for_a_missing_model(store):
    assert store.exist(new_id()) is False


def test_exist_is_true_after_put(store):
    model_id = new_id()
    store.put(model_id, b"weights")
    assert store.exist(model_id) is True


def test_exist_is_true_after_get_ptr_is_closed(store):
    model_id = new_id()
    store.get_ptr(model_id).write(b"weights")
    store.get_ptr(model_id).close()
    assert store.exist(model_id) is True


def test_exist_is_false_while_a_write_is_open(store):
    model_id = new_id()
    store.get_ptr(model_id).write(b"weights")
    store.set_model_metadata(model_id, IN_PROGRESS)
    assert store.exist(model_id) is False


def test_exist_sees_models_another_instance_committed(store, reopen):
    model_id = new_id()
    store.put(model_id, b"weights")
    assert reopen().exist(model_id) is True


def test_another_instance_does_not_see_an_open_write(store, reopen):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.write(b"weights")
    other = reopen()
    assert other.exist(model_id) is False
    assert other.get(model_id) is None
    writer.close()
    assert other.exist(model_id) is True
    assert read(other, model_id) == b"weights"


# -- get --------------------------------------------------------------------------


def test_get_returns_a_bytesio_at_position_zero(store):
    model_id = new_id()
    data = payload(1000)
    store.put(model_id, data)
    buffer = store.get(model_id)
    assert isinstance(buffer, io.BytesIO)
    assert buffer.tell() == 0
    assert buffer.read() == data


def test_get_returns_none_for_a_missing_model(store):
    assert store.get(new_id()) is None


def test_get_returns_none_while_the_only_write_is_uncommitted(store):
    model_id = new_id()
    store.get_ptr(model_id).write(b"half a model")
    assert store.get(model_id) is None


def test_get_returns_the_previous_version_while_a_replacement_is_open(store):
    model_id = new_id()
    store.put(model_id, b"version 1")
    store.get_ptr(model_id).write(b"version 2, not yet committed")
    assert read(store, model_id) == b"version 1"


def test_two_gets_return_independent_buffers(store):
    model_id = new_id()
    store.put(model_id, b"0123456789")
    first, second = store.get(model_id), store.get(model_id)
    first.write(b"XXXX")
    assert second.read() == b"0123456789"
    assert read(store, model_id) == b"0123456789"
    first.seek(0)
    assert first.read() == b"XXXX456789"


def test_get_with_verify_returns_the_bytes(store):
    model_id = new_id()
    data = payload(2 * MiB + 3)
    store.put(model_id, data)
    assert store.get(model_id, verify=True).read() == data


def test_get_with_verify_returns_none_for_a_missing_model(store):
    assert store.get(new_id(), verify=True) is None


def test_verifying_reads_notice_tampered_bytes(store, tamper):
    model_id = new_id()
    data = payload(3 * MiB)
    store.put(model_id, data)
    tamper(model_id)
    assert read(store, model_id) != data, "the tamper hook did not change the bytes"
    with pytest.raises(IntegrityError):
        store.get(model_id, verify=True)
    with pytest.raises(IntegrityError), store.open(model_id, verify=True) as reader:
        reader.read()


# -- get_ptr ----------------------------------------------------------------------


def test_get_ptr_returns_the_same_writer_until_it_is_closed(store):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    assert store.get_ptr(model_id) is writer
    writer.write(b"a")
    assert store.get_ptr(model_id) is writer
    writer.close()
    assert store.get_ptr(model_id) is not writer


def test_get_ptr_gives_different_ids_different_writers(store):
    first, second = new_id(), new_id()
    store.get_ptr(first).write(b"first")
    store.get_ptr(second).write(b"second")
    store.get_ptr(second).close()
    assert read(store, second) == b"second"
    assert store.exist(first) is False
    store.get_ptr(first).close()
    assert read(store, first) == b"first"


def test_get_ptr_returns_a_writable_binary_file(store):
    writer = store.get_ptr(new_id())
    assert writer.writable()
    assert writer.write(b"abc") == 3
    assert writer.write(bytearray(b"de")) == 2
    assert writer.write(memoryview(b"fgh")) == 3


def test_closing_the_writer_commits_every_chunk(store):
    model_id = new_id()
    data = payload(2 * CHUNK_SIZE + 17)
    writer = store.get_ptr(model_id)
    for piece in chunks(data, 100_000):
        writer.write(piece)
    writer.close()
    assert read(store, model_id) == data


def test_leaving_the_with_block_commits(store):
    model_id = new_id()
    with store.get_ptr(model_id) as writer:
        writer.write(b"weights")
    assert writer.closed
    assert read(store, model_id) == b"weights"


def test_a_writer_closed_without_writes_commits_an_empty_model(store):
    model_id = new_id()
    store.get_ptr(model_id).close()
    assert store.exist(model_id) is True
    assert read(store, model_id) == b""


def test_empty_models_written_back_to_back_all_commit(store):
    # Each write reuses the connection of the one before: a server answering an
    # empty PUT out of step with the client shows up as a stalled next request.
    ids = [new_id() for _ in range(25)]
    for model_id in ids:
        store.put(model_id, b"", {"round": 1})
    for model_id in ids:
        assert read(store, model_id) == b""
        assert store.get_model_metadata(model_id) == {"round": 1}


def test_a_writer_keeps_no_reference_to_the_callers_buffer(store):
    model_id = new_id()
    buffer = bytearray(b"a" * 10)
    writer = store.get_ptr(model_id)
    writer.write(buffer)
    buffer[:] = b"b" * 10
    writer.write(buffer)
    writer.close()
    assert read(store, model_id) == b"a" * 10 + b"b" * 10


def test_an_exception_in_the_with_block_keeps_the_previous_version(store):
    model_id = new_id()
    store.put(model_id, b"version 1", {"round": 1})
    with pytest.raises(Interrupted), store.get_ptr(model_id) as writer:
        writer.write(b"version 2, broken off")
        store.set_model_metadata(model_id, IN_PROGRESS)
        raise Interrupted
    assert read(store, model_id) == b"version 1"
    assert_metadata(store, model_id, {"round": 1})
    assert store.get_ptr(model_id) is not writer


def test_an_exception_in_the_with_block_leaves_a_new_id_absent(store, footprint):
    before = footprint()
    model_id = new_id()
    with pytest.raises(Interrupted), store.get_ptr(model_id) as writer:
        writer.write(payload(CHUNK_SIZE + 1))
        raise Interrupted
    assert store.exist(model_id) is False
    assert store.list() == []
    assert footprint() == before


def test_abort_discards_the_write_and_keeps_the_previous_version(store):
    model_id = new_id()
    store.put(model_id, b"version 1", OK)
    writer = store.get_ptr(model_id)
    writer.write(b"version 2")
    store.set_model_metadata(model_id, IN_PROGRESS)
    writer.abort()
    assert read(store, model_id) == b"version 1"
    assert_metadata(store, model_id, OK)
    assert store.get_ptr(model_id) is not writer


def test_abort_of_a_new_id_leaves_nothing(store, footprint):
    before = footprint()
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.write(b"weights")
    writer.abort()
    assert store.exist(model_id) is False
    with pytest.raises(ModelNotFoundError):
        store.get_model_metadata(model_id)
    assert footprint() == before


def test_writing_after_close_raises_value_error(store):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.write(b"weights")
    writer.close()
    with pytest.raises(ValueError):
        writer.write(b"more")
    assert read(store, model_id) == b"weights"


def test_writing_after_abort_raises_value_error(store):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.abort()
    with pytest.raises(ValueError):
        writer.write(b"more")
    assert store.exist(model_id) is False


def test_closing_twice_commits_once(store):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.write(b"weights")
    writer.close()
    store.put(model_id, b"replaced afterwards")
    writer.close()
    assert read(store, model_id) == b"replaced afterwards"


def test_a_replaced_model_is_wholly_the_new_bytes(store):
    model_id = new_id()
    store.put(model_id, payload(3 * CHUNK_SIZE, seed=1))
    new = payload(10, seed=2)
    with store.get_ptr(model_id) as writer:
        writer.write(new)
    assert read(store, model_id) == new
    assert store.stat(model_id).size == len(new)
    assert store.stat(model_id).sha256 == sha256(new)


# -- get_model_metadata -----------------------------------------------------------


@pytest.mark.parametrize("metadata", METADATA)
def test_get_model_metadata_returns_the_value_last_set(store, metadata):
    model_id = new_id()
    store.put(model_id, b"weights", {"round": 1})
    store.set_model_metadata(model_id, FAILED)
    store.set_model_metadata(model_id, metadata)
    assert_metadata(store, model_id, metadata)


@pytest.mark.parametrize("metadata", METADATA)
def test_metadata_is_visible_to_another_instance(store, reopen, metadata):
    model_id = new_id()
    store.put(model_id, b"weights")
    store.set_model_metadata(model_id, metadata)
    assert_metadata(reopen(), model_id, metadata)


def test_get_model_metadata_is_an_empty_dict_for_a_model_put_without_metadata(store):
    model_id = new_id()
    store.put(model_id, b"weights")
    assert_metadata(store, model_id, {})


def test_get_model_metadata_is_an_empty_dict_for_a_model_written_without_metadata(store):
    model_id = new_id()
    with store.get_ptr(model_id) as writer:
        writer.write(b"weights")
    assert_metadata(store, model_id, {})


def test_get_model_metadata_returns_the_pending_value_while_a_write_is_open(store):
    model_id = new_id()
    store.put(model_id, b"version 1", OK)
    store.get_ptr(model_id).write(b"version 2")
    store.set_model_metadata(model_id, IN_PROGRESS)
    assert_metadata(store, model_id, IN_PROGRESS)


def test_get_model_metadata_raises_model_not_found_for_neither_model_nor_write(store):
    with pytest.raises(ModelNotFoundError) as raised:
        store.get_model_metadata(new_id())
    assert isinstance(raised.value, KeyError)


def test_metadata_handed_out_is_a_copy(store):
    model_id = new_id()
    store.put(model_id, b"weights", {"round": 1, "status": "ok"})
    handed_out = store.get_model_metadata(model_id)
    handed_out["round"] = 99
    handed_out["injected"] = True
    assert_metadata(store, model_id, {"round": 1, "status": "ok"})


def test_metadata_taken_in_is_a_copy(store):
    model_id = new_id()
    given = {"round": 1}
    store.put(model_id, b"weights", given)
    given["round"] = 2
    assert_metadata(store, model_id, {"round": 1})
    store.set_model_metadata(model_id, given)
    given["round"] = 3
    assert_metadata(store, model_id, {"round": 2})


def test_pending_metadata_is_a_copy(store):
    model_id = new_id()
    store.get_ptr(model_id).write(b"weights")
    given = {"round": 1}
    store.set_model_metadata(model_id, given)
    given["round"] = 2
    store.get_model_metadata(model_id)["round"] = 3
    assert_metadata(store, model_id, {"round": 1})
    store.get_ptr(model_id).close()
    assert_metadata(store, model_id, {"round": 1})


# -- set_model_metadata -----------------------------------------------------------


@pytest.mark.parametrize("metadata", METADATA)
def test_set_model_metadata_returns_true(store, metadata):
    model_id = new_id()
    store.put(model_id, b"weights")
    assert store.set_model_metadata(model_id, metadata) is True


def test_set_model_metadata_keeps_the_bytes(store):
    model_id = new_id()
    data = payload(1000)
    store.put(model_id, data)
    store.set_model_metadata(model_id, OK)
    assert read(store, model_id) == data
    assert store.stat(model_id).sha256 == sha256(data)


@pytest.mark.parametrize("metadata", METADATA)
def test_metadata_set_during_a_write_is_committed_with_the_bytes(store, metadata):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.write(b"weights")
    assert store.set_model_metadata(model_id, metadata) is True
    writer.close()
    assert_metadata(store, model_id, metadata)
    assert read(store, model_id) == b"weights"


def test_metadata_set_during_a_write_stays_pending_for_other_instances(store, reopen):
    model_id = new_id()
    store.put(model_id, b"version 1", OK)
    writer = store.get_ptr(model_id)
    writer.write(b"version 2")
    store.set_model_metadata(model_id, IN_PROGRESS)
    other = reopen()
    assert_metadata(other, model_id, OK)
    writer.close()
    assert_metadata(other, model_id, IN_PROGRESS)
    assert read(other, model_id) == b"version 2"


def test_set_model_metadata_raises_model_not_found_for_neither_model_nor_write(store, footprint):
    before = footprint()
    model_id = new_id()
    with pytest.raises(ModelNotFoundError) as raised:
        store.set_model_metadata(model_id, OK)
    assert isinstance(raised.value, KeyError)
    assert store.exist(model_id) is False
    assert footprint() == before


def _cyclic() -> dict:
    looped: dict = {"round": 1}
    looped["self"] = looped
    return looped


NOT_JSON = [
    pytest.param(lambda: object(), id="object"),
    pytest.param(lambda: float("nan"), id="nan"),
    pytest.param(lambda: {"loss": float("inf")}, id="infinity-in-dict"),
    pytest.param(_cyclic, id="cyclic-dict"),
    pytest.param(lambda: {1, 2}, id="set"),
    pytest.param(lambda: b"bytes", id="bytes"),
    pytest.param(lambda: {"blob": "x" * (MAX_METADATA_BYTES + 1)}, id="over-size-limit"),
]


@pytest.mark.parametrize("make_bad", NOT_JSON)
def test_unstorable_metadata_raises_metadata_error_and_changes_nothing(store, make_bad):
    model_id = new_id()
    store.put(model_id, b"weights", {"round": 1})
    with pytest.raises(MetadataError) as raised:
        store.set_model_metadata(model_id, make_bad())
    assert isinstance(raised.value, ValueError)
    assert_metadata(store, model_id, {"round": 1})
    assert read(store, model_id) == b"weights"


@pytest.mark.parametrize("make_bad", NOT_JSON)
def test_unstorable_metadata_during_a_write_keeps_the_pending_value(store, make_bad):
    model_id = new_id()
    store.get_ptr(model_id).write(b"weights")
    store.set_model_metadata(model_id, IN_PROGRESS)
    with pytest.raises(MetadataError):
        store.set_model_metadata(model_id, make_bad())
    store.get_ptr(model_id).close()
    assert_metadata(store, model_id, IN_PROGRESS)


@pytest.mark.parametrize("make_bad", NOT_JSON)
def test_put_with_unstorable_metadata_stores_nothing(store, footprint, make_bad):
    existing = new_id()
    store.put(existing, b"version 1", OK)
    before = footprint()
    with pytest.raises(MetadataError):
        store.put(existing, b"version 2", make_bad())
    with pytest.raises(MetadataError):
        store.put(new_id(), b"weights", make_bad())
    assert footprint() == before
    assert read(store, existing) == b"version 1"
    assert_metadata(store, existing, OK)


NESTED = {"round": 3, "client": {"name": "site-a", "losses": [0.5, 0.25]}, "note": None}


def test_nested_metadata_round_trips_or_is_refused_as_declared(store_spec, store):
    model_id = new_id()
    store.put(model_id, b"weights", OK)
    if store_spec.nested_metadata:
        store.set_model_metadata(model_id, NESTED)
        assert_metadata(store, model_id, NESTED)
    else:
        with pytest.raises(MetadataError):
            store.set_model_metadata(model_id, NESTED)
        assert_metadata(store, model_id, OK)


# -- delete -----------------------------------------------------------------------


def test_delete_returns_true_and_removes_the_model(store):
    model_id = new_id()
    store.put(model_id, b"weights")
    assert store.delete(model_id) is True
    assert store.exist(model_id) is False
    assert store.get(model_id) is None
    assert store.list() == []


def test_delete_returns_false_when_absent(store):
    assert store.delete(new_id()) is False


def test_delete_twice_returns_false_the_second_time(store):
    model_id = new_id()
    store.put(model_id, b"weights")
    store.delete(model_id)
    assert store.delete(model_id) is False


def test_delete_removes_the_metadata_too(store):
    model_id = new_id()
    store.put(model_id, b"version 1", {"round": 7})
    store.delete(model_id)
    with pytest.raises(ModelNotFoundError):
        store.get_model_metadata(model_id)
    store.put(model_id, b"version 2")
    assert_metadata(store, model_id, {})


def test_delete_leaves_other_models_alone(store):
    kept, removed = new_id(), new_id()
    store.put(kept, b"kept", {"round": 1})
    store.put(removed, b"removed")
    store.delete(removed)
    assert read(store, kept) == b"kept"
    assert_metadata(store, kept, {"round": 1})


def test_delete_is_seen_by_another_instance(store, reopen):
    model_id = new_id()
    store.put(model_id, b"weights")
    other = reopen()
    other.delete(model_id)
    assert store.exist(model_id) is False


@pytest.mark.parametrize("had_previous_version", [False, True], ids=["new-id", "replacement"])
def test_delete_aborts_an_open_write_which_never_becomes_visible(store, footprint, had_previous_version):
    model_id = new_id()
    if had_previous_version:
        store.put(model_id, b"version 1", OK)
    empty = footprint() if not had_previous_version else None
    writer = store.get_ptr(model_id)
    writer.write(b"version 2")
    store.set_model_metadata(model_id, IN_PROGRESS)

    assert store.delete(model_id) is True
    with pytest.raises(ValueError):
        writer.write(b"more")
    # The contract allows either a no-op or a ValueError here; a commit would be the bug.
    with contextlib.suppress(ValueError):
        writer.close()

    assert store.exist(model_id) is False
    assert store.get(model_id) is None
    assert store.list() == []
    with pytest.raises(ModelNotFoundError):
        store.get_model_metadata(model_id)
    if empty is not None:
        assert footprint() == empty
    assert store.get_ptr(model_id) is not writer


# -- delete_all -------------------------------------------------------------------


def test_delete_all_removes_every_model_and_returns_true(store):
    ids = [new_id() for _ in range(5)]
    for n, model_id in enumerate(ids):
        store.put(model_id, payload(100, seed=n), {"round": n})
    assert store.delete_all() is True
    assert store.list() == []
    for model_id in ids:
        assert store.exist(model_id) is False
        assert store.get(model_id) is None
        with pytest.raises(ModelNotFoundError):
            store.get_model_metadata(model_id)


def test_delete_all_on_an_empty_store_returns_true(store):
    assert store.delete_all() is True
    assert store.list() == []


def test_delete_all_aborts_open_writes(store):
    model_id = new_id()
    writer = store.get_ptr(model_id)
    writer.write(b"weights")
    store.delete_all()
    with pytest.raises(ValueError):
        writer.write(b"more")
    with contextlib.suppress(ValueError):
        writer.close()
    assert store.exist(model_id) is False
    assert store.list() == []


def test_delete_all_leaves_no_trace(store, footprint):
    empty = footprint()
    for n in range(3):
        store.put(new_id(), payload(CHUNK_SIZE + n, seed=n), {"round": n})
    store.get_ptr(new_id()).write(b"open write")
    store.delete_all()
    assert footprint() == empty


def test_delete_all_removes_models_another_instance_wrote(store, reopen):
    other = reopen()
    theirs, mine = new_id(), new_id()
    other.put(theirs, b"theirs", OK)
    store.put(mine, b"mine")
    assert store.delete_all() is True
    assert store.list() == []
    assert other.list() == []
    assert store.exist(theirs) is False


def test_delete_all_touches_nothing_outside_the_namespace(store, footprint, plant_outside):
    plant_outside()
    outside = footprint()
    for n in range(3):
        store.put(new_id(), payload(100, seed=n), {"round": n})
    store.delete_all()
    assert footprint() == outside


# -- put --------------------------------------------------------------------------


def _open_file(tmp_path, data: bytes, stack: contextlib.ExitStack, **kwargs):
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return stack.enter_context(open(path, "rb", **kwargs))  # noqa: SIM115 - the stack closes it


DATA_SHAPES = [
    pytest.param(lambda data, tmp_path, stack: data, id="bytes"),
    pytest.param(lambda data, tmp_path, stack: bytearray(data), id="bytearray"),
    pytest.param(lambda data, tmp_path, stack: memoryview(data), id="memoryview"),
    pytest.param(lambda data, tmp_path, stack: io.BytesIO(data), id="BytesIO"),
    pytest.param(lambda data, tmp_path, stack: _open_file(tmp_path, data, stack), id="file-rb"),
    pytest.param(lambda data, tmp_path, stack: _open_file(tmp_path, data, stack, buffering=0), id="unbuffered-file-rb"),
]
SIZES = [
    pytest.param(0, id="empty"),
    pytest.param(1000, id="small"),
    pytest.param(2 * CHUNK_SIZE + 3, id="multi-chunk"),
]


@pytest.mark.parametrize("size", SIZES)
def test_put_stores_every_shape_of_data(store, tmp_path, size):
    data = payload(size)
    for shape in DATA_SHAPES:
        model_id = new_id()
        with contextlib.ExitStack() as stack:
            stat = store.put(model_id, shape.values[0](data, tmp_path, stack))
        assert read(store, model_id) == data, shape.id
        assert isinstance(stat, ModelStat)
        assert stat.model_id == model_id
        assert stat.size == size
        assert stat.sha256 == sha256(data)


def test_put_accepts_a_numpy_array(store):
    weights = numpy.random.default_rng(0).standard_normal((64, 33)).astype(numpy.float32)
    model_id = new_id()
    store.put(model_id, weights)
    assert read(store, model_id) == weights.tobytes()


@pytest.mark.parametrize("metadata", METADATA)
def test_put_stores_the_metadata(store, metadata):
    model_id = new_id()
    store.put(model_id, b"weights", metadata)
    assert_metadata(store, model_id, metadata)


def test_put_overwrites_by_default_bytes_and_metadata(store):
    model_id = new_id()
    store.put(model_id, payload(3000, seed=1), {"round": 1})
    store.put(model_id, b"version 2")
    assert read(store, model_id) == b"version 2"
    # A new version does not inherit the old version's metadata.
    assert_metadata(store, model_id, {})


def test_put_without_overwrite_creates_a_free_id(store):
    model_id = new_id()
    store.put(model_id, b"weights", OK, overwrite=False)
    assert read(store, model_id) == b"weights"
    assert_metadata(store, model_id, OK)


def test_put_without_overwrite_refuses_a_taken_id_and_keeps_it_intact(store, footprint):
    model_id = new_id()
    store.put(model_id, b"version 1", {"round": 1})
    before = footprint()
    with pytest.raises(ModelExistsError):
        store.put(model_id, payload(CHUNK_SIZE + 5), {"round": 2}, overwrite=False)
    assert read(store, model_id) == b"version 1"
    assert_metadata(store, model_id, {"round": 1})
    assert footprint() == before


def test_put_without_overwrite_refuses_an_id_another_instance_took(store, reopen):
    model_id = new_id()
    reopen().put(model_id, b"theirs", OK)
    with pytest.raises(ModelExistsError):
        store.put(model_id, b"mine", FAILED, overwrite=False)
    assert read(store, model_id) == b"theirs"
    assert_metadata(store, model_id, OK)


def _race_to_create(stores, model_id) -> tuple[list[int], list[BaseException]]:
    barrier = threading.Barrier(len(stores))
    winners: list[int] = []
    errors: list[BaseException] = []

    def create(n: int, store) -> None:
        barrier.wait()
        try:
            store.put(model_id, payload(50_000, seed=n), {"writer": n}, overwrite=False)
            winners.append(n)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return winners, errors


def _assert_one_winner(store, model_id, winners, errors, contenders) -> None:
    assert len(winners) == 1, f"{len(winners)} of {contenders} creates succeeded"
    assert len(errors) == contenders - 1
    assert all(isinstance(exc, ModelExistsError) for exc in errors), errors
    assert read(store, model_id) == payload(50_000, seed=winners[0])
    assert_metadata(store, model_id, {"writer": winners[0]})


def test_put_without_overwrite_lets_exactly_one_racing_thread_win(store):
    model_id = new_id()
    winners, errors = _race_to_create([store] * 6, model_id)
    _assert_one_winner(store, model_id, winners, errors, 6)


def test_put_without_overwrite_lets_exactly_one_racing_instance_win(store, reopen):
    model_id = new_id()
    winners, errors = _race_to_create([reopen() for _ in range(6)], model_id)
    _assert_one_winner(store, model_id, winners, errors, 6)


def _text_file(tmp_path, stack):
    path = tmp_path / "model.txt"
    path.write_text("weights")
    return stack.enter_context(open(path))  # noqa: SIM115 - the stack closes it


NOT_BYTES = [
    pytest.param(lambda tmp_path, stack: "weights", id="str"),
    pytest.param(lambda tmp_path, stack: None, id="None"),
    pytest.param(lambda tmp_path, stack: object(), id="object"),
    pytest.param(lambda tmp_path, stack: 42, id="int"),
    pytest.param(_text_file, id="text-mode-file"),
    pytest.param(lambda tmp_path, stack: io.StringIO("weights"), id="StringIO"),
]


@pytest.mark.parametrize("make_bad", NOT_BYTES)
def test_put_of_non_binary_data_raises_type_error_and_changes_nothing(store, footprint, tmp_path, make_bad):
    existing = new_id()
    store.put(existing, b"version 1", OK)
    before = footprint()
    with contextlib.ExitStack() as stack:
        with pytest.raises(TypeError):
            store.put(existing, make_bad(tmp_path, stack))
        with pytest.raises(TypeError):
            store.put(new_id(), make_bad(tmp_path, stack))
    assert footprint() == before
    assert store.list() == [existing]
    assert read(store, existing) == b"version 1"
    assert_metadata(store, existing, OK)


# -- open -------------------------------------------------------------------------


def test_open_streams_the_bytes(store):
    model_id = new_id()
    data = payload(3 * CHUNK_SIZE + 11)
    store.put(model_id, data)
    received = bytearray()
    with store.open(model_id) as reader:
        while piece := reader.read(100_000):
            assert len(piece) <= 100_000
            received += piece
    assert bytes(received) == data


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify"])
def test_open_reads_a_small_and_an_empty_model(store, verify):
    small, empty = new_id(), new_id()
    store.put(small, b"weights")
    store.put(empty, b"")
    with store.open(small, verify=verify) as reader:
        assert reader.read() == b"weights"
    with store.open(empty, verify=verify) as reader:
        assert reader.read() == b""


def test_open_with_verify_reads_the_bytes(store):
    model_id = new_id()
    data = payload(2 * CHUNK_SIZE + 5)
    store.put(model_id, data)
    with store.open(model_id, verify=True) as reader:
        assert reader.read() == data


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify"])
def test_open_raises_model_not_found_for_a_missing_model(store, verify):
    with pytest.raises(ModelNotFoundError) as raised:
        store.open(new_id(), verify=verify)
    assert isinstance(raised.value, KeyError)


def test_open_raises_model_not_found_while_the_only_write_is_uncommitted(store):
    model_id = new_id()
    store.get_ptr(model_id).write(b"weights")
    with pytest.raises(ModelNotFoundError):
        store.open(model_id)


def test_a_reader_opened_before_a_replacement_never_mixes_versions(store):
    model_id = new_id()
    old, new = payload(3 * CHUNK_SIZE, seed=1), payload(3 * CHUNK_SIZE, seed=2)
    store.put(model_id, old)
    with store.open(model_id) as reader:
        head = reader.read(CHUNK_SIZE)
        store.put(model_id, new)
        try:
            whole = head + reader.read()
        except StorageError:
            return  # refusing to go on is fine; mixing two versions is not
    assert whole in (old, new)


# -- list -------------------------------------------------------------------------


def test_list_is_empty_for_an_empty_store(store):
    assert store.list() == []


def test_list_returns_committed_ids_sorted(store):
    for model_id in ["m-2", "B-model", "a.model", "m-10", "0-first"]:
        store.put(model_id, b"weights")
    store.get_ptr("open-write").write(b"weights")
    assert store.list() == ["0-first", "B-model", "a.model", "m-10", "m-2"]


def test_list_shows_a_write_once_it_is_committed(store):
    store.put("committed", b"weights")
    writer = store.get_ptr("pending")
    writer.write(b"weights")
    assert store.list() == ["committed"]
    writer.close()
    assert store.list() == ["committed", "pending"]


# -- stat -------------------------------------------------------------------------


def test_stat_reports_size_sha256_and_an_aware_timestamp(store):
    model_id = new_id()
    data = payload(CHUNK_SIZE + 99)
    before = datetime.now(timezone.utc)
    store.put(model_id, data)
    stat = store.stat(model_id)
    assert stat.model_id == model_id
    assert stat.size == len(data)
    assert stat.sha256 == sha256(data)
    assert stat.last_modified.tzinfo is not None
    assert stat.last_modified.utcoffset() is not None
    # Generous for coarse server clocks; a timezone mix-up is off by whole hours.
    assert before - timedelta(minutes=5) <= stat.last_modified <= datetime.now(timezone.utc) + timedelta(minutes=5)


def test_stat_of_a_streamed_write_hashes_every_chunk(store):
    model_id = new_id()
    data = payload(2 * CHUNK_SIZE + 1)
    with store.get_ptr(model_id) as writer:
        for piece in chunks(data, 300_000):
            writer.write(piece)
    assert store.stat(model_id).size == len(data)
    assert store.stat(model_id).sha256 == sha256(data)


def test_stat_follows_a_replacement(store):
    model_id = new_id()
    store.put(model_id, b"version 1")
    store.put(model_id, b"version two")
    assert store.stat(model_id).size == len(b"version two")
    assert store.stat(model_id).sha256 == sha256(b"version two")


def test_put_returns_what_stat_reports(store):
    model_id = new_id()
    returned = store.put(model_id, payload(5000))
    stat = store.stat(model_id)
    assert (returned.model_id, returned.size, returned.sha256) == (stat.model_id, stat.size, stat.sha256)


def test_stat_raises_model_not_found_for_a_missing_model(store):
    with pytest.raises(ModelNotFoundError):
        store.stat(new_id())


def test_stat_raises_model_not_found_while_the_only_write_is_uncommitted(store):
    model_id = new_id()
    store.get_ptr(model_id).write(b"weights")
    with pytest.raises(ModelNotFoundError):
        store.stat(model_id)


# -- FEDn's combiner ----------------------------------------------------------------


FEDN_MODEL_SIZE = 5 * MiB + 7


def fedn_upload(store, model_id: str, data: bytes, between_chunks=lambda: None) -> None:
    """What FEDn's combiner does with each model a client streams to it, call for call."""
    for chunk in chunks(data, MiB):
        store.get_ptr(model_id).write(chunk)
        store.set_model_metadata(model_id, IN_PROGRESS)
        between_chunks()
    store.set_model_metadata(model_id, OK)
    store.get_ptr(model_id).flush()
    store.get_ptr(model_id).close()


def test_fedn_upload_pattern(store):
    model_id = new_id()
    data = payload(FEDN_MODEL_SIZE)
    fedn_upload(store, model_id, data)
    assert store.get_model_metadata(model_id) == OK
    assert_metadata(store, model_id, OK)
    with store.get(model_id) as f:
        assert f.read() == data
    assert store.stat(model_id).sha256 == sha256(data)


def test_fedn_upload_is_visible_to_another_instance(store, reopen):
    model_id = new_id()
    data = payload(FEDN_MODEL_SIZE)
    fedn_upload(store, model_id, data)
    other = reopen()
    assert_metadata(other, model_id, OK)
    assert read(other, model_id) == data


PREVIOUS = [pytest.param(None, id="new-id"), pytest.param(payload(CHUNK_SIZE + 3, seed=9), id="replacement")]


@pytest.mark.parametrize("previous", PREVIOUS)
def test_a_reader_in_the_same_thread_never_sees_part_of_an_upload(store, previous):
    model_id = new_id()
    if previous is not None:
        store.put(model_id, previous, {"round": 1})
    data = payload(FEDN_MODEL_SIZE)
    observed = []

    def look() -> None:
        observed.append((store.exist(model_id), read(store, model_id), store.list()))

    fedn_upload(store, model_id, data, between_chunks=look)
    expected = (previous is not None, previous, [model_id] if previous is not None else [])
    assert observed == [expected] * len(chunks(data, MiB))
    assert read(store, model_id) == data


@pytest.mark.parametrize("previous", PREVIOUS)
def test_a_reader_thread_never_sees_part_of_an_upload(store, previous):
    model_id = new_id()
    if previous is not None:
        store.put(model_id, previous)
    data = payload(FEDN_MODEL_SIZE)
    requests: queue.Queue[bool] = queue.Queue()
    seen: queue.Queue[object] = queue.Queue()

    def reader() -> None:
        while requests.get():
            try:
                seen.put(read(store, model_id))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                seen.put(exc)

    def look_from_the_reader_thread() -> None:
        requests.put(True)
        assert seen.get(timeout=30) == previous

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        fedn_upload(store, model_id, data, between_chunks=look_from_the_reader_thread)
        requests.put(True)
        assert seen.get(timeout=30) == data
    finally:
        requests.put(False)
        thread.join(30)


@pytest.mark.parametrize("previous", PREVIOUS)
def test_another_instance_sees_the_old_model_during_an_upload(store, reopen, previous):
    model_id = new_id()
    if previous is not None:
        store.put(model_id, previous, {"round": 1})
    other = reopen()
    observed = []

    def look() -> None:
        observed.append((other.exist(model_id), read(other, model_id)))
        if previous is not None:
            assert_metadata(other, model_id, {"round": 1})
        else:
            with pytest.raises(ModelNotFoundError):
                other.get_model_metadata(model_id)

    data = payload(FEDN_MODEL_SIZE)
    fedn_upload(store, model_id, data, between_chunks=look)
    assert observed == [(previous is not None, previous)] * len(chunks(data, MiB))
    assert read(other, model_id) == data


def test_readers_racing_replacements_see_whole_versions(store):
    model_id = new_id()
    versions = [payload(CHUNK_SIZE + 1000 * n, seed=n) for n in range(4)]
    store.put(model_id, versions[0])
    stop = threading.Event()
    torn: list[int] = []
    failed: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        # The pause lets the writer run: against an in-process server (moto's mock_aws) a reader
        # that never sleeps holds the interpreter lock for most of every second.
        while not stop.wait(0.001):
            try:
                got = read(store, model_id)
            except Exception as exc:  # noqa: BLE001 - recorded, and asserted on below
                if not _raised_inside_moto(exc):
                    failed.append(exc)
                continue
            reads[0] += 1
            if got not in versions:
                torn.append(len(got) if got is not None else -1)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for round_ in range(12):
            with store.get_ptr(model_id) as writer:
                for piece in chunks(versions[round_ % 4], 100_000):
                    writer.write(piece)
    finally:
        stop.set()
        thread.join(30)
    assert reads[0] > 0
    assert torn == []
    assert failed == []


def _raised_inside_moto(exc: BaseException) -> bool:
    """In ``mock_aws`` the server runs in the reader's thread, and moto closes a replaced object's
    buffer while a GET of it may still read it ("I/O operation on closed file"): moto's race, which
    a server over the network answers as a 500 that the store retries."""
    if not (isinstance(exc, ValueError) and "closed file" in str(exc)):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}moto{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def test_closing_the_store_aborts_open_writes_and_keeps_committed_models(store, reopen):
    committed, pending = new_id(), new_id()
    store.put(committed, b"weights", OK)
    writer = store.get_ptr(pending)
    writer.write(b"half")
    store.close()
    with pytest.raises(ValueError):
        writer.write(b"more")
    other = reopen()
    assert other.list() == [committed]
    assert_metadata(other, committed, OK)


# -- model ids --------------------------------------------------------------------


BAD_IDS = [
    pytest.param("../x", id="parent-traversal"),
    pytest.param("/etc/passwd", id="absolute-path"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("..", id="dot-dot"),
    pytest.param(".", id="dot"),
    pytest.param("", id="empty"),
    pytest.param("a" * 201, id="201-characters"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("modèle", id="non-ascii"),
    pytest.param("a b", id="space"),
    pytest.param("model\n", id="trailing-newline"),
    pytest.param("x?y", id="query-character"),
    pytest.param(None, id="None"),
    pytest.param(5, id="int"),
    pytest.param(b"model", id="bytes"),
]

ID_METHODS = {
    "exist": lambda store, model_id: store.exist(model_id),
    "get": lambda store, model_id: store.get(model_id),
    "get-verify": lambda store, model_id: store.get(model_id, verify=True),
    "get_ptr": lambda store, model_id: store.get_ptr(model_id),
    "get_model_metadata": lambda store, model_id: store.get_model_metadata(model_id),
    "set_model_metadata": lambda store, model_id: store.set_model_metadata(model_id, OK),
    "delete": lambda store, model_id: store.delete(model_id),
    "put": lambda store, model_id: store.put(model_id, b"weights", {"round": 1}),
    "put-no-overwrite": lambda store, model_id: store.put(model_id, b"weights", overwrite=False),
    "open": lambda store, model_id: store.open(model_id),
    "open-verify": lambda store, model_id: store.open(model_id, verify=True),
    "stat": lambda store, model_id: store.stat(model_id),
}

# What ModelStorage asks of a backend; none of it may run for an invalid id.
PRIMITIVES = (
    "_stat",
    "_exists",
    "_read",
    "_open_reader",
    "_open_sink",
    "_read_metadata",
    "_write_metadata",
    "_delete",
    "_list_ids",
)


@pytest.mark.parametrize("method", ID_METHODS.values(), ids=ID_METHODS.keys())
def test_an_invalid_id_is_refused_before_any_io(store, footprint, monkeypatch, method):
    # Every bad id in one test per method: one store set-up serves them all,
    # which keeps the object-store tiers fast.
    store.put("existing", b"weights", OK)
    before = footprint()
    touched: list[str] = []
    for name in PRIMITIVES:
        original = getattr(store, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            touched.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(store, name, spy)

    for bad_id in BAD_IDS:
        with pytest.raises(InvalidModelIdError) as raised:
            method(store, bad_id.values[0])
        assert isinstance(raised.value, ValueError), bad_id.id
        assert touched == [], bad_id.id
    monkeypatch.undo()
    assert footprint() == before
    assert store.list() == ["existing"]
    assert read(store, "existing") == b"weights"


GOOD_IDS = [
    pytest.param("a" * 200, id="200-characters"),
    pytest.param("a.b-c_D9", id="every-character-class"),
    pytest.param("_leading-underscore", id="leading-underscore"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param("7", id="one-character"),
    pytest.param("model.", id="trailing-dot"),
    pytest.param("a..b", id="inner-dots"),
    pytest.param(str(uuid.UUID(int=1)), id="uuid"),
]


@pytest.mark.parametrize("model_id", GOOD_IDS)
def test_a_valid_id_works_with_every_method(store, model_id):
    store.put(model_id, b"version 1", {"round": 1}, overwrite=False)
    assert store.exist(model_id) is True
    assert store.list() == [model_id]
    assert read(store, model_id) == b"version 1"
    with store.open(model_id, verify=True) as reader:
        assert reader.read() == b"version 1"
    assert store.stat(model_id).size == len(b"version 1")
    assert store.set_model_metadata(model_id, OK) is True
    assert_metadata(store, model_id, OK)
    with store.get_ptr(model_id) as writer:
        writer.write(b"version 2")
    assert read(store, model_id) == b"version 2"
    assert store.delete(model_id) is True
    assert store.list() == []


def _wait_or_kill(pid: int, seconds: float) -> int | None:
    """The child's exit code, or None if it was still running after ``seconds`` (then it is killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _in_forked_child(store, data: bytes) -> int:
    """What a forked child does: store and read back a model of several parts, then close the store."""
    try:
        store.put("child", data)
        intact = store.get("child", verify=True).getvalue() == data
        gc.collect()  # finalizes the child's copy of the parent's writer
        store.close()  # aborts open writes: the child's own, never the parent's
        return 0 if intact else 2
    except BaseException:  # noqa: BLE001 - the exit code is all a forked child can report
        return 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_can_use_the_store_and_leaves_the_parents_open_write_alone(store):
    """Thread pools, locks and pooled connections do not survive fork as they are; the store renews them."""
    part = getattr(store, "part_size", 4 * MiB)
    data = os.urandom(2 * part + 1)  # parts on an object store, hashing threads everywhere
    store.put("before", data)  # the parent's threads and connections now exist
    writer = store.get_ptr("parent")
    writer.write(data[: part + 1])  # a write in flight (a multipart upload on an object store)
    store.set_model_metadata("parent", {"round": 1})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which reports by its exit code
        writer = None
        os._exit(_in_forked_child(store, data))
    assert _wait_or_kill(pid, 60) == 0
    writer.write(data[part + 1 :])
    writer.close()
    assert store.get("parent", verify=True).getvalue() == data
    assert store.get_model_metadata("parent") == {"round": 1}
    assert store.get("before").getvalue() == data  # the parent's own connections still work
