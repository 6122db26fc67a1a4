"""A real HTTP server on 127.0.0.1 for the httpx tests, told by the test how to answer.

It runs in threads of the test process, so it answers the same under asyncio
and trio, and to other processes. Every wait it makes is bounded by
``HOLD_LIMIT``, and closing the server releases them all.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_LIMIT = 10.0
"""Seconds the server holds a hanging request (or a held body) at most."""


@dataclass(frozen=True)
class Reply:
    """How the server answers the requests of one path prefix."""

    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)
    retry_after_date_in: float | None = None
    """Send ``Retry-After`` as an HTTP date this many seconds after the ``Date`` sent."""
    hang: bool = False
    """Hold the request without answering until released (or ``HOLD_LIMIT``)."""
    hold_body: bool = False
    """Send the headers and the first half of the body, then hold the rest until released."""


def chat_completion(content: str = "hello from the model", model: str = "m") -> bytes:
    """The body of an OpenAI chat completion answering ``content``."""
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
    ).encode()


class HTTPTestServer:
    """The server as the test sees it: its URL, how it answers, what it received."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.origin = self.url

    @property
    def requests(self) -> list[str]:
        """``METHOD /path`` of every request received, in order."""
        return list(self._server.received)

    @property
    def arrivals(self) -> list[float]:
        """When (``time.time()``) each request of ``requests`` arrived."""
        return list(self._server.arrived)

    def answer(self, reply: Reply, prefix: str = "/", *, model: str | None = None) -> None:
        """Answer requests whose path starts with ``prefix`` (the longest wins) with ``reply``.

        With ``model``: only requests whose JSON body names that ``model``
        (as a model API's requests do); these come before any prefix.
        """
        if model is None:
            self._server.replies[prefix] = reply
        else:
            self._server.models[model] = reply

    def release(self) -> None:
        """Let every held request (hanging, or holding its body) go on."""
        self._server.released.set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: dict[str, Reply] = {"/": Reply()}
        self.models: dict[str, Reply] = {}
        self.received: list[str] = []
        self.arrived: list[float] = []
        self.released = threading.Event()

    def reply_for(self, path: str, body: bytes) -> Reply:
        if self.models and body:
            try:
                model = json.loads(body).get("model")
            except (ValueError, AttributeError):
                model = None
            if model in self.models:
                return self.models[model]
        prefix = max((p for p in self.replies if path.startswith(p)), key=len)
        return self.replies[prefix]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.arrived.append(time.time())
        self.server.received.append(f"{self.command} {self.path}")
        reply = self.server.reply_for(self.path, body)
        if reply.hang:
            self.server.released.wait(HOLD_LIMIT)
            self.close_connection = True
            return
        now = time.time()
        self.send_response_only(reply.status)
        self.send_header("Date", email.utils.formatdate(now, usegmt=True))
        if reply.retry_after_date_in is not None:
            when = email.utils.formatdate(now + reply.retry_after_date_in, usegmt=True)
            self.send_header("Retry-After", when)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        try:
            if reply.hold_body:
                half = len(reply.body) // 2
                self.wfile.write(reply.body[:half])
                self.wfile.flush()
                self.server.released.wait(HOLD_LIMIT)
                self.wfile.write(reply.body[half:])
            else:
                self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client went away


@contextmanager
def serve() -> Iterator[HTTPTestServer]:
    """Run a server on 127.0.0.1 (a free port) for the duration of the block."""
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield HTTPTestServer(server)
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(HOLD_LIMIT)
