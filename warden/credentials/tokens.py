"""Typed values for vault tokens: wrapped, unwrapped, revoked.

A token is a value with an expiry. The secret part is a ``SecretStr``, so it
never shows in a ``repr``, a log line or a Prefect parameter view. Logs,
artifacts and the wipe use the accessor instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["IssuedToken", "RevocationProof", "ScopedToken", "TokenLedger", "WrappedToken"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class IssuedToken(BaseModel):
    """A vault token as the token journal records it: enough to revoke it by accessor, no secret."""

    model_config = ConfigDict(frozen=True)

    accessor: str
    account: str
    action: str
    issued_at: datetime
    expires_at: datetime


class WrappedToken(BaseModel):
    """A response-wrapped child token, as handed from the issue task to the task that uses it."""

    model_config = ConfigDict(frozen=True)

    wrapping_token: SecretStr = Field(description="Single-use token that unwraps to the child token.")
    accessor: str = Field(description="Accessor of the wrapped child token (not of the wrapping token).")
    account: str
    action: str
    policies: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime = Field(description="When the child token expires, whether used or not.")
    num_uses: int

    def issued(self) -> IssuedToken:
        """Return the journal's record of this token."""
        return IssuedToken(
            accessor=self.accessor,
            account=self.account,
            action=self.action,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
        )


class ScopedToken(BaseModel):
    """An unwrapped, short-lived, least-privilege vault token for one action of one account."""

    model_config = ConfigDict(frozen=True)

    accessor: str
    secret: SecretStr
    account: str
    action: str
    policies: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    num_uses: int

    @property
    def seconds_left(self) -> float:
        return (self.expires_at - utc_now()).total_seconds()


class RevocationProof(BaseModel):
    """The wipe's record for one token: when it was issued and revoked, and whether a lookup failed."""

    accessor: str
    account: str
    action: str
    issued_at: datetime
    revoked_at: datetime | None = None
    proven: bool = False
    detail: str = ""


class TokenLedger:
    """Every token a run issued, so the wipe can revoke each and prove it.

    A plain class, not a model: Prefect copies models and dataclasses passed to
    tasks, and every task of a run must record into the same ledger. Unwrapped
    tokens are kept here so a retried task reuses its token instead of
    unwrapping a single-use wrapping token twice.

    ``on_issued`` is called with each new token after the ledger recorded it,
    so that a durable journal can revoke the tokens of a run whose worker died.
    """

    def __init__(self, on_issued: Callable[[IssuedToken], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._issued: dict[str, WrappedToken] = {}
        self._unwrapped: dict[str, ScopedToken] = {}
        self._on_issued = on_issued

    def record_issued(self, wrapped: WrappedToken) -> None:
        with self._lock:
            self._issued[wrapped.accessor] = wrapped
        if self._on_issued is not None:
            self._on_issued(wrapped.issued())

    def record_unwrapped(self, token: ScopedToken, *, for_accessor: str | None = None) -> None:
        """Keep an unwrapped token; ``for_accessor`` files a renewed token under the accessor it replaces."""
        with self._lock:
            self._unwrapped[token.accessor] = token
            if for_accessor is not None:
                self._unwrapped[for_accessor] = token

    def unwrapped(self, accessor: str) -> ScopedToken | None:
        with self._lock:
            return self._unwrapped.get(accessor)

    def issued(self) -> list[WrappedToken]:
        with self._lock:
            return list(self._issued.values())

    def drop_secrets(self) -> None:
        """Forget every unwrapped token so no reference keeps the secrets alive."""
        with self._lock:
            self._unwrapped.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._issued)
