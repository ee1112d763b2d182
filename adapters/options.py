"""The settings of an object store, spelled out once: ``ObjectStoreOptions``.

The adapters' constructors, their URLs (``s3://bucket/prefix?part_size=16MiB``),
FEDn's settings, the benchmark harness and the test registries all build one
``ObjectStoreOptions``. Every URL option is a keyword argument of the same
name and the other way round; only ``retry=`` and ``transport=`` also take
whole objects in Python, and a customer key is never taken from a URL.

=====================  ==========================================================
metadata               ``sidecar`` (default) or ``tags``
part_size              multipart part size (16MiB; 5MiB to 5GiB)
max_concurrency        parts of one write, ranges of one read, in flight (4)
ranged_get_threshold   read larger models by concurrent ranged GETs (off)
create_bucket          create the bucket if it is missing (false)
max_attempts           retry policy: attempts per call (6)
deadline               retry policy: seconds a call may take in all (60)
connect_timeout        transport: seconds to connect (10)
read_timeout           transport: seconds to wait for each read (60)
verify                 transport: true, false, or a CA bundle path (true)
pool_size              transport: pooled connections (2 x max_concurrency, >= 10)
sse                    server-side encryption: ``AES256`` or ``aws:kms`` (off)
sse_kms_key_id         with ``aws:kms``: the KMS key (the bucket's default key)
sse_bucket_key         with ``aws:kms``: an S3 bucket key, fewer KMS requests
sse_customer_key       SSE-C: 32 bytes (or base64); not in URLs: ``MODELSTORAGE_SSE_CUSTOMER_KEY``
expected_bucket_owner  the account id that must own the bucket, on every request
storage_class          of the objects written (``STANDARD_IA``, ...)
=====================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from adapters.metadata import SIDECAR, TAGS
from adapters.serverside import CUSTOMER_KEY_ENV, CustomerKey, ServerSide
from adapters.transport import Transport
from storage.errors import ConfigurationError
from storage.options import parse_bool, parse_quantity, parse_seconds, reject_unknown
from storage.retry import RetryPolicy

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB


def _metadata_mode(name: str, value: object) -> str:
    if value not in (SIDECAR, TAGS):
        raise ConfigurationError(f"{name} must be {SIDECAR} or {TAGS}, not {value!r}")
    return str(value)


def _part_size(name: str, value: object) -> int:
    size = parse_quantity(name, value)
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise ConfigurationError(f"{name} must be between 5MiB and 5GiB, not {value!r}")
    return size


def _at_least_one(name: str, value: object) -> int:
    return parse_quantity(name, value, minimum=1)


def _optional_size(name: str, value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
        return None
    return parse_quantity(name, value, minimum=1)


def _verify(name: str, value: object) -> bool | str:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{name} must be true, false or the path of a CA bundle, not {value!r}")
    try:
        return parse_bool(name, value)
    except ConfigurationError:
        return value  # a CA bundle's path; the SDK reports one it cannot read


def _text(name: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be text, not {type(value).__name__}")
    return value


def _customer_key(name: str, value: object) -> CustomerKey | None:
    return None if value is None else CustomerKey.parse(value)


# name -> (the object it belongs to, parser of its value)
_SETTINGS: dict[str, tuple[str, Callable[[str, object], object]]] = {
    "metadata": ("options", _metadata_mode),
    "part_size": ("options", _part_size),
    "max_concurrency": ("options", _at_least_one),
    "ranged_get_threshold": ("options", _optional_size),
    "create_bucket": ("options", parse_bool),
    "max_attempts": ("retry", _at_least_one),
    "deadline": ("retry", parse_seconds),
    "connect_timeout": ("transport", parse_seconds),
    "read_timeout": ("transport", parse_seconds),
    "verify": ("transport", _verify),
    "pool_size": ("transport", _at_least_one),
    "sse": ("server_side", _text),
    "sse_kms_key_id": ("server_side", _text),
    "sse_bucket_key": ("server_side", parse_bool),
    "sse_customer_key": ("server_side", _customer_key),
    "expected_bucket_owner": ("server_side", _text),
    "storage_class": ("server_side", _text),
}
NAMES = frozenset(_SETTINGS) | {"retry", "transport"}
NOT_IN_URLS = {"sse_customer_key"}
"""Secrets: a URL ends up in shell histories, process lists and logs."""


@dataclass(frozen=True)
class ObjectStoreOptions:
    """How an object store keeps models and talks to its server (see the module docstring)."""

    metadata: str = SIDECAR
    part_size: int = 16 * MiB
    max_concurrency: int = 4
    ranged_get_threshold: int | None = None
    create_bucket: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transport: Transport = field(default_factory=Transport)
    server_side: ServerSide = field(default_factory=ServerSide.from_environment)

    @classmethod
    def parse(
        cls, settings: Mapping[str, object], *, from_url: bool = False, base: ObjectStoreOptions | None = None
    ) -> ObjectStoreOptions:
        """``base`` (or the defaults) with ``settings`` applied: keyword arguments, or a URL's options.

        Errors name a setting as the user wrote it: ``URL option part_size``, or ``part_size=``.
        """
        where = "these URLs" if from_url else "object stores"
        if from_url and NOT_IN_URLS & set(settings):
            raise ConfigurationError(
                f"a customer key never goes in a URL: set {CUSTOMER_KEY_ENV} (base64 of 32 bytes) in the environment"
            )
        reject_unknown(where, settings, set(_SETTINGS) if from_url else set(NAMES))
        options = base or cls()
        changes: dict[str, dict[str, object]] = {"options": {}, "retry": {}, "transport": {}, "server_side": {}}
        for name, value in settings.items():
            if name in ("retry", "transport"):
                expected = RetryPolicy if name == "retry" else Transport
                if not isinstance(value, expected):
                    raise ConfigurationError(f"{name}= must be a {expected.__name__}, not {type(value).__name__}")
                changes["options"][name] = value
                continue
            owner, parse = _SETTINGS[name]
            changes[owner][name] = parse(f"URL option {name}" if from_url else f"{name}=", value)
        try:
            retry = dataclasses.replace(changes["options"].pop("retry", options.retry), **changes["retry"])
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        transport = dataclasses.replace(changes["options"].pop("transport", options.transport), **changes["transport"])
        server_side = dataclasses.replace(options.server_side, **changes["server_side"])
        return dataclasses.replace(
            options, retry=retry, transport=transport, server_side=server_side, **changes["options"]
        )


_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", re.IGNORECASE)


def check_bucket_name(bucket: object) -> str:
    """``bucket`` if S3 can name a bucket so, else ConfigurationError (before any request)."""
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigurationError(
            f"{bucket!r} is not a bucket name: use 3-63 characters of a-z 0-9 . - that start and end with "
            "a letter or digit, e.g. fedn-models"
        )
    return bucket


def check_key_pair(access_key: str | None, secret_key: str | None) -> None:
    if (access_key is None) != (secret_key is None):
        raise ConfigurationError("give both access_key and secret_key, or neither")


@dataclass(frozen=True)
class FednSettings:
    """FEDn's ``storage_config`` as both object-store backends read it."""

    bucket: str
    region: str | None
    access_key: str | None
    secret_key: str | None
    endpoint: str | None
    """``storage_endpoint``: a URL (BOTO3) or host:port."""
    host: str | None
    """``storage_hostname`` with ``storage_port``."""
    secure: bool
    verify: bool
    options: dict[str, object] = field(default_factory=dict)
    """Store options FEDn-style keys name: ``storage_sse`` (``sse``), ``storage_sse_kms_key_id``,
    ``storage_sse_bucket_key``, ``storage_expected_bucket_owner``, ``storage_class`` (``storage_class``)."""

    DEFAULT_BUCKET = "fedn-model"
    OPTION_KEYS = {
        "storage_sse": "sse",
        "storage_sse_kms_key_id": "sse_kms_key_id",
        "storage_sse_bucket_key": "sse_bucket_key",
        "storage_expected_bucket_owner": "expected_bucket_owner",
        "storage_class": "storage_class",
    }

    @classmethod
    def parse(cls, config: Mapping[str, object]) -> FednSettings:
        access_key = config.get("storage_access_key") or None
        secret_key = config.get("storage_secret_key") or None
        if not (access_key and secret_key):
            access_key = secret_key = None  # fall back to the SDK's own credential chain
        host = config.get("storage_hostname")
        if host and config.get("storage_port"):
            host = f"{host}:{config['storage_port']}"
        return cls(
            bucket=str(config.get("storage_bucket") or cls.DEFAULT_BUCKET),
            region=str(config["storage_region"]) if config.get("storage_region") else None,
            access_key=str(access_key) if access_key else None,
            secret_key=str(secret_key) if secret_key else None,
            endpoint=str(config["storage_endpoint"]) if config.get("storage_endpoint") else None,
            host=str(host) if host else None,
            secure=parse_bool("storage_secure_mode", config.get("storage_secure_mode", True)),
            verify=parse_bool("storage_verify_ssl", config.get("storage_verify_ssl", True)),
            options={option: config[key] for key, option in cls.OPTION_KEYS.items() if config.get(key) is not None},
        )
