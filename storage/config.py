"""Open a store from a URL: ``memory://``, ``file:///dir``, ``s3://...``, ``minio://...``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from storage.errors import ConfigurationError
from storage.modelstorage import ModelStorage

URL_ENV = "MODELSTORAGE_URL"
"""The variable ``open_storage()`` reads when it is given no URL."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(name: str, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def _memory(parts, options: dict[str, str]) -> ModelStorage:
    from storage.memorymodelstorage import MemoryModelStorage

    reject_unknown_options("memory://", options, set())
    return MemoryModelStorage()


def _file(parts, options: dict[str, str]) -> ModelStorage:
    from storage.tempmodelstorage import TempModelStorage

    if parts.netloc not in ("", "localhost"):
        raise ConfigurationError(f"file URLs name a local folder: file:///path, not file://{parts.netloc}/...")
    if not parts.path:
        raise ConfigurationError("file URL names no folder: use file:///path/to/models")
    reject_unknown_options("file://", options, {"fsync"})
    fsync = parse_bool("fsync", options.get("fsync", "false"))
    return TempModelStorage(unquote(parts.path), fsync=fsync)


def _adapter(module: str, cls: str) -> Callable[..., ModelStorage]:
    def build(parts, options: dict[str, str]) -> ModelStorage:
        backend = getattr(importlib.import_module(module), cls)
        return backend.from_url(parts, options)

    return build


_SCHEMES: dict[str, Callable[..., ModelStorage]] = {
    "memory": _memory,
    "file": _file,
    "s3": _adapter("adapters.s3modelstorage", "S3ModelStorage"),
    "minio": _adapter("adapters.miniomodelstorage", "MinioModelStorage"),
}


def reject_unknown_options(scheme: str, options: dict[str, str], known: set[str]) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)} for {scheme} URLs (allowed: {allowed})")


def open_storage(url: str | None = None) -> ModelStorage:
    """A store for ``url``, else ``$MODELSTORAGE_URL``, else the temp-file default.

    Credentials never come from URLs: a URL with a user or password part is
    refused, so it cannot end up in logs or shell history.
    """
    if url is None:
        url = os.environ.get(URL_ENV) or ""
    if not url:
        from storage.tempmodelstorage import TempModelStorage

        return TempModelStorage()
    parts = urlsplit(url)
    builder = _SCHEMES.get(parts.scheme.lower())
    if builder is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(
            f"unknown storage URL scheme {parts.scheme + '://' if parts.scheme else url!r}: use one of {known}"
        )
    if "@" in parts.netloc:
        raise ConfigurationError(
            "storage URLs must not carry credentials; use the SDK's environment "
            "variables (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or MINIO_ACCESS_KEY/MINIO_SECRET_KEY)"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    return builder(parts, options)
