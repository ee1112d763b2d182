"""Peak-memory checks, each run in a fresh child process so nothing else inflates it.

The parent runs ``python -m benchmarks.memprobe`` with a JSON job on stdin
(credentials never go on a command line) and reads one JSON result line.

- ``stream``: a model written through ``get_ptr`` in 1 MiB chunks, as FEDn's
  combiner receives it, then read back through ``open()`` into one reused
  1 MiB buffer; peak RSS growth over the RSS just before each phase.
- ``memory``: MemoryModelStorage.put and .get of one model under tracemalloc,
  whose peak counts every byte Python allocated, so one copy of the model
  shows up as a peak of one model size.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc

from benchmarks.endpoint import Target
from benchmarks.measure import MiB, peak_rss, report_to_parent, reset_peak, rss, run_child


def _phase(fn) -> dict:
    gc.collect()
    before = rss()
    reset_peak()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_growth": peak_rss() - before, "result": result}


def stream(job: dict) -> dict:
    from benchmarks.candidates import adapter_store

    size, model_id = job["size"], "memprobe"
    chunk = bytearray(os.urandom(MiB))
    with adapter_store(Target.from_dict(job["target"]), job["sdk"], "sidecar", job.get("tuning")) as store:

        def write():
            writer = store.get_ptr(model_id)
            for i in range(size // MiB):
                chunk[:8] = i.to_bytes(8, "big")  # every chunk distinct; the writer must not keep the buffer
                writer.write(chunk)
            store.set_model_metadata(model_id, 0)
            writer.close()

        def read():
            total, buffer = 0, bytearray(MiB)
            with store.open(model_id) as f:
                while n := f.readinto(buffer):
                    total += n
            return total

        written = _phase(write)
        read_back = _phase(read)
        store.delete(model_id)
    if read_back["result"] != size:
        raise AssertionError(f"read {read_back['result']} bytes of {size}")
    return {"write": written, "read": read_back, "baseline_rss": rss()}


def memory(job: dict) -> dict:
    from storage import MemoryModelStorage

    size = job["size"]
    store = MemoryModelStorage()
    data = os.urandom(size)
    tracemalloc.start()
    result = {}
    for op, call in (("put", lambda: store.put("m", data)), ("get", lambda: store.get("m"))):
        gc.collect()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        held = call()
        result[op] = tracemalloc.get_traced_memory()[1] - base
        del held
    tracemalloc.stop()
    return result


def run(job: dict) -> dict:
    """Run ``job`` in a child process and return its result."""
    return run_child("benchmarks.memprobe", job)


def main() -> None:
    job = json.loads(sys.stdin.read())
    report_to_parent({"stream": stream, "memory": memory}[job["kind"]](job))


if __name__ == "__main__":
    main()
