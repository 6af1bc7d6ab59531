"""A webhook receiver on loopback that stores every JSON request it gets, for alert tests.

with WebhookReceiver() as receiver:
    save_alert_webhook("alerts", receiver.url)
    ...
    requests = receiver.wait_for(lambda body: "login" in body["subject"], timeout_seconds=30)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["WebhookReceiver"]


class _Handler(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            body = {"raw": raw.decode("utf-8", errors="replace")}
        self.server.record(body)
        self.send_response(HTTPStatus.NO_CONTENT)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        return


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[Any] = []
        self.condition = threading.Condition()

    def record(self, body: Any) -> None:
        with self.condition:
            self.bodies.append(body)
            self.condition.notify_all()


class WebhookReceiver:
    """An HTTP server on a free port of 127.0.0.1, in a thread, that stores each POSTed JSON body."""

    def __init__(self) -> None:
        self._server = _ReceiverServer()
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        """The URL to POST to."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hook"

    @property
    def bodies(self) -> list[Any]:
        """A copy of every body received so far, oldest first."""
        with self._server.condition:
            return list(self._server.bodies)

    def wait_for(self, predicate: Callable[[Any], bool], timeout_seconds: float) -> list[Any]:
        """Wait until some received body satisfies ``predicate``; return the matching bodies.

        Returns an empty list when none arrived within ``timeout_seconds``.
        """
        deadline = time.monotonic() + timeout_seconds
        with self._server.condition:
            while True:
                matching = [body for body in self._server.bodies if predicate(body)]
                remaining = deadline - time.monotonic()
                if matching or remaining <= 0:
                    return matching
                self._server.condition.wait(remaining)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
