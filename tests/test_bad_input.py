"""Bad input, table-driven, on every backend: each case gets its typed error and changes nothing.

One test per backend walks the whole table (a store per case would cost
seconds per backend on the HTTP tiers). Before and after every case the
``footprint`` of the store (its folder tree, or every key and upload around its
prefix) is compared, and the model that was there before is read back.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import BackendSpec

from adapters.objectstore import ObjectStoreModelStorage
from storage import (
    BucketNotFoundError,
    ConfigurationError,
    InvalidModelIdError,
    MetadataError,
    ModelStorage,
    StoragePermissionError,
    StorageUnavailableError,
    TempModelStorage,
    from_fedn_config,
    open_storage,
)
from storage.model import MAX_METADATA_BYTES
from storage.retry import RetryPolicy

SECRET = "bad-input-secret-" + uuid.uuid4().hex
EXISTING = b"the model that was there before" * 10
EXISTING_METADATA = {"round": 7, "status": 0}


@dataclass
class Ctx:
    store: ModelStorage
    spec: BackendSpec
    tmp: Path
    request: pytest.FixtureRequest
    monkeypatch: pytest.MonkeyPatch

    @property
    def adapter(self) -> str | None:
        return self.spec.name.split("-")[0] if isinstance(self.store, ObjectStoreModelStorage) else None

    def endpoint(self):
        """The S3 server of this backend, or None under mock_aws (and for external endpoints)."""
        for server in ("seaweedfs", "ceph", "localstack", "moto_server"):
            fixture = f"{server}_endpoint"
            server = server.replace("_", "")
            if server in self.spec.name:
                return self.request.getfixturevalue(fixture)
        return None

    def sibling(
        self, *, bucket: str | None = None, url: str | None = None, prefix: str = "bad-input/", **options
    ) -> ModelStorage:
        """Another store of this backend's adapter, on this backend's server unless ``url`` says otherwise."""
        from adapters import MinioModelStorage, S3ModelStorage

        store = self.store
        assert isinstance(store, ObjectStoreModelStorage)
        bucket = bucket or store.bucket
        endpoint = self.endpoint()
        settings = dict(QUICK)
        if endpoint is not None:
            settings.update(access_key=endpoint.access_key, secret_key=endpoint.secret_key, region=endpoint.region)
        settings.update(options)
        if self.adapter == "s3":
            url = url or (endpoint.endpoint_url if endpoint else None)
            return S3ModelStorage(bucket, prefix, endpoint_url=url, **{"region": "us-east-1", **settings})
        netloc = (url or endpoint.endpoint_url).split("://", 1)[1]
        return MinioModelStorage(netloc, bucket, prefix, secure=False, **settings)


QUICK = {
    "retry": RetryPolicy(max_attempts=3, deadline=1.0, initial_backoff=0.01, max_backoff=0.05),
    "connect_timeout": 0.5,
    "read_timeout": 2.0,
}


def everywhere(spec: BackendSpec) -> bool:
    return True


def object_stores(spec: BackendSpec) -> bool:
    return "objectstore" in {mark.name for mark in spec.marks}


def http_object_stores(spec: BackendSpec) -> bool:
    return "seaweedfs" in spec.name or "motoserver" in spec.name


def checking_credentials(spec: BackendSpec) -> bool:
    return "seaweedfs" in spec.name  # moto accepts any credentials


def tag_stores(spec: BackendSpec) -> bool:
    return not spec.nested_metadata


def tempfile_only(spec: BackendSpec) -> bool:
    return spec.name == "tempfile"


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    call: Callable[[Ctx], object]
    error: type[BaseException]
    where: Callable[[BackendSpec], bool] = everywhere
    inputs: int = 1
    """How many bad inputs the case tries (an id case calls every method)."""
    aims_at: Callable[[ModelStorage], object] | None = None
    """What of a committed model the case aims at, read before and after it."""


CASES: list[Case] = []


def _existing_bytes(store: ModelStorage) -> bytes:
    return store.get("existing").read()


def _existing_metadata(store: ModelStorage):
    return store.get_model_metadata("existing")


def _written_bytes(store: ModelStorage) -> bytes:
    return store.get("written").read()


def case(group, name, error, where=everywhere, inputs=1, aims_at=None):
    def register(call):
        CASES.append(Case(group, name, call, error, where, inputs, aims_at))
        return call

    return register


# -- ids: every method refuses them before any I/O ------------------------------------------------

BAD_IDS = {
    "empty": "",
    "dot-dot": "..",
    "traversal": "../escape",
    "absolute": "/etc/passwd",
    "separator": "a/b",
    "backslash": "a\\b",
    "too-long": "x" * 201,
    "nul": "nul\0byte",
    "non-ascii-latin": "modèle",
    "leading-dot": ".hidden",
    "space": "with space",
    "newline": "line\nbreak",
    "not-a-str-none": None,
    "not-a-str-int": 42,
}


def _every_method(model_id) -> Callable[[Ctx], object]:
    def call(ctx: Ctx):
        store = ctx.store
        methods = [
            lambda: store.exist(model_id),
            lambda: store.get(model_id),
            lambda: store.get(model_id, verify=True),
            lambda: store.get_ptr(model_id),
            lambda: store.get_model_metadata(model_id),
            lambda: store.set_model_metadata(model_id, {"v": 1}),
            lambda: store.delete(model_id),
            lambda: store.put(model_id, b"x"),
            lambda: store.put(model_id, b"x", overwrite=False),
            lambda: store.open(model_id),
            lambda: store.stat(model_id),
        ]
        for method in methods[:-1]:
            with pytest.raises(InvalidModelIdError):
                method()
        methods[-1]()  # the case itself checks that the last one raises too

    return call


for _name, _id in BAD_IDS.items():
    case("id", _name, InvalidModelIdError, inputs=11)(_every_method(_id))


# -- data: put and the writer refuse what is not bytes ------------------------------------------------


class _ReadsText:
    def read(self, n=-1):
        return "text, not bytes"


def _text_file(ctx: Ctx):
    path = ctx.tmp / "weights.txt"
    path.write_text("0.1 0.2 0.3")
    return open(path)  # noqa: SIM115 - closed by the case


def _closed_binary_file(ctx: Ctx):
    path = ctx.tmp / "weights.bin"
    path.write_bytes(b"\0" * 10)
    f = open(path, "rb")  # noqa: SIM115
    f.close()
    return f


DATA = {
    "str": (lambda ctx: "weights as text", TypeError),
    "none": (lambda ctx: None, TypeError),
    "object-without-read": (lambda ctx: object(), TypeError),
    "int": (lambda ctx: 12345, TypeError),
    "generator": (lambda ctx: (b"x" for _ in range(3)), TypeError),
    "text-mode-file": (_text_file, TypeError),
    "read-returns-str": (lambda ctx: _ReadsText(), TypeError),
    "closed-binary-file": (_closed_binary_file, ValueError),
}


def _put_data(make, error):
    def call(ctx: Ctx):
        for model_id in ("existing", "fresh"):
            data = make(ctx)
            try:
                if model_id == "fresh":
                    return ctx.store.put(model_id, data, {"v": 1}, overwrite=False)
                with pytest.raises(error):
                    ctx.store.put(model_id, data, {"v": 1})
            finally:
                if hasattr(data, "close"):
                    data.close()

    return call


for _name, (_make, _error) in DATA.items():
    case("data", f"put-{_name}", _error, inputs=2, aims_at=_existing_bytes)(_put_data(_make, _error))


def _write_data(bad):
    def call(ctx: Ctx):
        writer = ctx.store.get_ptr("fresh")
        try:
            writer.write(bad)
        finally:
            writer.abort()

    return call


for _name, _bad in {"str": "text", "none": None}.items():
    case("data", f"writer-write-{_name}", TypeError)(_write_data(_bad))


# -- metadata -------------------------------------------------------------------------------------------

_cyclic_dict: dict = {"round": 1}
_cyclic_dict["self"] = _cyclic_dict
_cyclic_list: list = [1]
_cyclic_list.append(_cyclic_list)

BAD_METADATA = {
    "object": ([object()], everywhere),
    "set": ([{"ids": {1, 2}}], everywhere),
    "bytes": ([b"status"], everywhere),
    "nan": ([math.nan], everywhere),
    "nested-infinity": ([{"loss": math.inf}], everywhere),
    "cyclic-dict": ([_cyclic_dict], everywhere),
    "cyclic-list": ([_cyclic_list], everywhere),
    "tuple-key": ([{(1, 2): "pair"}], everywhere),
    "over-size-cap": ([{"blob": "x" * MAX_METADATA_BYTES}], everywhere),
    "beyond-tag-limits": ([{f"k{n}": n for n in range(10)}, {"k" * 129: 1}, {"k": "v" * 257}], tag_stores),
    "characters-tags-refuse": (
        [{"k": "#1"}, {"k": "wow!"}, {"k": "line\nbreak"}, {"k": "<b>"}, {"key;drop": 1}, {"k": "a,b"}],
        tag_stores,
    ),
    "not-flat-for-tags": ([{"k": {"nested": 1}}, {"k": [1, 2]}, [1, 2]], tag_stores),
    "reserved-tag-keys": ([{"modelstorage.sha256": "0" * 64}, {"aws:createdBy": "me"}, {"": 1}], tag_stores),
}


def _bad_metadata(values):
    def call(ctx: Ctx):
        for value in values:
            with pytest.raises(MetadataError):
                ctx.store.put("fresh", b"x", value)
            with pytest.raises(MetadataError):
                ctx.store.set_model_metadata("existing", value)
        raise MetadataError("every value above was refused")

    return call


for _name, (_values, _where) in BAD_METADATA.items():
    case("metadata", _name, MetadataError, _where, inputs=2 * len(_values), aims_at=_existing_metadata)(
        _bad_metadata(_values)
    )


# -- writer misuse --------------------------------------------------------------------------------------


def _committed_writer(ctx: Ctx):
    writer = ctx.store.get_ptr("written")
    writer.write(b"version 1")
    writer.close()
    return writer


@case("writer", "write-after-close", ValueError, aims_at=_written_bytes)
def _write_after_close(ctx: Ctx):
    ctx.writer.write(b"more")


@case("writer", "flush-after-close", ValueError)
def _flush_after_close(ctx: Ctx):
    ctx.writer.flush()


@case("writer", "abort-after-close", ValueError)
def _abort_after_close(ctx: Ctx):
    ctx.writer.abort()


class _NoError(Exception):
    """Raised by cases whose contract is *not* to raise, once they checked that."""


@case("writer", "double-close-is-a-no-op", _NoError, aims_at=_written_bytes)
def _double_close(ctx: Ctx):
    # A second close must not raise and must not commit again: the model
    # replaced in between stays.
    ctx.store.put("written", b"version 2")
    ctx.writer.close()
    ctx.writer.close()
    assert ctx.store.get("written").read() == b"version 2"
    ctx.store.put("written", b"version 1")  # as it was before the case
    raise _NoError


@case("writer", "write-after-abort", ValueError)
def _write_after_abort(ctx: Ctx):
    writer = ctx.store.get_ptr("aborted")
    writer.abort()
    writer.write(b"x")


# -- configuration ----------------------------------------------------------------------------------------


case("config", "unknown-scheme", ConfigurationError)(lambda ctx: open_storage("ftp://host/models"))
case("config", "scheme-typo", ConfigurationError)(lambda ctx: open_storage("s4://bucket/prefix"))
case("config", "credentials-in-url", ConfigurationError)(
    lambda ctx: open_storage(f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix")
)
case("config", "fedn-unknown-storage-type", ConfigurationError)(
    lambda ctx: from_fedn_config({"storage_type": "FTP", "storage_config": {}})
)
case("config", "fedn-minio-without-host", ConfigurationError)(
    lambda ctx: from_fedn_config({"storage_type": "MINIO", "storage_config": {"storage_access_key": "k"}})
)
case("config", "memory-unknown-option", ConfigurationError, lambda s: s.name == "memory")(
    lambda ctx: open_storage("memory://?fsync=true")
)


@case("config", "file-url-with-host", ConfigurationError, tempfile_only)
def _file_url_with_host(ctx: Ctx):
    open_storage(f"file://elsewhere{ctx.store.directory}")


@case("config", "file-unknown-option", ConfigurationError, tempfile_only)
def _file_unknown_option(ctx: Ctx):
    open_storage(f"file://{ctx.store.directory}?compress=zstd")


@case("config", "file-bad-fsync", ConfigurationError, tempfile_only)
def _file_bad_fsync(ctx: Ctx):
    open_storage(f"file://{ctx.store.directory}?fsync=sometimes")


@case("config", "folder-is-a-file", ConfigurationError, tempfile_only)
def _folder_is_a_file(ctx: Ctx):
    path = ctx.tmp / "not-a-folder"
    path.write_bytes(b"a file")
    TempModelStorage(path)


@case("config", "folder-under-a-file", _NoError, tempfile_only)
def _folder_under_a_file(ctx: Ctx):
    from storage import StorageError

    path = ctx.tmp / "a-file"
    path.write_bytes(b"a file")
    with pytest.raises(StorageError, match="could not create model folder"):
        TempModelStorage(path / "models")
    raise _NoError


def _url(ctx: Ctx, query: str) -> str:
    store = ctx.store
    assert isinstance(store, ObjectStoreModelStorage)
    if ctx.adapter == "s3":
        return f"s3://{store.bucket}/bad-input?{query}"
    return f"minio://127.0.0.1:9/{store.bucket}/bad-input?{query}"


@case("config", "url-bad-options", ConfigurationError, object_stores, inputs=4)
def _url_bad_options(ctx: Ctx):
    for query in ("part_size=big", "create_bucket=perhaps", "metadata=xml"):
        with pytest.raises(ConfigurationError):
            open_storage(_url(ctx, query))
    open_storage(_url(ctx, "bogus=1"))


case("config", "prefix-traversal", ConfigurationError, object_stores)(
    lambda ctx: ctx.sibling(prefix="tenant/../../escape")
)


@case("config", "bad-constructor-arguments", ConfigurationError, object_stores, inputs=3)
def _bad_constructor_arguments(ctx: Ctx):
    with pytest.raises(ConfigurationError):
        ctx.sibling(part_size=2**20)  # below S3's 5 MiB
    with pytest.raises(ConfigurationError):
        ctx.sibling(max_concurrency=0)
    ctx.sibling(access_key="only-the-key", secret_key=None)


@case("config", "minio-without-credentials", ConfigurationError, lambda s: s.name.startswith("minio-"))
def _minio_without_credentials(ctx: Ctx):
    for variable in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ctx.monkeypatch.delenv(variable, raising=False)
    ctx.sibling(access_key=None, secret_key=None)


@case("config", "missing-bucket", BucketNotFoundError, object_stores)
def _missing_bucket(ctx: Ctx):
    from objectstore_backends import _place

    missing = f"missing-{uuid.uuid4().hex[:12]}"
    other = ctx.sibling(bucket=missing)
    try:
        other.put("model", b"x", {"v": 1})
    finally:
        other.close()
        raw = _place(ctx.store).raw
        with pytest.raises(raw.exceptions.ClientError):
            raw.head_bucket(Bucket=missing)  # nothing created it either


@case("config", "unreachable-endpoint", StorageUnavailableError, object_stores)
def _unreachable(ctx: Ctx):
    other = ctx.sibling(url="http://127.0.0.1:9")  # discard: nothing listens there
    try:
        other.put("model", b"x")
    finally:
        other.close()


@case("config", "bad-credentials", StoragePermissionError, checking_credentials)
def _bad_credentials(ctx: Ctx):
    other = ctx.sibling(secret_key=SECRET)
    try:
        other.put("model", b"x", {"v": 1})
    finally:
        other.close()


# -- the test ---------------------------------------------------------------------------------------------


def test_every_bad_input_gets_its_typed_error_and_changes_nothing(
    store, store_spec, footprint, tmp_path, request, monkeypatch
):
    store.put("existing", EXISTING, EXISTING_METADATA)
    ctx = Ctx(store, store_spec, tmp_path, request, monkeypatch)
    ctx.writer = _committed_writer(ctx)
    before = footprint()
    failures: list[str] = []
    tried = cases = 0
    for bad in CASES:
        if not bad.where(store_spec):
            continue
        cases += 1
        tried += bad.inputs
        aimed_at = bad.aims_at(store) if bad.aims_at else None
        try:
            bad.call(ctx)
        except bad.error as exc:
            if SECRET in f"{exc!s} {exc!r}":
                failures.append(f"{bad.group}/{bad.name}: the message shows the secret")
        except Exception as exc:  # noqa: BLE001 - collected into the report below
            failures.append(f"{bad.group}/{bad.name}: {type(exc).__name__} instead of {bad.error.__name__}: {exc}")
        else:
            failures.append(f"{bad.group}/{bad.name}: no error (expected {bad.error.__name__})")
        after = footprint()
        if after != before:
            failures.append(f"{bad.group}/{bad.name}: changed the store: {sorted(after ^ before)}")
            before = after
        if bad.aims_at and bad.aims_at(store) != aimed_at:
            failures.append(f"{bad.group}/{bad.name}: changed the model it aimed at")
    assert failures == []
    assert cases >= 40
    # Nothing any case did changed the committed models either.
    assert store.list() == ["existing", "written"]
    assert store.get("existing", verify=True).read() == EXISTING
    assert store.get_model_metadata("existing") == EXISTING_METADATA
    print(f"\n[bad input {store_spec.name}] {cases} cases, {tried} bad inputs, 0 failures")
