"""The connector protocol and the values its methods return.

A connector for a site with a browser session implements:

- ``probe(state)``: one cheap, read-only request that replays the saved
  session over HTTP and returns a :class:`ProbeResult`. It does not raise for
  the expected outcomes (expired, login wall, challenge, network down).
- ``login(page, credentials)``: fill the site's login form in a fresh browser
  page; return the extras to keep with the session (for example a CSRF token).
- ``list_items(state, cursor)`` and ``fetch(state, item)``: read new items
  with plain HTTP, without side effects on the account (no read flags, no
  moves, no deletes).

An API connector of the oauth access path (IMAP, an HTTP API) implements
``open(access_token)``, which yields an :class:`ApiSession` that lists and
downloads items with an OAuth access token and raises
:class:`~warden.errors.AccessTokenRejected` when the API refuses the token.

Adding a site is one module in this package plus an account Block; nothing in
``flows/`` changes.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field, SecretStr

if TYPE_CHECKING:
    from playwright.async_api import Page

    from warden.sessions.state import SessionState

__all__ = [
    "ApiConnector",
    "ApiSession",
    "Connector",
    "ItemRef",
    "ItemSession",
    "LoginCredentials",
    "ProbeResult",
    "ProbeState",
]


class ProbeState(StrEnum):
    """The state of a saved session as one probe found it."""

    VALID = "valid"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    MISSING = "missing"
    CHALLENGE = "challenge"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"


# States after which an automatic refresh is worth trying.
REFRESH_STATES = frozenset({ProbeState.EXPIRING, ProbeState.EXPIRED, ProbeState.MISSING})


class ProbeResult(BaseModel):
    """The outcome of one probe: a state, the reason, how long it took, and the forecast expiry."""

    state: ProbeState
    reason: str
    elapsed_seconds: float = Field(ge=0)
    expires_at: datetime | None = Field(default=None, description="Forecast expiry of the session, if known.")

    @property
    def needs_refresh(self) -> bool:
        return self.state in REFRESH_STATES


@dataclass(frozen=True)
class LoginCredentials:
    """A user name and password, held only for the duration of one login.

    ``one_time_code`` is a second-factor code a person entered (TOTP, SMS or e-mail code) for
    connectors whose site requests one. Connectors of sites without a second factor ignore it.
    """

    username: str
    password: SecretStr
    one_time_code: SecretStr | None = None


class ItemRef(BaseModel):
    """A pointer to one item at the source: a message UID in a mailbox."""

    mailbox: str
    uid: int
    uidvalidity: int = 0


class ItemSession(Protocol):
    """A replayed session that lists and downloads items; see :meth:`Connector.open`."""

    requests_sent: int

    def current_state(self) -> SessionState:
        """Return the state with every cookie the server rotated so far."""
        ...

    async def list_new(self, mailbox: str, *, after_uid: int, known_count: int) -> tuple[list[ItemRef], int]:
        """Return refs of items above ``after_uid`` in ascending order, and the mailbox's item count."""
        ...

    async def fetch_raw(self, item: ItemRef) -> bytes:
        """Download one item without changing its state at the source."""
        ...


class Connector(Protocol):
    """The operations a browser-session connector offers to the flows."""

    kind: str
    # Names of the cookies that carry the login; their expiry drives the forecast.
    auth_cookie_names: frozenset[str]
    # False for connectors that only keep a session alive and have no items to fetch.
    supports_fetch: bool

    async def probe(self, state: SessionState) -> tuple[ProbeResult, SessionState]:
        """Replay ``state`` against the cheapest authenticated endpoint; return the result and rotated state."""
        ...

    async def login(self, page: Page, credentials: LoginCredentials) -> dict[str, str]:
        """Log in on a fresh page; return extras to keep with the session."""
        ...

    async def read_page_extras(self, page: Page) -> dict[str, str]:
        """Read values to keep with the session from a logged-in page (for example a CSRF token)."""
        ...

    def open(self, state: SessionState) -> AbstractAsyncContextManager[ItemSession]:
        """Open a replayed session for listing and fetching items."""
        ...


class ApiSession(Protocol):
    """An API session authenticated with an OAuth access token; see :meth:`ApiConnector.open`."""

    requests_sent: int

    async def list_new(self, mailbox: str, *, after_uid: int, uidvalidity: int) -> tuple[list[ItemRef], int]:
        """Return refs above ``after_uid`` in ascending order, and the folder's current UIDVALIDITY (0 if none).

        ``uidvalidity`` is the stored one; when the source reports another, all items are new.
        """
        ...

    async def fetch_raw(self, item: ItemRef) -> bytes:
        """Download one item (an RFC 822 message) without changing its state at the source."""
        ...


class ApiConnector(Protocol):
    """The operations an API connector of the oauth access path offers to the flows."""

    kind: str

    @property
    def site(self) -> str:
        """The host (and port) its requests go to, which names its per-site limit."""
        ...

    def open(self, access_token: SecretStr) -> AbstractAsyncContextManager[ApiSession]:
        """Authenticate with ``access_token``; raise AccessTokenRejected when the API refuses it."""
        ...
