"""How metadata and the model's SHA-256 are kept on an object store.

``sidecar``: one JSON object per model, any JSON value, replaced by one PUT.
``tags``: the model object's own tags, a flat dict of scalars (or one scalar)
that come back with their JSON types and that lifecycle rules and IAM
conditions can match on: ``status=0``, ``round=3``, ``name=resnet``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from storage.errors import MetadataError
from storage.model import Metadata
from storage.options import hint

SIDECAR = "sidecar"
TAGS = "tags"


def _sidecar_hint() -> str:
    return hint("metadata", SIDECAR)


MODES = (SIDECAR, TAGS)

# S3's limits on object tags.
MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
_TAG_TEXT = re.compile(r"[\w +\-=.:/@]*")

RESERVED_PREFIX = "modelstorage."
SHA256_TAG = RESERVED_PREFIX + "sha256"
SCALAR_TAG = RESERVED_PREFIX + "value"

_JSON_LITERAL = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?|true|false|null")
_STRING_MARK = "="


@dataclass(frozen=True)
class Sidecar:
    metadata: Metadata
    sha256: str | None
    """The model's SHA-256."""
    write: str | None = None
    """The token of the write that made this sidecar, so a retry recognises its own."""


def encode_sidecar(sidecar: Sidecar) -> bytes:
    record = {"sha256": sidecar.sha256, "metadata": sidecar.metadata, "write": sidecar.write}
    return json.dumps(record, separators=(",", ":")).encode()


def decode_sidecar(body: bytes) -> Sidecar:
    try:
        record = json.loads(body)
        return Sidecar(record["metadata"], record.get("sha256"), record.get("write"))
    except (ValueError, KeyError, TypeError):
        raise MetadataError(
            "the metadata sidecar is not a modelstorage record; rewrite it with set_model_metadata"
        ) from None


def check_tag_metadata(value: Metadata) -> None:
    """Raise MetadataError unless ``value`` fits S3's tag limits (before any request)."""
    encode_tags(value, "0" * 64)


def encode_tags(value: Metadata, sha256: str | None) -> dict[str, str]:
    if isinstance(value, dict):
        items = value
        for key in items:
            _check_tag_text("key", key, MAX_TAG_KEY)
            if key.startswith(RESERVED_PREFIX) or key.lower().startswith("aws:"):
                raise MetadataError(f"tag key {key!r} is reserved; choose another name")
        tags = {key: _encode_scalar(key, v) for key, v in items.items()}
    elif isinstance(value, list):
        raise MetadataError(f"tags mode stores a dict of scalars or one scalar, not a list; use {_sidecar_hint()}")
    else:
        tags = {SCALAR_TAG: _encode_scalar("value", value)}
    if sha256 is not None:
        tags[SHA256_TAG] = sha256
    if len(tags) > MAX_TAGS:
        raise MetadataError(
            f"tags mode keeps at most {MAX_TAGS - 1} metadata entries (S3 allows {MAX_TAGS} tags per "
            f"object and one holds the model's SHA-256); got {len(value)}: use {_sidecar_hint()}"
        )
    return tags


def decode_tags(tags: dict[str, str]) -> tuple[Metadata, str | None]:
    sha256 = tags.get(SHA256_TAG)
    if SCALAR_TAG in tags:
        return _decode_scalar(tags[SCALAR_TAG]), sha256
    value = {k: _decode_scalar(v) for k, v in tags.items() if not k.startswith(RESERVED_PREFIX)}
    return value, sha256


def _encode_scalar(key: str, value: object) -> str:
    if isinstance(value, str):
        # A string that reads as a JSON literal (or starts with the mark) is
        # marked, so "0" comes back as the string "0" and 0 as the integer.
        text = _STRING_MARK + value if _is_literal(value) or value.startswith(_STRING_MARK) else value
    elif value is None or isinstance(value, (bool, int, float)):
        text = json.dumps(value)
    else:
        raise MetadataError(
            f"tags mode stores scalars only; {key!r} is a {type(value).__name__}: use {_sidecar_hint()}"
        )
    _check_tag_text(f"value of {key!r}", text, MAX_TAG_VALUE)
    return text


def _decode_scalar(text: str) -> object:
    if text.startswith(_STRING_MARK):
        return text[len(_STRING_MARK) :]
    if _is_literal(text):
        return json.loads(text)
    return text


def _is_literal(text: str) -> bool:
    return _JSON_LITERAL.fullmatch(text) is not None


def _check_tag_text(what: str, text: str, limit: int) -> None:
    if not isinstance(text, str):
        raise MetadataError(f"tag {what} must be a string")
    if what == "key" and not text:
        raise MetadataError("tag keys must not be empty")
    if len(text) > limit:
        raise MetadataError(f"tag {what} is {len(text)} characters; S3 allows {limit}: use {_sidecar_hint()}")
    if not _TAG_TEXT.fullmatch(text):
        raise MetadataError(
            f"tag {what} {text[:40]!r} has characters S3 tags refuse; allowed are letters, digits, "
            f"spaces and + - = . _ : / @ (or use {_sidecar_hint()})"
        )
