"""``RetryPolicy``, where earlier releases documented it; it lives in ``storage.retry``."""

from storage.retry import RetryPolicy, TransientError

__all__ = ["RetryPolicy", "TransientError"]
