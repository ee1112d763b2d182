"""The one model-id rule, shared by every backend and checked before any I/O."""

from __future__ import annotations

import re

from storage.errors import InvalidModelIdError

MAX_ID_LENGTH = 200
_ID_PATTERN = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_ID_LENGTH - 1}}}")


def check_model_id(model_id: object) -> str:
    """Return ``model_id`` if it is a valid id, else raise InvalidModelIdError.

    Ids are 1-200 characters of ``A-Z a-z 0-9 . _ -`` and do not start with a
    dot, so an id is always a single, visible path segment or object-key part:
    no traversal, no separators, no hidden files, nothing to escape.
    """
    if not isinstance(model_id, str):
        raise InvalidModelIdError(f"model id must be a str, not {type(model_id).__name__}")
    if not _ID_PATTERN.fullmatch(model_id):
        shown = model_id if len(model_id) <= 40 else model_id[:40] + "..."
        raise InvalidModelIdError(
            f"invalid model id {shown!r}: use 1-{MAX_ID_LENGTH} characters of A-Z a-z 0-9 . _ - not starting with '.'"
        )
    return model_id


def is_model_id(name: str) -> bool:
    """True if ``name`` (e.g. a file or key name) is a valid model id."""
    return _ID_PATTERN.fullmatch(name) is not None
