"""Secrets, TLS and namespaces.

- a secret key never appears in a repr, a str, a log record at any level
  (botocore's and urllib3's DEBUG logs included), an exception, or on the wire;
- TLS is verified by default (a self-signed server is refused, once, without
  retries); turning verification off takes an explicit option and logs a warning;
- with an empty prefix, delete_all touches only models/ and metadata/;
- no id reaches a key outside the prefix: hostile ids send no request at all,
  and every request a store sends names a key under its prefix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import ssl
import time
import traceback
import uuid
from functools import partial

import pytest
from chaos import MiB, adapter_store, blob, raw_clear, raw_keys, record_put_payloads
from faultproxy import CORRUPT, RESET, FaultProxy, Reply

from adapters.testing.servers import write_self_signed_certificate
from storage import (
    BucketNotFoundError,
    InvalidModelIdError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
    from_fedn_config,
    open_storage,
)
from storage.retry import RetryPolicy

pytestmark = [pytest.mark.objectstore, pytest.mark.tier4]

ADAPTERS = ("s3", "minio")
QUICK = {
    "retry": RetryPolicy(max_attempts=3, deadline=2.0, initial_backoff=0.01, max_backoff=0.02),
    "connect_timeout": 0.5,
    "read_timeout": 2.0,
}


@pytest.fixture(scope="module")
def raw(seaweedfs_endpoint):
    return seaweedfs_endpoint.boto3_client()


@pytest.fixture
def bucket(raw):
    name = f"security-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=name)
    yield name
    raw_clear(raw, name, "")
    raw.delete_bucket(Bucket=name)


# -- secrets ---------------------------------------------------------------------------------------------


class _Everything(logging.Handler):
    """Every log record of every logger, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def all_logs():
    handler = _Everything()
    root = logging.getLogger()
    names = ["", "botocore", "boto3", "urllib3", "minio", "modelstorage", "modelstorage.retry", "s3transfer"]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _exception_texts(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return texts


def test_a_secret_key_never_appears_in_reprs_logs_errors_or_on_the_wire(
    seaweedfs_endpoint, bucket, all_logs, monkeypatch
):
    ep = seaweedfs_endpoint
    secret = ep.secret_key
    wrong_secret = "wrong-" + uuid.uuid4().hex
    texts: list[str] = []
    wire: list[str] = []

    def expect(error, call):
        with pytest.raises(error) as raised:
            call()
        texts.extend(_exception_texts(raised.value))

    with FaultProxy(ep.netloc) as proxy:
        proxy.rules.append(lambda r: wire.append(r.target + json.dumps(r.headers)) or None)
        # Faults too, so retries are logged: a 503 and a reset early on.
        proxy.rules.append(lambda r: Reply(503, "SlowDown") if r.index == 2 else RESET if r.index == 5 else None)
        monkeypatch.setenv("MINIO_ACCESS_KEY", ep.access_key)
        monkeypatch.setenv("MINIO_SECRET_KEY", secret)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ep.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        settings = {"storage_access_key": ep.access_key, "storage_secret_key": secret, "storage_bucket": bucket}
        stores = [
            adapter_store("s3", ep, bucket, "explicit-s3/", netloc=proxy.netloc, **QUICK),
            adapter_store("minio", ep, bucket, "explicit-minio/", netloc=proxy.netloc, **QUICK, metadata="tags"),
            from_fedn_config(
                {"storage_type": "BOTO3", "storage_config": {**settings, "storage_endpoint": proxy.endpoint_url}},
                prefix="fedn-s3/",
                **QUICK,
            ),
            from_fedn_config(
                {
                    "storage_type": "MINIO",
                    "storage_config": {
                        **settings,
                        "storage_hostname": "127.0.0.1",
                        "storage_port": proxy.port,
                        "storage_secure_mode": False,
                    },
                },
                prefix="fedn-minio/",
                **QUICK,
            ),
            open_storage(f"minio://{proxy.netloc}/{bucket}/env-minio?secure=false"),
            open_storage(f"s3://{bucket}/env-s3?endpoint_url={proxy.endpoint_url}&region=us-east-1"),
        ]
        for n, store in enumerate(stores):
            texts += [repr(store), str(store), repr(store.client)]
            store.put("small", b"weights", {"round": 1})
            assert store.get("small", verify=True).read() == b"weights"
            if n < 2:  # multipart, on both adapters
                with store.get_ptr("large") as writer:
                    for _ in range(6):
                        writer.write(blob("large", 1, MiB))
                with store.open("large", verify=True) as reader:
                    reader.read()
            texts += [repr(store.stat("small")), json.dumps(store.get_model_metadata("small")), repr(store.list())]
            expect(InvalidModelIdError, partial(store.get, "../" + secret))
            store.delete("small")
            store.delete_all()
            store.close()
        # Failures: a wrong secret, a missing bucket, an unreachable endpoint.
        for adapter in ADAPTERS:
            for key in (secret, wrong_secret):
                ok = key == secret
                store = adapter_store(adapter, ep, bucket, "fail/", netloc=proxy.netloc, **QUICK, secret_key=key)
                texts += [repr(store), str(store)]
                if not ok:
                    expect(StoragePermissionError, partial(store.put, "m", b"x"))
                    expect(StoragePermissionError, store.list)
                store.close()
            missing = adapter_store(adapter, ep, f"missing-{uuid.uuid4().hex[:8]}", "", netloc=proxy.netloc, **QUICK)
            expect(BucketNotFoundError, partial(missing.put, "m", b"x"))
            missing.close()
            gone = adapter_store(adapter, ep, bucket, "", netloc="127.0.0.1:9", **QUICK)
            expect(StorageUnavailableError, partial(gone.exist, "m"))
            gone.close()
        expect(StorageError, partial(open_storage, f"s3://{ep.access_key}:{secret}@{bucket}/x"))
    texts += all_logs.texts
    assert len(all_logs.texts) > 100, "DEBUG logging of the SDKs was not captured"
    assert any(t.startswith("botocore") for t in all_logs.texts)
    assert any(t.startswith("urllib3") for t in all_logs.texts)
    assert any("retrying" in t for t in all_logs.texts)
    for key in (secret, wrong_secret):
        leaks = [t[:300] for t in texts if key in t]
        assert leaks == [], f"the secret appears in: {leaks}"
        assert not [w for w in wire if key in w], "the secret went over the wire"
    assert proxy.faults  # the retries above were really exercised


# -- TLS ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """(server SSLContext, path of the CA certificate) for 127.0.0.1."""
    cert_path, key_path = write_self_signed_certificate(tmp_path_factory.mktemp("tls"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _tls_store(adapter, ep, bucket, proxy, **options):
    from adapters import MinioModelStorage, S3ModelStorage

    common = dict(access_key=ep.access_key, secret_key=ep.secret_key, region=ep.region, **QUICK)
    if adapter == "s3":
        return S3ModelStorage(bucket, "tls/", endpoint_url=proxy.endpoint_url, **common, **options)
    return MinioModelStorage(proxy.netloc, bucket, "tls/", **common, **options)  # secure=True by default


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # urllib3 agrees, once verify=False
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_tls_is_verified_by_default_and_turning_it_off_takes_an_option_and_a_warning(
    adapter, seaweedfs_endpoint, bucket, self_signed, caplog
):
    context, ca_path = self_signed
    ep = seaweedfs_endpoint
    with FaultProxy(ep.netloc, tls=context) as proxy, caplog.at_level(logging.WARNING, logger="modelstorage"):
        # Default: the self-signed server is refused, once (a certificate is not a transient failure).
        store = _tls_store(adapter, ep, bucket, proxy)
        with pytest.raises(StorageError, match="TLS certificate verification failed") as raised:
            store.put("m", b"x")
        assert not isinstance(raised.value, StorageUnavailableError)
        _wait_for(lambda: proxy.tls_failures >= 1)
        assert proxy.tls_failures == 1 and proxy.requests == 0
        store.close()
        assert not [r for r in caplog.records if "verification is OFF" in r.getMessage()]
        # Off only when asked, and then loudly.
        insecure = _tls_store(adapter, ep, bucket, proxy, verify=False)
        warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        insecure.put("m", b"over TLS")
        assert insecure.get("m").read() == b"over TLS"
        insecure.delete_all()
        insecure.close()
        # A private CA, trusted explicitly, without turning verification off.
        caplog.clear()
        trusted = _tls_store(adapter, ep, bucket, proxy, verify=ca_path)
        trusted.put("m", b"verified")
        assert trusted.get("m").read() == b"verified"
        trusted.delete_all()
        trusted.close()
        assert not [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert proxy.tls_failures == 1


def test_over_https_the_s3_adapter_leaves_the_bodies_to_tls(seaweedfs_endpoint, bucket, self_signed):
    """No second SHA-256 pass by botocore over any body: TLS protects them in transit, as boto3 assumes."""
    context, ca_path = self_signed
    ep = seaweedfs_endpoint
    with FaultProxy(ep.netloc, tls=context) as proxy:
        payloads = record_put_payloads(proxy)
        store = _tls_store("s3", ep, bucket, proxy, verify=ca_path, part_size=5 * MiB)
        data = blob("large", 1, 11 * MiB)
        store.put("large", data, {"v": 1})
        assert store.get("large", verify=True).getvalue() == data
        store.delete_all()
        store.close()
    assert sorted(op for op, _, _ in payloads) == ["PutObject", "UploadPart", "UploadPart", "UploadPart"]
    assert {payload for _, payload, _ in payloads} == {"UNSIGNED-PAYLOAD"}


def test_fedn_settings_turn_tls_verification_off_only_when_asked_and_log_it(caplog):
    base = {"storage_access_key": "k", "storage_secret_key": "s", "storage_bucket": "fedn-models"}
    with caplog.at_level(logging.WARNING, logger="modelstorage"):
        verified = [
            from_fedn_config({"storage_type": "BOTO3", "storage_config": {**base, "storage_endpoint": "https://h:1"}}),
            from_fedn_config({"storage_type": "MINIO", "storage_config": {**base, "storage_hostname": "h"}}),
        ]
        assert not caplog.records
        assert verified[0].client._s3._endpoint.http_session._verify is True
        assert verified[1].client._minio._http.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
        off = {**base, "storage_verify_ssl": False}
        from_fedn_config({"storage_type": "BOTO3", "storage_config": {**off, "storage_endpoint": "https://h:1"}})
        from_fedn_config({"storage_type": "MINIO", "storage_config": {**off, "storage_hostname": "h"}})
    assert len([r for r in caplog.records if "verification is OFF" in r.getMessage()]) == 2


# -- namespaces --------------------------------------------------------------------------------------------

OUTSIDE = [
    "README.md",
    "other/models/m1",
    "models-old/m1",
    "modelsm1",
    "metadata.json",
    "metadatam1.json",
    "models/sub/m1",
    "models/.hidden",
    "metadata/notes.txt",
    "metadata/sub/m1.json",
    "tenant-a/models/m1",
    "tenant-a/metadata/m1.json",
]


@pytest.mark.parametrize("metadata", ["sidecar", "tags"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_with_an_empty_prefix_delete_all_touches_only_models_and_metadata(
    adapter, metadata, seaweedfs_endpoint, raw, bucket
):
    for key in OUTSIDE:
        raw.put_object(Bucket=bucket, Key=key, Body=b"not the store's")
    store = adapter_store(adapter, seaweedfs_endpoint, bucket, "", metadata=metadata)
    store.put("m1", b"one", {"v": 1})
    store.put("m2", b"two", {"v": 2})
    assert store.list() == ["m1", "m2"]
    assert store.delete_all() is True
    assert store.list() == []
    assert raw_keys(raw, bucket, "") == set(OUTSIDE)
    store.close()


HOSTILE_IDS = [
    "../escape",
    "../../other-bucket/key",
    "/absolute",
    "a/../../b",
    "..",
    ".",
    "",
    "x" * 201,
    "models/../metadata/x",
    "a\\..\\b",
    "%2e%2e%2f",
    "nul\0",
    "ünïcode",
    ".hidden",
]
EDGE_IDS = ["a..b", "-", "_", "x" * 200, "dots...", "UPPER-lower_0.9"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_id_reaches_a_key_outside_the_prefix(adapter, seaweedfs_endpoint, raw, bucket):
    prefix = "tenant-a/"
    with FaultProxy(seaweedfs_endpoint.netloc) as proxy:
        store = adapter_store(adapter, seaweedfs_endpoint, bucket, prefix, netloc=proxy.netloc)
        store.exist("warm-up")
        proxy.reset_counts()
        for model_id in HOSTILE_IDS:
            for call in (
                store.exist,
                store.get,
                store.open,
                store.stat,
                store.get_ptr,
                store.delete,
                store.get_model_metadata,
                partial(store.put, data=b"x"),
                partial(store.set_model_metadata, model_metadata={"v": 1}),
            ):
                with pytest.raises(InvalidModelIdError):
                    call(model_id)
        assert proxy.requests == 0, "a hostile id reached the server"
        for n, model_id in enumerate(EDGE_IDS):
            store.put(model_id, b"edge", {"id": model_id})
            if n < 2:  # multipart as well
                with store.get_ptr(model_id) as writer:
                    writer.write(b"e" * (5 * MiB + 1))
                assert store.get(model_id).read() == b"e" * (5 * MiB + 1)
            store.set_model_metadata(model_id, {"v": 2})
        assert store.list() == sorted(EDGE_IDS)
        store.delete(EDGE_IDS[0])
        store.delete_all()
        store.close()
    for entry in proxy.entries():
        if entry.operation in ("ListObjects", "ListMultipartUploads"):
            assert entry.query.get("prefix", "").startswith(prefix), entry
        elif entry.operation in ("HeadBucket", "DeleteObjects"):
            assert entry.path.strip("/") == bucket, entry
        else:
            assert entry.path.startswith(f"/{bucket}/{prefix}"), entry
    deleted = [r.body.decode() for r in proxy.bodies if r.operation == "DeleteObjects"]
    assert deleted
    for body in deleted:
        keys = [part.split("</Key>")[0] for part in body.split("<Key>")[1:]]
        assert keys and all(key.startswith(prefix) for key in keys), keys
    assert raw_keys(raw, bucket, "") == set()


def test_over_https_the_minio_adapter_sends_a_models_sha256_in_place_of_an_md5(
    seaweedfs_endpoint, bucket, self_signed, monkeypatch
):
    """The SDK would MD5 every body over HTTPS; a whole-model PUT carries the SHA-256 already computed instead.

    The server checks it: a body damaged on the way is refused and sent again.
    """
    import minio.api

    md5_sizes: list[int] = []
    sdk_md5 = minio.api.md5sum_hash

    def counted_md5(body):
        md5_sizes.append(len(body or b""))
        return sdk_md5(body)

    monkeypatch.setattr(minio.api, "md5sum_hash", counted_md5)
    context, ca_path = self_signed
    ep = seaweedfs_endpoint
    seen: list[tuple[str | None, bool]] = []
    damaged: set[str] = set()

    def record_and_damage_once(request):
        if request.method == "PUT" and request.length:
            seen.append((request.headers.get("x-amz-checksum-sha256"), "content-md5" in request.headers))
            if request.target not in damaged:
                damaged.add(request.target)
                return CORRUPT
        return None

    data = blob("model", 1, 3 * MiB)
    with FaultProxy(ep.netloc, tls=context) as proxy:
        proxy.rules.append(record_and_damage_once)
        store = _tls_store("minio", ep, bucket, proxy, verify=ca_path)
        store.put("model", data, {"v": 1})
        assert store.get("model", verify=True).getvalue() == data
        assert store.get_model_metadata("model") == {"v": 1}
        store.delete_all()
        store.close()
        refused = [e.status for e in proxy.entries() if e.fault == CORRUPT]
    assert refused == [400, 400]  # the model's bytes and its sidecar, each sent again
    assert len(seen) == 4 and not any(md5 for _, md5 in seen)
    assert seen[0][0] == seen[1][0] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert max(md5_sizes, default=0) < 1024  # no body was MD5-hashed; small XML requests still are
