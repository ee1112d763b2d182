"""A loopback HTTP server that answers S3 requests from a script, and counts them.

It speaks just enough S3 for the adapters' error paths: each request takes the
next scripted reply (an error status and code, a connection reset, or a small
object), so a test can say exactly what the wire shows and count how many
requests an operation made.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESET = "reset"


@dataclass(frozen=True)
class Reply:
    status: int
    code: str = ""
    body: bytes = b""


OK_BODY = b"model bytes"


def error(status: int, code: str) -> Reply:
    return Reply(status, code)


def ok(body: bytes = OK_BODY) -> Reply:
    return Reply(200, body=body)


class ScriptedS3:
    def __init__(self, replies: list[Reply | str]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []
        """The headers of each request (names in lower case), in the order of ``requests``."""
        self._lock = threading.Lock()

    def next_reply(self, method: str, path: str, headers: dict[str, str] | None = None) -> Reply | str:
        with self._lock:
            self.requests.append((method, path))
            self.headers.append(headers or {})
            return self.replies.pop(0) if self.replies else Reply(500, "ScriptExhausted")


def _handler(script: ScriptedS3):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            reply = script.next_reply(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
            if reply == RESET:
                # SO_LINGER 0 turns close() into a TCP reset, as a dying proxy would.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                self.connection.close()
                self.close_connection = True
                return
            assert isinstance(reply, Reply)
            if reply.code:
                body = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{reply.code}</Code>"
                    f"<Message>scripted {reply.code}</Message><RequestId>1</RequestId></Error>"
                ).encode()
                content_type = "application/xml"
            else:
                body, content_type = reply.body, "application/octet-stream"
            ranged = reply.status == 200 and self.headers.get("Range") and body
            self.send_response(206 if ranged else reply.status)
            self.send_header("Content-Type", content_type)
            self.send_header("ETag", '"0123456789abcdef"')
            self.send_header("Last-Modified", formatdate(usegmt=True))
            if ranged:
                self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    return Handler


@contextmanager
def scripted_s3(replies: list[Reply | str]) -> Iterator[tuple[ScriptedS3, str]]:
    """Serve ``replies`` on loopback; yields the script (with its request log) and the endpoint."""
    script = ScriptedS3(replies)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield script, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
