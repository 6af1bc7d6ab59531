"""IMAP with an OAuth 2.0 access token (SASL XOAUTH2 or OAUTHBEARER): the official API of a mailbox.

Reading never changes the mailbox: folders are opened with EXAMINE (read-only)
and messages are read with ``BODY.PEEK[]``, so no ``\\Seen`` flag is set.
Incremental syncs use UIDVALIDITY and UID: when the server reports a new
UIDVALIDITY for a folder, its old UIDs mean nothing and the folder is read
from the start (content hashes keep stored files from being duplicated).

A login the server refuses raises :class:`~warden.errors.AccessTokenRejected`:
the caller refreshes the token once, it does not retry the same one.

The options an account sets in ``api_options``::

    {"host": "imap.example.com", "port": 993, "tls": true, "mechanism": "XOAUTH2"}
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError

from warden.connectors.base import ItemRef
from warden.connectors.http import pace_request
from warden.errors import AccessTokenRejected, ConfigError, SiteUnreachable, UnexpectedResponse

__all__ = ["ImapConnector", "ImapOptions", "ImapSession", "parse_imap_options"]

logger = logging.getLogger("warden.imap")

_FETCH_UID = re.compile(rb"UID (\d+)")


class ImapOptions(BaseModel):
    """Address of the IMAP server and the SASL mechanism to authenticate with."""

    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: bool = Field(default=True, description="Implicit TLS (port 993); false only for a server on loopback.")
    mechanism: Literal["XOAUTH2", "OAUTHBEARER"] = "XOAUTH2"
    timeout_seconds: float = Field(
        default=15.0, gt=0, description="Timeout of the connection and of each command, in seconds."
    )


def parse_imap_options(options: dict[str, Any], *, account: str) -> ImapOptions:
    """Validate an account's ``api_options`` for IMAP; raise :class:`ConfigError` naming the bad field."""
    try:
        parsed = ImapOptions.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise ConfigError(
            f"Account '{account}' has invalid IMAP api_options ({problems}). Example: "
            '{"host": "imap.example.com", "port": 993, "tls": true}.'
        ) from exc
    if not parsed.tls and parsed.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(
            f"Account '{account}' would send its access token to {parsed.host} without TLS. "
            'Set "tls": true in api_options; plain IMAP is accepted only on loopback.'
        )
    return parsed


def _sasl_response(mechanism: str, username: str, token: SecretStr) -> bytes:
    secret = token.get_secret_value()
    if mechanism == "OAUTHBEARER":
        return f"n,a={username},\x01auth=Bearer {secret}\x01\x01".encode()
    return f"user={username}\x01auth=Bearer {secret}\x01\x01".encode()


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSession:
    """One authenticated IMAP connection; every call runs in a worker thread."""

    def __init__(self, connection: imaplib.IMAP4, *, account: str, host: str) -> None:
        self._connection = connection
        self._account = account
        self._host = host
        self.requests_sent = 1
        self.uidvalidity: dict[str, int] = {}

    async def _call(self, what: str, function, *args):
        # IMAP commands count against the site's request rate like HTTP requests do.
        await pace_request()
        self.requests_sent += 1
        try:
            status, data = await asyncio.to_thread(function, *args)
        except imaplib.IMAP4.abort as exc:
            raise SiteUnreachable(
                f"The IMAP server {self._host} dropped the connection while trying to {what} "
                f"for account '{self._account}'. The sync will retry."
            ) from exc
        except (imaplib.IMAP4.error, OSError) as exc:
            raise UnexpectedResponse(
                f"Could not {what} for account '{self._account}' at {self._host}: {type(exc).__name__}: {exc}"
            ) from exc
        if status != "OK":
            detail = b" ".join(part for part in data if isinstance(part, bytes)).decode(errors="replace")
            raise UnexpectedResponse(
                f"Could not {what} for account '{self._account}' at {self._host}: {status} {detail[:200]}"
            )
        return data

    async def list_new(self, mailbox: str, *, after_uid: int, uidvalidity: int) -> tuple[list[ItemRef], int]:
        """Return refs of messages above ``after_uid`` in ascending UID order, and the folder's UIDVALIDITY.

        When the folder's UIDVALIDITY differs from a known, non-zero ``uidvalidity``, every message is new.
        """
        data = await self._call(f"open {mailbox} read-only", self._connection.select, _quote(mailbox), True)
        count = int(data[0] or 0)
        _, validity = self._connection.response("UIDVALIDITY")
        current = int(validity[0]) if validity and validity[0] else 0
        self.uidvalidity[mailbox] = current
        if uidvalidity and current and uidvalidity != current:
            logger.warning(
                "imap.uidvalidity_changed account=%s mailbox=%s stored=%d current=%d",
                self._account,
                mailbox,
                uidvalidity,
                current,
            )
            after_uid = 0
        if count == 0:
            return [], current

        data = await self._call(f"search {mailbox}", self._connection.uid, "SEARCH", f"UID {after_uid + 1}:*")
        uids = sorted(int(uid) for uid in (data[0] or b"").split() if int(uid) > after_uid)
        return [ItemRef(mailbox=mailbox, uid=uid, uidvalidity=current) for uid in uids], current

    async def fetch_raw(self, item: ItemRef) -> bytes:
        """Download one message with ``BODY.PEEK[]``, which leaves its flags as they were."""
        data = await self._call(f"fetch UID {item.uid}", self._connection.uid, "FETCH", str(item.uid), "(BODY.PEEK[])")
        for part in data:
            if isinstance(part, tuple) and _FETCH_UID.search(part[0]):
                return part[1]
        raise UnexpectedResponse(
            f"The IMAP server {self._host} returned no body for UID {item.uid} in {item.mailbox} "
            f"of account '{self._account}'; the message may have been deleted meanwhile."
        )


