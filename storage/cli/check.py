"""The probe behind ``modelstorage check``: which step of using a store fails, if any.

The steps depend on what the store is: an object store has an endpoint,
credentials and a bucket; a folder (``file://``) has none of those, only a
folder that must be writable; ``memory://`` has nothing before the probe; any
other backend (a third party's) is first asked whether it answers. Then every
store writes, reads back and deletes a probe model. Each step has an exit code
(``STEP_EXIT_CODES``); ``run_check`` goes through the store's steps and reports
each to a callback, so it runs the same under the command (which prints the
report) and in tests (which inject failures).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from storage import (
    BucketNotFoundError,
    MemoryModelStorage,
    ModelStorage,
    StorageError,
    StoragePermissionError,
    TempModelStorage,
)
from storage.cli.exits import EXIT_OK
from storage.cli.render import human_size
from storage.cli.stores import underlying_store

ENDPOINT = "endpoint reachable"
CREDENTIALS = "credentials accepted"
BUCKET = "bucket present"
FOLDER = "folder writable"
REACHABLE = "store reachable"
WRITE, READ, DELETE = "write", "read", "delete"

STEP_EXIT_CODES = {
    ENDPOINT: 10,
    REACHABLE: 10,
    CREDENTIALS: 11,
    BUCKET: 12,
    FOLDER: 12,
    WRITE: 13,
    READ: 14,
    DELETE: 15,
}
"""The exit code of each step, when it is the first that failed."""

OBJECT_STORE_STEPS = (ENDPOINT, CREDENTIALS, BUCKET, WRITE, READ, DELETE)
FOLDER_STEPS = (FOLDER, WRITE, READ, DELETE)
MEMORY_STEPS = (WRITE, READ, DELETE)
OTHER_STEPS = (REACHABLE, WRITE, READ, DELETE)

CHECK_PROBE_BYTES = 64 * 1024
UPLOAD_RULE_STEP = "upload cleanup rule"
"""A note after the steps, on object stores: never a failure."""

CHECK_EPILOG = f"""\
steps, by store:
  s3://, minio://    {", ".join(OBJECT_STORE_STEPS[:3])},
                     {", ".join(OBJECT_STORE_STEPS[3:])}; then a note on the bucket's
                     rule for incomplete multipart uploads
  file://            {", ".join(FOLDER_STEPS)}
  memory://          {", ".join(MEMORY_STEPS)}
  another backend    {", ".join(OTHER_STEPS)}

exit codes:
  0   every step passed
  10  endpoint reachable (or: store reachable) FAILED
  11  credentials accepted FAILED
  12  bucket present (or: folder writable) FAILED
  13  write FAILED
  14  read FAILED
  15  delete FAILED"""

Report = Callable[[str, "bool | None", float, str], None]
"""(step, ok, seconds, detail); ok None is a note, not a step."""


def check_steps(store: ModelStorage) -> tuple[str, ...]:
    """The steps that apply to ``store`` (to the store under it, if it wraps one), in order."""
    store = underlying_store(store)
    if isinstance(getattr(store, "bucket", None), str):  # the object-store adapters, or a plugin's like them
        return OBJECT_STORE_STEPS
    if isinstance(store, TempModelStorage):
        return FOLDER_STEPS
    if isinstance(store, MemoryModelStorage):
        return MEMORY_STEPS
    return OTHER_STEPS


def _failed_object_store_step(exc: BaseException) -> str:
    """Which of an object store's first three steps a failed first request tells against."""
    if isinstance(exc, (StoragePermissionError, PermissionError)):
        return CREDENTIALS
    if isinstance(exc, BucketNotFoundError):
        return BUCKET
    return ENDPOINT  # unreachable, or answering something that is not a store


def _check_folder(store: TempModelStorage) -> str:
    folder = store.directory
    if not folder.is_dir():
        raise StorageError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoragePermissionError(f"no permission to create files in {folder}")
    return str(folder)


def _first_steps(store: ModelStorage, steps: tuple[str, ...], probe_id: str, report: Report) -> str | None:
    """Run the steps before the probe; the name of the one that failed, or None."""
    started = time.perf_counter()
    first = steps[0]
    try:
        if first == FOLDER:
            detail = _check_folder(underlying_store(store))  # type: ignore[arg-type]
        elif first in (ENDPOINT, REACHABLE):
            store.exist(probe_id)  # one request proves the endpoint, credentials and bucket at once
            detail = ""
        else:
            return None  # memory: nothing to reach
    except (StorageError, OSError) as exc:
        failed = _failed_object_store_step(exc) if first == ENDPOINT else first
        for name in steps[: steps.index(failed)]:
            report(name, True, 0.0, "")
        report(failed, False, time.perf_counter() - started, str(exc))
        return failed
    elapsed = time.perf_counter() - started
    for name in steps[: steps.index(WRITE)]:
        report(name, True, elapsed, detail)
        elapsed, detail = 0.0, ""  # one request answered for all of them: its time is shown once
    return None


def _report_upload_backstop(store: ModelStorage, report: Report) -> None:
    backstop = getattr(underlying_store(store), "upload_backstop", None)  # object stores only
    if backstop is None:
        return
    started = time.perf_counter()
    ok: bool | None = None
    try:
        days = backstop()
    except StorageError as exc:
        detail = f"the bucket's lifecycle rules could not be read ({exc})"
    else:
        ok = days is not None
        detail = (
            f"the bucket's lifecycle aborts incomplete uploads after {days} day(s)"
            if ok
            else "no lifecycle rule aborts incomplete uploads: what a killed process leaves stays; "
            "add one (AbortIncompleteMultipartUpload, see the README)"
        )
    report(UPLOAD_RULE_STEP, ok or None, time.perf_counter() - started, detail)


def run_check(store: ModelStorage, report: Report) -> int:
    """Probe ``store`` step by step, reporting each; the exit code of the first failure, or 0.

    An object store's first request (a HEAD of a model that does not exist)
    proves its endpoint answers, the credentials are accepted and the bucket is
    there (a 404 is followed by a bucket check). Then a model is written, read
    back and deleted. An object store's lifecycle rule for incomplete uploads
    is reported as a note (``ok`` None), never as a failure.
    """
    probe_id = f"modelstorage-check-{os.urandom(6).hex()}"
    payload = os.urandom(CHECK_PROBE_BYTES)
    metadata = {"probe": True}
    steps = check_steps(store)
    failed = _first_steps(store, steps, probe_id, report)
    if failed is not None:
        return STEP_EXIT_CODES[failed]

    def step(name: str, action: Callable[[], str]) -> bool:
        started = time.perf_counter()
        try:
            detail, ok = action(), True
        except (StorageError, OSError) as exc:
            detail, ok = str(exc), False
        report(name, ok, time.perf_counter() - started, detail)
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

    if not step(WRITE, write):
        return STEP_EXIT_CODES[WRITE]
    read_ok = step(READ, read)
    deleted = step(DELETE, delete)  # clean up even when the read failed
    _report_upload_backstop(store, report)
    if not read_ok:
        return STEP_EXIT_CODES[READ]
    return EXIT_OK if deleted else STEP_EXIT_CODES[DELETE]
