"""Opening the object stores from URLs, FEDn settings and environment variables.

Each way of configuring a store is proven by using the store it opens against
the real SeaweedFS server, not by inspecting attributes alone.
"""

from __future__ import annotations

import logging
import uuid

import pytest

from adapters import MinioModelStorage, S3ModelStorage
from storage import ConfigurationError, from_fedn_config, open_storage

FEDN_VARIABLES = (
    "FEDN_OBJECT_STORAGE_TYPE",
    "FEDN_OBJECT_STORAGE_ENDPOINT",
    "FEDN_OBJECT_STORAGE_ACCESS_KEY",
    "FEDN_OBJECT_STORAGE_SECRET_KEY",
    "FEDN_OBJECT_STORAGE_REGION",
    "FEDN_OBJECT_STORAGE_SECURE_MODE",
    "FEDN_OBJECT_STORAGE_VERIFY_SSL",
    "FEDN_OBJECT_MODEL_BUCKET",
)
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in FEDN_VARIABLES + CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def bucket(seaweedfs_endpoint):
    raw = seaweedfs_endpoint.boto3_client()
    name = f"config-{uuid.uuid4().hex[:12]}"
    raw.create_bucket(Bucket=name)
    yield name
    for item in raw.list_objects_v2(Bucket=name).get("Contents", []):
        raw.delete_object(Bucket=name, Key=item["Key"])
    raw.delete_bucket(Bucket=name)


def _round_trip(store, expected_type, metadata=None):
    assert type(store) is expected_type
    with store:
        store.put("model", b"weights", metadata if metadata is not None else {"round": 1})
        assert store.get("model").read() == b"weights"
        assert store.list() == ["model"]
        store.delete_all()


def test_s3_url(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    clean_env.setenv("AWS_ACCESS_KEY_ID", ep.access_key)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_key)
    store = open_storage(f"s3://{bucket}/tenant/a?endpoint_url={ep.endpoint_url}&region={ep.region}&metadata=tags")
    assert store.keys.prefix == "tenant/a/"
    assert store.metadata_mode == "tags"
    _round_trip(store, S3ModelStorage, {"status": 0})


def test_s3_honours_aws_endpoint_url(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    clean_env.setenv("AWS_ENDPOINT_URL", ep.endpoint_url)
    clean_env.setenv("AWS_ACCESS_KEY_ID", ep.access_key)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_key)
    clean_env.setenv("AWS_DEFAULT_REGION", ep.region)
    _round_trip(S3ModelStorage(bucket), S3ModelStorage)


def test_minio_url_with_minio_credentials(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    clean_env.setenv("MINIO_ACCESS_KEY", ep.access_key)
    clean_env.setenv("MINIO_SECRET_KEY", ep.secret_key)
    store = open_storage(f"minio://{ep.netloc}/{bucket}/prefix?secure=false&ranged_get_threshold=33554432")
    assert store.keys.prefix == "prefix/"
    assert store.options.ranged_get_threshold == 32 * 2**20
    _round_trip(store, MinioModelStorage)


def test_minio_falls_back_to_aws_credentials(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    clean_env.setenv("AWS_ACCESS_KEY_ID", ep.access_key)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", ep.secret_key)
    _round_trip(MinioModelStorage(ep.netloc, bucket, secure=False), MinioModelStorage)


def test_minio_without_credentials_says_where_to_put_them(clean_env):
    with pytest.raises(ConfigurationError, match="MINIO_ACCESS_KEY"):
        MinioModelStorage("localhost:9000", "bucket", secure=False)


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/p?colour=blue",
        "minio://localhost:9000/bucket?secure=maybe",
        "s3://bucket?part_size=big",
        "s3://bucket?part_size=1024",
        "s3://bucket?ranged_get_threshold=0",
        "minio://localhost:9000/bucket?ranged_get_threshold=lots",
        "s3://bucket?metadata=xattr",
        "minio://localhost:9000",
        "s3://bucket/../escape?endpoint_url=http://localhost:1",
    ],
)
def test_bad_object_store_urls_raise_configuration_error(clean_env, url):
    clean_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    clean_env.setenv("MINIO_ACCESS_KEY", "k")
    clean_env.setenv("MINIO_SECRET_KEY", "s")
    with pytest.raises(ConfigurationError):
        open_storage(url)


