"""Presigned requests: what a client without credentials sends straight to the object store.

``PresignedRequest`` is a URL and the headers it must be sent with; a header
that is signed (``content-length``, ``x-amz-checksum-sha256``) binds the
request to exactly that value, so a server that checks signatures refuses a
body of another length, and one that checks checksums a body of other bytes.

``presign_v4`` signs such a URL (AWS Signature Version 4, query parameters)
for the MinIO adapter: the MinIO SDK's own presigner signs the host alone,
which would leave the length and the checksum unbound. The S3 adapter uses
botocore's, which signs the headers it is given.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qsl, quote, urlsplit


@dataclass(frozen=True)
class PresignedRequest:
    """An HTTP request anyone may send until ``expires``: ``method`` to ``url`` with ``headers``."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    expires: datetime | None = None

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "expires": self.expires.isoformat() if self.expires else None,
        }


def _quote(text: str) -> str:
    return quote(text, safe="-_.~")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def presign_v4(
    method: str,
    url: str,
    *,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    headers: dict[str, str] | None = None,
    expires: int,
    now: datetime | None = None,
) -> str:
    """``url`` signed for ``method`` with the ``headers`` the request must carry, valid ``expires`` seconds."""
    parts = urlsplit(url)
    now = now or datetime.now(timezone.utc)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    signed = {"host": parts.netloc, **{name.lower(): str(value).strip() for name, value in (headers or {}).items()}}
    names = ";".join(sorted(signed))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query |= {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": names,
    }
    if session_token:
        query["X-Amz-Security-Token"] = session_token
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))
    path = quote(parts.path or "/", safe="/-_.~")
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
            names,
            "UNSIGNED-PAYLOAD",
        ]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{path}?{canonical_query}&X-Amz-Signature={signature}"
