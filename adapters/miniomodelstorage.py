"""MinioModelStorage: models on MinIO (or any S3 API) through the MinIO SDK.

This file only translates: the ObjectClient calls into MinIO SDK calls, its
exceptions into the library's. Behaviour lives in ``adapters.objectstore``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from functools import partial
from itertools import islice
from urllib.parse import quote, urlencode, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.credentials import ChainedProvider, EnvAWSProvider, EnvMinioProvider, StaticProvider
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.sse import SseCustomerKey
from minio.xml import Element, SubElement, getbytes

from adapters import client as seam
from adapters import minio_internals as internals
from adapters.lifecycle import abort_rules_in_xml, replace_rules_in_xml
from adapters.minio_internals import CHECKSUM_SHA256
from adapters.objectstore import ObjectStoreModelStorage, split_url_options
from adapters.options import MIN_PART_SIZE, FednSettings, ObjectStoreOptions, check_bucket_name, check_key_pair
from adapters.presign import presign_v4
from adapters.serverside import ServerSide
from storage.errors import ConfigurationError, StorageError
from storage.options import StorageURL, hint, parse_bool, url_hints

logger = logging.getLogger("modelstorage")


def _translate(exc: Exception, bucket: str) -> StorageError | None:
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else None
        return seam.classify(status, exc.code, exc.message or "", bucket=bucket)
    if isinstance(exc, ServerError):
        return seam.classify(exc.status_code, None, str(exc), bucket=bucket)
    if isinstance(exc, InvalidResponseError):
        return seam.classify(internals.response_status(exc), None, "unexpected response", bucket=bucket)
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError)):
        return seam.connection_failure(exc)
    if isinstance(exc, MinioException):
        return StorageError(f"MinIO request failed: {exc}")
    if isinstance(exc, ValueError):  # the SDK's own checks of names and arguments
        return ConfigurationError(f"the MinIO SDK refused the request: {exc}")
    return None


_translated = seam.translating(_translate)


def _token_header(token: str | None) -> dict[str, str]:
    return {f"x-amz-meta-{seam.WRITE_TOKEN}": token} if token else {}


def _token_of(headers) -> str | None:
    return headers.get(f"x-amz-meta-{seam.WRITE_TOKEN}") if headers is not None else None


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


class _MinioClient:
    def __init__(
        self,
        minio: Minio,
        bucket: str,
        region: str | None,
        pool: urllib3.PoolManager | None,
        endpoint: str,
        server_side: ServerSide,
    ) -> None:
        self._minio = minio
        self._endpoint = endpoint
        self.bucket = bucket
        self._region = region
        self._pool = pool
        self._writes = server_side.write_headers()
        self._reads = server_side.read_headers()
        self._copy_source = server_side.copy_source_headers()
        self._owner = server_side.owner_headers()
        key = server_side.sse_customer_key
        self._ssec = SseCustomerKey(key.key) if key else None

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
    def head(self, key: str) -> seam.ObjectInfo:
        stat = self._minio.stat_object(self.bucket, key, ssec=self._ssec)
        return seam.ObjectInfo(stat.size, _quoted(stat.etag), stat.last_modified, _token_of(stat.metadata))

    @_translated
    def get(self, key: str, start: int | None = None, end: int | None = None, if_match: str | None = None):
        offset = start or 0
        length = 0 if end is None else end - offset + 1
        headers = {"If-Match": if_match} if if_match else None
        response = self._minio.get_object(
            self.bucket, key, offset=offset, length=length, request_headers=headers, ssec=self._ssec
        )
        content_range = response.headers.get("Content-Range")
        size = int(content_range.rsplit("/", 1)[1]) if content_range else int(response.headers["Content-Length"])
        headers = response.headers
        modified = parsedate_to_datetime(headers["Last-Modified"])
        info = seam.ObjectInfo(size, _quoted(headers.get("ETag", "")), modified, _token_of(headers))
        return seam.ObjectResponse(info, seam.ResponseBody(response, self, _translate, partial(_release, response)))

    @_translated
    def put(self, key: str, body, *, sha256: str, mode: seam.PutMode = seam.OVERWRITE, tags=None, token=None) -> str:
        # The SDK need not hash the body again: see minio_internals.KnownDigestMinio.
        checksum = {CHECKSUM_SHA256: seam.checksum_sha256(sha256), **_token_header(token), **self._writes}
        if mode is seam.OVERWRITE:
            result = self._minio.put_object(
                self.bucket,
                key,
                io.BytesIO(body),
                len(body),
                metadata=checksum,
                tags=_tags(tags) if tags else None,
                part_size=max(len(body), MIN_PART_SIZE),  # one PUT, whatever its size
            )
            return _quoted(result.etag)
        headers = {"Content-Type": "application/octet-stream", **checksum, **mode.headers()}
        if tags:
            headers["x-amz-tagging"] = urlencode(tags)
        return _quoted(internals.put(self._minio, self.bucket, key, body, headers))

    @_translated
    def start_upload(self, key: str, token: str | None = None) -> _MinioUpload:
        headers = {**_token_header(token), **self._writes}
        return _MinioUpload(self, key, internals.create_upload(self._minio, self.bucket, key, headers))

    @_translated
    def uploads(self, prefix: str) -> list[_MinioUpload]:
        return [_MinioUpload(self, *found) for found in internals.list_uploads(self._minio, self.bucket, prefix)]

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
            raise seam.classify(None, errors[0].code, f"{errors[0].name}: {errors[0].message}", bucket=self.bucket)

    @_translated
    def list_page(self, prefix: str, start_after: str | None) -> tuple[list[str], bool]:
        listing = self._minio.list_objects(self.bucket, prefix=prefix, recursive=True, start_after=start_after)
        keys = [item.object_name for item in islice(listing, 1000)]
        return keys, len(keys) == 1000

    @_translated
    def replace_lifecycle_rules(self, id_prefix: str, rules: list[dict]) -> None:
        document = replace_rules_in_xml(internals.lifecycle(self._minio, self.bucket), id_prefix, rules)
        internals.set_lifecycle(self._minio, self.bucket, document)

    @_translated
    def abort_rules(self) -> list[tuple[str, int]]:
        return abort_rules_in_xml(internals.lifecycle(self._minio, self.bucket))

    def presign_get(self, key: str, expires: int) -> str:
        return self._presign("GET", key, expires, {**self._reads, **self._owner})

    def presign_put(self, key: str, expires: int, headers: dict[str, str]) -> str:
        return self._presign("PUT", key, expires, headers)

    def _presign(self, method: str, key: str, expires: int, headers: dict[str, str], query: str = "") -> str:
        scheme = "https" if internals.speaks_https(self._minio) else "http"
        url = f"{scheme}://{self._endpoint}/{self.bucket}/{quote(key)}{'?' + query if query else ''}"
        creds = internals.credentials(self._minio)
        return presign_v4(
            method,
            url,
            region=self._region or "us-east-1",
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.session_token,
            headers=headers,
            expires=expires,
        )

    def use_plain_http(self) -> str:
        return hint("secure", False)

    def use_tls(self) -> str:
        return hint("secure", True)

    def plain_http_address(self) -> tuple[str, int] | None:
        if internals.speaks_https(self._minio):
            return None
        host, _, port = self._endpoint.rpartition(":")
        return (host.strip("[]") or self._endpoint, int(port) if port.isdigit() else 80)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
        else:
            internals.drop_connections(self._minio)


class _MinioUpload(seam.UploadHandle):
    client: _MinioClient

    @_translated
    def put_part(self, number: int, body: bytes) -> str:
        client = self.client
        return internals.upload_part(client._minio, self.bucket, self.key, self.upload_id, number, body, client._reads)

    @_translated
    def has_parts(self) -> bool:
        return internals.has_parts(self.client._minio, self.bucket, self.key, self.upload_id)

    @_translated
    def parts(self) -> list[tuple[int, str, int]]:
        return internals.list_parts(self.client._minio, self.bucket, self.key, self.upload_id)

    @_translated
    def copy_part(self, number: int, source_key: str, start: int, end: int) -> str:
        client = self.client
        source = {
            "x-amz-copy-source": f"/{self.bucket}/{source_key}",
            "x-amz-copy-source-range": f"bytes={start}-{end}",
        }
        headers = {**source, **client._reads, **client._copy_source}
        return _quoted(internals.copy_part(client._minio, self.bucket, self.key, self.upload_id, number, headers))

    def presign_part(self, number: int, size: int, expires: int) -> str:
        query = f"partNumber={number}&uploadId={quote(self.upload_id, safe='')}"
        headers = {"content-length": str(size), **self.client._reads, **self.client._owner}
        return self.client._presign("PUT", self.key, expires, headers, query)

    @_translated
    def complete(self, parts: Sequence[tuple[int, str]], mode: seam.PutMode) -> str:
        element = Element("CompleteMultipartUpload")
        for number, etag in parts:
            part = SubElement(element, "Part")
            SubElement(part, "PartNumber", str(number))
            SubElement(part, "ETag", _quoted(etag))
        body = getbytes(element)
        return _quoted(
            internals.complete_upload(self.client._minio, self.bucket, self.key, self.upload_id, body, mode.headers())
        )

    @_translated
    def abort(self) -> None:
        internals.abort_upload(self.client._minio, self.bucket, self.key, self.upload_id)


def _release(response) -> None:
    response.close()
    response.release_conn()


def _tags(tags: dict[str, str]) -> Tags:
    result = Tags(for_object=True)
    result.update(tags)
    return result


def make_minio_client(
    endpoint: str,
    bucket: str,
    *,
    access_key: str | None,
    secret_key: str | None,
    secure: bool,
    region: str | None,
    options: ObjectStoreOptions,
) -> _MinioClient:
    """A MinIO client whose urllib3 pool never retries, so the retry policy is the only one."""
    transport = options.transport
    if access_key is not None:
        credentials = StaticProvider(access_key, secret_key)
    else:
        credentials = ChainedProvider([EnvMinioProvider(), EnvAWSProvider()])
        try:
            credentials.retrieve()
        except ValueError:
            raise ConfigurationError(
                "no MinIO credentials: set MINIO_ACCESS_KEY and MINIO_SECRET_KEY (or AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY) in the environment{'' if url_hints() else ', or pass access_key=/secret_key='}"
            ) from None
    if secure and not transport.verify:
        logger.warning("TLS certificate verification is OFF for %s", endpoint)
    pool = urllib3.PoolManager(
        timeout=transport.timeout(),
        maxsize=transport.pool_for(options.max_concurrency),
        retries=False,
        cert_reqs="CERT_REQUIRED" if transport.verify else "CERT_NONE",
        ca_certs=transport.verify if isinstance(transport.verify, str) else certifi.where(),
    )
    try:
        minio = internals.KnownDigestMinio(
            endpoint, credentials=credentials, secure=secure, region=region, http_client=pool
        )
    except ValueError as exc:
        raise ConfigurationError(f"invalid MinIO endpoint {endpoint!r}: {exc}") from None
    minio.expected_bucket_owner = options.server_side.expected_bucket_owner
    return _MinioClient(minio, bucket, region, pool, endpoint, options.server_side)


class MinioModelStorage(ObjectStoreModelStorage):
    """Models as objects ``{prefix}models/{id}`` in a MinIO bucket, via the MinIO SDK.

    Credentials: ``access_key``/``secret_key``, else ``MINIO_ACCESS_KEY`` and
    ``MINIO_SECRET_KEY``, else the AWS variables. ``settings`` are the options
    of ``adapters.options``. Pass ``client=`` to use a ``Minio`` you built
    yourself (its retry and timeout settings are then yours).
    """

    fedn_storage_type = "MINIO"

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        prefix: str = "",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        secure: bool = True,
        region: str | None = None,
        client: Minio | None = None,
        options: ObjectStoreOptions | None = None,
        **settings: object,
    ) -> None:
        check_key_pair(access_key, secret_key)
        check_bucket_name(bucket)
        if "://" in endpoint or endpoint.endswith(":") or "/" in endpoint:
            raise ConfigurationError(
                f"the MinIO endpoint {endpoint!r} is host:port, without a scheme or path: e.g. localhost:9000, "
                f"with {hint('secure', False)} for plain HTTP"
            )
        self.endpoint = endpoint

        def make_client(options: ObjectStoreOptions) -> _MinioClient:
            if client is not None:
                if options.server_side.expected_bucket_owner:
                    raise ConfigurationError("expected_bucket_owner needs a client the store builds: leave client= out")
                return _MinioClient(client, bucket, region, None, endpoint, options.server_side)
            return make_minio_client(
                endpoint,
                bucket,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                options=options,
            )

        super().__init__(make_client, prefix, options=options, passed_in=client is not None, **settings)

    @classmethod
    def from_url(cls, url: StorageURL, *, create: bool = True) -> MinioModelStorage:
        """``minio://host:port/bucket/prefix?secure=false&metadata=tags``."""
        connection, settings = split_url_options(url, {"secure", "region"})
        if url.netloc.endswith(":") or url.path.startswith("//"):  # minio://http://host:9000/...
            raise ConfigurationError(
                "minio:// URLs name host:port without a scheme: minio://host:9000/bucket/prefix, "
                "with the URL option secure=false for plain HTTP"
            )
        bucket, _, prefix = url.path.lstrip("/").partition("/")
        if not url.netloc or not bucket:
            raise ConfigurationError("MinIO URLs name a host and a bucket: minio://host:port/bucket/prefix")
        secure = parse_bool("URL option secure", connection.pop("secure", "true"))
        return cls(url.netloc, bucket, prefix, secure=secure, **connection, options=settings)

    @classmethod
    def from_fedn(cls, config, *, prefix: str = "", **settings: object) -> MinioModelStorage:
        fedn = FednSettings.parse(config)
        host, secure = fedn.host, fedn.secure
        if not host and fedn.endpoint:
            parts = urlsplit(fedn.endpoint if "://" in fedn.endpoint else f"//{fedn.endpoint}")
            host, secure = parts.netloc, parts.scheme != "http" if parts.scheme else secure
        if not host:
            raise ConfigurationError("FEDn MINIO storage needs storage_hostname and storage_port (or storage_endpoint)")
        return cls(
            host,
            fedn.bucket,
            prefix,
            access_key=fedn.access_key,
            secret_key=fedn.secret_key,
            secure=secure,
            region=fedn.region,
            **{"verify": fedn.verify, **fedn.options, **settings},
        )
