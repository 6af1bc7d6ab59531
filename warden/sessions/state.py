"""The saved session of an account: cookies, web storage, and connector extras.

The shape follows Playwright's ``storage_state`` (``cookies`` and ``origins``
with ``localStorage``), plus what Playwright does not save: ``sessionStorage``
per origin, and ``extras``, values a connector read from the logged-in page
(for Roundcube, the request token its AJAX endpoints require).

A decrypted state exists only in memory. It is encrypted with the vault's
transit engine before it is stored, and handed to Chromium as a dict.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from warden.credentials.redaction import register_secret
from warden.errors import StateCorrupt

__all__ = ["SessionState", "StoredCookie", "decode_jwt_expiry"]


class StoredCookie(BaseModel):
    """One cookie, in Playwright's field names."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str
    value: str
    domain: str
    path: str = "/"
    expires: float = Field(default=-1, description="Unix time in seconds; -1 for a session cookie.")
    http_only: bool = Field(default=False, alias="httpOnly")
    secure: bool = False
    same_site: str = Field(default="Lax", alias="sameSite")


class StorageItem(BaseModel):
    name: str
    value: str


class OriginStorage(BaseModel):
    """Web storage of one origin, as Playwright reports it."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    origin: str
    local_storage: list[StorageItem] = Field(default_factory=list, alias="localStorage")


class SessionState(BaseModel):
    """Everything needed to act as the logged-in user without logging in again."""

    model_config = ConfigDict(populate_by_name=True)

    cookies: list[StoredCookie] = Field(default_factory=list)
    origins: list[OriginStorage] = Field(default_factory=list)
    session_storage: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="sessionStorage per origin, which Playwright does not save."
    )
    extras: dict[str, str] = Field(default_factory=dict, description="Connector values read from the logged-in page.")
    captured_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    # -- conversion -----------------------------------------------------------

    @classmethod
    def from_playwright(
        cls,
        storage_state: dict[str, Any],
        *,
        session_storage: dict[str, dict[str, str]] | None = None,
        extras: dict[str, str] | None = None,
    ) -> SessionState:
        """Build a state from ``BrowserContext.storage_state()`` and what the page reported."""
        return cls(
            cookies=[StoredCookie.model_validate(cookie) for cookie in storage_state.get("cookies", [])],
            origins=[OriginStorage.model_validate(origin) for origin in storage_state.get("origins", [])],
            session_storage=session_storage or {},
            extras=extras or {},
        )

    def to_playwright(self) -> dict[str, Any]:
        """Return the dict ``Browser.new_context(storage_state=...)`` accepts, so nothing touches disk."""
        return {
            "cookies": [cookie.model_dump(by_alias=True) for cookie in self.cookies],
            "origins": [origin.model_dump(by_alias=True) for origin in self.origins],
        }

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, account: str) -> SessionState:
        """Parse a decrypted state; raise :class:`StateCorrupt` naming the account when it is not one."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise StateCorrupt(
                f"The stored session of account '{account}' decrypted but is not a session state "
                f"({exc.error_count()} validation errors). A new login will replace it; "
                "the unreadable version stays in the store until five newer versions prune it."
            ) from exc

    # -- secrets --------------------------------------------------------------

    def secret_values(self) -> list[str]:
        """Return every value that would let someone act as the user."""
        values = [cookie.value for cookie in self.cookies]
        for origin in self.origins:
            values.extend(item.value for item in origin.local_storage)
        for items in self.session_storage.values():
            values.extend(items.values())
        values.extend(self.extras.values())
        return values

    def register_secrets(self) -> None:
        """Register every secret value with the log redaction filter."""
        for value in self.secret_values():
            register_secret(value)

    # -- HTTP replay ----------------------------------------------------------

    def cookie_jar(self) -> httpx.Cookies:
        """Return the cookies as an httpx jar, for replaying the session without a browser."""
        jar = httpx.Cookies()
        for cookie in self.cookies:
            jar.set(cookie.name, cookie.value, domain=cookie.domain, path=cookie.path)
        return jar

    def with_cookies_from(self, jar: httpx.Cookies) -> SessionState:
        """Return a copy whose cookie values are replaced by those in ``jar`` (rotated by the server)."""
        updated = []
        seen = set()
        for cookie in jar.jar:
            seen.add((cookie.name, cookie.domain, cookie.path))
            previous = self._find_cookie(cookie.name, cookie.domain, cookie.path)
            updated.append(
                StoredCookie(
                    name=cookie.name,
                    value=cookie.value or "",
                    domain=cookie.domain,
                    path=cookie.path,
                    expires=float(cookie.expires) if cookie.expires is not None else -1,
                    httpOnly=previous.http_only if previous else bool(cookie.has_nonstandard_attr("HttpOnly")),
                    secure=cookie.secure,
                    sameSite=previous.same_site if previous else "Lax",
                )
            )
            register_secret(cookie.value)

        return self.model_copy(update={"cookies": updated})

    def _find_cookie(self, name: str, domain: str, path: str) -> StoredCookie | None:
        for cookie in self.cookies:
            if cookie.name == name and _same_domain(cookie.domain, domain) and cookie.path == path:
                return cookie
        return None

    def bearer_tokens(self) -> list[str]:
        """Return values in local or session storage that are JWTs (bearer tokens of single-page apps)."""
        candidates = [item.value for origin in self.origins for item in origin.local_storage]
        candidates.extend(value for items in self.session_storage.values() for value in items.values())
        return [value for value in candidates if decode_jwt_expiry(value) is not None]

    def cookies_for(self, url: str) -> list[StoredCookie]:
        host = urlsplit(url).hostname or ""
        return [cookie for cookie in self.cookies if _same_domain(cookie.domain, host)]


def _same_domain(cookie_domain: str, host: str) -> bool:
    return cookie_domain.lstrip(".") == host.lstrip(".")


def decode_jwt_expiry(value: str) -> datetime | None:
    """Return the ``exp`` claim of a JWT as a UTC datetime, or None when ``value`` is not a JWT with one."""
    # A value in web storage may be JSON holding the token, as some SPAs store {"access_token": ...}.
    token = value.strip().removeprefix("Bearer ").strip('"')
    parts = token.split(".")
    if len(parts) != 3:
        return None

    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return None

    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    expiry = claims.get("exp")
    if not isinstance(expiry, int | float):
        return None
    return datetime.fromtimestamp(expiry, UTC)


def _b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
