"""What the command asks of a store beyond the contract: which store is underneath a wrapper.

A wrapper (the read-through cache, ``storage.cache.CachedModelStorage``) keeps
the store it fronts as ``store``. What ``check`` probes before the model
round trip (an endpoint, a folder) and what ``simulate`` budgets for (an
object store's part buffers) belong to that store, not to the wrapper.
"""

from __future__ import annotations

from storage import ModelStorage


def underlying_store(store: ModelStorage) -> ModelStorage:
    """The store at the bottom of any wrappers around ``store`` (``store`` itself when it wraps none)."""
    seen = {id(store)}
    inner = getattr(store, "store", None)
    while isinstance(inner, ModelStorage) and id(inner) not in seen:
        store, seen = inner, seen | {id(inner)}
        inner = getattr(store, "store", None)
    return store
