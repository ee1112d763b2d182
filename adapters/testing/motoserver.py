"""moto's ThreadedMotoServer on loopback, deciding conditional writes atomically as real servers do."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from adapters.testing.servers import S3Endpoint, ServerStartError, TestServer

_moto_patch_lock = threading.Lock()


def make_moto_conditional_writes_atomic() -> None:
    """Serialize moto's PutObject and CompleteMultipartUpload handlers (idempotent).

    moto checks ``If-None-Match: *`` and then stores the object in two steps, so two racing
    creates can both succeed, which S3, MinIO and SeaweedFS never allow. The race tests
    check that the adapters leave the decision to the server; this makes moto decide
    atomically, like the servers it stands in for.
    """
    from moto.s3.responses import S3Response

    with _moto_patch_lock:
        if getattr(S3Response, "_modelstorage_serialized", False):
            return
        handler_lock = threading.RLock()
        for name in ("put_object", "_key_response_post"):
            original = getattr(S3Response, name)

            def serialized(self, *args, _original=original, **kwargs):
                with handler_lock:
                    return _original(self, *args, **kwargs)

            setattr(S3Response, name, serialized)
        S3Response._modelstorage_serialized = True


class MotoServer(TestServer):
    """moto's ThreadedMotoServer on 127.0.0.1 and a free port (the OS picks it; no race).

    Note: it runs in *this* process and shares moto's global backends with ``mock_aws``; every
    ``mock_aws`` exit resets those backends, so do not mix both in one test, and create buckets per test.
    """

    STARTUP_TIMEOUT = 30.0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.server: Any = None

    def new_access_key(self) -> str:
        return "testing"  # moto checks no signatures; its documentation's keys

    new_secret_key = new_access_key

    def start(self) -> S3Endpoint:
        from moto.server import ThreadedMotoServer

        make_moto_conditional_writes_atomic()
        t0 = time.monotonic()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        # start() waits on an Event that is never set if the bind fails: run it with a bound.
        starter = threading.Thread(target=self.server.start, daemon=True)
        starter.start()
        starter.join(self.startup_timeout)
        if starter.is_alive():
            raise ServerStartError(f"moto ThreadedMotoServer did not start within {self.startup_timeout}s")
        host, port = self.server.get_host_and_port()
        url = f"http://{host}:{port}"
        # Ready when it answers an S3 call.
        import botocore.exceptions

        client = S3Endpoint("moto", url, self.access_key, self.secret_key, self.region).boto3_client(
            connect_timeout=1, read_timeout=5
        )
        deadline = t0 + self.startup_timeout
        while True:
            try:
                client.list_buckets()
                break
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerStartError(f"moto server on {url} not answering: {e}") from e
                time.sleep(0.1)
        self.endpoint = S3Endpoint(
            name="moto-server",
            endpoint_url=url,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            startup_seconds=time.monotonic() - t0,
        )
        return self.endpoint

    def _terminate(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        with contextlib.suppress(AttributeError, AssertionError):
            server.stop()
        inner = getattr(server, "_server", None)
        if inner is not None:  # stop() leaves the listening socket open until GC
            with contextlib.suppress(OSError):
                inner.server_close()
