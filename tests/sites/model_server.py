"""An OpenAI-compatible model API on a free loopback port that records every request body it receives.

Usage::

    with ModelServer.running(api_key="test-key") as server:
        ...  # point a roster model's base_url at server.base_url
        assert server.requests[0].body["input"] == "..."

It serves ``POST /v1/embeddings`` (a fixed 8-dimension vector per input) and
``POST /v1/chat/completions`` (a fixed reply). A request whose ``Authorization``
header is not ``Bearer <api_key>`` gets 401. Every request is recorded before
the response is sent, whatever its path or outcome, so a test can assert that
nothing arrived.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

EMBEDDING_DIMENSIONS = 8
CHAT_REPLY = "A short summary."


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it: path, authorization header and parsed JSON body."""

    path: str
    authorization: str | None
    raw_body: bytes
    body: Any


class ModelServer:
    """The server; see the module docstring."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @classmethod
    @contextmanager
    def running(cls, api_key: str) -> Iterator[ModelServer]:
        server = cls(api_key)
        server._thread.start()
        try:
            yield server
        finally:
            server._httpd.shutdown()
            server._httpd.server_close()

    def received_text(self) -> str:
        """Return every recorded body decoded as one string, for checks that no value reached the server."""
        with self._lock:
            return "\n".join(request.raw_body.decode("utf-8", errors="replace") for request in self.requests)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
                pass

            def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                authorization = self.headers.get("Authorization")
                server._record(RecordedRequest(self.path, authorization, raw, body))

                if authorization != f"Bearer {server.api_key}":
                    self._send(401, {"error": {"message": "invalid api key"}})
                elif self.path == "/v1/embeddings":
                    vector = [0.125 * index for index in range(EMBEDDING_DIMENSIONS)]
                    self._send(200, {"object": "list", "data": [{"index": 0, "embedding": vector}]})
                elif self.path == "/v1/chat/completions":
                    self._send(
                        200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": CHAT_REPLY}}]}
                    )
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
