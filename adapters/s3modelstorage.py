"""S3ModelStorage: models on AWS S3 (or any S3 API) through boto3.

This file only translates: the ObjectClient calls into boto3 calls, botocore's
exceptions into the library's. Behaviour lives in ``adapters.objectstore``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from urllib.parse import urlencode

import boto3
import botocore.exceptions as bce
import botocore.handlers
import botocore.session
import urllib3
from botocore.config import Config

from adapters.client import ObjectInfo, ObjectResponse, ResponseBody, checksum_sha256, classify, translating
from adapters.objectstore import DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_SIZE, ObjectStoreModelStorage, url_settings
from adapters.retry import RetryPolicy, TransientError
from storage.errors import ConfigurationError, StorageError, StoragePermissionError

logger = logging.getLogger("modelstorage")

_TRANSIENT = (
    bce.EndpointConnectionError,
    bce.ConnectionClosedError,
    bce.ConnectTimeoutError,
    bce.ReadTimeoutError,
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.HTTPClientError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
)


def _translate(exc: Exception, bucket: str) -> StorageError | None:
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return classify(status, error.get("Code"), error.get("Message", ""), bucket=bucket)
    if isinstance(exc, _TRANSIENT):
        return TransientError(f"connection to S3 failed: {exc}")
    if isinstance(exc, bce.NoCredentialsError):
        return StoragePermissionError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or run where an IAM role is available"
        )
    if isinstance(exc, bce.BotoCoreError):
        return StorageError(f"S3 request failed: {exc}")
    return None


_translated = translating(_translate)


class _Boto3Client:
    def __init__(self, s3, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    @_translated
    def bucket_exists(self) -> bool:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except bce.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                return False
            raise
        return True

    @_translated
    def create_bucket(self) -> None:
        region = self._s3.meta.region_name
        extra = {}
        if region and region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with contextlib.suppress(self._s3.exceptions.BucketAlreadyOwnedByYou):
            self._s3.create_bucket(Bucket=self.bucket, **extra)

    @_translated
    def head(self, key: str) -> ObjectInfo:
        r = self._s3.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(r["ContentLength"], r["ETag"], r["LastModified"])

    @_translated
    def get(self, key: str, start: int | None = None, end: int | None = None, if_match: str | None = None):
        extra = {}
        if start is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end}"
        if if_match is not None:
            extra["IfMatch"] = if_match
        r = self._s3.get_object(Bucket=self.bucket, Key=key, **extra)
        size = int(r["ContentRange"].rsplit("/", 1)[1]) if r.get("ContentRange") else r["ContentLength"]
        body = ResponseBody(r["Body"], self.bucket, _translate, r["Body"].close)
        return ObjectResponse(ObjectInfo(size, r["ETag"], r["LastModified"]), body)

    @_translated
    def put(
        self,
        key: str,
        body,
        *,
        sha256: str,
        tags: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> str:
        # The server refuses a body that does not match (BadDigest), so the body
        # needs no signature of its own (see _sign_only_unprotected_bodies).
        extra = {"ChecksumSHA256": checksum_sha256(sha256)}
        if tags:
            extra["Tagging"] = urlencode(tags)
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match:
            extra["IfMatch"] = if_match
        return self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)["ETag"]

    @_translated
    def create_multipart(self, key: str) -> str:
        return self._s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    @_translated
    def upload_part(self, key: str, upload_id: str, number: int, body) -> str:
        r = self._s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)
        return r["ETag"]

    @_translated
    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *, if_none_match: bool = False
    ) -> str:
        extra = {"IfNoneMatch": "*"} if if_none_match else {}
        r = self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
            **extra,
        )
        return r["ETag"]

    @_translated
    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    @_translated
    def get_tags(self, key: str) -> dict[str, str]:
        r = self._s3.get_object_tagging(Bucket=self.bucket, Key=key)
        return {tag["Key"]: tag["Value"] for tag in r["TagSet"]}

    @_translated
    def put_tags(self, key: str, tags: dict[str, str]) -> None:
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        self._s3.put_object_tagging(Bucket=self.bucket, Key=key, Tagging={"TagSet": tag_set})

    @_translated
    def delete_many(self, keys: Sequence[str]) -> None:
        objects = [{"Key": key} for key in keys]
        r = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        errors = [e for e in r.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise classify(
                None, first.get("Code"), f"{first.get('Key')}: {first.get('Message', '')}", bucket=self.bucket
            )

    @_translated
    def list_page(self, prefix: str, start_after: str | None) -> tuple[list[str], bool]:
        extra = {"StartAfter": start_after} if start_after else {}
        r = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1000, **extra)
        return [item["Key"] for item in r.get("Contents", [])], bool(r.get("IsTruncated"))

    @_translated
    def list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        pages = self._s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        return [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]

    def close(self) -> None:
        self._s3.close()


def make_s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    verify: bool | str = True,
    retry: RetryPolicy | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
):
    """A boto3 S3 client with its own retries off, so the retry policy is the only one."""
    retry = retry or RetryPolicy()
    custom_endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        region_name=region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=retry.connect_timeout,
        read_timeout=retry.read_timeout,
        max_pool_connections=max(10, 2 * max_concurrency),
        # The model's SHA-256 is computed and kept by the core; botocore's
        # extra CRC pass over every body would only cost CPU.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Custom endpoints (MinIO, LocalStack, SeaweedFS) serve path-style URLs.
        s3={"addressing_style": "path" if custom_endpoint else "auto"},
    )
    if verify is False:
        logger.warning("TLS certificate verification is OFF for %s", custom_endpoint or "S3")
    if (access_key is None) != (secret_key is None):
        raise ConfigurationError("give both access_key and secret_key, or neither")
    session = boto3.session.Session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, botocore_session=_botocore_session()
    )
    client = session.client("s3", endpoint_url=endpoint_url, config=config, verify=verify)
    # botocore asks for "100 Continue" before every PUT body: a round trip per
    # request, and after an empty body SeaweedFS's answer desynchronizes the
    # connection (the next request on it times out).
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    _sign_only_unprotected_bodies(client)
    return client


def _sign_only_unprotected_bodies(client) -> None:
    """Spare botocore a second SHA-256 pass over bodies that are protected already.

    A PUT carries its body's SHA-256 (a model's is computed while it is
    written) in the signed ``x-amz-checksum-sha256`` header, and the server
    refuses a body that does not match it (BadDigest): the guarantee a signed
    payload gives, without hashing the body twice. Over HTTPS, TLS protects
    every body, as boto3's own defaults assume. Any other body (a part of a
    multipart upload over HTTP) is still signed.
    """
    config = client.meta.config
    unsigned = config.merge(Config(s3={**(config.s3 or {}), "payload_signing_enabled": False}))

    def unsign_protected(request, **_) -> None:
        if request.url.startswith("https://") or "x-amz-checksum-sha256" in request.headers:
            # botocore reads the choice from the request's own copy of the client config.
            request.context["client_config"] = unsigned

    client.meta.events.register("before-sign.s3", unsign_protected)


_shared_loader = None
_loader_lock = threading.Lock()


def _botocore_session() -> botocore.session.Session:
    """A new session (its own credential chain) sharing one loader of service models.

    Loading S3's service model is most of the cost of a new client; sharing
    the loader makes opening a store cheap without sharing credentials.
    """
    global _shared_loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _shared_loader is None:
            _shared_loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _shared_loader)
    return session


class S3ModelStorage(ObjectStoreModelStorage):
    """Models as objects ``{prefix}models/{id}`` in an S3 bucket, via boto3.

    Credentials come from boto3's own chain (environment, profile, role);
    ``AWS_ENDPOINT_URL`` is honoured. Pass ``client=`` to use a boto3 client
    you built yourself (its retry settings are then yours).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        verify: bool | str = True,
        metadata: str = "sidecar",
        retry: RetryPolicy | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        ranged_get_threshold: int | None = None,
        create_bucket: bool = False,
        client=None,
    ) -> None:
        retry = retry or RetryPolicy()
        if client is None:
            client = make_s3_client(
                endpoint_url=endpoint_url,
                region=region,
                access_key=access_key,
                secret_key=secret_key,
                verify=verify,
                retry=retry,
                max_concurrency=max_concurrency,
            )
        super().__init__(
            _Boto3Client(client, bucket),
            prefix,
            metadata=metadata,
            retry=retry,
            part_size=part_size,
            max_concurrency=max_concurrency,
            ranged_get_threshold=ranged_get_threshold,
            create_bucket=create_bucket,
        )

    @classmethod
    def from_url(cls, parts, options: dict[str, str]) -> S3ModelStorage:
        """``s3://bucket/prefix?endpoint_url=...&region=...&metadata=tags``."""
        settings = url_settings("s3://", options, extra={"endpoint_url", "region", "verify"})
        return cls(parts.netloc, parts.path.lstrip("/"), **settings)
