"""A REST API protected by OAuth 2.0 bearer tokens (RFC 6750): list a collection, download its items.

The connector sends only GET requests, so reading changes nothing on the
account. Every request carries the token in the ``Authorization: Bearer``
header, never in a URL or query, and goes only to the host of ``base_url``.
Redirects are not followed. A next-page link to another host, scheme or port
raises :class:`~warden.errors.ConfigError` before anything is sent there.
Plain ``http`` is accepted only for a loopback host.

Each item becomes one RFC 822 message, so the document store and extraction
treat it like an e-mail. ``Subject`` is the item's title and ``X-Warden-Item-Id``
its id. The text part is the item's JSON metadata, and the downloaded file is
the attachment, with the item's file name and content type. The "mailbox" of
:meth:`HttpApiSession.list_new` is a collection name from the account's
``mailboxes``, substituted into ``list_path`` and ``download_path`` where they
contain ``{mailbox}``. An item's integer id is its UID, so ids must grow with
every new item.

How responses map to the exception tree:

- 401, or any status with ``WWW-Authenticate: Bearer error="invalid_token"``:
  :class:`~warden.errors.AccessTokenRejected` (refresh the token, do not retry it).
- 403 ``insufficient_scope``, other 403s, and 404 on the probe or list path:
  :class:`~warden.errors.ConfigError` naming the scope or the option to fix.
- 429, 5xx and connection errors: retried by :func:`~warden.connectors.http.send_with_backoff`,
  which raises :class:`~warden.errors.RateLimited` or :class:`~warden.errors.SiteUnreachable`
  when its bounds run out.
- Anything else the connector cannot read: :class:`~warden.errors.UnexpectedResponse`.

The options an account sets in ``api_options``::

    {
        "base_url": "https://api.example.com/v1",
        "probe_path": "/me",
        "list_path": "/collections/{mailbox}/documents",
        "items_field": "items",
        "id_field": "id",
        "after_param": "after_id",
        "next_field": "next",
        "page_size_param": "limit",
        "download_path": "/collections/{mailbox}/documents/{id}/content",
        "title_field": "title",
        "filename_field": "filename",
        "content_type_field": "content_type"
    }
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import mimetypes
import re
import string
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from warden.connectors.base import ItemRef, ProbeResult, ProbeState
from warden.connectors.http import HttpSettings, build_client, send_with_backoff
from warden.connectors.metadata_cache import MetadataCache
from warden.errors import (
    AccessTokenRejected,
    ConfigError,
    RateLimited,
    SiteUnreachable,
    UnexpectedResponse,
)

__all__ = ["HttpApiConnector", "HttpApiOptions", "HttpApiSession", "item_message_bytes", "parse_http_api_options"]

logger = logging.getLogger("warden.http_api")

ITEM_ID_HEADER = "X-Warden-Item-Id"
COLLECTION_HEADER = "X-Warden-Collection"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Capability and schema documents of every account's API, revalidated after five minutes.
METADATA_CACHE = MetadataCache(ttl_seconds=300)
LOOPBACK_NAMES = frozenset({"localhost"})

# One auth-param of a WWW-Authenticate challenge (RFC 9110, section 11.2): name=token or name="quoted string".
_AUTH_PARAM = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


def is_loopback_host(host: str) -> bool:
    """Return True for ``localhost`` and for addresses in 127.0.0.0/8 or ``::1``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _placeholders(template: str) -> set[str]:
    """Return the ``{name}`` fields of a path template, or raise ValueError for format specs and bad braces."""
    names = set()
    for _literal, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} is not a plain name such as {{id}}")
        names.add(name)
    return names


