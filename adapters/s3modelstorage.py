"""S3ModelStorage: models on AWS S3 (or any S3 API) through boto3.

This file only translates: the ObjectClient calls into boto3 calls, botocore's
exceptions into the library's. Behaviour lives in ``adapters.objectstore``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

import boto3
import botocore.exceptions as bce
import urllib3
from botocore.config import Config

from adapters import botocore_tweaks
from adapters import client as seam
from adapters.objectstore import ObjectStoreModelStorage, split_url_options
from adapters.options import FednSettings, ObjectStoreOptions, check_bucket_name, check_key_pair
from adapters.serverside import ServerSide
from storage.errors import ConfigurationError, StorageError, StoragePermissionError
from storage.options import StorageURL, hint

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
        return seam.classify(status, error.get("Code"), error.get("Message", ""), bucket=bucket)
    if isinstance(exc, _TRANSIENT):
        return seam.connection_failure(exc)
    if isinstance(exc, bce.NoCredentialsError):
        return StoragePermissionError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "or run where an IAM role is available"
        )
    if isinstance(exc, bce.BotoCoreError):
        return StorageError(f"S3 request failed: {exc}")
    return None


_translated = seam.translating(_translate)


class _Boto3Client:
    def __init__(self, s3, bucket: str, server_side: ServerSide) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._writes = _sse_params(server_side.write_headers())
        self._reads = _sse_params(server_side.read_headers())
        self._copy_source = _sse_params(server_side.copy_source_headers())

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
    def head(self, key: str) -> seam.ObjectInfo:
        r = self._s3.head_object(Bucket=self.bucket, Key=key, **self._reads)
        return _info(r, r["ContentLength"])

    @_translated
    def get(self, key: str, start: int | None = None, end: int | None = None, if_match: str | None = None):
        extra = {}
        if start is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end}"
        if if_match is not None:
            extra["IfMatch"] = if_match
        r = self._s3.get_object(Bucket=self.bucket, Key=key, **extra, **self._reads)
        size = int(r["ContentRange"].rsplit("/", 1)[1]) if r.get("ContentRange") else r["ContentLength"]
        body = seam.ResponseBody(r["Body"], self, _translate, r["Body"].close)
        return seam.ObjectResponse(_info(r, size), body)

    @_translated
    def put(self, key: str, body, *, sha256: str, mode: seam.PutMode = seam.OVERWRITE, tags=None, token=None) -> str:
        # The server refuses a body that does not match (BadDigest), so the body
        # needs no signature of its own (botocore_tweaks.sign_only_unprotected_bodies).
        extra = {"ChecksumSHA256": seam.checksum_sha256(sha256), **_conditions(mode), **_token(token), **self._writes}
        if tags:
            extra["Tagging"] = urlencode(tags)
        return self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)["ETag"]

    @_translated
    def start_upload(self, key: str, token: str | None = None) -> _Boto3Upload:
        created = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, **_token(token), **self._writes)
        upload_id = created["UploadId"]
        return _Boto3Upload(self, key, upload_id)

    @_translated
    def uploads(self, prefix: str) -> list[_Boto3Upload]:
        pages = self._s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        return [
            _Boto3Upload(self, u["Key"], u["UploadId"], u.get("Initiated"))
            for page in pages
            for u in page.get("Uploads", [])
        ]

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
            raise seam.classify(
                None, first.get("Code"), f"{first.get('Key')}: {first.get('Message', '')}", bucket=self.bucket
            )

    @_translated
    def list_page(self, prefix: str, start_after: str | None) -> tuple[list[str], bool]:
        extra = {"StartAfter": start_after} if start_after else {}
        r = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1000, **extra)
        return [item["Key"] for item in r.get("Contents", [])], bool(r.get("IsTruncated"))

    def _lifecycle_rules(self) -> list[dict]:
        try:
            return self._s3.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except bce.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise

    @_translated
    def replace_lifecycle_rules(self, id_prefix: str, rules: list[dict]) -> None:
        kept = [rule for rule in self._lifecycle_rules() if not rule.get("ID", "").startswith(id_prefix)]
        configuration = {"Rules": kept + rules}
        self._s3.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration=configuration)

    @_translated
    def abort_rules(self) -> list[tuple[str, int]]:
        found = []
        for rule in self._lifecycle_rules():
            days = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
            if rule.get("Status") == "Enabled" and days is not None:
                scope = rule.get("Filter", {})
                found.append((scope.get("Prefix", scope.get("And", {}).get("Prefix", rule.get("Prefix", ""))), days))
        return found

    def presign_get(self, key: str, expires: int) -> str:
        params = {"Bucket": self.bucket, "Key": key, **self._reads}
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)

    def presign_put(self, key: str, expires: int, headers: dict[str, str]) -> str:
        params = {"Bucket": self.bucket, "Key": key, **_sse_params(headers)}
        return self._s3.generate_presigned_url("put_object", Params=params, ExpiresIn=expires)

    def use_plain_http(self) -> str:
        return hint("endpoint_url", self._s3.meta.endpoint_url.replace("https://", "http://", 1))

    def use_tls(self) -> str:
        return hint("endpoint_url", self._s3.meta.endpoint_url.replace("http://", "https://", 1))

    def plain_http_address(self) -> tuple[str, int] | None:
        parts = urlsplit(self._s3.meta.endpoint_url)
        return (parts.hostname or "", parts.port or 80) if parts.scheme == "http" else None

    def close(self) -> None:
        self._s3.close()


class _Boto3Upload(seam.UploadHandle):
    client: _Boto3Client

    def _ids(self) -> dict[str, str]:
        return {"Bucket": self.client.bucket, "Key": self.key, "UploadId": self.upload_id}

    @_translated
    def put_part(self, number: int, body: bytes) -> str:
        return self.client._s3.upload_part(**self._ids(), PartNumber=number, Body=body, **self.client._reads)["ETag"]

    @_translated
    def has_parts(self) -> bool:
        return bool(self.client._s3.list_parts(**self._ids(), MaxParts=1).get("Parts"))

    @_translated
    def parts(self) -> list[tuple[int, str, int]]:
        pages = self.client._s3.get_paginator("list_parts").paginate(**self._ids())
        return [(p["PartNumber"], p["ETag"], p["Size"]) for page in pages for p in page.get("Parts", [])]

    @_translated
    def copy_part(self, number: int, source_key: str, start: int, end: int) -> str:
        client = self.client
        r = client._s3.upload_part_copy(
            **self._ids(),
            PartNumber=number,
            CopySource={"Bucket": client.bucket, "Key": source_key},
            CopySourceRange=f"bytes={start}-{end}",
            **client._reads,
            **client._copy_source,
        )
        return r["CopyPartResult"]["ETag"]

    def presign_part(self, number: int, size: int, expires: int) -> str:
        params = {**self._ids(), "PartNumber": number, "ContentLength": size, **self.client._reads}  # type unsigned
        return self.client._s3.generate_presigned_url("upload_part", Params=params, ExpiresIn=expires)

    @_translated
    def complete(self, parts: Sequence[tuple[int, str]], mode: seam.PutMode) -> str:
        listed = {"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]}
        r = self.client._s3.complete_multipart_upload(**self._ids(), MultipartUpload=listed, **_conditions(mode))
        return r["ETag"]

    @_translated
    def abort(self) -> None:
        self.client._s3.abort_multipart_upload(**self._ids())


_SSE_PARAMS = {
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-server-side-encryption-bucket-key-enabled": "BucketKeyEnabled",
    "x-amz-storage-class": "StorageClass",
    "x-amz-server-side-encryption-customer-algorithm": "SSECustomerAlgorithm",
    "x-amz-server-side-encryption-customer-key": "SSECustomerKey",
    "x-amz-copy-source-server-side-encryption-customer-algorithm": "CopySourceSSECustomerAlgorithm",
    "x-amz-copy-source-server-side-encryption-customer-key": "CopySourceSSECustomerKey",
    "content-length": "ContentLength",
    "content-type": "ContentType",
    "x-amz-checksum-sha256": "ChecksumSHA256",
}


def _sse_params(headers: dict[str, str]) -> dict[str, object]:
    """``ServerSide``'s headers as boto3 arguments (boto3 adds the key's MD5, and base64s the key itself)."""
    params: dict[str, object] = {}
    for header, value in headers.items():
        name = _SSE_PARAMS.get(header)
        if name == "BucketKeyEnabled":
            params[name] = value == "true"
        elif name == "ContentLength":
            params[name] = int(value)
        elif name in ("SSECustomerKey", "CopySourceSSECustomerKey"):
            params[name] = base64.b64decode(value)
        elif name:
            params[name] = value
    return params


def _info(response: dict, size: int) -> seam.ObjectInfo:
    token = response.get("Metadata", {}).get(seam.WRITE_TOKEN)
    return seam.ObjectInfo(size, response["ETag"], response["LastModified"], token)


def _token(token: str | None) -> dict:
    return {"Metadata": {seam.WRITE_TOKEN: token}} if token else {}


def _conditions(mode: seam.PutMode) -> dict[str, str]:
    return {"IfNoneMatch": "*"} if mode.kind == "create" else {"IfMatch": mode.etag} if mode.kind == "update" else {}


def make_s3_client(
    bucket: str,
    *,
    endpoint_url: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
    options: ObjectStoreOptions,
) -> _Boto3Client:
    """A boto3 S3 client with its own retries off, so the retry policy is the only one."""
    transport = options.transport
    custom_endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        region_name=region,
        retries={"total_max_attempts": 1, "mode": "standard"},
        signature_version="s3v4",  # presigned URLs too, which sign the headers they are given
        connect_timeout=transport.connect_timeout,
        read_timeout=transport.read_timeout,
        max_pool_connections=transport.pool_for(options.max_concurrency),
        # The model's SHA-256 is computed and kept by the core; botocore's
        # extra CRC pass over every body would only cost CPU.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Custom endpoints (MinIO, LocalStack, SeaweedFS) serve path-style URLs.
        s3={"addressing_style": "path" if custom_endpoint else "auto"},
    )
    if transport.verify is False:
        logger.warning("TLS certificate verification is OFF for %s", custom_endpoint or "S3")
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        botocore_session=botocore_tweaks.session_sharing_models(),
    )
    s3 = session.client("s3", endpoint_url=endpoint_url, config=config, verify=transport.verify)
    botocore_tweaks.no_expect_header(s3)
    botocore_tweaks.sign_only_unprotected_bodies(s3)
    botocore_tweaks.clamp_timeouts(s3, transport.timeout())
    botocore_tweaks.expect_bucket_owner(s3, options.server_side.expected_bucket_owner)
    return _Boto3Client(s3, bucket, options.server_side)


class S3ModelStorage(ObjectStoreModelStorage):
    """Models as objects ``{prefix}models/{id}`` in an S3 bucket, via boto3.

    Credentials come from boto3's own chain (environment, profile, role);
    ``AWS_ENDPOINT_URL`` is honoured. ``settings`` are the options of
    ``adapters.options`` (``metadata="tags"``, ``part_size=...``). Pass
    ``client=`` to use a boto3 client you built yourself (its retry and
    timeout settings are then yours).
    """

    fedn_storage_type = "BOTO3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        client=None,
        options: ObjectStoreOptions | None = None,
        **settings: object,
    ) -> None:
        check_key_pair(access_key, secret_key)
        check_bucket_name(bucket)
        if endpoint_url and not endpoint_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"endpoint_url {endpoint_url!r} has no scheme: use {hint('endpoint_url', 'http://' + endpoint_url)} "
                "for plain HTTP, or https:// for TLS"
            )

        def make_client(options: ObjectStoreOptions) -> _Boto3Client:
            if client is not None:
                if options.server_side.expected_bucket_owner:
                    raise ConfigurationError("expected_bucket_owner needs a client the store builds: leave client= out")
                return _Boto3Client(client, bucket, options.server_side)
            return make_s3_client(
                bucket,
                endpoint_url=endpoint_url,
                region=region,
                access_key=access_key,
                secret_key=secret_key,
                options=options,
            )

        super().__init__(make_client, prefix, options=options, passed_in=client is not None, **settings)

    @classmethod
    def from_url(cls, url: StorageURL, *, create: bool = True) -> S3ModelStorage:
        """``s3://bucket/prefix?endpoint_url=...&region=...&metadata=tags``."""
        connection, settings = split_url_options(url, {"endpoint_url", "region"})
        if not url.netloc:
            raise ConfigurationError("s3:// URLs name a bucket: s3://bucket/prefix")
        return cls(url.netloc, url.path.lstrip("/"), **connection, options=settings)

    @classmethod
    def from_fedn(cls, config, *, prefix: str = "", **settings: object) -> S3ModelStorage:
        fedn = FednSettings.parse(config)
        endpoint = fedn.endpoint or (f"{'https' if fedn.secure else 'http'}://{fedn.host}" if fedn.host else None)
        return cls(
            fedn.bucket,
            prefix,
            endpoint_url=endpoint,
            region=fedn.region,
            access_key=fedn.access_key,
            secret_key=fedn.secret_key,
            **{"verify": fedn.verify, **fedn.options, **settings},
        )
