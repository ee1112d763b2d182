"""The one retry layer: which failures are retried, how often, for how long.

The SDKs' own retries are switched off by the adapters, so an operation makes
at most ``max_attempts`` requests, never attempts x SDK retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from storage.errors import StorageError, StorageUnavailableError

logger = logging.getLogger("modelstorage.retry")

T = TypeVar("T")


class TransientError(StorageError):
    """A failure worth another attempt: throttling, 5xx, timeouts, resets."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by a deadline.

    Retried: throttling (429, 503 SlowDown), 500/502/504, request timeouts and
    connection resets. Never retried: not-found, access denied, bad
    credentials, failed preconditions, invalid input.
    """

    max_attempts: int = 6
    deadline: float = 60.0
    """Seconds from the first attempt after which no new attempt starts."""
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    """Per-request socket timeouts the adapters give their SDK clients."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.deadline <= 0 or self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("deadline and timeouts must be positive")

    @classmethod
    def none(cls) -> RetryPolicy:
        """One attempt per operation: for callers that retry themselves."""
        return cls(max_attempts=1)

    def call(self, operation: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run ``fn`` under this policy; StorageUnavailableError when it runs out."""
        started = time.monotonic()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(self.max_attempts) | tenacity.stop_before_delay(self.deadline),
            wait=tenacity.wait_random_exponential(multiplier=self.initial_backoff, max=self.max_backoff),
            before_sleep=_log_retry(operation),
            reraise=False,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except tenacity.RetryError as exhausted:
            last = exhausted.last_attempt.exception()
            attempts = exhausted.last_attempt.attempt_number
            raise StorageUnavailableError(
                f"{operation} failed after {attempts} attempt(s) in {time.monotonic() - started:.1f}s: "
                f"{last}; the store may be down or throttling, try again later"
            ) from last


def _log_retry(operation: str):
    def log(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        logger.warning("retrying %s in %.2fs after attempt %d failed: %s", operation, delay, state.attempt_number, exc)

    return log
