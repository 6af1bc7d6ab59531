"""A small document API on a free loopback port that accepts only tokens the OAuth provider reports as active.

Usage::

    mail_api = oidc_provider.clients()["mail-api"]
    with OAuthApiSite.running(
        oidc_provider.introspection_endpoint, mail_api.client_id, mail_api.client_secret, build_api_documents()
    ) as site:
        site.configure(pagination="link")
        print(site.url, site.request_counts())

Endpoints (every one needs ``Authorization: Bearer TOKEN``):

- ``GET /me``: the cheapest authenticated endpoint, JSON ``{"client_id", "scope", "sub"}``.
- ``GET /collections``: ``{"collections": [NAME, ...]}`` with an ``ETag``; answered ``304`` to a
  matching ``If-None-Match``. The only answer clients may cache.
- ``GET /collections/NAME/documents?after_id=N&limit=M``: documents with an id above N,
  ascending, at most ``page_size`` (default 2) per page, as JSON
  ``{"items": [...], "next": URL or null, "epoch": E}``. With ``pagination="link"`` the
  next page's URL is sent in a ``Link: <URL>; rel="next"`` header and ``next`` is null.
- ``GET /collections/NAME/documents/ID/content``: the document's bytes with its content type.

Every request's token is checked by POSTing it to the provider's introspection
endpoint (RFC 7662) as the resource server ``mail-api``. There is no cache, so a
revoked token fails at once. An inactive token gets 401 with
``WWW-Authenticate: Bearer error="invalid_token"``, and a token without
``required_scope`` gets 403 with ``error="insufficient_scope"``. Methods other
than GET get 405. The site counts requests per path, for tests that assert
how many requests a connector sent.

The server is a ``ThreadingHTTPServer`` in a daemon thread; settings changed
with :meth:`OAuthApiSite.configure` apply to the next request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
from pydantic import SecretStr

from warden.demo.documents import build_demo_documents

__all__ = ["ApiDocument", "ApiSettings", "OAuthApiSite", "build_api_documents"]

logger = logging.getLogger("tests.oauth_api")

LOOPBACK = "127.0.0.1"
REALM = "oauth-api"
INTROSPECTION_TIMEOUT_SECONDS = 5.0

_LIST_PATH = re.compile(r"^/collections/([^/]+)/documents$")
_CONTENT_PATH = re.compile(r"^/collections/([^/]+)/documents/(\d+)/content$")


@dataclass(frozen=True)
class ApiDocument:
    """One document the API serves: its id, metadata and bytes."""

    id: int
    title: str
    filename: str
    content_type: str
    data: bytes

    def metadata(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "filename": self.filename,
            "content_type": self.content_type,
            "size_bytes": len(self.data),
        }


def build_api_documents(first_id: int = 101) -> list[ApiDocument]:
    """Return five small generated documents with ascending ids: two PDFs, a DOCX, an XLSX and a text file."""
    titles = {
        "quarterly-report.pdf": "Quarterly report",
        "invoice-table.pdf": "Invoice BLUEFIN-2208",
        "project-plan.docx": "Project plan",
        "budget.xlsx": "Department budget",
    }
    demo = {document.filename: document for document in build_demo_documents()}
    documents = [
        ApiDocument(
            id=first_id + index,
            title=title,
            filename=name,
            content_type=demo[name].content_type,
            data=demo[name].data,
        )
        for index, (name, title) in enumerate(titles.items())
    ]
    notes = "Meeting notes\nAction item CORMORANT-8812: renew the harbour lease before Friday.\n"
    documents.append(
        ApiDocument(
            id=first_id + len(titles),
            title="Meeting notes",
            filename="meeting-notes.txt",
            content_type="text/plain",
            data=notes.encode("utf-8"),
        )
    )
    return documents


@dataclass(frozen=True)
class ApiSettings:
    """How the API behaves; see the module docstring."""

    page_size: int = 2
    pagination: Literal["body", "link"] = "body"
    # Host written into next-page URLs in place of the site's own, to test that a client rejects them.
    next_host: str | None = None
    required_scope: str = "mail.read"
    epoch: int = 1
    # HTTP statuses returned to the next requests, one each, before the token check and with Retry-After: 0.
    fail_statuses: tuple[int, ...] = ()


@dataclass
class _SiteData:
    introspection_url: str
    client_id: str
    client_secret: SecretStr
    collections: dict[str, list[ApiDocument]]
    settings: ApiSettings = field(default_factory=ApiSettings)
    pending_failures: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    request_lines: list[str] = field(default_factory=list)
    introspections: int = 0


class OAuthApiSite:
    """The document API, served on ``127.0.0.1`` at a port the kernel picks."""

    def __init__(
        self,
        introspection_url: str,
        client_id: str,
        client_secret: SecretStr,
        collections: dict[str, list[ApiDocument]],
    ) -> None:
        self._data = _SiteData(
            introspection_url=introspection_url,
            client_id=client_id,
            client_secret=client_secret,
            collections={
                name: sorted(documents, key=lambda document: document.id) for name, documents in collections.items()
            },
        )
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _make_handler(self._data))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-api-site", daemon=True)

    @classmethod
    @contextmanager
    def running(
        cls,
        introspection_url: str,
        client_id: str,
        client_secret: SecretStr,
        collections: dict[str, list[ApiDocument]],
    ) -> Iterator[OAuthApiSite]:
        """Start a site, yield it, and stop it afterwards."""
        site = cls(introspection_url, client_id, client_secret, collections)
        site.start()
        try:
            yield site
        finally:
            site.stop()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` without a trailing slash."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def settings(self) -> ApiSettings:
        return self._data.settings

    @property
    def request_lines(self) -> list[str]:
        """Request lines (``METHOD path?query``) received so far."""
        with self._data.lock:
            return list(self._data.request_lines)

    @property
    def introspections(self) -> int:
        """Introspection requests sent to the provider so far."""
        with self._data.lock:
            return self._data.introspections

    def request_counts(self) -> Counter[str]:
        """Return how many requests reached each path (without the query), e.g. ``{"/me": 1}``."""
        return Counter(urlsplit(line.split(" ", 1)[1]).path for line in self.request_lines)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def configure(self, **changes: object) -> None:
        """Reset the settings to their defaults with ``changes`` applied, and forget the recorded requests."""
        with self._data.lock:
            self._data.settings = replace(ApiSettings(), **changes)
            self._data.pending_failures = list(self._data.settings.fail_statuses)
            self._data.request_lines.clear()
            self._data.introspections = 0


def _introspect(data: _SiteData, token: str) -> dict[str, object]:
    with data.lock:
        data.introspections += 1
    response = httpx.post(
        data.introspection_url,
        data={"token": token, "token_type_hint": "access_token"},
        auth=(data.client_id, data.client_secret.get_secret_value()),
        timeout=INTROSPECTION_TIMEOUT_SECONDS,
    )
    response.raise_for_status()
    return response.json()


def _make_handler(data: _SiteData) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            # The default handler writes every request to stderr; the tests read request_lines instead.
            pass

        def do_GET(self) -> None:
            self._record()
            with data.lock:
                settings = data.settings
                failure = data.pending_failures.pop(0) if data.pending_failures else None
            if failure is not None:
                self._send_json(failure, {"error": "injected failure"}, extra_headers={"Retry-After": "0"})
                return

            introspection = self._authenticate(settings)
            if introspection is None:
                return

            parts = urlsplit(self.path)
            if parts.path == "/collections":
                names = sorted(data.collections)
                etag = '"' + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self._send(304, b"", "application/json", extra_headers={"ETag": etag}, cacheable=True)
                else:
                    body = json.dumps({"collections": names}).encode()
                    self._send(200, body, "application/json", extra_headers={"ETag": etag}, cacheable=True)
            elif parts.path == "/me":
                self._send_json(200, {key: introspection.get(key) for key in ("client_id", "scope", "sub")})
            elif match := _LIST_PATH.match(parts.path):
                self._list(unquote(match.group(1)), parse_qs(parts.query), settings)
            elif match := _CONTENT_PATH.match(parts.path):
                self._content(unquote(match.group(1)), int(match.group(2)))
            else:
                self._send_json(404, {"error": "not_found"})

        def _method_not_allowed(self) -> None:
            self._record()
            # Read the body, so that the next request on this keep-alive connection starts at its request line.
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send_json(405, {"error": "method_not_allowed"}, extra_headers={"Allow": "GET"})

        do_POST = do_PUT = do_PATCH = do_DELETE = _method_not_allowed

        # -- authentication ------------------------------------------------------

        def _authenticate(self, settings: ApiSettings) -> dict[str, object] | None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                self._send_json(401, {"error": "unauthorized"}, challenge=f'Bearer realm="{REALM}"')
                return None

            try:
                introspection = _introspect(data, token.strip())
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("oauth_api.introspection_failed path=%s error=%s", self.path, type(exc).__name__)
                self._send_json(502, {"error": "introspection_failed"})
                return None

            if not introspection.get("active"):
                challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="inactive token"'
                self._send_json(401, {"error": "invalid_token"}, challenge=challenge)
                return None
            if settings.required_scope not in str(introspection.get("scope", "")).split():
                challenge = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{settings.required_scope}"'
                self._send_json(403, {"error": "insufficient_scope"}, challenge=challenge)
                return None
            return introspection

        # -- documents -----------------------------------------------------------

        def _list(self, collection: str, query: dict[str, list[str]], settings: ApiSettings) -> None:
            documents = data.collections.get(collection)
            if documents is None:
                self._send_json(404, {"error": "collection_not_found"})
                return

            try:
                after_id = int(query.get("after_id", ["0"])[0])
                limit = min(int(query.get("limit", [str(settings.page_size)])[0]), settings.page_size)
            except ValueError:
                self._send_json(400, {"error": "invalid_request"})
                return

            remaining = [document for document in documents if document.id > after_id]
            page = remaining[: max(limit, 1)]
            next_url = None
            if len(remaining) > len(page):
                host = settings.next_host or LOOPBACK
                port = self.server.server_address[1]
                next_url = (
                    f"http://{host}:{port}/collections/{quote(collection, safe='')}/documents"
                    f"?after_id={page[-1].id}&limit={limit}"
                )

            body = {
                "items": [document.metadata() for document in page],
                "next": next_url if settings.pagination == "body" else None,
                "epoch": settings.epoch,
            }
            extra = {"Link": f'<{next_url}>; rel="next"'} if next_url and settings.pagination == "link" else {}
            self._send_json(200, body, extra_headers=extra)

        def _content(self, collection: str, document_id: int) -> None:
            documents = data.collections.get(collection, [])
            document = next((document for document in documents if document.id == document_id), None)
            if document is None:
                self._send_json(404, {"error": "document_not_found"})
                return
            self._send(200, document.data, document.content_type)

        # -- responses -----------------------------------------------------------

        def _record(self) -> None:
            with data.lock:
                data.request_lines.append(f"{self.command} {self.path}")

        def _send_json(
            self,
            status: int,
            body: dict[str, object],
            *,
            challenge: str | None = None,
            extra_headers: dict[str, str] | None = None,
        ) -> None:
            headers = dict(extra_headers or {})
            if challenge:
                headers["WWW-Authenticate"] = challenge
            self._send(status, json.dumps(body).encode("utf-8"), "application/json", extra_headers=headers)

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str,
            *,
            extra_headers: dict[str, str] | None = None,
            cacheable: bool = False,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if not cacheable:
                self.send_header("Cache-Control", "no-store")
            for name, value in (extra_headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
