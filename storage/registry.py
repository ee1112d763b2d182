"""Which class serves which store: a URL scheme, or a FEDn ``storage_type``, to a backend.

Backends are Python entry points in the group ``modelstorage.backends``, the
name being the URL scheme; this distribution declares ``memory``, ``file``,
``s3`` and ``minio`` in its ``pyproject.toml``, and another distribution adds
a backend with one line of its own::

    [project.entry-points."modelstorage.backends"]
    gcs = "mypackage.gcsmodelstorage:GCSModelStorage"

A backend class has ``from_url(url: StorageURL, *, create=True)`` (``create``
False: open only what exists, make nothing); one that can be named in
FEDn's settings also has ``fedn_storage_type`` (``"BOTO3"``, ``"MINIO"``) and
``from_fedn(config, *, prefix, **options)``. Nothing here names an adapter:
a class is imported only when its scheme is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata
from typing import Any, ClassVar, Protocol

from storage.errors import ConfigurationError
from storage.modelstorage import ModelStorage
from storage.options import StorageURL

GROUP = "modelstorage.backends"
URL_ENV = "MODELSTORAGE_URL"
"""The variable ``open_storage()`` reads when it is given no URL."""

FEDN_ENV = {
    "storage_endpoint": "FEDN_OBJECT_STORAGE_ENDPOINT",
    "storage_access_key": "FEDN_OBJECT_STORAGE_ACCESS_KEY",
    "storage_secret_key": "FEDN_OBJECT_STORAGE_SECRET_KEY",
    "storage_region": "FEDN_OBJECT_STORAGE_REGION",
    "storage_secure_mode": "FEDN_OBJECT_STORAGE_SECURE_MODE",
    "storage_verify_ssl": "FEDN_OBJECT_STORAGE_VERIFY_SSL",
    "storage_bucket": "FEDN_OBJECT_MODEL_BUCKET",
    "storage_sse": "FEDN_OBJECT_STORAGE_SSE",
    "storage_sse_kms_key_id": "FEDN_OBJECT_STORAGE_SSE_KMS_KEY_ID",
    "storage_expected_bucket_owner": "FEDN_OBJECT_STORAGE_EXPECTED_BUCKET_OWNER",
    "storage_class": "FEDN_OBJECT_STORAGE_CLASS",
}
"""FEDn's environment variables, by the ``storage_config`` key each stands for."""


class Backend(Protocol):
    """What the registry needs of a backend class."""

    fedn_storage_type: ClassVar[str | None]

    @classmethod
    def from_url(cls, url: StorageURL, *, create: bool = True) -> ModelStorage: ...


_registered: dict[str, type] = {}


def register_backend(scheme: str, backend: type) -> None:
    """Serve ``scheme`` by ``backend`` in this process, ahead of the entry points (for tests and scripts)."""
    _registered[scheme.lower()] = backend


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name.lower(): ep for ep in metadata.entry_points(group=GROUP)}


def known_schemes() -> str:
    return ", ".join(f"{scheme}://" for scheme in sorted({*_entry_points(), *_registered}))


def backend_for_scheme(scheme: str) -> Any:
    """The class serving ``scheme://`` URLs; ConfigurationError if none is installed."""
    scheme = scheme.lower()
    if scheme in _registered:
        return _registered[scheme]
    entry = _entry_points().get(scheme)
    if entry is None:
        schemes = known_schemes()
        raise ConfigurationError(
            f"no backend serves {scheme}:// URLs: use one of {schemes}"
            if schemes
            else f"no backend serves {scheme}:// URLs: none is installed (pip install modelstorage)"
        )
    return entry.load()


def open_storage(url: str | None = None, *, create: bool = True) -> ModelStorage:
    """A store for ``url``, else ``$MODELSTORAGE_URL``, else the temp-file default.

    ``create=False`` opens an existing store only: a file store then makes no
    folder (ConfigurationError where there is none). The options ``cache_dir`` and
    ``cache_max_bytes`` put a read-through cache in front of any store
    (``storage.cache``; its folder is made even then). Credentials never come
    from URLs: a URL with a user or password part is refused, so it cannot
    end up in logs or shell history.
    """
    if url is None:
        url = os.environ.get(URL_ENV) or ""
    if not url:
        from storage.tempmodelstorage import TempModelStorage

        return TempModelStorage(create=create)
    if "://" not in url:
        hint = f"file://{os.path.abspath(url)} for a folder, or one of " if "/" in url else ""
        raise ConfigurationError(f"{url!r} is not a storage URL: use {hint}{known_schemes()}")
    parsed = StorageURL.parse(url)
    # The read-through cache (storage.cache): its URL options wrap the store, and the backend never sees them.
    from storage.cache import split_cache_options

    parsed, cache = split_cache_options(parsed)
    store = backend_for_scheme(parsed.scheme).from_url(parsed, create=create)
    return store if cache is None else cache.wrap(store)


def _fedn_env_settings() -> dict | None:
    config = {key: os.environ[var] for key, var in FEDN_ENV.items() if os.environ.get(var)}
    storage_type = os.environ.get("FEDN_OBJECT_STORAGE_TYPE")
    if not storage_type and not config:
        return None
    return {"storage_type": storage_type or "BOTO3", "storage_config": config}


def _backend_for_fedn_type(storage_type: str) -> Any:
    wanted = storage_type.upper()
    for source in (_registered.values(), (ep.load() for ep in _entry_points().values())):
        for backend in source:
            if str(getattr(backend, "fedn_storage_type", None) or "").upper() == wanted:
                return backend
    raise ConfigurationError(f"unsupported FEDn storage_type {storage_type!r}: use BOTO3 or MINIO")


def from_fedn_config(settings: Mapping | None = None, *, prefix: str = "", **options) -> ModelStorage:
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
    backend = _backend_for_fedn_type(str(settings.get("storage_type") or "BOTO3"))
    return backend.from_fedn(config, prefix=prefix, **options)
