"""Every backend the test suite runs against, one ``register(...)`` call each.

A backend joins the conformance suite, the state machine and every other test
that asks for the ``store`` fixture by adding one ``BackendSpec`` below; no test
is copied. ``conftest.py`` turns this registry into the fixture parameters.

A spec's ``factory`` is a context manager taking pytest's ``request``. It must
yield a fresh, EMPTY store on every call, also when called several times in one
test (the state machine does that once per example), and clean up after it.
It may use session-scoped fixtures through ``request.getfixturevalue(...)``,
e.g. an S3 endpoint started once per session::

    @contextlib.contextmanager
    def _s3_moto_server(request, metadata):
        endpoint = request.getfixturevalue("moto_server_endpoint")  # session fixture
        with S3ModelStorage(bucket=..., prefix=unique_prefix(),
                            endpoint_url=endpoint.endpoint_url, metadata=metadata) as store:
            yield store

    for mode in ("sidecar", "tags"):
        register(BackendSpec(
            f"s3-moto-server-{mode}",
            functools.partial(_s3_moto_server, metadata=mode),
            reopen=lambda store: S3ModelStorage(...same bucket and prefix...),
            footprint=lambda store: every key in the whole bucket,
            nested_metadata=(mode == "sidecar"),
            marks=(pytest.mark.objectstore,),
        ))

Optional hooks are capabilities: tests that need one (``reopen``, ``tamper``,
``plant_outside``) run only on backends that provide it, and are not skipped
elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cached_backends import MiB, cached

from storage import MemoryModelStorage, ModelStorage, TempModelStorage, open_storage

StoreFactory = Callable[[pytest.FixtureRequest], AbstractContextManager[ModelStorage]]


def _committed_ids(store: ModelStorage) -> frozenset[str]:
    return frozenset(store.list())


@dataclass(frozen=True)
class BackendSpec:
    name: str
    """The test id: ``test_x[name]``."""

    factory: StoreFactory
    """Yields a fresh, empty store (see the module docstring)."""

    reopen: Callable[[ModelStorage], ModelStorage] | None = None
    """A NEW instance on the same namespace as ``store`` (a restarted process);
    None when models live and die with the instance."""

    footprint: Callable[[ModelStorage], frozenset[str]] = _committed_ids
    """Everything the backend's medium holds in AND around the store's
    namespace (a folder's parent tree, a whole bucket), so tests can prove an
    operation wrote or deleted nothing it should not have."""

    plant_outside: Callable[[ModelStorage], None] | None = None
    """Put something just outside the namespace (a sibling file, a key beside
    the prefix) that ``delete_all`` must leave alone."""

    tamper: Callable[[ModelStorage, str], None] | None = None
    """Change a committed model's bytes but keep its recorded SHA-256, so
    verifying reads must notice."""

    nested_metadata: bool = True
    """False for stores that keep metadata as object tags: flat dicts of
    scalars or one scalar; anything nested must raise MetadataError."""

    marks: tuple[pytest.MarkDecorator, ...] = ()

    def param(self):
        return pytest.param(self, id=self.name, marks=self.marks)


BACKENDS: list[BackendSpec] = []

CAPABILITIES = ("reopen", "tamper", "plant_outside")
"""Fixture names that exist only for backends whose spec has that hook."""


def register(spec: BackendSpec) -> BackendSpec:
    if any(known.name == spec.name for known in BACKENDS):
        raise ValueError(f"backend {spec.name!r} is registered twice")
    BACKENDS.append(spec)
    return spec


# -- memory -------------------------------------------------------------------


@contextlib.contextmanager
def _memory(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
    with MemoryModelStorage() as store:
        yield store


def _tamper_memory(store: ModelStorage, model_id: str) -> None:
    assert isinstance(store, MemoryModelStorage)
    with store._lock.get():
        entry = store._models[model_id]
        store._models[model_id] = replace(entry, data=b"tampered" + entry.data[8:])


register(BackendSpec("memory", _memory, tamper=_tamper_memory))


# -- temp files ---------------------------------------------------------------


@contextlib.contextmanager
def _tempfile(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
    # mktemp gives every call its own parent folder, so the footprint below
    # also covers the store folder's surroundings.
    parent = request.getfixturevalue("tmp_path_factory").mktemp("tempfile")
    with TempModelStorage(parent / "models") as store:
        yield store


def _reopen_tempfile(store: ModelStorage) -> ModelStorage:
    assert isinstance(store, TempModelStorage)
    return TempModelStorage(store.directory, fsync=store.fsync)


def tree(root: Path) -> frozenset[str]:
    """Every file and folder under ``root``, hidden ones included, relative to it."""
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return frozenset(found)


def _tempfile_footprint(store: ModelStorage) -> frozenset[str]:
    assert isinstance(store, TempModelStorage)
    return tree(store.directory.parent)


def _plant_beside_tempfile(store: ModelStorage) -> None:
    assert isinstance(store, TempModelStorage)
    parent = store.directory.parent
    (parent / "neighbour").write_bytes(b"not in the store")
    (parent / "models-backup").mkdir()
    (parent / "models-backup" / "model").write_bytes(b"not in the store either")


def _tamper_tempfile(store: ModelStorage, model_id: str) -> None:
    assert isinstance(store, TempModelStorage)
    path = store.directory / model_id
    before = os.stat(path)
    with open(path, "r+b") as f:
        f.write(b"tampered")
    # Bit rot keeps the file's identity; make the edit look like it did.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


register(
    BackendSpec(
        "tempfile",
        _tempfile,
        reopen=_reopen_tempfile,
        footprint=_tempfile_footprint,
        plant_outside=_plant_beside_tempfile,
        tamper=_tamper_tempfile,
    )
)


# -- a third party's backend, reached through its entry point ------------------


@contextlib.contextmanager
def _sqlite_plugin(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
    folder = request.getfixturevalue("tmp_path_factory").mktemp("sqlite")
    with open_storage(f"sqlite://{folder}/models.db") as store:
        yield store


register(BackendSpec("sqlite-plugin", _sqlite_plugin, reopen=lambda store: open_storage(f"sqlite://{store.path}")))


# -- the read-through cache (storage.cache) in front of memory and temp files ----

# A small bound for memory, so models above it (read uncached) and evictions run through the suite too.
register(cached(next(spec for spec in BACKENDS if spec.name == "memory"), max_bytes=4 * MiB))
register(cached(next(spec for spec in BACKENDS if spec.name == "tempfile"), max_bytes=64 * MiB))


__all__ = ["BACKENDS", "CAPABILITIES", "BackendSpec", "StoreFactory", "register", "tree"]
