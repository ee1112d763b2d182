"""How an SDK client reaches the store: timeouts, TLS verification, connection pool; clamped to deadlines.

Both SDKs send their requests through urllib3. A ``DeadlineTimeout`` on their
connection pools gives every request the configured connect and read
timeouts, cut down to what is left of the deadline of the retry-policy call
it belongs to (``storage.retry.time_left``): a server that stops answering
fails the call by its deadline, not a full read timeout later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import urllib3

from storage.retry import time_left

logger = logging.getLogger("modelstorage")

MIN_TIMEOUT = 0.05
"""What is left of a deadline already passed: a request then fails at once, as a timeout."""


@dataclass(frozen=True)
class Transport:
    """Socket-level settings of an object store's SDK client."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    """Seconds a request may wait for the connection, and for each read of the response."""
    verify: bool | str = True
    """Verify the server's TLS certificate (True), against this CA bundle (a path), or not (False)."""
    pool_size: int | None = None
    """Pooled connections per host; None: twice the store's max_concurrency, at least 10."""

    def pool_for(self, max_concurrency: int) -> int:
        return self.pool_size or max(10, 2 * max_concurrency)

    def timeout(self) -> DeadlineTimeout:
        return DeadlineTimeout(self.connect_timeout, self.read_timeout)


class DeadlineTimeout(urllib3.Timeout):
    """urllib3 timeouts that never outlast the deadline of the call under way.

    urllib3 clones a pool's timeout for every request (``Timeout.clone``); the
    clone carries the configured timeouts, or the time left if that is less.
    """

    def __init__(self, connect: float, read: float) -> None:
        super().__init__(connect=connect, read=read)
        self.configured = (connect, read)

    def clone(self) -> urllib3.Timeout:
        connect, read = self.configured
        left = time_left()
        if left is not None:
            left = max(left, MIN_TIMEOUT)
            connect, read = min(connect, left), min(read, left)
        return urllib3.Timeout(connect=connect, read=read)