def test_fedn_boto3_settings(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    settings = {
        "storage_type": "BOTO3",
        "storage_config": {
            "storage_endpoint": ep.endpoint_url,
            "storage_access_key": ep.access_key,
            "storage_secret_key": ep.secret_key,
            "storage_bucket": bucket,
            "storage_region": ep.region,
            "storage_secure_mode": False,
        },
    }
    _round_trip(from_fedn_config(settings, prefix="combiner-1/"), S3ModelStorage)
    _round_trip(from_fedn_config({"storage": settings}, metadata="tags"), S3ModelStorage, 0)


def test_fedn_minio_settings(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    settings = {
        "storage_type": "MINIO",
        "storage_config": {
            "storage_hostname": ep.host,
            "storage_port": ep.port,
            "storage_access_key": ep.access_key,
            "storage_secret_key": ep.secret_key,
            "storage_bucket": bucket,
            "storage_secure_mode": "false",
        },
    }
    _round_trip(from_fedn_config(settings), MinioModelStorage)


def test_fedn_environment_variables(clean_env, seaweedfs_endpoint, bucket):
    ep = seaweedfs_endpoint
    clean_env.setenv("FEDN_OBJECT_STORAGE_TYPE", "minio")
    clean_env.setenv("FEDN_OBJECT_STORAGE_ENDPOINT", ep.endpoint_url)
    clean_env.setenv("FEDN_OBJECT_STORAGE_ACCESS_KEY", ep.access_key)
    clean_env.setenv("FEDN_OBJECT_STORAGE_SECRET_KEY", ep.secret_key)
    clean_env.setenv("FEDN_OBJECT_MODEL_BUCKET", bucket)
    _round_trip(from_fedn_config(), MinioModelStorage)
    clean_env.setenv("FEDN_OBJECT_STORAGE_TYPE", "BOTO3")
    _round_trip(from_fedn_config(), S3ModelStorage)


def test_fedn_without_object_storage_is_the_temp_store(clean_env, tmp_path):
    from storage import TempModelStorage

    clean_env.setenv("FEDN_MODEL_DIR", str(tmp_path))
    store = from_fedn_config()
    assert isinstance(store, TempModelStorage)
    assert store.directory == tmp_path


def test_fedn_unknown_storage_type(clean_env):
    with pytest.raises(ConfigurationError, match="BOTO3 or MINIO"):
        from_fedn_config({"storage_type": "SAAS", "storage_config": {}})


def test_turning_tls_verification_off_logs_a_warning(clean_env, caplog):
    with caplog.at_level(logging.WARNING, logger="modelstorage"):
        S3ModelStorage("bucket", endpoint_url="https://localhost:1", access_key="k", secret_key="s", verify=False)
        MinioModelStorage("localhost:1", "bucket", access_key="k", secret_key="s", verify=False)
    warnings = [r.getMessage() for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 2


def test_tls_is_verified_by_default(clean_env):
    s3 = S3ModelStorage("bucket", endpoint_url="https://localhost:1", access_key="k", secret_key="s")
    assert s3.client._s3._endpoint.http_session._verify is True
    minio = MinioModelStorage("localhost:1", "bucket", access_key="k", secret_key="s")
    assert minio.client._minio._http.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"


def test_url_options_are_the_keyword_arguments_by_the_same_names(clean_env, tmp_path):
    """One options object: a URL and keyword arguments give the same store, a CA bundle path included."""
    clean_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a request is made")
    query = (
        f"metadata=tags&part_size=8MiB&max_concurrency=2&ranged_get_threshold=64MiB&max_attempts=3&deadline=30"
        f"&connect_timeout=2&read_timeout=1m&verify={ca}&pool_size=12"
    )
    from_url = open_storage(f"s3://bucket/p?endpoint_url=https://localhost:1&{query}")
    from_keywords = S3ModelStorage(
        "bucket",
        "p",
        endpoint_url="https://localhost:1",
        metadata="tags",
        part_size=8 * 2**20,
        max_concurrency=2,
        ranged_get_threshold=64 * 2**20,
        max_attempts=3,
        deadline=30,
        connect_timeout=2,
        read_timeout=60,
        verify=str(ca),
        pool_size=12,
    )
    assert from_url.options == from_keywords.options
    assert from_url.options.transport.verify == str(ca)
    assert (from_url.options.retry.max_attempts, from_url.options.retry.deadline) == (3, 30)
    assert from_url.client._s3._endpoint.http_session._verify == str(ca)


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"part_size": "1KiB"}, "part_size="), ({"deadline": -1}, "deadline="), ({"colour": "blue"}, "colour")],
)
def test_a_bad_keyword_option_is_named_as_the_argument(clean_env, settings, named):
    with pytest.raises(ConfigurationError, match=named):
        S3ModelStorage("bucket", endpoint_url="https://localhost:1", access_key="k", secret_key="s", **settings)


def test_a_bad_url_option_is_named_as_the_url_option(clean_env):
    clean_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with pytest.raises(ConfigurationError, match="URL option part_size"):
        open_storage("s3://bucket?part_size=1KiB")
