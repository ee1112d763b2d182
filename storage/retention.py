"""Retention: which models a store keeps, and what ``ModelStorage.prune`` removes.

A combiner writes client updates every round and a global model after it;
without retention its store only grows. A ``Retention`` rule selects models
(by id pattern, metadata, or any predicate) and says how many, or how old,
of them stay::

    store.prune(
        Retention(match="global-*", keep_last=5),                   # the last five global models
        Retention(where={"status": 0}, older_than=timedelta(days=2)),  # client updates after two days
    )

A model goes when any rule lets it go. ``prune`` removes only models of the
store's own namespace, and with them what stale writes left behind (a file
store's partial files, an object store's incomplete uploads).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.errors import ConfigurationError
from storage.model import Metadata, ModelStat

STALE_WRITES_AFTER = timedelta(days=1)
"""An incomplete write older than this is taken for one a crash left behind."""


@dataclass(frozen=True)
class Retention:
    """One rule: the models it selects, and which of them go.

    ``match`` is an id pattern (``global-*``); ``where`` metadata every
    selected model has (``{"status": 0}``); ``predicate`` any further test of
    a model's stat and metadata. Of the selected models, the ``keep_last``
    last modified stay; those last modified more than ``older_than`` ago go.
    With both, a model goes only when it is older and not among the last.
    """

    match: str = "*"
    where: Mapping[str, object] | None = None
    keep_last: int | None = None
    older_than: timedelta | None = None
    predicate: Callable[[ModelStat, Metadata], bool] | None = None

    def __post_init__(self) -> None:
        if self.keep_last is None and self.older_than is None:
            raise ConfigurationError("a retention rule keeps the last N models, or those younger than an age: give one")
        if self.keep_last is not None and self.keep_last < 0:
            raise ConfigurationError(f"keep_last must be 0 or more, not {self.keep_last}")
        if self.older_than is not None and self.older_than <= timedelta(0):
            raise ConfigurationError(f"older_than must be a positive age, not {self.older_than}")

    @property
    def reads_metadata(self) -> bool:
        return self.where is not None or self.predicate is not None

    def selects(self, stat: ModelStat, metadata: Metadata) -> bool:
        if not fnmatch.fnmatchcase(stat.model_id, self.match):
            return False
        if self.where is not None and not _has(metadata, self.where):
            return False
        return self.predicate is None or self.predicate(stat, metadata)

    def doomed(self, models: Iterable[tuple[ModelStat, Metadata]], now: datetime) -> set[str]:
        """The ids this rule lets go, of ``models``."""
        selected = sorted((stat for stat, md in models if self.selects(stat, md)), key=_newest_first)
        candidates = selected[self.keep_last :] if self.keep_last is not None else selected
        if self.older_than is not None:
            candidates = [stat for stat in candidates if stat.last_modified < now - self.older_than]
        return {stat.model_id for stat in candidates}


_ABSENT = object()


def _has(metadata: Metadata, wanted: Mapping[str, object]) -> bool:
    return isinstance(metadata, dict) and all(metadata.get(key, _ABSENT) == value for key, value in wanted.items())


def _newest_first(stat: ModelStat) -> tuple:
    return (-stat.last_modified.timestamp(), stat.model_id)
