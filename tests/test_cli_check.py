"""``modelstorage check``: the steps that apply to each kind of store, their exit codes, and failures said once.

End to end as a subprocess on the temp-file store, memory and SeaweedFS; the
step logic in-process too, where failures can be injected.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from cli_support import STORES, assert_one_line_error, clean_env, modelstorage, store_url
from modelstorage_sqlite import SQLiteModelStorage

from storage import (
    BucketNotFoundError,
    CachedModelStorage,
    MemoryModelStorage,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
    TempModelStorage,
)
from storage.cli.check import (
    FOLDER_STEPS,
    MEMORY_STEPS,
    OBJECT_STORE_STEPS,
    OTHER_STEPS,
    STEP_EXIT_CODES,
    check_steps,
    run_check,
)


@pytest.fixture(params=STORES)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return store_url(request, tmp_path, monkeypatch)


# -- the command, end to end -------------------------------------------------------------------


def _check_rows(stdout: bytes) -> list[tuple[str, str]]:
    """(status, step) of each line of check's report after its first."""
    rows = []
    for line in stdout.decode().splitlines()[1:]:
        status, _, rest = line.strip().partition("  ")
        rows.append((status, rest.strip().split("  ")[0].strip()))
    return rows


def test_check_passes_the_steps_of_its_backend_and_leaves_nothing_behind(url: str) -> None:
    result = modelstorage("-u", url, "check")
    assert result.returncode == 0, result.stderr
    rows = _check_rows(result.stdout)
    if url.startswith("file:"):
        # A folder has no endpoint, credentials, bucket or upload rule to speak of.
        assert rows == [("ok", step) for step in FOLDER_STEPS]
    else:
        assert rows[:-1] == [("ok", step) for step in OBJECT_STORE_STEPS]
        assert rows[-1][1] == "upload cleanup rule" and rows[-1][0] in ("note", "ok"), rows
    assert json.loads(modelstorage("-u", url, "ls", "--json").stdout) == []


def test_check_on_memory_has_only_the_probe() -> None:
    result = modelstorage("-u", "memory://", "check")
    assert result.returncode == 0, result.stderr
    assert _check_rows(result.stdout) == [("ok", step) for step in MEMORY_STEPS]


def test_check_says_each_failure_once_on_its_error_line() -> None:
    unreachable = "s3://fedn-models/p?endpoint_url=http://127.0.0.1:9&max_attempts=1&connect_timeout=2"
    result = modelstorage("-u", unreachable, "check", env=clean_env(AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b"))
    assert_one_line_error(result, 10, "endpoint reachable failed: ")
    detail = result.stderr.decode().split("endpoint reachable failed: ", 1)[1].strip()
    everything = result.stdout.decode() + result.stderr.decode()
    assert everything.count(detail) == 1, everything
    assert _check_rows(result.stdout) == [("FAILED", "endpoint reachable")]


# -- check's steps, with failures injected --------------------------------------------


class _FailingStore(MemoryModelStorage):
    """A memory store that passes for an object store (it has a bucket), whose one operation fails as one's would."""

    bucket = "models"

    def __init__(self, failing: str, error: BaseException | None = None) -> None:
        super().__init__()
        self.failing = failing
        self.error = error or StorageError("injected failure")

    def exist(self, model_id):
        if self.failing == "exist":
            raise self.error
        return super().exist(model_id)

    def put(self, model_id, data, metadata=None, *, overwrite=True):
        if self.failing == "put":
            raise self.error
        return super().put(model_id, data, metadata, overwrite=overwrite)

    def get(self, model_id, *, verify=False):
        if self.failing == "get":
            return io.BytesIO(b"not what was written")
        return super().get(model_id, verify=verify)

    def delete(self, model_id):
        if self.failing == "delete":
            return False
        return super().delete(model_id)


@pytest.mark.parametrize(
    ("store", "failed_step"),
    [
        (_FailingStore("exist", StorageUnavailableError("down")), "endpoint reachable"),
        (_FailingStore("exist", StoragePermissionError("denied")), "credentials accepted"),
        (_FailingStore("exist", BucketNotFoundError("no bucket")), "bucket present"),
        (_FailingStore("put"), "write"),
        (_FailingStore("get"), "read"),
        (_FailingStore("delete"), "delete"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_check_exit_code_names_the_first_failed_step(store: _FailingStore, failed_step: str) -> None:
    reported: list[tuple[str, bool]] = []
    code = run_check(store, lambda name, ok, seconds, detail: reported.append((name, ok)))
    assert code == STEP_EXIT_CODES[failed_step]
    assert [name for name, ok in reported if not ok] == [failed_step]
    if failed_step == "read":
        assert ("delete", True) in reported and store.list() == []  # cleaned up anyway


def test_check_runs_the_steps_that_apply_to_each_kind_of_store(tmp_path: Path) -> None:
    stores = {
        _FailingStore("nothing"): OBJECT_STORE_STEPS,
        TempModelStorage(tmp_path / "models"): FOLDER_STEPS,
        MemoryModelStorage(): MEMORY_STEPS,
        SQLiteModelStorage(str(tmp_path / "models.db")): OTHER_STEPS,  # a third party's (tests/plugin)
        # A wrapper is checked by the steps of the store it wraps (and its probe goes through the wrapper).
        CachedModelStorage(TempModelStorage(tmp_path / "cached"), tmp_path / "cache"): FOLDER_STEPS,
    }
    for store, steps in stores.items():
        assert check_steps(store) == steps
        assert _checked(store) == (0, [(name, True) for name in steps])


def _checked(store) -> tuple[int, list[tuple[str, bool]]]:
    reported: list[tuple[str, bool]] = []
    code = run_check(store, lambda name, ok, seconds, detail: reported.append((name, ok)))
    return code, reported


def test_check_fails_a_folder_it_cannot_write_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TempModelStorage(tmp_path / "models")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as root, chmod alone would not deny anything
    reported: list[tuple[str, bool, str]] = []
    code = run_check(store, lambda name, ok, seconds, detail: reported.append((name, ok, detail)))
    assert code == 12
    assert reported == [("folder writable", False, f"no permission to create files in {tmp_path / 'models'}")]
