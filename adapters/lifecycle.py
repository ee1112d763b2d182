"""Bucket lifecycle rules that prune a store on the server side, as ``ModelStorage.prune`` does from outside.

The server expires what the rules select even when no combiner runs, and
aborts the multipart uploads a killed process left. Rules can select by
prefix, and by object tags: so an expiration by metadata (``status=0``) needs
a store in ``metadata="tags"``; a sidecar store can expire by age alone (its
models and their sidecars alike). What lifecycle rules cannot do is keep the
last N: that stays with ``prune``.

Every rule's ID starts with ``rule_prefix(keys)``, so applying rules replaces
this store's earlier rules and leaves every other rule of the bucket alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta

from adapters import metadata as codec
from adapters.keys import KeyLayout
from storage.errors import ConfigurationError
from storage.options import hint


def rule_prefix(keys: KeyLayout) -> str:
    return f"modelstorage:{keys.prefix or '/'}:"


def _days(age: timedelta) -> int:
    return max(1, math.ceil(age.total_seconds() / 86400))  # lifecycle counts whole days


def lifecycle_rules(
    keys: KeyLayout,
    metadata_mode: str,
    *,
    expire_after: timedelta | None = None,
    where: Mapping[str, object] | None = None,
    abort_uploads_after: timedelta = timedelta(days=1),
) -> list[dict]:
    """The rules, in the JSON form of S3's API (what ``aws s3api put-bucket-lifecycle-configuration`` takes)."""
    prefix = rule_prefix(keys)
    rules: list[dict] = []
    if expire_after is not None:
        days = {"Days": _days(expire_after)}
        if where:
            if metadata_mode != codec.TAGS:
                raise ConfigurationError(
                    f"lifecycle rules select by object tags: expiring by metadata needs {hint('metadata', 'tags')}"
                )
            tags = [{"Key": k, "Value": v} for k, v in codec.encode_tags(dict(where), None).items()]
            scope = {"And": {"Prefix": keys.models, "Tags": tags}}
            rules.append({"ID": f"{prefix}expire", "Status": "Enabled", "Filter": scope, "Expiration": days})
        else:
            for area in [keys.models] if metadata_mode == codec.TAGS else [keys.models, keys.metadata]:
                name = "expire" if area == keys.models else "expire-sidecars"
                rules.append(
                    {"ID": f"{prefix}{name}", "Status": "Enabled", "Filter": {"Prefix": area}, "Expiration": days}
                )
    abort = {"DaysAfterInitiation": _days(abort_uploads_after)}
    rules.append(
        {
            "ID": f"{prefix}abort-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": keys.prefix},
            "AbortIncompleteMultipartUpload": abort,
        }
    )
    # Direct uploads never committed: gone with the uploads that were never completed.
    rules.append(
        {
            "ID": f"{prefix}expire-direct-uploads",
            "Status": "Enabled",
            "Filter": {"Prefix": keys.uploads},
            "Expiration": {"Days": abort["DaysAfterInitiation"]},
        }
    )
    return rules
