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


_FEDN_ENV = {
    "storage_endpoint": "FEDN_OBJECT_STORAGE_ENDPOINT",
    "storage_access_key": "FEDN_OBJECT_STORAGE_ACCESS_KEY",
    "storage_secret_key": "FEDN_OBJECT_STORAGE_SECRET_KEY",
    "storage_region": "FEDN_OBJECT_STORAGE_REGION",
    "storage_secure_mode": "FEDN_OBJECT_STORAGE_SECURE_MODE",
    "storage_verify_ssl": "FEDN_OBJECT_STORAGE_VERIFY_SSL",
    "storage_bucket": "FEDN_OBJECT_MODEL_BUCKET",
}
FEDN_DEFAULT_BUCKET = "fedn-model"


def _fedn_env_settings() -> dict | None:
    config = {key: os.environ[var] for key, var in _FEDN_ENV.items() if os.environ.get(var)}
    storage_type = os.environ.get("FEDN_OBJECT_STORAGE_TYPE")
    if not storage_type and not config:
        return None
    return {"storage_type": storage_type or "BOTO3", "storage_config": config}


def from_fedn_config(settings: dict | None = None, *, prefix: str = "", **options) -> ModelStorage:
    """A store from FEDn's storage settings, as a FEDn deployment already has them.

    ``settings`` is FEDn's ``{"storage_type": "BOTO3" | "MINIO", "storage_config":
    {...}}`` (or a settings file's dict with it under ``storage``). Without it,
    the ``FEDN_OBJECT_STORAGE_*`` variables are read; with none of those set, the
    temp-file store in ``$FEDN_MODEL_DIR`` is used, as FEDn's combiner does.
    ``options`` go to the backend (``metadata="tags"``, ``part_size=...``).
    """
    if settings is None:
        settings = _fedn_env_settings()
        if settings is None:
            from storage.tempmodelstorage import TempModelStorage

            return TempModelStorage()
    settings = settings.get("storage", settings)
    config = dict(settings.get("storage_config") or {})
    storage_type = str(settings.get("storage_type") or "BOTO3").upper()
    secure = parse_bool("storage_secure_mode", config.get("storage_secure_mode", True))
    verify = parse_bool("storage_verify_ssl", config.get("storage_verify_ssl", True))
    access_key = config.get("storage_access_key") or None
    secret_key = config.get("storage_secret_key") or None
    if not (access_key and secret_key):
        access_key = secret_key = None  # fall back to the SDK's own credential chain
    bucket = config.get("storage_bucket") or FEDN_DEFAULT_BUCKET
    region = config.get("storage_region") or None
    endpoint = config.get("storage_endpoint")
    host = config.get("storage_hostname")
    if host:
        host = f"{host}:{config['storage_port']}" if config.get("storage_port") else str(host)
    if storage_type == "BOTO3":
        from adapters.s3modelstorage import S3ModelStorage

        if not endpoint and host:
            endpoint = f"{'https' if secure else 'http'}://{host}"
        return S3ModelStorage(
            bucket,
            prefix,
            endpoint_url=endpoint or None,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            verify=verify,
            **options,
        )
    if storage_type == "MINIO":
        from adapters.miniomodelstorage import MinioModelStorage

        if not host and endpoint:
            parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
            host, secure = parts.netloc, parts.scheme != "http" if parts.scheme else secure
        if not host:
            raise ConfigurationError("FEDn MINIO storage needs storage_hostname and storage_port (or storage_endpoint)")
        return MinioModelStorage(
            host,
            bucket,
            prefix,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            verify=verify,
            region=region,
            **options,
        )
    raise ConfigurationError(f"unsupported FEDn storage_type {storage_type!r}: use BOTO3 or MINIO")