class ImapConnector:
    """Read a mailbox over IMAP with an OAuth access token."""

    kind = "imap"

    def __init__(self, options: ImapOptions, *, account: str, username: str) -> None:
        self._options = options
        self._account = account
        self._username = username

    @property
    def site(self) -> str:
        return f"{self._options.host}:{self._options.port}"

    def _connect(self) -> imaplib.IMAP4:
        options = self._options
        if options.tls:
            return imaplib.IMAP4_SSL(
                options.host, options.port, ssl_context=ssl.create_default_context(), timeout=options.timeout_seconds
            )
        return imaplib.IMAP4(options.host, options.port, timeout=options.timeout_seconds)

    def _login(self, access_token: SecretStr) -> imaplib.IMAP4:
        where = f"{self._options.host}:{self._options.port}"
        try:
            connection = self._connect()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise SiteUnreachable(
                f"Could not connect to the IMAP server {where} for account '{self._account}': "
                f"{type(exc).__name__}. Check host and port in the account's api_options."
            ) from exc

        mechanism = self._options.mechanism
        answers = iter([_sasl_response(mechanism, self._username, access_token)])

        def respond(_challenge: bytes) -> bytes:
            # The first call sends the token. A second call responds to the server's error challenge,
            # because SASL requires a response before the server sends NO.
            return next(answers, b"\x01" if mechanism == "OAUTHBEARER" else b"")

        try:
            connection.authenticate(mechanism, respond)
        except imaplib.IMAP4.error as exc:
            _close_quietly(connection)
            raise AccessTokenRejected(
                f"The IMAP server {where} rejected the OAuth access token of account '{self._account}' "
                f"({mechanism}): it is revoked, expired or lacks the scope. Refresh it; do not retry it."
            ) from exc
        except (TimeoutError, OSError) as exc:
            _close_quietly(connection)
            raise SiteUnreachable(
                f"The IMAP server {where} dropped the login of account '{self._account}': {type(exc).__name__}."
            ) from exc
        return connection

    @asynccontextmanager
    async def open(self, access_token: SecretStr) -> AsyncIterator[ImapSession]:
        """Log in with the access token and yield a session; log out at the end."""
        connection = await asyncio.to_thread(self._login, access_token)
        session = ImapSession(connection, account=self._account, host=self.site)
        try:
            yield session
        finally:
            await asyncio.to_thread(_close_quietly, connection)


def _close_quietly(connection: imaplib.IMAP4) -> None:
    with suppress(OSError, imaplib.IMAP4.error):
        connection.logout()