class HttpApiOptions(BaseModel):
    """The API's base URL, its list and download endpoints, and the JSON fields that describe an item."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="Root URL of the API: https, or http only for a loopback host.")
    probe_path: str | None = Field(
        default=None,
        description="Cheap authenticated GET, e.g. /me, sent when a session opens to check the token. Null: no check.",
    )
    collections_path: str | None = Field(
        default=None,
        description=(
            "GET that lists the collections the API offers (capability discovery), as a JSON list of names or "
            "under collections_field. Cached for 5 minutes and revalidated by ETag, so an unchanged list is not "
            "fetched again. A collection of the account that is not listed raises an error naming it."
        ),
    )
    collections_field: str = Field(default="collections", description="Dotted path of the name list, or empty.")
    list_path: str = Field(description="GET that lists a collection, with {mailbox} replaced by the collection name.")
    items_field: str = Field(
        default="items", description="Dotted path of the item list in the JSON body, empty if the body is the list."
    )
    id_field: str = Field(default="id", min_length=1, description="Item field with the integer id, used as the UID.")
    after_param: str | None = Field(
        default=None,
        description="Query parameter that requests only items with a larger id. Without it, older items are "
        "listed and skipped.",
    )
    next_field: str | None = Field(
        default=None, description="Dotted path of the next page's URL in the body, or of a cursor with cursor_param."
    )
    cursor_param: str | None = Field(
        default=None, description="Query parameter that sends the cursor read from next_field."
    )
    follow_link_header: bool = Field(
        default=True, description='Follow a `Link: <URL>; rel="next"` header when next_field gives no next page.'
    )
    page_size_param: str | None = Field(default=None, description="Query parameter that sets the page size.")
    page_size: int = Field(default=100, ge=1, le=10_000, description="Items per page requested with page_size_param.")
    max_pages: int = Field(default=100, ge=1, le=100_000, description="Pages one listing reads at most.")
    download_path: str = Field(description="GET that returns an item's file, with {id} and {mailbox} replaced.")
    title_field: str | None = Field(default="title", description="Item field used as the message Subject.")
    filename_field: str | None = Field(default="filename", description="Item field with the file name.")
    content_type_field: str | None = Field(default="content_type", description="Item field with the MIME type.")
    validity_field: str | None = Field(
        default=None,
        description="Dotted path of an epoch number in the list body. When it changes, every item is listed again.",
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{value!r} is not an http or https URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("must not contain user info, a query or a fragment")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError(
                f"plain http to {parts.hostname} would send the access token unencrypted; use https "
                "(http is accepted only for a loopback host)"
            )
        return value.rstrip("/")

    @field_validator("probe_path", "collections_path", "list_path", "download_path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or value.startswith("//") or "://" in value:
            raise ValueError(f"{value!r} must be a path below base_url starting with a single '/', not a URL")
        return value

    @model_validator(mode="after")
    def _check_templates(self) -> HttpApiOptions:
        rules = (
            ("probe_path", self.probe_path, set(), set()),
            ("collections_path", self.collections_path, set(), set()),
            ("list_path", self.list_path, {"mailbox"}, set()),
            ("download_path", self.download_path, {"id", "mailbox"}, {"id"}),
        )
        for name, template, allowed, required in rules:
            if template is None:
                continue
            try:
                found = _placeholders(template)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
            if found - allowed:
                allowed_text = ", ".join(f"{{{field}}}" for field in sorted(allowed)) or "none"
                raise ValueError(f"{name}: unknown placeholder {sorted(found - allowed)} (allowed: {allowed_text})")
            if required - found:
                raise ValueError(f"{name}: must contain {{id}}, which is replaced by the item's id")
        if self.cursor_param and not self.next_field:
            raise ValueError("cursor_param is set without next_field, the body field that contains the cursor")
        return self

    @property
    def host(self) -> str:
        """Host and port of ``base_url``, the only host that receives the access token."""
        return urlsplit(self.base_url).netloc


def parse_http_api_options(options: dict[str, Any], *, account: str) -> HttpApiOptions:
    """Validate an account's ``api_options`` for an HTTP API, or raise :class:`ConfigError` naming the bad field."""
    try:
        return HttpApiOptions.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'options'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise ConfigError(
            f"Account '{account}' has invalid http-api api_options ({problems}). Example: "
            '{"base_url": "https://api.example.com", "list_path": "/documents", '
            '"download_path": "/documents/{id}/content"}.'
        ) from exc


# -- reading responses ----------------------------------------------------------


def _lookup(value: Any, dotted_path: str) -> Any:
    """Return the value at ``dotted_path`` (``a.b``) in nested JSON objects, or None when a step is missing."""
    for key in dotted_path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def bearer_challenge(response: httpx.Response) -> dict[str, str]:
    """Return the auth-params of a ``WWW-Authenticate: Bearer`` challenge by lowercase name, or an empty dict."""
    header = response.headers.get("WWW-Authenticate", "")
    scheme, _, params = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return {}
    return {name.lower(): quoted or token for name, quoted, token in _AUTH_PARAM.findall(params)}


