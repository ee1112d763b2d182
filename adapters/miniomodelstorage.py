"""MinioModelStorage: models on MinIO (or any S3 API) through the MinIO SDK.

This file only translates: the ObjectClient calls into MinIO SDK calls, its
exceptions into the library's. Behaviour lives in ``adapters.objectstore``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from functools import partial
from itertools import islice
from urllib.parse import urlencode

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.credentials import ChainedProvider, EnvAWSProvider, EnvMinioProvider, StaticProvider
from minio.datatypes import CompleteMultipartUploadResult
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import md5sum_hash
from minio.xml import Element, SubElement, getbytes

from adapters.client import ObjectInfo, ObjectResponse, ResponseBody, checksum_sha256, classify, translating
from adapters.objectstore import DEFAULT_MAX_CONCURRENCY, DEFAULT_PART_SIZE, ObjectStoreModelStorage, url_settings
from adapters.retry import RetryPolicy, TransientError
from storage.errors import ConfigurationError, StorageError

logger = logging.getLogger("modelstorage")


def _translate(exc: Exception, bucket: str) -> StorageError | None:
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else None
        return classify(status, exc.code, exc.message or "", bucket=bucket)
    if isinstance(exc, ServerError):
        return classify(exc.status_code, None, str(exc), bucket=bucket)
    if isinstance(exc, InvalidResponseError):
        return classify(exc._code, None, "unexpected response", bucket=bucket)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError)):
        return TransientError(f"connection to MinIO failed: {type(exc).__name__}")
    if isinstance(exc, MinioException):
        return StorageError(f"MinIO request failed: {exc}")
    return None


_translated = translating(_translate)


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


CHECKSUM_SHA256 = "x-amz-checksum-sha256"


class _KnownDigestMinio(Minio):
    """A Minio client that does not hash a body whose SHA-256 it is given.

    The SDK hashes every body it sends: a SHA-256 to sign it over HTTP, an
    MD5 over HTTPS. A model's SHA-256 is computed while it is written, so the
    MinIO file hands it over in the standard ``x-amz-checksum-sha256``
    header. Over HTTP it becomes the signed payload hash instead (the server
    checks it as it checks any signed body); over HTTPS the header stays and
    the server checks the body by it, in place of the MD5. Any other request
    is built by the SDK as it always is.
    """

    def _build_headers(self, host, headers=None, body=None, creds=None):
        known = headers.get(CHECKSUM_SHA256) if headers else None
        if known is None or not body or not creds:
            return super()._build_headers(host, headers, body, creds)
        headers, date = super()._build_headers(host, headers, None, creds)  # None: nothing to hash
        headers["Content-Length"] = str(len(body))
        if not self._base_url.is_https:
            headers["x-amz-content-sha256"] = base64.b64decode(headers.pop(CHECKSUM_SHA256)).hex()
        return headers, date


class _MinioClient:
    def __init__(self, minio: Minio, bucket: str, region: str | None) -> None:
        self._minio = minio
        self.bucket = bucket
        self._region = region

    @_translated
    def bucket_exists(self) -> bool:
        return self._minio.bucket_exists(self.bucket)

    @_translated
    def create_bucket(self) -> None:
        try:
            self._minio.make_bucket(self.bucket, location=self._region)
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    @_translated
    def head(self, key: str) -> ObjectInfo:
        stat = self._minio.stat_object(self.bucket, key)
        return ObjectInfo(stat.size, _quoted(stat.etag), stat.last_modified)

    @_translated
    def get(self, key: str, start: int | None = None, end: int | None = None, if_match: str | None = None):
        offset = start or 0
        length = 0 if end is None else end - offset + 1
        headers = {"If-Match": if_match} if if_match else None
        response = self._minio.get_object(self.bucket, key, offset=offset, length=length, request_headers=headers)
        content_range = response.headers.get("Content-Range")
        size = int(content_range.rsplit("/", 1)[1]) if content_range else int(response.headers["Content-Length"])
        info = ObjectInfo(
            size, _quoted(response.headers.get("ETag", "")), parsedate_to_datetime(response.headers["Last-Modified"])
        )
        return ObjectResponse(info, ResponseBody(response, self.bucket, _translate, partial(_release, response)))

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
        # The SDK need not hash the body again: see _KnownDigestMinio.
        headers = {"Content-Type": "application/octet-stream", CHECKSUM_SHA256: checksum_sha256(sha256)}
        if tags:
            headers["x-amz-tagging"] = urlencode(tags)
        if if_none_match:
            headers["If-None-Match"] = "*"
        if if_match:
            headers["If-Match"] = if_match
        return _quoted(self._minio._put_object(self.bucket, key, body, headers=headers).etag)

    @_translated
    def create_multipart(self, key: str) -> str:
        return self._minio._create_multipart_upload(self.bucket, key, {"Content-Type": "application/octet-stream"})

    @_translated
    def upload_part(self, key: str, upload_id: str, number: int, body) -> str:
        return self._minio._upload_part(self.bucket, key, body, None, upload_id, number)

    @_translated
    def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *, if_none_match: bool = False
    ) -> str:
        # The SDK's own _complete_multipart_upload takes no headers, so it
        # cannot send If-None-Match; this is the same request with it.
        element = Element("CompleteMultipartUpload")
        for number, etag in parts:
            part = SubElement(element, "Part")
            SubElement(part, "PartNumber", str(number))
            SubElement(part, "ETag", _quoted(etag))
        body = getbytes(element)
        headers = {"Content-Type": "application/xml", "Content-MD5": md5sum_hash(body)}
        if if_none_match:
            headers["If-None-Match"] = "*"
        response = self._minio._execute(
            "POST", self.bucket, key, body=body, headers=headers, query_params={"uploadId": upload_id}
        )
        return _quoted(CompleteMultipartUploadResult(response).etag or "")

    @_translated
    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._minio._abort_multipart_upload(self.bucket, key, upload_id)

    @_translated
    def get_tags(self, key: str) -> dict[str, str]:
        return dict(self._minio.get_object_tags(self.bucket, key) or {})

    @_translated
    def put_tags(self, key: str, tags: dict[str, str]) -> None:
        if tags:
            self._minio.set_object_tags(self.bucket, key, _tags(tags))
        else:
            self._minio.delete_object_tags(self.bucket, key)

    @_translated
    def delete_many(self, keys: Sequence[str]) -> None:
        # remove_objects deletes nothing until its iterator is consumed.
        errors = [
            e for e in self._minio.remove_objects(self.bucket, [DeleteObject(k) for k in keys]) if e.code != "NoSuchKey"
        ]
        if errors:
            raise classify(None, errors[0].code, f"{errors[0].name}: {errors[0].message}", bucket=self.bucket)

    @_translated
    def list_page(self, prefix: str, start_after: str | None) -> tuple[list[str], bool]:
        listing = self._minio.list_objects(self.bucket, prefix=prefix, recursive=True, start_after=start_after)
        keys = [item.object_name for item in islice(listing, 1000)]
        return keys, len(keys) == 1000

    @_translated
    def list_uploads(self, prefix: str) -> list[tuple[str, str]]:
        result = self._minio._list_multipart_uploads(self.bucket, prefix=prefix)
        return [(u.object_name, u.upload_id) for u in result.uploads]

    def close(self) -> None:
        self._minio._http.clear()


def _release(response) -> None:
    response.close()
    response.release_conn()


def _tags(tags: dict[str, str]) -> Tags:
    result = Tags(for_object=True)
    result.update(tags)
    return result


def make_minio_client(
    endpoint: str,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    secure: bool = True,
    verify: bool | str = True,
    region: str | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> Minio:
    """A MinIO client whose urllib3 pool never retries, so the retry policy is the only one."""
    retry = retry or RetryPolicy()
    if (access_key is None) != (secret_key is None):
        raise ConfigurationError("give both access_key and secret_key, or neither")
    if access_key is not None:
        credentials = StaticProvider(access_key, secret_key)
    else:
        credentials = ChainedProvider([EnvMinioProvider(), EnvAWSProvider()])
        try:
            credentials.retrieve()
        except ValueError:
            raise ConfigurationError(
                "no MinIO credentials: pass access_key/secret_key, or set MINIO_ACCESS_KEY/MINIO_SECRET_KEY "
                "(or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
            ) from None
    if secure and not verify:
        logger.warning("TLS certificate verification is OFF for %s", endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=retry.connect_timeout, read=retry.read_timeout),
        maxsize=max(10, 2 * max_concurrency),
        retries=False,
        cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        ca_certs=verify if isinstance(verify, str) else certifi.where(),
    )
    try:
        return _KnownDigestMinio(endpoint, credentials=credentials, secure=secure, region=region, http_client=http)
    except ValueError as exc:
        raise ConfigurationError(f"invalid MinIO endpoint {endpoint!r}: {exc}") from None


class MinioModelStorage(ObjectStoreModelStorage):
    """Models as objects ``{prefix}models/{id}`` in a MinIO bucket, via the MinIO SDK.

    Credentials: ``access_key``/``secret_key``, else ``MINIO_ACCESS_KEY`` and
    ``MINIO_SECRET_KEY``, else the AWS variables. Pass ``client=`` to use a
    ``Minio`` you built yourself (its retry settings are then yours).
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = True,
        verify: bool | str = True,
        region: str | None = None,
        metadata: str = "sidecar",
        retry: RetryPolicy | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        ranged_get_threshold: int | None = None,
        create_bucket: bool = False,
        client: Minio | None = None,
    ) -> None:
        retry = retry or RetryPolicy()
        if client is None:
            client = make_minio_client(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                verify=verify,
                region=region,
                retry=retry,
                max_concurrency=max_concurrency,
            )
        self.endpoint = endpoint
        super().__init__(
            _MinioClient(client, bucket, region),
            prefix,
            metadata=metadata,
            retry=retry,
            part_size=part_size,
            max_concurrency=max_concurrency,
            ranged_get_threshold=ranged_get_threshold,
            create_bucket=create_bucket,
        )

    @classmethod
    def from_url(cls, parts, options: dict[str, str]) -> MinioModelStorage:
        """``minio://host:port/bucket/prefix?secure=false&metadata=tags``."""
        settings = url_settings("minio://", options, extra={"secure", "verify", "region"})
        bucket, _, prefix = parts.path.lstrip("/").partition("/")
        if not parts.netloc or not bucket:
            raise ConfigurationError("MinIO URLs name a host and a bucket: minio://host:port/bucket/prefix")
        return cls(parts.netloc, bucket, prefix, **settings)
