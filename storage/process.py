"""What a store owns per process: thread pools, locks, connections; and work at interpreter exit.

A child made by ``os.fork`` (a ``multiprocessing`` worker, a preforking
server) inherits its parent's memory but only the thread that forked: a thread
pool there believes it has workers that do not exist, a lock some other thread
held stays held, and pooled connections are shared with the parent, whose
requests would mix with the child's on one socket. Everything of that kind a
store keeps lives in a ``ProcessLocal``, which notices a new process by
``os.getpid()`` (as fsspec does) and builds the child its own. Nothing runs
at fork time, so an unrelated fork never waits on a lock of ours.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ProcessLocal(Generic[T]):
    """A value made on first use in each process.

    In a forked child, ``inherit(parent_value)`` makes the child's value when
    given (for what must be derived from the parent's, such as a client the
    caller passed in, minus its connections), else ``factory()`` does.
    """

    def __init__(self, factory: Callable[[], T], inherit: Callable[[T], T] | None = None) -> None:
        self._factory = factory
        self._inherit = inherit
        self._values: dict[int, T] = {}

    def get(self) -> T:
        pid = os.getpid()
        try:
            return self._values[pid]
        except KeyError:
            pass
        inherited = [value for owner, value in list(self._values.items()) if owner != pid]
        made = self._inherit(inherited[-1]) if inherited and self._inherit else self._factory()
        # Two threads may make one at once: setdefault keeps the first, and both use it.
        value = self._values.setdefault(pid, made)
        for owner in [owner for owner in list(self._values) if owner != pid]:
            self._values.pop(owner, None)  # the parent's: never used here
        return value

    def made(self) -> T | None:
        """This process's value if it was made, without making it (for cleanup)."""
        return self._values.get(os.getpid())


def submit_or_run(executor: Executor, fn: Callable[..., T], *args: Any) -> Future[T]:
    """``executor.submit(fn, *args)``, or ``fn`` run right here once the executor takes no more work.

    While the interpreter exits (an ``atexit`` handler storing a last model),
    every thread pool refuses new work; the call then runs on this thread.
    """
    try:
        return executor.submit(fn, *args)
    except RuntimeError:
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the future hands it to whoever waits on it
            done.set_exception(exc)
        return done
