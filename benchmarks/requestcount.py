"""HTTP requests per ModelStorage operation, counted rather than timed (``benchmarks.wire``)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from benchmarks.candidates import BOTO3, MINIO, adapter_store
from benchmarks.endpoint import Target
from benchmarks.measure import KiB, MiB
from benchmarks.wire import counting
from storage import ModelStorage

DELETE_BATCH = 1000  # S3's DeleteObjects and ListObjectsV2 page size


@dataclass(frozen=True)
class RequestCount:
    store: str
    operation: str
    requests: int
    breakdown: str
    expected: int | None
    """The most requests the operation should need; None where no bound is set."""


def _measure(name: str, operation: str, expected: int | None, action: Callable[[], object]) -> RequestCount:
    with counting() as traffic:
        action()
    breakdown = ", ".join(f"{op} {n}" for op, n in sorted(traffic.requests.items()))
    return RequestCount(name, operation, traffic.total, breakdown, expected)


def _plant(target: Target, store: ModelStorage, n: int, sidecar: bool) -> None:
    """``n`` models (and sidecars) written straight through the MinIO SDK, which costs the
    client less CPU per request than boto3; how they got there is not what is counted."""
    minio = target.endpoint.minio_client()
    keys = store.keys  # type: ignore[attr-defined]
    names = [keys.model_key(f"m-{i:05d}") for i in range(n)]
    if sidecar:
        names += [keys.metadata_key(f"m-{i:05d}") for i in range(n)]

    def put(key: str) -> None:
        minio.put_object(target.bucket, key, io.BytesIO(b"{}"), 2)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, names))


def expected_delete_all(n: int, sidecar: bool) -> int:
    """Listings and batch deletes: one of each per 1000 keys under each prefix, plus the
    listing that finds an empty page (an exact multiple of 1000, or no sidecars at all); then
    one listing of the (here empty) direct-upload area, and one of the multipart uploads under
    way to each of the model and direct-upload areas."""
    pages = math.ceil(n / DELETE_BATCH)
    per_prefix = 2 * pages + (1 if n % DELETE_BATCH == 0 else 0)
    return (2 * per_prefix if sidecar else per_prefix + 1) + 3


def count_requests(target: Target, delete_all_n: int, log=print) -> list[RequestCount]:
    rows: list[RequestCount] = []
    small, chunk = os.urandom(64 * KiB), os.urandom(MiB)
    for sdk, label in ((BOTO3, "S3ModelStorage"), (MINIO, "MinioModelStorage")):
        for mode in ("sidecar", "tags"):
            sidecar = mode == "sidecar"
            name = f"{label}[{mode}]"
            log(f"  requests: {name}")
            with adapter_store(target, sdk, mode) as store:
                store.exist("absent")  # the one-time bucket check a first 404 triggers is not counted below

                def upload(store=store):
                    writer = store.get_ptr("streamed")
                    for _ in range(40):  # 40 MiB: three 16 MiB parts, the last one short
                        writer.write(chunk)
                        store.set_model_metadata("streamed", 1)
                    store.set_model_metadata("streamed", 0)
                    writer.close()

                rows += [
                    _measure(
                        name,
                        "put 64 KiB with metadata",
                        2 if sidecar else 1,
                        lambda s=store: s.put("m", small, {"status": 0}),
                    ),
                    _measure(name, "get 64 KiB", 1, lambda s=store: s.get("m")),
                    _measure(name, "exist", 1, lambda s=store: s.exist("m")),
                    _measure(name, "get_model_metadata", None, lambda s=store: s.get_model_metadata("m")),
                    _measure(name, "set_model_metadata", None, lambda s=store: s.set_model_metadata("m", 2)),
                    _measure(name, "stat", None, lambda s=store: s.stat("m")),
                    _measure(name, "get_ptr: 40 x 1 MiB, status per chunk, close", None, upload),
                    _measure(name, "open + read 40 MiB", None, lambda s=store: s.open("streamed").read()),
                    _measure(name, "delete", 2, lambda s=store: s.delete("m")),
                    _measure(name, "delete (absent)", 2, lambda s=store: s.delete("m")),
                ]
                store.delete_all()
                _plant(target, store, delete_all_n, sidecar)
                rows.append(
                    _measure(
                        name,
                        f"delete_all of {delete_all_n} models",
                        expected_delete_all(delete_all_n, sidecar),
                        store.delete_all,
                    )
                )
                if store.list():
                    raise AssertionError(f"{name}: delete_all left models behind")
    return rows
