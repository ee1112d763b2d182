"""One store, one sample, in a child process of its own: FEDn's protocol on a store, timed and counted.

The parent (``benchmarks.scenarios``) runs ``python -m benchmarks.storeprobe``
with a JSON job on stdin and reads one result line back. FEDn's own
``TempModelStorage`` runs in an interpreter that has fedn installed
(``fednprotocol.find_fedn``), every other store in this one; each store runs
in a fresh child the same way, so FEDn's store and this project's meet on
equal terms. The parent interleaves the stores and repeats.

Jobs (every model under a new id, as a combiner stores each under a uuid):

- ``calls``: per model size, FEDn's upload protocol (``get_ptr`` in 1 MiB
  chunks, a status per chunk), then ``get``: seconds and CPU per call.
- ``round``: a FEDn round. N clients upload their updates at once; the
  combiner reads each update and deletes it, then writes the aggregate; the N
  clients download the aggregate at once. The aggregation's arithmetic is left
  out (it costs the same on every store): the aggregate is a model of the
  same size.
- ``fanout``: N clients download one model at once (written beforehand,
  neither timed nor counted).

Every phase reports wall seconds, the CPU seconds of this process and of the
local server, and the requests and bytes that went to the object store.

Standard library at import time; modelstorage, the SDKs and FEDn are
imported only for the store that needs them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.fednprotocol import chunks_of, download, read_update, same_bytes, upload
from benchmarks.measure import MiB, repeated, report_to_parent, timed
from benchmarks.wire import not_counting

FEDN, TEMP, ADAPTER = "fedn", "temp", "adapter"
"""Store kinds: FEDn's TempModelStorage, this project's, an object-store adapter (optionally cached)."""


@contextlib.contextmanager
def opened(spec: dict) -> Iterator[tuple[Any, Callable]]:
    """(the store ``spec`` names, the context manager that counts its requests); its files go at the end."""
    scratch = tempfile.mkdtemp(prefix="bench-probe-")
    store = None
    try:
        if spec["kind"] == FEDN:
            os.environ["FEDN_MODEL_DIR"] = scratch  # read by FEDn's constructor, which keeps no other setting
            from fedn.network.storage.models.tempmodelstorage import TempModelStorage as FednTempModelStorage

            logging.getLogger("fedn").setLevel(logging.WARNING)  # an INFO line per delete would cost time
            store, count = FednTempModelStorage(), not_counting
        elif spec["kind"] == TEMP:
            from storage import TempModelStorage

            store, count = TempModelStorage(scratch), not_counting
        else:
            from benchmarks.candidates import adapter_store
            from benchmarks.endpoint import Target
            from benchmarks.wire import counting

            store = adapter_store(Target.from_dict(spec["target"]), spec["sdk"], spec["metadata"], spec.get("tuning"))
            if spec.get("cache"):
                from storage import CachedModelStorage

                store = CachedModelStorage(store, os.path.join(scratch, "cache"), spec["cache_max_bytes"])
            count = counting
        yield store, count
    finally:
        if store is not None and hasattr(store, "close"):  # FEDn's store has no close()
            store.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _distinct(base: list[bytes], tag: str) -> list[bytes]:
    """``base`` with a first chunk of its own: every model gets a SHA-256 of its own, as real updates do,
    while the other chunks are shared objects, so N clients' models do not take N times the memory."""
    first = tag.encode().ljust(32, b".")[:32] + base[0][32:]
    return [first] + base[1:]


def _warm_up(store, token: str) -> None:
    """Connections, lazily built clients and thread pools: a long-running combiner has them already."""
    model_id = f"warmup-{token}"
    upload(store, model_id, chunks_of(os.urandom(MiB)))
    download(store, model_id)
    store.delete(model_id)


def _phase(count: Callable, server_pid: int | None, fn: Callable[[], Any]) -> tuple[dict, Any]:
    """(wall and CPU seconds and traffic of ``fn``, its result)."""
    with count() as traffic:
        t = timed(fn, track_memory=False, server_pid=server_pid)
    figures = {"seconds": t.seconds, "client_cpu": t.client_cpu, "server_cpu": t.server_cpu}
    return figures | traffic.as_dict(), t.result


def _at_once(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(0) .. fn(n - 1)`` on n threads, as a gRPC server serves n clients."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, range(n)))


def round_job(job: dict, store, count: Callable) -> dict:
    n, size, pid, token = job["clients"], job["size"], job.get("server_pid"), uuid.uuid4().hex[:8]
    base = chunks_of(os.urandom(size))
    updates = [(f"update-{token}-{k}", _distinct(base, f"update {k}")) for k in range(n)]
    global_id, global_chunks = f"global-{token}", _distinct(base, "global")
    _warm_up(store, token)

    def aggregate() -> list[int]:
        read = [read_update(store, model_id) for model_id, _ in updates]
        upload(store, global_id, global_chunks)
        return read

    phases: dict[str, dict] = {}
    phases["upload"], _ = _phase(count, pid, lambda: _at_once(n, lambda k: upload(store, *updates[k])))
    phases["aggregate"], read = _phase(count, pid, aggregate)
    phases["download"], served = _phase(count, pid, lambda: _at_once(n, lambda _: download(store, global_id)))
    if read != [size] * n or served != [size] * n or not same_bytes(store.get(global_id), global_chunks):
        raise AssertionError(f"round: read {read}, served {served} bytes, expected {size} each")
    store.delete(global_id)
    return {"phases": phases}


def fanout_job(job: dict, store, count: Callable) -> dict:
    n, size, pid, token = job["clients"], job["size"], job.get("server_pid"), uuid.uuid4().hex[:8]
    model_id, chunks = f"fanout-{token}", _distinct(chunks_of(os.urandom(size)), "fanout")
    _warm_up(store, token)
    upload(store, model_id, chunks)
    figures, served = _phase(count, pid, lambda: _at_once(n, lambda _: download(store, model_id)))
    if served != [size] * n or not same_bytes(store.get(model_id), chunks):
        raise AssertionError(f"fanout: served {served} bytes, expected {size} each")
    store.delete(model_id)
    return {"download": figures}


def calls_job(job: dict, store, count: Callable) -> dict:
    token = uuid.uuid4().hex[:8]
    _warm_up(store, token)
    results = []
    for size in job["sizes"]:
        chunks, ids = chunks_of(os.urandom(size)), []

        def put_new(chunks=chunks, ids=ids, size=size) -> None:
            ids.append(f"m-{token}-{size}-{len(ids)}")
            upload(store, ids[-1], chunks)

        put = timed(repeated, put_new, track_memory=False)
        got = timed(repeated, store.get, ids[-1], track_memory=False)
        if not same_bytes(got.result[1], chunks):
            raise AssertionError(f"calls: other bytes came back than went in ({size} bytes)")
        for model_id in ids:  # untimed: keeps the folder (and page cache) from filling up
            store.delete(model_id)
        results.append(
            {
                "size": size,
                "put": {"seconds": put.seconds / put.result[0], "client_cpu": put.client_cpu / put.result[0]},
                "get": {"seconds": got.seconds / got.result[0], "client_cpu": got.client_cpu / got.result[0]},
            }
        )
    return {"sizes": results}


JOBS = {"round": round_job, "fanout": fanout_job, "calls": calls_job}


def main() -> None:
    job = json.loads(sys.stdin.read())
    with opened(job["store"]) as (store, count):
        report_to_parent(JOBS[job["kind"]](job, store, count))


if __name__ == "__main__":
    main()
