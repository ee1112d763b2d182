"""Where the S3 adapter changes how botocore sends requests: the only place that relies on its internals.

Each tweak is applied to the clients the adapter builds, never to a client
passed in, and ``tests/test_botocore_tweaks.py`` fails if botocore stops
behaving the way it assumes:

- ``no_expect_header``: no ``Expect: 100-continue`` before PUT bodies;
- ``sign_only_unprotected_bodies``: bodies protected by a checked checksum
  header, or by TLS, are not hashed a second time to be signed;
- ``clamp_timeouts``: every request's timeouts end with its call's deadline;
- ``expect_bucket_owner``: ``ExpectedBucketOwner`` on every request that takes it;
- ``session_sharing_models``: new sessions share one loader of service models.
"""

from __future__ import annotations

import botocore.handlers
import botocore.session
from botocore.config import Config
from botocore.httpsession import URLLib3Session

from adapters.transport import DeadlineTimeout
from storage.errors import ConfigurationError


def no_expect_header(client) -> None:
    """botocore asks for "100 Continue" before every PUT body: a round trip per request, and
    after an empty body SeaweedFS's answer desynchronizes the connection (the next request on
    it times out)."""
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)


def sign_only_unprotected_bodies(client) -> None:
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


def expect_bucket_owner(client, owner: str | None) -> None:
    """Send ``ExpectedBucketOwner`` with every request whose operation takes it."""
    if not owner:
        return

    def add_owner(params, model, **_) -> None:
        if "ExpectedBucketOwner" in model.input_shape.members:
            params.setdefault("ExpectedBucketOwner", owner)

    client.meta.events.register("provide-client-params.s3", add_owner)


def clamp_timeouts(client, timeout: DeadlineTimeout) -> None:
    """Give the client's connection pools a timeout that ends with the deadline of the call under way.

    botocore takes timeouts as numbers only, fixed for the client's life; its
    urllib3 pools take any ``urllib3.Timeout``, which they clone per request.
    """
    session = getattr(client._endpoint, "http_session", None)
    manager = getattr(session, "_manager", None)
    if not isinstance(session, URLLib3Session) or manager is None or not hasattr(session, "_timeout"):
        raise ConfigurationError(
            "this botocore keeps its connection pools where the S3 adapter cannot give them deadlines; "
            "install a botocore the adapter was tested with (see pyproject.toml)"
        )
    session._timeout = timeout  # the pools of proxies, made later, read it here
    manager.connection_pool_kw["timeout"] = timeout


_shared_loader = None


def session_sharing_models() -> botocore.session.Session:
    """A new session (its own credential chain) sharing one loader of service models.

    Loading S3's service model is most of the cost of a new client; sharing
    the loader makes opening a store cheap without sharing credentials.
    """
    global _shared_loader
    session = botocore.session.get_session()
    if _shared_loader is None:  # two threads may both get here: each keeps a loader, one is shared
        _shared_loader = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _shared_loader)
    return session
