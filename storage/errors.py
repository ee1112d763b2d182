"""The typed errors every backend raises; SDK exceptions never reach callers."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every error this library raises on purpose."""


class ModelNotFoundError(StorageError, KeyError):
    """No committed model (and no open write) has this id."""

    # KeyError.__str__ quotes its argument; a message should read as a sentence.
    __str__ = Exception.__str__


class ModelExistsError(StorageError):
    """An atomic create (``put(..., overwrite=False)``) found the id taken."""


class InvalidModelIdError(StorageError, ValueError):
    """The id breaks the model-id rule; raised before any I/O."""


class MetadataError(StorageError, ValueError):
    """The metadata cannot be stored (not JSON, too large, beyond tag limits)."""


class ConfigurationError(StorageError, ValueError):
    """A URL, setting or constructor argument cannot describe a store."""


class BucketNotFoundError(StorageError):
    """The configured bucket does not exist."""


class StoragePermissionError(StorageError, PermissionError):
    """The store refused the credentials or the operation."""


class StorageUnavailableError(StorageError, ConnectionError):
    """The store stayed unreachable or failing until the retry budget ran out."""


class IntegrityError(StorageError):
    """The bytes read do not match the SHA-256 recorded when they were written."""
