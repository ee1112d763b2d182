"""Registry entries for ``CachedModelStorage``: any registered backend, behind a read-through cache.

``cached(spec)`` is ``spec`` with a cache of its own (a fresh folder per store)
in front; its hooks reach through to the store behind it, and a reopened
instance shares the cache folder, as a second process on the same machine
would. ``tests/backends.py`` and ``tests/objectstore_backends.py`` register
them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from storage import CachedModelStorage, ModelStorage

if TYPE_CHECKING:
    from backends import BackendSpec

MiB = 1024 * 1024


def _behind(store: ModelStorage) -> ModelStorage:
    assert isinstance(store, CachedModelStorage)
    return store.store


def cached(inner: BackendSpec, *, max_bytes: int) -> BackendSpec:
    """``inner`` behind a cache of ``max_bytes``, registered as ``cached-{inner.name}``."""

    @contextlib.contextmanager
    def factory(request: pytest.FixtureRequest) -> Iterator[ModelStorage]:
        # A folder apart from the store's, so a store's footprint never shows the cache's files.
        folder = request.getfixturevalue("tmp_path_factory").mktemp("cache")
        with inner.factory(request) as store:
            front = CachedModelStorage(store, folder, max_bytes)
            try:
                yield front
            finally:
                front.close()  # its open writes, then the store, which the inner factory closes once more

    def reopen(store: ModelStorage) -> ModelStorage:
        assert inner.reopen is not None and isinstance(store, CachedModelStorage)
        return CachedModelStorage(inner.reopen(store.store), store.directory, store.max_bytes)

    return replace(
        inner,
        name=f"cached-{inner.name}",
        factory=factory,
        reopen=reopen if inner.reopen is not None else None,
        footprint=lambda store: inner.footprint(_behind(store)),
        plant_outside=(lambda store: inner.plant_outside(_behind(store))) if inner.plant_outside else None,
        tamper=(lambda store, model_id: inner.tamper(_behind(store), model_id)) if inner.tamper else None,
        # Not an object store itself: the tests marked so reach into the adapters' insides.
        marks=tuple(mark for mark in inner.marks if mark.name != "objectstore"),
    )
