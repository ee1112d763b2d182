"""What is measured: each candidate stores and loads whole models under a key.

Adapters and local stores go through the ModelStorage API; the raw candidates
make the SDK or file calls a caller would make without this library, with the
SDK's defaults (boto3's default TransferConfig, MinIO's default part size).
Every candidate keeps its keys under its own prefix of the run prefix.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from adapters import MinioModelStorage, S3ModelStorage
from adapters.options import ObjectStoreOptions
from benchmarks.endpoint import Target
from storage import MemoryModelStorage, ModelStorage, TempModelStorage

BOTO3, MINIO, FILE, MEMORY = "boto3", "minio", "file", "memory"


@dataclass
class Candidate:
    """One way of putting and getting a model. ``raw`` ones are the baselines."""

    name: str
    sdk: str
    raw: bool

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        raise NotImplementedError

    def get(self, key: str) -> object:
        """The model's bytes, in whatever holder the call returns (bytes, BytesIO)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class StoreCandidate(Candidate):
    store: ModelStorage = field(repr=False, default=None)  # type: ignore[assignment]
    directory: Path | None = None
    """A scratch folder removed at close (TempModelStorage's)."""

    def put(self, key, data, metadata=None):
        # FEDn's status is an integer; the raw calls can only send strings.
        self.store.put(key, data, {k: int(v) for k, v in metadata.items()} if metadata else None)

    def get(self, key):
        found = self.store.get(key)
        if found is None:
            raise LookupError(f"{self.name}: {key} missing right after put")
        return found

    def delete(self, key):
        self.store.delete(key)

    def close(self):
        self.store.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Boto3Objects(Candidate):
    """boto3 ``put_object`` / ``get_object``: one request each way."""

    s3: object = field(repr=False, default=None)
    bucket: str = ""
    prefix: str = ""

    def put(self, key, data, metadata=None):
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, Metadata=metadata or {})

    def get(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()

    def delete(self, key):
        self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + key)


@dataclass
class Boto3Transfer(Boto3Objects):
    """boto3's managed transfer (``upload_fileobj`` / ``download_fileobj``), default TransferConfig."""

    def put(self, key, data, metadata=None):
        extra = {"Metadata": metadata} if metadata else None
        self.s3.upload_fileobj(io.BytesIO(data), self.bucket, self.prefix + key, ExtraArgs=extra)

    def get(self, key):
        buffer = io.BytesIO()
        self.s3.download_fileobj(self.bucket, self.prefix + key, buffer)
        return buffer


@dataclass
class MinioObjects(Candidate):
    """The MinIO SDK's ``put_object`` (its own multipart above 5 MiB) / ``get_object``."""

    minio: object = field(repr=False, default=None)
    bucket: str = ""
    prefix: str = ""

    def put(self, key, data, metadata=None):
        self.minio.put_object(self.bucket, self.prefix + key, io.BytesIO(data), len(data), metadata=metadata)

    def get(self, key):
        response = self.minio.get_object(self.bucket, self.prefix + key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def delete(self, key):
        self.minio.remove_object(self.bucket, self.prefix + key)


SIDECAR_LIKE = json.dumps(
    {"sha256": "0" * 64, "metadata": {"status": 0, "round": "0"}, "write": "0" * 32}, separators=(",", ":")
).encode()
"""A JSON object of a sidecar's size (the model's SHA-256, its metadata, a write token)."""


@dataclass
class TwoPuts(Candidate):
    """The model, then a small JSON object beside it: two raw PUTs, what a sidecar put is held to."""

    inner: Candidate = field(repr=False, default=None)  # type: ignore[assignment]

    def put(self, key, data, metadata=None):
        self.inner.put(key, data, metadata)
        self.inner.put(key + ".json", SIDECAR_LIKE)

    def get(self, key):
        return self.inner.get(key)

    def delete(self, key):
        self.inner.delete(key)
        self.inner.delete(key + ".json")


def two_put_baselines(candidates: list[Candidate]) -> list[Candidate]:
    """Per SDK, its one-request raw call made twice (model, then JSON)."""
    found = []
    for c in candidates:
        if c.raw and type(c) in (Boto3Objects, MinioObjects):
            found.append(TwoPuts(f"{c.name.split()[0]} put_object x2 (model, JSON)", c.sdk, True, c))
    return found


@dataclass
class PlainFiles(Candidate):
    """``open(path, "wb").write`` / ``open(path, "rb").read``: what TempModelStorage is held to."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-files-")))

    def put(self, key, data, metadata=None):
        with open(self.directory / key, "wb") as f:
            f.write(data)

    def get(self, key):
        with open(self.directory / key, "rb") as f:
            return f.read()

    def delete(self, key):
        (self.directory / key).unlink()

    def close(self):
        shutil.rmtree(self.directory, ignore_errors=True)


def adapter_options(target: Target, metadata: str, tuning: dict[str, str] | None = None) -> ObjectStoreOptions:
    """The adapters' options for ``target``: ``tuning`` as a URL would give them (``part_size=8MiB``)."""
    verify = target.endpoint.ca_bundle or "true"
    return ObjectStoreOptions.parse({"metadata": metadata, "verify": verify, **(tuning or {})}, from_url=True)


def adapter_store(target: Target, sdk: str, metadata: str, tuning: dict[str, str] | None = None) -> ModelStorage:
    ep, prefix = target.endpoint, f"{target.prefix}{sdk}-{metadata}/"
    options = adapter_options(target, metadata, tuning)
    credentials = {"access_key": ep.access_key, "secret_key": ep.secret_key, "region": ep.region}
    if sdk == BOTO3:
        return S3ModelStorage(target.bucket, prefix, endpoint_url=ep.endpoint_url, options=options, **credentials)
    return MinioModelStorage(ep.netloc, target.bucket, prefix, secure=ep.secure, options=options, **credentials)


def all_candidates(target: Target, tuning: dict | None = None) -> list[Candidate]:
    """Every candidate, adapters first; ``tuning`` (URL options) goes to the adapters."""
    ep, bucket, prefix = target.endpoint, target.bucket, target.prefix
    s3, minio = ep.boto3_client(), ep.minio_client()
    candidates: list[Candidate] = []
    for sdk, label in ((BOTO3, "S3ModelStorage"), (MINIO, "MinioModelStorage")):
        for mode in ("sidecar", "tags"):
            store = adapter_store(target, sdk, mode, tuning)
            candidates.append(StoreCandidate(f"{label}[{mode}]", sdk, False, store))
    scratch = Path(tempfile.mkdtemp(prefix="bench-store-"))
    candidates += [
        Boto3Transfer("boto3 upload/download_fileobj", BOTO3, True, s3, bucket, prefix + "raw-transfer/"),
        Boto3Objects("boto3 put/get_object", BOTO3, True, s3, bucket, prefix + "raw-boto3/"),
        MinioObjects("minio put/get_object", MINIO, True, minio, bucket, prefix + "raw-minio/"),
        StoreCandidate("TempModelStorage", FILE, False, TempModelStorage(scratch), scratch),
        PlainFiles("plain file write/read", FILE, True),
        StoreCandidate("MemoryModelStorage", MEMORY, False, MemoryModelStorage()),
    ]
    return candidates
