"""Forecast when a saved session will stop working, so it is refreshed before it fails.

Three sources, the earliest wins:
- ``cookie``: the ``expires`` of the session's cookies (session cookies, with
  ``expires: -1``, end with the browser and give no forecast);
- ``jwt``: the ``exp`` claim of bearer tokens found in web storage;
- ``sliding``: the server's idle lifetime counted from the last request that
  proved the session valid (Roundcube's ``session_lifetime``), declared on the
  account or observed.

The refresh margin is a fraction of the lifetime with jitter, so many accounts
that logged in together do not all refresh in the same minute.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from warden.sessions.state import SessionState, decode_jwt_expiry

__all__ = ["Forecast", "forecast_expiry", "refresh_margin"]


@dataclass(frozen=True)
class Forecast:
    """The forecast expiry of a session and the source it came from."""

    expires_at: datetime | None
    source: str | None

    def seconds_left(self, now: datetime | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return (self.expires_at - (now or datetime.now(UTC))).total_seconds()


def forecast_expiry(
    state: SessionState,
    *,
    last_valid_at: datetime | None,
    sliding_lifetime_seconds: float | None,
    auth_cookie_names: frozenset[str] = frozenset(),
) -> Forecast:
    """Return the earliest expiry any source predicts for ``state``.

    Only cookies named in ``auth_cookie_names`` count when it is given, so a
    long-lived preference cookie does not hide a short-lived login cookie.
    """
    candidates: list[tuple[datetime, str]] = []

    for cookie in state.cookies:
        if auth_cookie_names and cookie.name not in auth_cookie_names:
            continue
        if cookie.expires > 0:
            candidates.append((datetime.fromtimestamp(cookie.expires, UTC), "cookie"))

    for token in state.bearer_tokens():
        expiry = decode_jwt_expiry(token)
        if expiry is not None:
            candidates.append((expiry, "jwt"))

    if sliding_lifetime_seconds and last_valid_at is not None:
        candidates.append((last_valid_at + timedelta(seconds=sliding_lifetime_seconds), "sliding"))

    if not candidates:
        return Forecast(expires_at=None, source=None)
    expires_at, source = min(candidates)
    return Forecast(expires_at=expires_at, source=source)


def refresh_margin(
    lifetime_seconds: float, *, fraction: float = 0.2, jitter_fraction: float = 0.25, rng: random.Random | None = None
) -> timedelta:
    """Return how long before the forecast expiry a refresh should start.

    ``fraction`` of the lifetime, varied by up to ``jitter_fraction`` of itself
    in either direction.
    """
    rng = rng or random.Random()
    base = lifetime_seconds * fraction
    jitter = base * jitter_fraction * rng.uniform(-1.0, 1.0)
    return timedelta(seconds=max(0.0, base + jitter))
