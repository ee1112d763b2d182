"""Where a benchmark runs: a throw-away SeaweedFS on loopback, or an endpoint named by URL.

Both raw SDKs and both adapters talk to the same endpoint and bucket, each
under its own key prefix inside one run prefix, so nothing outside that
prefix is touched on a shared bucket.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from adapters.testing.seaweedfs import SeaweedFSServer
from adapters.testing.servers import S3Endpoint, unique_bucket_name

# The test fixture keeps volumes small so that many buckets fit; one bucket
# of large models instead wants few, large volumes (fewer volume allocations
# during a 1 GiB write).
SEAWEED_VOLUME_MB = 1024


@dataclass(frozen=True)
class Target:
    """An S3 endpoint, a bucket on it, and the prefix this run may use."""

    endpoint: S3Endpoint
    bucket: str
    prefix: str
    description: str

    @property
    def server_pid(self) -> int | None:
        """The local server's process, whose CPU use is measured; None for a remote endpoint."""
        return self.endpoint.extra.get("pid")

    def as_dict(self) -> dict:
        """What a child process needs to reach the same place (sent on stdin, never argv)."""
        ep = self.endpoint
        return {
            "endpoint_url": ep.endpoint_url,
            "access_key": ep.access_key,
            "secret_key": ep.secret_key,
            "region": ep.region,
            "ca_bundle": ep.ca_bundle,
            "bucket": self.bucket,
            "prefix": self.prefix,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Target:
        extra = {"ca_bundle": d["ca_bundle"]} if d.get("ca_bundle") else {}
        ep = S3Endpoint("given", d["endpoint_url"], d["access_key"], d["secret_key"], d["region"], extra=extra)
        return cls(ep, d["bucket"], d["prefix"], "given")


@contextlib.contextmanager
def open_target(url: str | None, *, https: bool = False) -> Iterator[Target]:
    """The endpoint to benchmark; a SeaweedFS started here (over TLS with ``https``) when ``url`` is None."""
    run_prefix = f"modelstorage-bench-{uuid.uuid4().hex[:8]}/"
    if https and url is not None:
        raise SystemExit("--https starts a local server over TLS; for an endpoint of yours, put https in --url")
    if url is not None:
        endpoint, bucket, prefix = parse_url(url)
        yield Target(endpoint, bucket, prefix + run_prefix, f"{endpoint.endpoint_url} bucket {bucket}")
        return
    with SeaweedFSServer(volume_size_limit_mb=SEAWEED_VOLUME_MB, https=https) as endpoint:
        bucket = unique_bucket_name("bench")
        endpoint.boto3_client().create_bucket(Bucket=bucket)
        yield Target(endpoint, bucket, run_prefix, f"SeaweedFS on loopback ({endpoint.endpoint_url})")


def parse_url(url: str) -> tuple[S3Endpoint, str, str]:
    """``s3://bucket/prefix?endpoint_url=...&region=...`` or ``minio://host:port/bucket/prefix?secure=false``.

    Credentials come from the environment, never from the URL: the AWS
    variables, else MINIO_ACCESS_KEY / MINIO_SECRET_KEY.
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    if parts.scheme == "s3":
        bucket, prefix = parts.netloc, parts.path.lstrip("/")
        endpoint_url = query.get("endpoint_url") or f"https://s3.{region}.amazonaws.com"
    elif parts.scheme == "minio":
        bucket, _, prefix = parts.path.lstrip("/").partition("/")
        secure = query.get("secure", "true").lower() not in ("false", "0", "no")
        endpoint_url = f"{'https' if secure else 'http'}://{parts.netloc}"
    else:
        raise SystemExit(f"--url must start with s3:// or minio://, not {url!r}")
    if not bucket:
        raise SystemExit("--url must name a bucket")
    access_key = os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("MINIO_ACCESS_KEY")
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY") or os.environ.get("MINIO_SECRET_KEY")
    if not access_key or not secret_key:
        raise SystemExit("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or MINIO_ACCESS_KEY/MINIO_SECRET_KEY)")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    return S3Endpoint("url", endpoint_url, access_key, secret_key, region), bucket, prefix


def purge(target: Target) -> None:
    """Remove every object under the run prefix (and nothing else)."""
    s3 = target.endpoint.boto3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=target.prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=target.bucket, Delete={"Objects": keys, "Quiet": True})
