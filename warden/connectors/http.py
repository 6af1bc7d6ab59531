"""The one HTTP client factory and the one retry layer around an outbound request.

Retries happen here and nowhere else below the task. They cover 429, 5xx and
connection errors, with exponential backoff and full jitter, bounded in
attempts and in total wait. ``Retry-After`` is honoured in both of its forms
(delta seconds and HTTP date). A wait longer than ``max_retry_after_seconds``
is not slept: :class:`warden.errors.RateLimited` is raised with the wait, so
the flow can stop and schedule the rest instead of holding a worker asleep.

Requests carry no secret in the URL: httpx logs whole URLs at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

import certifi
import httpx

from warden import __version__
from warden.errors import RateLimited, SiteUnreachable

__all__ = ["HttpSettings", "build_client", "parse_retry_after", "send_with_backoff"]

logger = logging.getLogger("warden.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retry bounds for one site."""

    timeout_seconds: float = 20.0
    max_attempts: int = 4
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_total_wait_seconds: float = 120.0
    max_retry_after_seconds: float = 300.0
    user_agent: str = f"connector-warden/{__version__}"


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Building a verifying context loads the CA bundle, about 16 ms of CPU; one per process is enough.
    return ssl.create_default_context(cafile=certifi.where())


def build_client(
    base_url: str,
    *,
    settings: HttpSettings,
    cookies: httpx.Cookies | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """Return an ``httpx.AsyncClient`` with the project's timeouts, user agent and no redirects followed."""
    return httpx.AsyncClient(
        base_url=base_url,
        cookies=cookies,
        headers={"User-Agent": settings.user_agent, **(headers or {})},
        timeout=httpx.Timeout(settings.timeout_seconds),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        verify=_tls_context(),
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the wait a ``Retry-After`` header requests, in seconds, or None when absent or invalid."""
    if value is None:
        return None

    value = value.strip()
    if value.isdigit():
        return float(value)

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _backoff_seconds(attempt: int, settings: HttpSettings, rng: random.Random) -> float:
    # Full jitter: a uniform wait between zero and the exponential cap.
    cap = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1))
    return rng.uniform(0.0, cap)


async def send_with_backoff(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    settings: HttpSettings,
    what: str,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    data: dict[str, str] | None = None,
    rng: random.Random | None = None,
) -> httpx.Response:
    """Send a request, retrying transient failures; return the first non-retryable response.

    The request is rebuilt for every attempt, so it carries the cookies the
    server rotated in between. ``what`` names the request in messages, e.g.
    "list INBOX for account 'demo'". Raises :class:`RateLimited` or
    :class:`SiteUnreachable` when the bounds run out.
    """
    rng = rng or random.Random()
    waited = 0.0
    attempt = 0

    while True:
        attempt += 1
        retry_after: float | None = None
        request = client.build_request(method, url, params=params, headers=headers, data=data)
        try:
            response = await client.send(request)
        except httpx.TransportError as exc:
            failure = f"{type(exc).__name__}"
            response = None
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            await response.aclose()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            failure = f"HTTP {response.status_code}"

        if retry_after is not None and retry_after > settings.max_retry_after_seconds:
            raise RateLimited(
                f"Could not {what}: the server asked to wait {retry_after:.0f} s (Retry-After), "
                f"more than the {settings.max_retry_after_seconds:.0f} s a worker may sleep. "
                "The rest will run after that time.",
                retry_after_seconds=retry_after,
            )

        wait = retry_after if retry_after is not None else _backoff_seconds(attempt, settings, rng)
        if attempt >= settings.max_attempts or waited + wait > settings.max_total_wait_seconds:
            if response is not None and response.status_code == 429:
                raise RateLimited(
                    f"Could not {what}: still rate limited (HTTP 429) after {attempt} attempts "
                    f"and {waited:.1f} s of waiting. Lower the account's request rate or try later.",
                    retry_after_seconds=retry_after,
                )
            raise SiteUnreachable(
                f"Could not {what}: {failure} after {attempt} attempts and {waited:.1f} s of waiting. "
                "Check that the site is up; the sync will retry on its next run."
            )

        logger.info(
            "http.retry what=%r failure=%s attempt=%d wait_seconds=%.2f retry_after=%s",
            what,
            failure,
            attempt,
            wait,
            retry_after,
        )
        await asyncio.sleep(wait)
        waited += wait
