"""The one exception tree of Connector Warden.

Every error the library raises on purpose derives from :class:`WardenError` and
belongs to exactly one of four kinds. The kind decides what the orchestrator
does with it: Prefect retries a task only for :class:`TransientError`.

    WardenError
    ├── TransientError          retry later: the same call may succeed
    │   ├── SiteUnreachable         connection refused, timeout, 5xx
    │   ├── RateLimited             429, 503 or the site policy asks to wait (``retry_after_seconds``)
    │   ├── VaultUnavailable        vault down or sealed
    │   ├── BrowserCrashed          Chromium or its page died during a job
    │   └── WriteConflict           another process wrote the same vault secret first
    ├── ConfigError             a person must change configuration
    │   ├── AccountNotFound         no account Block of that name
    │   ├── VaultDenied             a vault policy rejects the path
    │   ├── StateCorrupt            a stored session cannot be read back
    │   └── InvalidSessionFile      a session file to import has a bad shape
    ├── UpstreamError           the remote side refused, retrying will not help
    │   ├── LoginFailed             wrong user name or password
    │   ├── LoginLocked             the site locked logins after failed attempts
    │   ├── LoginRequired           nothing automatic can log in; a person must
    │   ├── AccessTokenRejected     an API rejected the OAuth access token: refresh needed
    │   ├── AccessPathUnavailable   an access path cannot serve this sync; try the next one
    │   ├── SessionRejected         a page that needed the session got a login wall
    │   ├── UnexpectedResponse      the server returned something the connector cannot read
    │   ├── TokenUnwrapFailed       a wrapping token was already used or expired
    │   ├── RevocationUnproven      a token may still be valid after the wipe
    │   └── BrowserBudgetExceeded   a browser job used more CPU or memory than allowed
    └── BugError                an invariant of this project broke

Third-party exceptions (httpx, hvac, Playwright) are mapped to this tree at the
edge of the module that calls them, with the original kept as ``__cause__``.
Messages say what was attempted, on what, what came back and what to do; they
never carry response bodies, headers or secrets.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AccessPathUnavailable",
    "AccessTokenRejected",
    "AccountNotFound",
    "BrowserBudgetExceeded",
    "BrowserCrashed",
    "BugError",
    "ConfigError",
    "ErrorKind",
    "InvalidSessionFile",
    "LoginFailed",
    "LoginLocked",
    "LoginRequired",
    "RateLimited",
    "RevocationUnproven",
    "SessionRejected",
    "SiteUnreachable",
    "StateCorrupt",
    "TokenUnwrapFailed",
    "TransientError",
    "UnexpectedResponse",
    "UpstreamError",
    "VaultDenied",
    "VaultUnavailable",
    "WardenError",
    "WriteConflict",
    "is_transient",
]


class ErrorKind(StrEnum):
    """The kind of an error, which tells the caller to retry, fix configuration, give up, or report a bug."""

    TRANSIENT = "transient"
    CONFIG = "config"
    UPSTREAM = "upstream"
    BUG = "bug"


class WardenError(Exception):
    """Base of every error this project raises on purpose."""

    kind: ErrorKind = ErrorKind.BUG


class TransientError(WardenError):
    """The same call may succeed later without anyone changing anything."""

    kind = ErrorKind.TRANSIENT


class ConfigError(WardenError):
    """A person must change configuration (a Block, a vault policy, a stored state)."""

    kind = ErrorKind.CONFIG


class UpstreamError(WardenError):
    """The remote side refused in a way that retrying will not change."""

    kind = ErrorKind.UPSTREAM


class BugError(WardenError):
    """An invariant of this project broke; please report it."""

    kind = ErrorKind.BUG


class SiteUnreachable(TransientError):
    """The site did not respond usefully: connection refused, timeout, or a 5xx status."""


class RateLimited(TransientError):
    """The site asked to slow down (HTTP 429, or 503 with ``Retry-After``), or the site policy defers the request.

    The policy defers a request outside its active hours or beyond its rate ceiling.
    """

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class VaultUnavailable(TransientError):
    """The vault did not respond, or responded that it is sealed."""


class BrowserCrashed(TransientError):
    """Chromium or its page died during a browser job."""


class WriteConflict(TransientError):
    """A check-and-set write lost: another process wrote a new version of the same secret first."""


class AccountNotFound(ConfigError):
    """No account of that name is registered."""


class VaultDenied(ConfigError):
    """A vault policy rejected the request for a path."""


class StateCorrupt(ConfigError):
    """A stored session state cannot be decrypted or parsed."""


class InvalidSessionFile(ConfigError):
    """A session file given for import is not JSON, or not a storage state or cookie array."""


class LoginFailed(UpstreamError):
    """The site rejected the stored user name or password."""


class LoginLocked(UpstreamError):
    """The site refuses logins for a while after too many failed attempts."""


class LoginRequired(UpstreamError):
    """No automatic login can work (no password, a CAPTCHA, a second factor): a person must log in."""


class AccessTokenRejected(UpstreamError):
    """An API rejected the OAuth access token (revoked or expired), so refresh it instead of retrying the call."""


class AccessPathUnavailable(UpstreamError):
    """An access path of the account cannot serve this sync, so the flow falls back to the next path.

    ``path`` names the access path, and ``__cause__`` is the error that made it unavailable.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class SessionRejected(UpstreamError):
    """A request that needed the saved session got a login wall instead."""


class UnexpectedResponse(UpstreamError):
    """The server returned something the connector cannot interpret."""


class TokenUnwrapFailed(UpstreamError):
    """A response-wrapping token could not be unwrapped: already used, expired, or unknown."""


class RevocationUnproven(UpstreamError):
    """After the wipe, a token could not be shown to be revoked."""


class BrowserBudgetExceeded(UpstreamError):
    """A browser job used more CPU seconds or memory than its account allows, and was stopped."""


def is_transient(exc: BaseException) -> bool:
    """Return True when retrying the failed call could help."""
    return isinstance(exc, TransientError)
