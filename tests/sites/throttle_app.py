"""A programmable HTTP server on a free loopback port, for the retry, policy and cache tests.

Usage::

    with ThrottleApp.running() as app:
        app.script("/items", ScriptedResponse(503), ScriptedResponse(503, headers={"Retry-After": "1"}))
        app.serve_resource("/folders", b'["INBOX"]', etag='"v1"')
        ...
        gaps = app.gaps("/items")

What each path returns, first match wins:

- the next response in the path's script queue (:meth:`ThrottleApp.script`),
  consumed one per request;
- a resource (:meth:`ThrottleApp.serve_resource`), which returns 304 Not
  Modified when ``If-None-Match`` names its ETag or ``If-Modified-Since`` is
  not older than its ``Last-Modified`` date;
- the path's default response (:meth:`ThrottleApp.set_default`);
- ``200 ok`` as ``text/plain``.

Every request is recorded with its arrival time on ``time.monotonic()``, the
clock ``asyncio`` uses too, so tests can measure the gaps a client waited.
Paths are matched without their query string.

The server is a ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive, in
a daemon thread. A slow body is sent in chunks with a pause between them; when
the client goes away mid-body, the handler stops writing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["Arrival", "ScriptedResponse", "ThrottleApp"]

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ScriptedResponse:
    """One response the app sends: status, headers and a body sent in ``chunk_count`` chunks.

    ``headers_delay_seconds`` delays the status line, as a slow server does, and ``chunk_delay_seconds``
    pauses between chunks of the body.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    headers_delay_seconds: float = 0.0
    chunk_count: int = 1
    chunk_delay_seconds: float = 0.0


@dataclass(frozen=True)
class Arrival:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    arrived_at: float


@dataclass
class _Resource:
    body: bytes
    content_type: str
    etag: str | None
    last_modified: float | None


@dataclass
class _AppData:
    lock: threading.Lock = field(default_factory=threading.Lock)
    scripts: dict[str, deque[ScriptedResponse]] = field(default_factory=dict)
    defaults: dict[str, ScriptedResponse] = field(default_factory=dict)
    resources: dict[str, _Resource] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    responses_interrupted: int = 0


class ThrottleApp:
    """The programmable app, served on ``127.0.0.1`` at a port the kernel picks."""

    def __init__(self) -> None:
        self._data = _AppData()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _make_handler(self._data))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="throttle-app", daemon=True)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[ThrottleApp]:
        """Start an app, yield it, and stop it afterwards."""
        app = cls()
        app._thread.start()
        try:
            yield app
        finally:
            app._server.shutdown()
            app._server.server_close()
            app._thread.join(timeout=5)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def url(self, path: str) -> str:
        return self.origin + path

    def script(self, path: str, *responses: ScriptedResponse) -> None:
        """Queue ``responses`` for the next requests to ``path``, one each."""
        with self._data.lock:
            self._data.scripts.setdefault(path, deque()).extend(responses)

    def set_default(self, path: str, response: ScriptedResponse) -> None:
        """Send ``response`` for ``path`` whenever its script queue is empty."""
        with self._data.lock:
            self._data.defaults[path] = response

    def serve_resource(
        self,
        path: str,
        body: bytes,
        *,
        etag: str | None = None,
        last_modified: float | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Serve ``body`` at ``path`` with validators, and return 304 to a matching conditional request.

        ``last_modified`` is a Unix time. Calling this again replaces the resource, as a site does when
        its data changes.
        """
        with self._data.lock:
            self._data.resources[path] = _Resource(body, content_type, etag, last_modified)

    def reset(self) -> None:
        """Forget every script, default, resource and recorded request."""
        with self._data.lock:
            self._data.scripts.clear()
            self._data.defaults.clear()
            self._data.resources.clear()
            self._data.arrivals.clear()
            self._data.responses_interrupted = 0

    def arrivals(self, path: str | None = None) -> list[Arrival]:
        """Return the requests received so far, for one path or all of them, oldest first."""
        with self._data.lock:
            return [arrival for arrival in self._data.arrivals if path is None or arrival.path == path]

    def gaps(self, path: str) -> list[float]:
        """Return the seconds between consecutive requests to ``path``."""
        times = [arrival.arrived_at for arrival in self.arrivals(path)]
        return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]

    @property
    def responses_interrupted(self) -> int:
        """How many responses the client closed its connection on before their end."""
        with self._data.lock:
            return self._data.responses_interrupted


def _make_handler(data: _AppData) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._answer()

        def do_HEAD(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._answer()

        def _answer(self) -> None:
            path = urlsplit(self.path).path
            with data.lock:
                data.arrivals.append(
                    Arrival(
                        method=self.command,
                        path=path,
                        headers={name.lower(): value for name, value in self.headers.items()},
                        arrived_at=time.monotonic(),
                    )
                )
                queue = data.scripts.get(path)
                scripted = queue.popleft() if queue else None
                resource = data.resources.get(path)
                default = data.defaults.get(path)

            if scripted is not None:
                self._send(scripted)
            elif resource is not None:
                self._send_resource(resource)
            else:
                self._send(default or ScriptedResponse(headers={"Content-Type": "text/plain"}))

        def _send_resource(self, resource: _Resource) -> None:
            headers = {"Content-Type": resource.content_type}
            if resource.etag is not None:
                headers["ETag"] = resource.etag
            if resource.last_modified is not None:
                headers["Last-Modified"] = format_datetime(_utc(resource.last_modified), usegmt=True)

            if self._not_modified(resource):
                self._send(ScriptedResponse(304, headers=headers, body=b""))
            else:
                self._send(ScriptedResponse(200, headers=headers, body=resource.body))

        def _not_modified(self, resource: _Resource) -> bool:
            # RFC 9110, section 13.1.3: If-None-Match takes precedence over If-Modified-Since.
            if_none_match = self.headers.get("If-None-Match")
            if if_none_match is not None:
                tags = {tag.strip() for tag in if_none_match.split(",")}
                return resource.etag is not None and (resource.etag in tags or "*" in tags)

            if_modified_since = self.headers.get("If-Modified-Since")
            if if_modified_since is None or resource.last_modified is None:
                return False
            try:
                since = parsedate_to_datetime(if_modified_since).timestamp()
            except (TypeError, ValueError):
                return False
            return int(resource.last_modified) <= since

        def _send(self, response: ScriptedResponse) -> None:
            try:
                self._send_headers(response)
                if response.status not in (204, 304) and self.command != "HEAD":
                    self._send_body(response)
            except (BrokenPipeError, ConnectionResetError):
                with data.lock:
                    data.responses_interrupted += 1
                self.close_connection = True

        def _send_headers(self, response: ScriptedResponse) -> None:
            if response.headers_delay_seconds:
                time.sleep(response.headers_delay_seconds)
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.status not in (204, 304):
                self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()

        def _send_body(self, response: ScriptedResponse) -> None:
            chunk_count = max(1, response.chunk_count)
            chunk_size = -(-len(response.body) // chunk_count) or 1
            for index in range(chunk_count):
                if index and response.chunk_delay_seconds:
                    time.sleep(response.chunk_delay_seconds)
                self.wfile.write(response.body[index * chunk_size : (index + 1) * chunk_size])
                self.wfile.flush()

    return Handler


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(int(timestamp), UTC)
