"""Reading settings from text (URL queries, environment variables, command lines) and checking them.

One parser per kind of value, so ``16MiB`` means the same in a URL, on the
command line and in the benchmark harness:

- ``parse_bool``: true/false, yes/no, on/off, 1/0;
- ``parse_quantity``: a whole number with an optional unit. ``k``, ``M``, ``G``
  and ``T`` are powers of 1000 and ``Ki``, ``Mi``, ``Gi``, ``Ti`` powers of 1024,
  with or without a trailing ``B``, in any case: ``10M`` is 10,000,000 and
  ``16MiB`` is 16,777,216. ``1e7`` and ``10_000_000`` are accepted too;
- ``parse_seconds``: ``90``, ``1.5``, ``15m``, ``2h``, ``7d``.

Every error is a ConfigurationError that names the setting the way the user
wrote it (``name``): ``URL option part_size``, ``--params``, ``part_size=``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from storage.errors import ConfigurationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_QUANTITY = re.compile(r"\s*(?P<number>[0-9][0-9_]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*(?P<unit>[kmgt]i?)?b?\s*", re.I)
_UNIT = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

_DURATION = re.compile(r"\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d)?\s*", re.I)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def parse_quantity(name: str, value: object, *, minimum: int = 0) -> int:
    """A whole number such as ``16MiB``, ``10M``, ``1e7`` or ``200k`` (see the module docstring)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, int):
        number = value
    else:
        found = _QUANTITY.fullmatch(str(value))
        if found is None:
            raise ConfigurationError(
                f"{name} must be a whole number such as 16MiB, 10M or 1e7, not {value!r} "
                "(k, M, G are powers of 1000; Ki, Mi, Gi powers of 1024)"
            )
        exact = float(found["number"].replace("_", "")) * _UNIT[(found["unit"] or "").lower()]
        if not math.isfinite(exact) or exact != int(exact):
            raise ConfigurationError(f"{name} must be a whole number, not {value!r}")
        number = int(exact)
    if number < minimum:
        raise ConfigurationError(f"{name} must be at least {minimum}, not {value!r}")
    return number


def parse_seconds(name: str, value: object) -> float:
    """A positive duration: seconds as a number, or with a unit (``90s``, ``15m``, ``2h``, ``7d``)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a duration, not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        found = _DURATION.fullmatch(str(value))
        if found is None:
            raise ConfigurationError(f"{name} must be a duration such as 30, 1.5, 15m or 2h, not {value!r}")
        seconds = float(found["number"]) * _SECONDS[(found["unit"] or "").lower()]
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(f"{name} must be a positive duration, not {value!r}")
    return seconds


_hint_style = "python"


def use_url_hints() -> None:
    """Word every hint as a URL option, as the command line sets it (the command calls this once)."""
    global _hint_style
    _hint_style = "url"


def url_hints() -> bool:
    """Whether hints are worded for the command line (see ``use_url_hints``)."""
    return _hint_style == "url"


def hint(name: str, value: object) -> str:
    """How to set ``name`` to ``value`` where the user is: ``create_bucket=True`` in Python,
    the URL option ``create_bucket=true`` on the command line."""
    if _hint_style == "url":
        text = str(value).lower() if isinstance(value, bool) else str(value)
        return f"the URL option {name}={text}"
    return f"{name}={value!r}"


def reject_unknown(where: str, given: Mapping[str, object], known: set[str]) -> None:
    """ConfigurationError naming the settings ``where`` does not take, and those it does."""
    unknown = sorted(set(given) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)} for {where} (allowed: {allowed})")


@dataclass(frozen=True)
class StorageURL:
    """A store's URL taken apart: ``scheme://netloc/path?options``; never carries credentials."""

    scheme: str
    netloc: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> StorageURL:
        parts = urlsplit(url)
        if not parts.scheme:
            raise ConfigurationError(f"{url!r} is not a storage URL (scheme://...)")
        if "@" in parts.netloc:
            raise ConfigurationError(
                "storage URLs must not carry credentials; use the environment instead "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or MINIO_ACCESS_KEY/MINIO_SECRET_KEY)"
            )
        options: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in options:
                raise ConfigurationError(f"URL option {name} is given twice")
            options[name] = value
        return cls(parts.scheme.lower(), parts.netloc, unquote(parts.path), options)
