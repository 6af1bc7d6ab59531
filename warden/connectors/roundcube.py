"""Roundcube webmail, through its own web endpoints, with a saved browser session.

Endpoints (Roundcube 1.6, as served by ``index.php``):

- probe: ``GET ?_task=mail&_action=keep-alive&_remote=1``. It always returns
  HTTP 200 with JSON; the session is gone exactly when ``exec`` contains
  ``session_error``. Roundcube never answers an expired session with 401, 403
  or a redirect.
- list: ``GET ?_task=mail&_action=list&_mbox=M&_remote=1&_page=N``; rows come
  as ``add_message_row(UID, ...)`` calls in ``exec``. No ``_sort`` parameter:
  Roundcube saves a requested sort order into the user's preferences.
- fetch: ``GET ?_task=mail&_action=viewsource&_uid=U&_mbox=M&_save=1``
  returns the raw RFC 822 message, read on the server with ``BODY.PEEK``,
  so the message stays unread. (``_action=show`` and ``preview`` mark it read.)

AJAX endpoints and downloads need the session's request token, sent in the
``X-Roundcube-Request`` header (never in the URL, which httpx logs). It is read
from the logged-in page at login and kept in the state's extras.

Every request can rotate the ``roundcube_sessauth`` cookie, and replaying an
old value destroys the session on the server, so callers must store the state
returned by :meth:`RoundcubeSession.current_state` after every use.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx

from warden.connectors.base import ItemRef, LoginCredentials, ProbeResult, ProbeState
from warden.connectors.http import HttpSettings, build_client, send_with_backoff
from warden.credentials.redaction import register_secret
from warden.errors import (
    LoginFailed,
    LoginLocked,
    LoginRequired,
    SessionRejected,
    SiteUnreachable,
    UnexpectedResponse,
    WardenError,
)
from warden.sessions.state import SessionState

if TYPE_CHECKING:
    from playwright.async_api import Page

__all__ = ["RoundcubeConnector", "RoundcubeSession"]

logger = logging.getLogger("warden.connectors.roundcube")

REQUEST_TOKEN_EXTRA = "request_token"
_REQUEST_TOKEN = re.compile(r'"request_token"\s*:\s*"([^"]+)"')
_MESSAGE_ROW = re.compile(r"add_message_row\((\d+),")
_ERROR_NOTICE = re.compile(r'display_message\("((?:[^"\\]|\\.)*)","error"')
# Roundcube's English text for "storageerror", shown when its IMAP connection fails.
_STORAGE_ERROR = "Connection to storage server failed"
# Roundcube's English text for "accountlocked", shown while login_rate_limit blocks a user.
_LOCKED_OUT = "Too many failed login attempts"
_CHALLENGE_WORDS = ("captcha", "two-factor", "2fa", "verification code")


class RoundcubeConnector:
    """A Roundcube account reached through its web interface."""

    kind = "roundcube"
    auth_cookie_names = frozenset({"roundcube_sessid", "roundcube_sessauth"})
    supports_fetch = True

    def __init__(self, base_url: str, *, account: str, http: HttpSettings) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.account = account
        self.http = http

    @asynccontextmanager
    async def _session(self, state: SessionState) -> AsyncIterator[RoundcubeSession]:
        headers = {}
        request_token = state.extras.get(REQUEST_TOKEN_EXTRA)
        if request_token:
            headers["X-Roundcube-Request"] = request_token

        client = build_client(self.base_url, settings=self.http, cookies=state.cookie_jar(), headers=headers)
        try:
            yield RoundcubeSession(self, client, state)
        finally:
            await client.aclose()

    @asynccontextmanager
    async def open(self, state: SessionState) -> AsyncIterator[RoundcubeSession]:
        """Open an HTTP session that replays ``state``; the caller saves ``current_state()`` afterwards."""
        async with self._session(state) as session:
            if not state.extras.get(REQUEST_TOKEN_EXTRA):
                # A session logged in by hand or imported has no request token yet; any logged-in page has it.
                await session.read_request_token()
            yield session

    async def probe(self, state: SessionState) -> tuple[ProbeResult, SessionState]:
        """Replay the session against the keep-alive endpoint; return the result and the rotated state."""
        async with self._session(state) as session:
            result = await session.probe()
            return result, session.current_state()

    async def login(self, page: Page, credentials: LoginCredentials) -> dict[str, str]:
        """Fill Roundcube's login form (``?_task=login``) and return the session's request token.

        Raises :class:`LoginFailed` when Roundcube rejects the user name or password.
        """
        await page.goto(f"{self.base_url}?_task=login", wait_until="domcontentloaded")

        if await page.locator("#rcmloginuser").count() == 0:
            text = (await page.content()).lower()
            if any(word in text for word in _CHALLENGE_WORDS):
                raise LoginRequired(
                    f"Roundcube at {self.base_url} shows a challenge instead of its login form for account "
                    f"'{self.account}'. Clear it by logging in once in a browser, then sync again."
                )
            raise UnexpectedResponse(
                f"Roundcube at {self.base_url} did not show its login form (no #rcmloginuser) for account "
                f"'{self.account}'. Check the account's base URL."
            )

        await page.locator("#rcmloginuser").fill(credentials.username)
        await page.locator("#rcmloginpwd").fill(credentials.password.get_secret_value())
        async with page.expect_navigation(wait_until="domcontentloaded"):
            await page.locator("#rcmloginsubmit").click()

        task = await page.evaluate("() => window.rcmail ? rcmail.env.task : null")
        if task != "mail":
            stack = page.locator("#messagestack")
            notice = (await stack.inner_text()).strip() if await stack.count() else ""
            if _STORAGE_ERROR in notice:
                raise SiteUnreachable(
                    f"Roundcube at {self.base_url} could not reach its mail server while logging in account "
                    f"'{self.account}' ({notice!r}). Check the IMAP server behind Roundcube."
                )
            if _LOCKED_OUT in notice:
                raise LoginLocked(
                    f"Roundcube at {self.base_url} refuses logins of user '{credentials.username}' for account "
                    f"'{self.account}' after too many failed attempts ({notice!r}). Wait a minute (Roundcube's "
                    "login_rate_limit), fix the cause of the failures, then sync again."
                )
            shown = f" Roundcube showed {notice!r}." if notice else ""
            raise LoginFailed(
                f"Roundcube at {self.base_url} rejected the login of user '{credentials.username}' for account "
                f"'{self.account}'.{shown} Check the password stored in the vault for this account."
            )

        extras = await self.read_page_extras(page)
        if not extras:
            raise UnexpectedResponse(
                f"Roundcube at {self.base_url} logged in account '{self.account}' but its page has no request token."
            )
        return extras

    async def read_page_extras(self, page: Page) -> dict[str, str]:
        """Read the session's request token from a logged-in Roundcube page (``rcmail.env.request_token``)."""
        request_token = await page.evaluate("() => window.rcmail ? rcmail.env.request_token : null")
        return {REQUEST_TOKEN_EXTRA: request_token} if request_token else {}


