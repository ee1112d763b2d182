"""The probe behind ``modelstorage check``: which step of using a store fails, if any.

The steps and their exit codes are in CHECK_STEPS; ``run_check`` goes
through them and reports each to a callback, so it runs the same under the
command (which prints the report) and in tests (which inject failures).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from storage import BucketNotFoundError, ModelStorage, StorageError, StoragePermissionError
from storage.cli.exits import EXIT_OK
from storage.cli.render import human_size

# In this order; the command's exit code names the first that failed.
CHECK_STEPS = (
    ("endpoint reachable", 10),
    ("credentials accepted", 11),
    ("bucket present", 12),
    ("write", 13),
    ("read", 14),
    ("delete", 15),
)
CHECK_PROBE_BYTES = 64 * 1024

CHECK_EPILOG = "exit codes:\n  0   every step passed\n" + "\n".join(
    f"  {code}  {step} FAILED" for step, code in CHECK_STEPS
)


def _failed_probe_step(exc: BaseException) -> int:
    """Which of the first three steps a failed first request tells against."""
    if isinstance(exc, (StoragePermissionError, PermissionError)):
        return 1
    if isinstance(exc, BucketNotFoundError):
        return 2
    return 0  # unreachable, or answering something that is not a store


def run_check(store: ModelStorage, report: Callable[[str, bool, float, str], None]) -> int:
    """Probe ``store`` step by step, reporting each; the exit code of the first failure, or 0.

    One HEAD of a model that does not exist proves the endpoint answers, the
    credentials are accepted and the bucket is there (a 404 is followed by a
    bucket check); then a model is written, read back and deleted.
    """
    probe_id = f"modelstorage-check-{os.urandom(6).hex()}"
    payload = os.urandom(CHECK_PROBE_BYTES)
    metadata = {"probe": True}
    names = [name for name, _ in CHECK_STEPS]

    started = time.perf_counter()
    try:
        store.exist(probe_id)
    except (StorageError, OSError) as exc:
        failed = _failed_probe_step(exc)
        for index in range(failed):
            report(names[index], True, 0.0, "")
        report(names[failed], False, time.perf_counter() - started, str(exc))
        return CHECK_STEPS[failed][1]
    elapsed = time.perf_counter() - started
    for name in names[:3]:
        report(name, True, elapsed, "")

    def step(index: int, action: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail, ok = action(), True
        except (StorageError, OSError) as exc:
            detail, ok = str(exc), False
        report(names[index], ok, time.perf_counter() - started, detail)
        return ok

    def write() -> str:
        store.put(probe_id, payload, metadata, overwrite=False)
        return f"{human_size(len(payload))} as {probe_id}"

    def read() -> str:
        found = store.get(probe_id, verify=True)
        if found is None or found.getvalue() != payload:
            raise StorageError("the model read back differs from what was written")
        if store.get_model_metadata(probe_id) != metadata:
            raise StorageError("the metadata read back differs from what was written")
        return "bytes, SHA-256 and metadata as written"

    def delete() -> str:
        if not store.delete(probe_id) or store.exist(probe_id):
            raise StorageError("the model is still there after delete")
        return ""

    if not step(3, write):
        return CHECK_STEPS[3][1]
    read_ok = step(4, read)
    deleted = step(5, delete)  # clean up even when the read failed
    if not read_ok:
        return CHECK_STEPS[4][1]
    return EXIT_OK if deleted else CHECK_STEPS[5][1]
