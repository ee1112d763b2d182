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
import xml.etree.ElementTree as ET
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


_S3_XML = "http://s3.amazonaws.com/doc/2006-03-01/"


def rule_element(rule: dict) -> ET.Element:
    """A rule in S3's JSON form as the ``<Rule>`` of a LifecycleConfiguration document."""

    def add(parent: ET.Element, name: str, value: object) -> None:
        if isinstance(value, dict):
            child = ET.SubElement(parent, name)
            for key, inner in value.items():
                add(child, key, inner)
        elif isinstance(value, list):  # Tags: one <Tag> each
            for item in value:
                add(parent, name.removesuffix("s"), item)
        else:
            ET.SubElement(parent, name).text = str(value)

    element = ET.Element("Rule")
    for key, value in rule.items():
        add(element, key, value)
    return element


def replace_rules_in_xml(document: bytes | None, id_prefix: str, rules: list[dict]) -> bytes:
    """A LifecycleConfiguration document with the rules whose ID starts with ``id_prefix`` replaced by ``rules``;
    every other rule kept as the server wrote it (Ceph RGW answers in the older form without a Filter)."""
    root = ET.fromstring(document) if document else ET.Element("LifecycleConfiguration")
    for element in root.iter():  # one namespace for the kept rules and the new ones, written as the default
        element.tag = element.tag.rpartition("}")[2]
    root.set("xmlns", _S3_XML)
    for rule in root.findall("Rule"):
        if (rule.findtext("ID") or "").startswith(id_prefix):
            root.remove(rule)
    root.extend(rule_element(rule) for rule in rules)
    return ET.tostring(root)


def abort_rules_in_xml(document: bytes | None) -> list[tuple[str, int]]:
    """(prefix, days) of the enabled rules of a LifecycleConfiguration document that abort incomplete uploads."""
    found = []
    for rule in ET.fromstring(document).findall("{*}Rule") if document else []:
        days = rule.findtext("{*}AbortIncompleteMultipartUpload/{*}DaysAfterInitiation")
        if rule.findtext("{*}Status") == "Enabled" and days:
            prefix = rule.findtext("{*}Filter/{*}Prefix") or rule.findtext("{*}Filter/{*}And/{*}Prefix")
            found.append((prefix or rule.findtext("{*}Prefix") or "", int(days)))
    return found