def _json_body(response: httpx.Response, what: str, host: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        content_type = response.headers.get("Content-Type", "none")
        raise UnexpectedResponse(
            f"Could not {what}: the API at {host} returned a body that is not JSON (Content-Type {content_type}). "
            "Check base_url and the paths in the account's api_options."
        ) from exc


def _text(value: Any) -> str | None:
    """Return a metadata value as one header-safe line, or None when it is empty or not a scalar."""
    if value is None or isinstance(value, dict | list):
        return None
    text = " ".join(_CONTROL_CHARACTERS.sub(" ", str(value)).split())
    return text or None


def _safe_filename(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    # The file name comes from the API: keep only its last path segment.
    name = re.split(r"[\\/]", text)[-1].strip(". ")
    return name or None


def item_message_bytes(
    ref: ItemRef,
    metadata: dict[str, Any],
    data: bytes,
    *,
    options: HttpApiOptions,
    response_type: str | None = None,
) -> bytes:
    """Wrap one downloaded item as an RFC 822 message: metadata as the text part, the file as the attachment.

    The bytes are the same for the same item, metadata and file, so a repeated download stores no duplicate blob.
    """
    content_type = _text(_lookup(metadata, options.content_type_field)) if options.content_type_field else None
    if content_type is None or not _CONTENT_TYPE.match(content_type):
        content_type = (response_type or "").split(";")[0].strip().lower()
    if not _CONTENT_TYPE.match(content_type):
        content_type = "application/octet-stream"
    maintype, subtype = content_type.lower().split("/", 1)

    filename = _safe_filename(_lookup(metadata, options.filename_field)) if options.filename_field else None
    if filename is None:
        filename = f"item-{ref.uid}{mimetypes.guess_extension(content_type) or ''}"
    title = (_text(_lookup(metadata, options.title_field)) if options.title_field else None) or filename

    metadata_text = json.dumps(metadata, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(f"{options.base_url}\n{ref.mailbox}\n{metadata_text}\n".encode() + data).hexdigest()
    collection_digest = hashlib.sha256(f"{options.base_url}\n{ref.mailbox}".encode()).hexdigest()[:16]
    domain = urlsplit(options.base_url).hostname or "http-api.invalid"

    message = EmailMessage()
    message["Subject"] = title
    message["Message-ID"] = f"<item-{ref.uid}.{collection_digest}@{domain}>"
    message[ITEM_ID_HEADER] = str(ref.uid)
    message[COLLECTION_HEADER] = _text(ref.mailbox) or "-"
    message.set_content(metadata_text + "\n", subtype="plain", charset="utf-8")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    # A boundary derived from the content, not a random one, keeps the bytes reproducible. The file part is
    # base64, whose alphabet has no '-', so it cannot contain the boundary.
    message.set_boundary(f"warden-item-{digest[:32]}")
    return message.as_bytes(policy=policy.SMTP)


# -- the session ----------------------------------------------------------------


class HttpApiSession:
    """One API session with a bearer token. It keeps the metadata of listed items for :meth:`fetch_raw`."""

    def __init__(self, client: httpx.AsyncClient, options: HttpApiOptions, *, account: str, http: HttpSettings) -> None:
        self._client = client
        self._options = options
        self._account = account
        self._http = http
        self._origin = _origin(httpx.URL(options.base_url))
        self._metadata: dict[tuple[str, int], dict[str, Any]] = {}
        self.requests_sent = 0

    @property
    def _host(self) -> str:
        return self._options.host

    async def _get(
        self,
        url: str,
        *,
        what: str,
        option: str,
        params: dict[str, str] | None = None,
        accept: str,
        metadata: bool = False,
    ) -> httpx.Response:
        """Send one GET through the retry layer and return a 2xx response, or raise the mapped error.

        With ``metadata=True`` the response comes from :data:`METADATA_CACHE` while it is fresh or unchanged.
        """
        headers = {"Accept": accept}
        if metadata:
            response = await METADATA_CACHE.get(
                self._client, url, settings=self._http, what=what, scope=self._account, params=params, headers=headers
            )
            if response.extensions.get("metadata_cache") != "hit":
                self.requests_sent += 1
        else:
            self.requests_sent += 1
            response = await send_with_backoff(
                self._client, "GET", url, settings=self._http, what=what, params=params, headers=headers
            )
        if 200 <= response.status_code < 300:
            return response

        challenge = bearer_challenge(response)
        status = response.status_code
        logger.debug(
            "http_api.rejected account=%s option=%s status=%d challenge_error=%s",
            self._account,
            option,
            status,
            challenge.get("error", ""),
        )
        if status == 401 or challenge.get("error") == "invalid_token":
            raise AccessTokenRejected(
                f"Could not {what}: the API at {self._host} rejected the OAuth access token "
                f"(HTTP {status} {challenge.get('error', 'unauthorized')}). It is revoked, expired or not meant "
                "for this API. Refresh it instead of retrying it."
            )
        if status == 403 and challenge.get("error") == "insufficient_scope":
            scope = challenge.get("scope", "")
            needed = f"the scope '{scope}'" if scope else "a scope it did not name"
            raise ConfigError(
                f"Could not {what}: the API at {self._host} requires {needed}, which the access token lacks "
                f"(HTTP 403 insufficient_scope). Add it to the scope in the account's oauth settings and allow "
                "the OAuth client to request it."
            )
        if status == 403:
            raise ConfigError(
                f"Could not {what}: the API at {self._host} denied access (HTTP 403). Check {option} in the "
                "account's api_options, and that the OAuth client may read it."
            )
        if status == 404 and option != "download_path":
            raise ConfigError(
                f"Could not {what}: the API at {self._host} returned HTTP 404. Check base_url and {option} in the "
                "account's api_options, and the collection names in its mailboxes."
            )
        if 300 <= status < 400:
            target = httpx.URL(response.headers.get("Location", "")).host or self._host
            raise UnexpectedResponse(
                f"Could not {what}: the API at {self._host} redirected the request (HTTP {status}) to {target}. "
                f"Redirects are not followed, so the access token stays with {self._host}. Point {option} at "
                "the final address."
            )
        if status == 404:
            raise UnexpectedResponse(
                f"Could not {what}: the API at {self._host} returned HTTP 404. The item may have been deleted "
                "since it was listed, or download_path in the account's api_options is wrong."
            )
        raise UnexpectedResponse(f"Could not {what}: the API at {self._host} returned HTTP {status}.")

    async def check_token(self) -> None:
        """Send ``GET probe_path`` and raise :class:`AccessTokenRejected` when the API rejects the token."""
        if self._options.probe_path is None:
            return
        what = f"check the access token of account '{self._account}' with GET {self._options.probe_path}"
        response = await self._get(self._options.probe_path, what=what, option="probe_path", accept="application/json")
        await response.aclose()

    async def _check_collection(self, mailbox: str) -> None:
        """Raise ConfigError when ``collections_path`` is set and does not list ``mailbox``."""
        if self._options.collections_path is None:
            return
        response = await self._get(
            self._options.collections_path,
            what=f"list the collections of the API for account '{self._account}'",
            option="collections_path",
            accept="application/json",
            metadata=True,
        )
        try:
            body = response.json()
        except ValueError as exc:
            raise UnexpectedResponse(
                f"Invalid response from the API at {self._host}: collections_path returned something other than JSON."
            ) from exc
        names = _lookup(body, self._options.collections_field) if self._options.collections_field else body
        if not isinstance(names, list):
            raise ConfigError(
                f"collections_field '{self._options.collections_field}' of account '{self._account}' does not name "
                f"a list in the answer of {self._options.collections_path}. Fix it in api_options."
            )
        if mailbox not in [str(name) for name in names]:
            raise ConfigError(
                f"Account '{self._account}' names the collection '{mailbox}', which the API at {self._host} does not "
                f"offer (it lists: {', '.join(map(str, names[:20])) or 'none'}). Fix the account's mailboxes."
            )

    async def list_new(self, mailbox: str, *, after_uid: int, uidvalidity: int) -> tuple[list[ItemRef], int]:
        """Return refs of items with an id above ``after_uid`` in ascending order, and the collection's epoch.

        Sends ``GET list_path`` and follows next pages. The epoch is 0 without ``validity_field``. When it
        differs from a known, non-zero ``uidvalidity``, every item is new.
        """
        await self._check_collection(mailbox)
        items, current = await self._list_items(mailbox, after_uid=after_uid)
        if uidvalidity and current and uidvalidity != current:
            logger.warning(
                "http_api.validity_changed account=%s collection=%s stored=%d current=%d",
                self._account,
                mailbox,
                uidvalidity,
                current,
            )
            if self._options.after_param and after_uid > 0:
                items, current = await self._list_items(mailbox, after_uid=0)
            after_uid = 0

        by_id: dict[int, dict[str, Any]] = {}
        for index, item in enumerate(items):
            uid = self._item_id(item, index, mailbox)
            if uid > after_uid:
                by_id[uid] = item
        for uid, item in by_id.items():
            self._metadata[(mailbox, uid)] = item

        refs = [ItemRef(mailbox=mailbox, uid=uid, uidvalidity=current) for uid in sorted(by_id)]
        logger.info(
            "http_api.listed account=%s collection=%s after_id=%d listed=%d new=%d",
            self._account,
            mailbox,
            after_uid,
            len(items),
            len(refs),
        )
        return refs, current

    async def _list_items(self, mailbox: str, *, after_uid: int) -> tuple[list[Any], int]:
        options = self._options
        first_params: dict[str, str] = {}
        if options.page_size_param:
            first_params[options.page_size_param] = str(options.page_size)
        if options.after_param and after_uid > 0:
            first_params[options.after_param] = str(after_uid)

        list_path = options.list_path.format(mailbox=quote(mailbox, safe=""))
        url, params = list_path, first_params
        visited = {str(self._client.build_request("GET", url, params=params).url)}
        items: list[Any] = []
        validity = 0
        page = 0

        while True:
            page += 1
            what = f"list page {page} of collection '{mailbox}' for account '{self._account}'"
            response = await self._get(url, what=what, option="list_path", params=params, accept="application/json")
            body = _json_body(response, what, self._host)

            if page == 1:
                validity = self._validity(body, what)
            items.extend(self._page_items(body, what))

            next_page = self._next_page(response, body, list_path, first_params, what)
            if next_page is None:
                return items, validity
            if page >= options.max_pages:
                # NOTE: without after_param the next sync lists the same first pages again, so items beyond
                # max_pages are reached only by raising it.
                logger.warning(
                    "http_api.max_pages_reached account=%s collection=%s max_pages=%d listed=%d",
                    self._account,
                    mailbox,
                    options.max_pages,
                    len(items),
                )
                return items, validity

            url, params = next_page
            target = str(self._client.build_request("GET", url, params=params).url)
            if target in visited:
                raise UnexpectedResponse(
                    f"Could not {what}: the API at {self._host} returned a next page that was already read, "
                    "so the listing stopped instead of looping. Check next_field and cursor_param in api_options."
                )
            visited.add(target)

    def _validity(self, body: Any, what: str) -> int:
        field = self._options.validity_field
        if field is None:
            return 0
        value = _lookup(body, field)
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
            raise ConfigError(
                f"Could not {what}: the list body has no non-negative integer at validity_field '{field}'. "
                "Fix validity_field in the account's api_options, or remove it."
            )
        return int(value)

    def _page_items(self, body: Any, what: str) -> list[Any]:
        field = self._options.items_field
        value = _lookup(body, field) if field else body
        if not isinstance(value, list):
            where = f"items_field '{field}'" if field else "the top level (items_field is empty)"
            raise ConfigError(
                f"Could not {what}: the JSON body has no list at {where} (found {type(value).__name__}). "
                "Fix items_field in the account's api_options."
            )
        return value

    def _next_page(
        self, response: httpx.Response, body: Any, list_path: str, first_params: dict[str, str], what: str
    ) -> tuple[str, dict[str, str] | None] | None:
        """Return the URL and query of the next page, from next_field or the Link header, or None on the last page."""
        options = self._options
        if options.next_field:
            value = _lookup(body, options.next_field)
            if value is not None and value != "":
                if isinstance(value, dict | list | bool):
                    raise ConfigError(
                        f"Could not {what}: next_field '{options.next_field}' contains a {type(value).__name__}, "
                        "not a URL or cursor. Fix next_field in the account's api_options."
                    )
                if options.cursor_param:
                    return list_path, {**first_params, options.cursor_param: str(value)}
                return self._same_origin(response.url.join(str(value)), what), None

        if options.follow_link_header:
            link = response.links.get("next", {}).get("url")
            if link:
                return self._same_origin(response.url.join(link), what), None
        return None

    def _same_origin(self, target: httpx.URL, what: str) -> str:
        if _origin(target) != self._origin:
            port = target.port or DEFAULT_PORTS.get(target.scheme, 0)
            raise ConfigError(
                f"Could not {what}: the API at {self._host} returned a next-page link to {target.scheme}://"
                f"{target.host}:{port}, another host. The access token is sent only to {self._options.base_url}, "
                "so the listing stopped. Set base_url to the host that serves every page, or use next_field with "
                "cursor_param if the API offers a cursor."
            )
        return str(target)

    def _item_id(self, item: Any, index: int, mailbox: str) -> int:
        field = self._options.id_field
        value = _lookup(item, field) if isinstance(item, dict) else None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"Item {index} of collection '{mailbox}' for account '{self._account}' at {self._host} has no "
                f"positive integer at id_field '{field}' (found {type(value).__name__}). The connector needs "
                "integer ids that grow with every new item; fix id_field in the account's api_options."
            )
        return value

    async def fetch_raw(self, item: ItemRef) -> bytes:
        """Download one item with ``GET download_path`` and return it wrapped as an RFC 822 message."""
        metadata = self._metadata.get((item.mailbox, item.uid)) or {self._options.id_field: item.uid}
        path = self._options.download_path.format(id=item.uid, mailbox=quote(item.mailbox, safe=""))
        what = f"download item {item.uid} of collection '{item.mailbox}' for account '{self._account}'"
        response = await self._get(path, what=what, option="download_path", accept="*/*")
        return item_message_bytes(
            item, metadata, response.content, options=self._options, response_type=response.headers.get("Content-Type")
        )


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host.lower(), url.port or DEFAULT_PORTS.get(url.scheme, 0)


# -- the connector ----------------------------------------------------------------


class HttpApiConnector:
    """Read the collections of an OAuth-protected REST API with GET requests only."""

    kind = "http-api"

    def __init__(self, options: HttpApiOptions, *, account: str, http: HttpSettings | None = None) -> None:
        self._options = options
        self._account = account
        self._http = http or HttpSettings()

    @property
    def site(self) -> str:
        return self._options.host

    @asynccontextmanager
    async def _client(self, access_token: SecretStr) -> AsyncIterator[httpx.AsyncClient]:
        # httpx keeps the header out of its logs and masks it in the repr of Headers.
        headers = {"Authorization": f"Bearer {access_token.get_secret_value()}"}
        async with build_client(self._options.base_url, settings=self._http, headers=headers) as client:
            yield client

    @asynccontextmanager
    async def open(self, access_token: SecretStr) -> AsyncIterator[HttpApiSession]:
        """Yield a session. With ``probe_path`` set, check the token first and raise AccessTokenRejected if rejected."""
        async with self._client(access_token) as client:
            session = HttpApiSession(client, self._options, account=self._account, http=self._http)
            await session.check_token()
            yield session

    async def probe(self, access_token: SecretStr) -> ProbeResult:
        """Send ``GET probe_path`` once and report the token's state. Only configuration errors are raised."""
        started = time.monotonic()

        def result(state: ProbeState, reason: str) -> ProbeResult:
            return ProbeResult(state=state, reason=reason, elapsed_seconds=time.monotonic() - started)

        if self._options.probe_path is None:
            return result(ProbeState.UNKNOWN, "no probe_path in api_options, so the token was not checked")
        async with self._client(access_token) as client:
            session = HttpApiSession(client, self._options, account=self._account, http=self._http)
            try:
                await session.check_token()
            except AccessTokenRejected:
                return result(ProbeState.EXPIRED, f"the API at {self.site} rejected the access token")
            except (SiteUnreachable, RateLimited) as exc:
                return result(ProbeState.UNREACHABLE, str(exc))
            except UnexpectedResponse as exc:
                return result(ProbeState.UNKNOWN, str(exc))
        return result(ProbeState.VALID, f"the API at {self.site} accepted the access token")
