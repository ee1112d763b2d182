"""The one retry loop: which failures are retried, how often, and the deadline that bounds a call.

``RetryPolicy.call(operation, fn)`` runs ``fn`` until it succeeds, fails for
good, or the policy runs out of attempts or time. It is the only place that
retries:

- The SDKs' own retries are off (the adapters build their clients so), so one
  request is never retried by two layers.
- A call made while another policy call runs on the same thread (a verified
  read that stats, reads and stats again; a ranged read whose ranges run on
  helper threads that carry the caller's context) is one attempt under the
  outer call's deadline: the outer call decides whether to try again, so
  attempts never multiply.
- The deadline bounds the whole call: no attempt starts once the next pause
  would cross it, and every request's connect and read timeouts are clamped
  to the time left (``time_left()``, which the adapters' transports read).
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from storage.errors import StorageError, StorageUnavailableError

logger = logging.getLogger("modelstorage.retry")

T = TypeVar("T")

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("modelstorage_deadline", default=None)


def time_left() -> float | None:
    """Seconds left until the deadline of the policy call running here; None outside one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


class TransientError(StorageError):
    """A failure worth another attempt: throttling, 5xx, timeouts, resets, a model replaced mid-read."""

    advice = "the store may be down or throttling, try again later"
    """What the caller should do once the attempts are used up."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by a deadline.

    Retried: throttling (429, 503 SlowDown), 500/502/504, request timeouts and
    connection resets. Never retried: not-found, access denied, bad
    credentials, failed preconditions, invalid input.
    """

    max_attempts: int = 6
    deadline: float = 60.0
    """Seconds from the first attempt by which the call has ended, successfully or not."""
    initial_backoff: float = 0.1
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.deadline <= 0:
            raise ValueError("deadline must be positive")
        if self.initial_backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoffs must not be negative")

    def call(self, operation: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` under this policy; StorageUnavailableError when it runs out."""
        if _deadline.get() is not None:
            return fn(*args, **kwargs)  # one attempt of an outer call (see the module docstring)
        started = time.monotonic()
        token = _deadline.set(started + self.deadline)
        try:
            retrying = tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(TransientError),
                stop=tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_before_delay(self.deadline),
                wait=tenacity.wait_random_exponential(multiplier=self.initial_backoff, max=self.max_backoff),
                before_sleep=_log_retry(operation),
                reraise=False,
            )
            return retrying(fn, *args, **kwargs)
        except tenacity.RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            attempts = exhausted.last_attempt.attempt_number
            advice = getattr(last, "advice", TransientError.advice)
            raise StorageUnavailableError(
                f"{operation} failed after {attempts} attempt(s) in {time.monotonic() - started:.1f}s: {last}; {advice}"
            ) from last
        finally:
            _deadline.reset(token)


def _log_retry(operation: str):
    def log(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning("retrying %s in %.2fs after attempt %d failed: %s", operation, delay, state.attempt_number, exc)

    return log
