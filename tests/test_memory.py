"""What only the in-memory store promises: it instantiates, it is thread-safe, and reads do not copy."""

from __future__ import annotations

import hashlib
import random
import threading
import tracemalloc

from storage import MemoryModelStorage, ModelExistsError, ModelStorage

MiB = 1024 * 1024


def test_memory_store_instantiates_with_no_arguments():
    # FEDn's own MemoryModelStorage cannot: it lacks delete().
    store = MemoryModelStorage()
    assert isinstance(store, ModelStorage)
    assert store.list() == []


def test_get_of_a_missing_id_creates_no_entry():
    store = MemoryModelStorage()
    assert store.get("missing") is None
    assert store.exist("missing") is False
    assert store.list() == []
    assert store.delete("missing") is False


def test_instances_do_not_share_models():
    first, second = MemoryModelStorage(), MemoryModelStorage()
    first.put("model", b"weights")
    assert second.exist("model") is False


THREADS, OPS_PER_THREAD = 8, 100


def _worker(store: MemoryModelStorage, n: int, mine: dict, errors: list) -> None:
    rng = random.Random(n)
    own_ids = [f"t{n}-m{k}" for k in range(4)]
    try:
        for step in range(OPS_PER_THREAD):
            model_id = rng.choice(own_ids)
            op = rng.randrange(7)
            if op == 0:
                data = rng.randbytes(rng.randrange(2000))
                store.put(model_id, data, {"thread": n, "step": step})
                mine[model_id] = (data, {"thread": n, "step": step})
            elif op == 1 and model_id in mine:
                store.set_model_metadata(model_id, step)
                mine[model_id] = (mine[model_id][0], step)
            elif op == 2:
                assert store.delete(model_id) is (mine.pop(model_id, None) is not None)
            elif op == 3:
                with store.get_ptr(model_id) as writer:
                    data = rng.randbytes(300)
                    writer.write(data[:100])
                    store.set_model_metadata(model_id, {"thread": n, "streamed": step})
                    writer.write(data[100:])
                mine[model_id] = (data, {"thread": n, "streamed": step})
            elif op == 4:
                buffer = store.get(model_id)
                assert (None if buffer is None else buffer.read()) == mine.get(model_id, (None,))[0]
            elif op == 5:
                # Every thread also fights over one shared id; only whole puts may ever be seen.
                data = bytes([n]) * 1000
                store.put("shared", data, {"thread": n})
            else:
                listed = store.list()
                assert listed == sorted(listed)
                for own in own_ids:
                    assert (own in listed) is (own in mine)
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_concurrent_mixed_operations_leave_a_consistent_store():
    store = MemoryModelStorage()
    expected: list[dict] = [{} for _ in range(THREADS)]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_worker, args=(store, n, expected[n], errors)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []

    everything = {model_id: entry for mine in expected for model_id, entry in mine.items()}
    assert sorted(set(store.list()) - {"shared"}) == sorted(everything)
    for model_id, (data, metadata) in everything.items():
        assert store.get(model_id).read() == data
        assert store.get_model_metadata(model_id) == metadata
        assert store.stat(model_id).sha256 == hashlib.sha256(data).hexdigest()

    shared = store.get("shared").read()
    winner = store.get_model_metadata("shared")["thread"]
    assert shared == bytes([winner]) * 1000
    assert store.stat("shared").sha256 == hashlib.sha256(shared).hexdigest()


def test_concurrent_creates_of_one_id_have_one_winner():
    store = MemoryModelStorage()
    barrier = threading.Barrier(THREADS)
    outcomes: list[object] = []

    def create(n: int) -> None:
        barrier.wait()
        try:
            store.put("model", bytes([n]) * 100, n, overwrite=False)
            outcomes.append(n)
        except ModelExistsError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(outcomes) == THREADS
    assert len(winners) == 1
    assert store.get("model").read() == bytes([winners[0]]) * 100
    assert store.get_model_metadata("model") == winners[0]


def test_get_shares_the_stored_bytes_instead_of_copying_them():
    store = MemoryModelStorage()
    size = 64 * MiB
    store.put("big", bytes(size))
    tracemalloc.start()
    try:
        buffers = [store.get("big") for _ in range(3)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"three gets of a 64 MiB model allocated {peak / MiB:.1f} MiB"
    for buffer in buffers:
        assert buffer.seek(0, 2) == size


def test_open_shares_the_stored_bytes_too():
    store = MemoryModelStorage()
    store.put("big", bytes(64 * MiB))
    tracemalloc.start()
    try:
        reader = store.open("big")
        first = reader.read(MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == bytes(MiB)
    assert peak < 4 * MiB, f"opening a 64 MiB model allocated {peak / MiB:.1f} MiB"


def test_writing_into_a_shared_buffer_copies_it_and_leaves_the_store_alone():
    store = MemoryModelStorage()
    store.put("model", b"\x00" * 1000)
    buffer = store.get("model")
    buffer.write(b"\xff" * 10)
    assert store.get("model").read() == b"\x00" * 1000
    assert store.stat("model").sha256 == hashlib.sha256(b"\x00" * 1000).hexdigest()
