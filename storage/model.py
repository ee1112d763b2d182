"""What every backend knows about a model besides its bytes: its stat and its metadata value."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.errors import MetadataError

MAX_METADATA_BYTES = 1024 * 1024
"""Largest metadata value, as compact JSON, that any backend accepts."""

Metadata = Any
"""A JSON value: a dict, or a scalar such as FEDn's integer ``ModelStatus``."""


@dataclass(frozen=True)
class ModelStat:
    """What a store knows about a committed model without reading it."""

    model_id: str
    size: int
    sha256: str | None
    """Hex digest recorded at write time; None for bytes written by other tools."""
    last_modified: datetime
    changed: bool = False
    """The bytes were changed outside the store since it recorded their SHA-256: a verified read tells
    whether they still match it."""


def normalize_metadata(value: Metadata) -> tuple[Metadata, str]:
    """Return ``(copy, json_text)`` of a metadata value, or raise MetadataError.

    The copy is what every backend stores and returns, so a caller's later
    mutation of ``value`` never changes what was stored.
    """
    try:
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise MetadataError(f"metadata must be a JSON value without NaN or cycles: {exc}") from None
    if len(text) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is {len(text)} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return json.loads(text), text
