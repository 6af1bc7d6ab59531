"""Connector metadata kept for a TTL and revalidated with ``ETag`` or ``Last-Modified``.

Folder lists, endpoint capabilities and schemas change rarely, so a connector
reads them through one :class:`MetadataCache` per process instead of fetching
them on every sync::

    METADATA_CACHE = MetadataCache(ttl_seconds=300)

    response = await METADATA_CACHE.get(
        client, "/folders", settings=http, what="list folders of account 'demo'", scope="demo"
    )
    folders = response.json()

What :meth:`MetadataCache.get` does for a GET:

- a stored entry younger than ``ttl_seconds`` is returned without a request;
- an older entry is revalidated with ``If-None-Match`` (its ETag) and
  ``If-Modified-Since`` (its Last-Modified date). On 304 Not Modified the stored
  body is returned and its TTL starts again, and on 200 the entry is replaced;
- any other status is returned as it came and not stored, so the connector
  maps it to the exception tree as it maps every response.

Every response is an ``httpx.Response`` with status 200 for a stored body, and
``response.extensions["metadata_cache"]`` names its source: ``"hit"``,
``"revalidated"`` or ``"miss"``. Requests go through
:func:`~warden.connectors.http.send_with_backoff`, so the retry bounds and the
site policy apply. Entries are kept per ``scope`` (the account), because
metadata is read with that account's credentials and must not be served to
another. A 200 with ``Cache-Control: no-store`` is not stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from warden.connectors.http import HttpSettings, send_with_backoff

__all__ = ["CACHE_EXTENSION", "CacheSource", "MetadataCache"]

logger = logging.getLogger("warden.metadata_cache")

CACHE_EXTENSION = "metadata_cache"

CacheSource = Literal["hit", "revalidated", "miss"]

# Headers a stored response never replays: cookies belong to the exchange that set them.
_NOT_STORED_HEADERS = frozenset({"set-cookie", "content-length", "transfer-encoding", "connection"})

# Headers a 304 may carry that update the stored entry (RFC 9111, section 4.3.4).
_REVALIDATION_HEADERS = ("etag", "last-modified", "cache-control", "expires", "date")


@dataclass
class _Entry:
    headers: list[tuple[str, str]]
    content: bytes
    stored_at: float

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def update_headers(self, response: httpx.Response) -> None:
        for name in _REVALIDATION_HEADERS:
            value = response.headers.get(name)
            if value is not None:
                self.headers = [(key, old) for key, old in self.headers if key != name] + [(name, value)]


class MetadataCache:
    """Responses of metadata GETs per scope and URL, served within a TTL and revalidated after it."""

    def __init__(
        self, *, ttl_seconds: float = 300.0, max_entries: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be zero or more, not {ttl_seconds}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    async def get(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        settings: HttpSettings,
        what: str,
        scope: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Return the metadata at ``url`` from memory, a revalidation, or a fresh GET.

        ``scope`` names whose credentials read it, usually the account. Raises what
        :func:`~warden.connectors.http.send_with_backoff` raises.
        """
        request = client.build_request("GET", url, params=params, headers=headers)
        key = (scope, str(request.url))
        entry = self._lookup(key)

        if entry is not None and self._clock() - entry.stored_at < self.ttl_seconds:
            logger.debug("metadata_cache.hit scope=%s path=%s", scope, request.url.path)
            return self._stored_response(entry, request, "hit")

        conditional = dict(headers or {})
        if entry is not None:
            etag = entry.header("etag")
            last_modified = entry.header("last-modified")
            if etag is not None:
                conditional["If-None-Match"] = etag
            if last_modified is not None:
                conditional["If-Modified-Since"] = last_modified

        response = await send_with_backoff(
            client, "GET", url, settings=settings, what=what, params=params, headers=conditional
        )

        if response.status_code == 304 and entry is not None:
            entry.update_headers(response)
            entry.stored_at = self._clock()
            logger.info("metadata_cache.revalidated scope=%s path=%s", scope, request.url.path)
            return self._stored_response(entry, request, "revalidated")

        if response.status_code == 200:
            self._store(key, response)
        response.extensions = {**response.extensions, CACHE_EXTENSION: "miss"}
        return response

    def invalidate(self, scope: str) -> None:
        """Forget every entry of ``scope``, e.g. after its account was logged in again."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == scope]:
                del self._entries[key]

    def _lookup(self, key: tuple[str, str]) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _store(self, key: tuple[str, str], response: httpx.Response) -> None:
        cache_control = response.headers.get("cache-control", "").lower()
        with self._lock:
            if "no-store" in cache_control:
                self._entries.pop(key, None)
                return
            stored_headers = [
                (name.lower(), value)
                for name, value in response.headers.items()
                if name.lower() not in _NOT_STORED_HEADERS
            ]
            self._entries[key] = _Entry(headers=stored_headers, content=response.content, stored_at=self._clock())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    @staticmethod
    def _stored_response(entry: _Entry, request: httpx.Request, source: CacheSource) -> httpx.Response:
        return httpx.Response(
            200, headers=entry.headers, content=entry.content, request=request, extensions={CACHE_EXTENSION: source}
        )
