"""Random sequences of operations on a backend, checked against a plain dict."""

from __future__ import annotations

import contextlib
import hashlib
import json
import string

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from storage import ModelExistsError, ModelNotFoundError, ModelStorage

# Few ids, so operations keep colliding on the same models.
model_ids = st.sampled_from(["m1", "m2", "model.v2", "x-9_Z"])
model_bytes = st.binary(max_size=300)
# Flat and tag-safe, so every backend and metadata mode can hold them.
metadata_values = st.one_of(
    st.sampled_from([0, 1, 3]),  # FEDn's OK, IN_PROGRESS, FAILED
    st.dictionaries(
        st.sampled_from(["round", "status", "loss"]),
        st.one_of(st.integers(-1000, 1000), st.booleans(), st.text(string.ascii_letters + string.digits, max_size=8)),
        max_size=3,
    ),
)

SETTINGS = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Every step of an object-store run is several HTTP requests; fewer, shorter
# runs keep the ten object-store backends within the CI budget.
OBJECTSTORE_SETTINGS = settings(SETTINGS, max_examples=8, stateful_step_count=25)


def as_json(value) -> str:
    return json.dumps(value, sort_keys=True)


class Interrupted(Exception):
    """Stands for a client dropping out in the middle of a stream."""


class OpenWrite:
    def __init__(self, writer) -> None:
        self.writer = writer
        self.data = bytearray()
        self.metadata = {}


class StoreMachine(RuleBasedStateMachine):
    """``self.models`` is the reference: id -> (bytes, metadata) of committed models."""

    def __init__(self, spec, request) -> None:
        super().__init__()
        self.spec = spec
        self.stack = contextlib.ExitStack()
        self.store: ModelStorage = self.stack.enter_context(spec.factory(request))
        self.models: dict[str, tuple[bytes, object]] = {}
        self.writes: dict[str, OpenWrite] = {}
        self.discarded: list = []

    def teardown(self) -> None:
        self.stack.close()

    @rule(model_id=model_ids, data=model_bytes, metadata=st.none() | metadata_values, overwrite=st.booleans())
    def put(self, model_id, data, metadata, overwrite):
        if not overwrite and model_id in self.models:
            with pytest.raises(ModelExistsError):
                self.store.put(model_id, data, metadata, overwrite=False)
            return
        stat = self.store.put(model_id, data, metadata, overwrite=overwrite)
        assert (stat.size, stat.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        self.models[model_id] = (data, {} if metadata is None else metadata)

    @rule(model_id=model_ids)
    def get(self, model_id):
        buffer = self.store.get(model_id)
        if model_id in self.models:
            assert buffer is not None
            assert buffer.read() == self.models[model_id][0]
        else:
            assert buffer is None

    @rule(model_id=model_ids)
    def exist(self, model_id):
        assert self.store.exist(model_id) is (model_id in self.models)

    @rule(model_id=model_ids)
    def stat(self, model_id):
        if model_id not in self.models:
            with pytest.raises(ModelNotFoundError):
                self.store.stat(model_id)
            return
        data = self.models[model_id][0]
        stat = self.store.stat(model_id)
        assert (stat.size, stat.sha256) == (len(data), hashlib.sha256(data).hexdigest())

    @rule(model_id=model_ids)
    def delete(self, model_id):
        expected = model_id in self.models or model_id in self.writes
        assert self.store.delete(model_id) is expected
        self.models.pop(model_id, None)
        if model_id in self.writes:
            self.discarded.append(self.writes.pop(model_id).writer)

    @rule()
    def delete_all(self):
        assert self.store.delete_all() is True
        self.models.clear()
        self.discarded.extend(write.writer for write in self.writes.values())
        self.writes.clear()

    @rule(model_id=model_ids, metadata=metadata_values)
    def set_metadata(self, model_id, metadata):
        if model_id in self.writes:
            assert self.store.set_model_metadata(model_id, metadata) is True
            self.writes[model_id].metadata = metadata
        elif model_id in self.models:
            assert self.store.set_model_metadata(model_id, metadata) is True
            self.models[model_id] = (self.models[model_id][0], metadata)
        else:
            with pytest.raises(ModelNotFoundError):
                self.store.set_model_metadata(model_id, metadata)

    @rule(model_id=model_ids)
    def get_metadata(self, model_id):
        if model_id in self.writes:
            expected = self.writes[model_id].metadata
        elif model_id in self.models:
            expected = self.models[model_id][1]
        else:
            with pytest.raises(ModelNotFoundError):
                self.store.get_model_metadata(model_id)
            return
        assert as_json(self.store.get_model_metadata(model_id)) == as_json(expected)

    @rule(model_id=model_ids, data=model_bytes)
    def write_chunk(self, model_id, data):
        writer = self.store.get_ptr(model_id)
        if model_id in self.writes:
            assert writer is self.writes[model_id].writer
        else:
            assert all(writer is not gone for gone in self.discarded)
            self.writes[model_id] = OpenWrite(writer)
        writer.write(data)
        self.writes[model_id].data += data

    @precondition(lambda self: self.writes)
    @rule(choice=st.data())
    def commit(self, choice):
        model_id = choice.draw(st.sampled_from(sorted(self.writes)))
        write = self.writes.pop(model_id)
        self.store.get_ptr(model_id).close()
        self.models[model_id] = (bytes(write.data), write.metadata)
        self.discarded.append(write.writer)

    @precondition(lambda self: self.writes)
    @rule(choice=st.data(), by_exception=st.booleans())
    def abort(self, choice, by_exception):
        model_id = choice.draw(st.sampled_from(sorted(self.writes)))
        write = self.writes.pop(model_id)
        if by_exception:
            with pytest.raises(Interrupted), write.writer:
                raise Interrupted
        else:
            write.writer.abort()
        self.discarded.append(write.writer)

    @precondition(lambda self: self.discarded)
    @rule(choice=st.data(), data=st.binary(min_size=1, max_size=10))
    def write_to_a_finished_writer(self, choice, data):
        writer = choice.draw(st.sampled_from(self.discarded))
        with pytest.raises(ValueError):
            writer.write(data)

    @precondition(lambda self: self.spec.reopen is not None and not self.writes)
    @rule()
    def restart(self):
        replacement = self.spec.reopen(self.store)
        self.stack.callback(replacement.close)
        self.store = replacement

    @invariant()
    def list_is_the_committed_ids(self):
        assert self.store.list() == sorted(self.models)


def test_backend_behaves_like_a_dict(store_spec, request):
    remote = any(mark.name == "objectstore" or mark.name.startswith("tier") for mark in store_spec.marks)
    run_state_machine_as_test(
        lambda: StoreMachine(store_spec, request), settings=OBJECTSTORE_SETTINGS if remote else SETTINGS
    )