class RoundcubeSession:
    """One replayed session: a client carrying the session's cookies and request token."""

    def __init__(self, connector: RoundcubeConnector, client: httpx.AsyncClient, state: SessionState) -> None:
        self._connector = connector
        self._client = client
        self._state = state
        self.requests_sent = 0

    def current_state(self) -> SessionState:
        """Return the state with the cookies the server rotated so far."""
        return self._state.with_cookies_from(self._client.cookies)

    async def read_request_token(self) -> None:
        """Read the request token from the mail page (``?_task=mail``) and send it with every later request."""
        what = f"read the request token of account '{self._connector.account}'"
        response = await self._get({"_task": "mail"}, what=what)
        match = _REQUEST_TOKEN.search(response.text) if response.status_code == 200 else None
        if match is None:
            raise SessionRejected(
                f"Could not {what}: the mail page (HTTP {response.status_code}) has no request token, so the "
                "session is not logged in. The next sync logs in again."
            )
        token = match.group(1)
        register_secret(token)
        self._client.headers["X-Roundcube-Request"] = token
        self._state = self._state.model_copy(update={"extras": {**self._state.extras, REQUEST_TOKEN_EXTRA: token}})

    async def _get(self, params: dict[str, str], *, what: str) -> httpx.Response:
        self.requests_sent += 1
        return await send_with_backoff(self._client, "GET", "", params=params, settings=self._connector.http, what=what)

    async def _remote(self, params: dict[str, str], *, what: str) -> dict[str, Any]:
        response = await self._get({**params, "_remote": "1"}, what=what)
        if response.status_code != 200:
            raise UnexpectedResponse(
                f"Could not {what}: Roundcube returned HTTP {response.status_code}. "
                "Check the account's base URL and that Roundcube is healthy."
            )
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UnexpectedResponse(
                f"Could not {what}: Roundcube returned {response.headers.get('content-type', 'no content type')} "
                "instead of JSON. Check that the base URL points at Roundcube's index.php."
            ) from exc
        if not isinstance(body, dict):
            raise UnexpectedResponse(f"Could not {what}: Roundcube returned JSON that is not an object.")
        return body

    async def probe(self) -> ProbeResult:
        """Check the session with the keep-alive action; never raises for expected outcomes."""
        started = time.perf_counter()
        what = f"probe the session of account '{self._connector.account}'"

        def result(state: ProbeState, reason: str) -> ProbeResult:
            return ProbeResult(state=state, reason=reason, elapsed_seconds=time.perf_counter() - started)

        try:
            body = await self._remote({"_task": "mail", "_action": "keep-alive"}, what=what)
        except SiteUnreachable as exc:
            return result(ProbeState.UNREACHABLE, str(exc))
        except WardenError as exc:
            return result(ProbeState.UNKNOWN, str(exc))

        exec_code = str(body.get("exec", ""))
        if "session_error" in exec_code:
            return result(ProbeState.EXPIRED, "Roundcube reports a session error: the session has ended")
        if any(word in exec_code.lower() for word in _CHALLENGE_WORDS):
            return result(ProbeState.CHALLENGE, "Roundcube asks for a challenge to be solved")
        return result(ProbeState.VALID, "keep-alive accepted the session")

    async def list_new(self, mailbox: str, *, after_uid: int, known_count: int) -> tuple[list[ItemRef], int]:
        """Return refs of messages with a UID above ``after_uid``, and the mailbox's message count.

        Pages are read in the user's own sort order until the new messages
        expected from the count are all found or the pages run out.
        """
        what = f"list {mailbox} for account '{self._connector.account}'"
        found: dict[int, ItemRef] = {}
        page = 1

        while True:
            body = await self._remote(
                {"_task": "mail", "_action": "list", "_mbox": mailbox, "_page": str(page)}, what=what
            )
            exec_code = str(body.get("exec", ""))
            if "session_error" in exec_code:
                raise SessionRejected(
                    f"Could not {what}: Roundcube returned a session error. The next sync logs in again."
                )

            error = _error_message(exec_code)
            if error is not None:
                # Roundcube answers a list it could not read with an empty page and an error notice, for
                # example when its IMAP server is down or rejects the credentials kept in this session.
                raise SessionRejected(
                    f"Could not {what}: Roundcube reported {error!r}. Its mail server is down or no longer "
                    "accepts this session; the next sync logs in again and reports which."
                )

            env = body.get("env") if isinstance(body.get("env"), dict) else {}
            message_count = _as_int(env.get("messagecount"), default=0)
            page_count = _as_int(env.get("pagecount"), default=1)

            for match in _MESSAGE_ROW.finditer(exec_code):
                uid = int(match.group(1))
                if uid > after_uid:
                    found[uid] = ItemRef(mailbox=mailbox, uid=uid)

            # NOTE: the count check assumes no message was deleted at the server since the last sync.
            # With deletions and a sort order other than arrival, new messages on later pages can wait
            # for a later sync.
            expected_new = message_count - known_count
            if page >= page_count or len(found) >= expected_new:
                break
            page += 1

        return [found[uid] for uid in sorted(found)], message_count

    async def fetch_raw(self, item: ItemRef) -> bytes:
        """Download one message as raw RFC 822 bytes, leaving it unread (``_action=viewsource``)."""
        what = f"download message {item.uid} in {item.mailbox} for account '{self._connector.account}'"
        response = await self._get(
            {"_task": "mail", "_action": "viewsource", "_uid": str(item.uid), "_mbox": item.mailbox, "_save": "1"},
            what=what,
        )

        content_type = response.headers.get("content-type", "")
        disposition = response.headers.get("content-disposition", "")
        if response.status_code != 200 or "attachment" not in disposition:
            if "text/html" in content_type or response.status_code in (401, 403):
                raise SessionRejected(
                    f"Could not {what}: the server returned a login or error page instead of the message "
                    f"(HTTP {response.status_code}). The next sync probes the session and logs in again if needed."
                )
            raise UnexpectedResponse(
                f"Could not {what}: Roundcube returned HTTP {response.status_code} ({content_type or 'no type'})."
            )
        return response.content


def _as_int(value: object, *, default: int) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _error_message(exec_code: str) -> str | None:
    """Return the text of an error notice in an AJAX response's ``exec`` code, or None."""
    match = _ERROR_NOTICE.search(exec_code)
    if match is None:
        return None
    try:
        return json.loads(f'"{match.group(1)}"')
    except json.JSONDecodeError:
        return match.group(1)
