"""How the server keeps what a store writes: encryption, the bucket owner it must be, storage class.

``ServerSide`` holds the settings (options of both adapters, in URLs and
FEDn-style settings too, see ``adapters.options``) and gives them as the HTTP
headers each kind of request needs; the SDK files turn those into their SDK's
arguments. A customer key (SSE-C) comes from an argument or from
``MODELSTORAGE_SSE_CUSTOMER_KEY``, never from a URL, and is never shown.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field

from storage.errors import ConfigurationError

CUSTOMER_KEY_ENV = "MODELSTORAGE_SSE_CUSTOMER_KEY"
SSE_S3, SSE_KMS = "AES256", "aws:kms"


@dataclass(frozen=True)
class CustomerKey:
    """A 256-bit SSE-C key: the server encrypts with it and keeps no copy; every read must send it again."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ConfigurationError("an SSE-C customer key is 32 bytes (base64: 44 characters, hex: 64)")

    def __repr__(self) -> str:
        return "CustomerKey(<hidden>)"

    @classmethod
    def parse(cls, value: object) -> CustomerKey:
        """From 32 bytes, or their base64 or hex text (what ``openssl rand -base64 32`` prints)."""
        if isinstance(value, CustomerKey):
            return value
        if isinstance(value, bytes) and len(value) == 32:
            return cls(value)
        text = value.decode() if isinstance(value, bytes) else str(value)
        try:
            raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raw = b""
        return cls(raw)  # a wrong length says what a key is, and never shows the value given

    def headers(self, prefix: str = "x-amz-server-side-encryption") -> dict[str, str]:
        digest = hashlib.md5(self.key, usedforsecurity=False).digest()
        return {
            f"{prefix}-customer-algorithm": "AES256",
            f"{prefix}-customer-key": base64.b64encode(self.key).decode(),
            f"{prefix}-customer-key-MD5": base64.b64encode(digest).decode(),
        }


@dataclass(frozen=True)
class ServerSide:
    """Encryption, ownership and storage class of the objects a store writes (and reads, for SSE-C)."""

    sse: str | None = None
    """``AES256`` (keys the service manages) or ``aws:kms``."""
    sse_kms_key_id: str | None = None
    sse_bucket_key: bool | None = None
    """With KMS: let S3 use a bucket key, fewer KMS requests."""
    sse_customer_key: CustomerKey | None = None
    expected_bucket_owner: str | None = None
    """The account that must own the bucket: any request to a bucket someone else owns fails (403)."""
    storage_class: str | None = None

    def __post_init__(self) -> None:
        if self.sse not in (None, SSE_S3, SSE_KMS):
            raise ConfigurationError(f"sse must be {SSE_S3} or {SSE_KMS}, not {self.sse!r}")
        if (self.sse_kms_key_id or self.sse_bucket_key is not None) and self.sse != SSE_KMS:
            raise ConfigurationError(f"sse_kms_key_id and sse_bucket_key go with sse={SSE_KMS}")
        if self.sse_customer_key is not None and self.sse is not None:
            raise ConfigurationError("a customer key (SSE-C) and sse exclude each other: choose one")

    @classmethod
    def from_environment(cls) -> ServerSide:
        key = os.environ.get(CUSTOMER_KEY_ENV)
        return cls(sse_customer_key=CustomerKey.parse(key)) if key else cls()

    def write_headers(self) -> dict[str, str]:
        """The headers of a PUT or a CreateMultipartUpload."""
        headers = self.read_headers()
        if self.sse:
            headers["x-amz-server-side-encryption"] = self.sse
        if self.sse_kms_key_id:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.sse_kms_key_id
        if self.sse_bucket_key is not None:
            headers["x-amz-server-side-encryption-bucket-key-enabled"] = str(self.sse_bucket_key).lower()
        if self.storage_class:
            headers["x-amz-storage-class"] = self.storage_class
        return headers

    def read_headers(self) -> dict[str, str]:
        """The headers of a GET, HEAD or UploadPart (an SSE-C object needs its key every time)."""
        return self.sse_customer_key.headers() if self.sse_customer_key else {}

    def owner_headers(self) -> dict[str, str]:
        """What every request sends, presigned ones included (where the owner is signed)."""
        return {"x-amz-expected-bucket-owner": self.expected_bucket_owner} if self.expected_bucket_owner else {}

    def copy_source_headers(self) -> dict[str, str]:
        """The headers that let a copy read an SSE-C source."""
        if not self.sse_customer_key:
            return {}
        return self.sse_customer_key.headers("x-amz-copy-source-server-side-encryption")
