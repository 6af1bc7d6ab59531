"""The one HTTP client factory and the one retry layer around an outbound request.

Retries happen here and nowhere else below the task. They cover 429, 5xx and
connection errors, with exponential backoff and full jitter, bounded in
attempts and in total wait. ``Retry-After`` is honoured in both of its forms
(delta seconds and HTTP date). A wait longer than ``max_retry_after_seconds``
is not slept: :class:`warden.errors.RateLimited` is raised with the wait, so
the flow can stop and schedule the rest instead of holding a worker asleep.

When the settings carry a :class:`~warden.connectors.policy.SitePolicy`, every
attempt is first admitted by it (hosts, paths, active hours, robots.txt for
crawlers, rate ceiling), and every response is checked for a challenge page,
which raises :class:`~warden.errors.LoginRequired` instead of being retried.

A request cancelled while its response is read closes its connection, however
many times the cancellation is repeated, so the pool never keeps a connection
checked out for a request whose caller has gone.

Requests carry no secret in the URL: httpx logs whole URLs at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

import certifi
import httpx

from warden import __version__
from warden.connectors.policy import RobotsFetcher, SitePolicy, admit_request, raise_for_challenge
from warden.errors import RateLimited, SiteUnreachable

__all__ = ["HttpSettings", "build_client", "pace_request", "parse_retry_after", "request_gate", "send_with_backoff"]

logger = logging.getLogger("warden.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

# Awaited before every attempt of every request in this context: the orchestrator's per-site
# request rate, shared by every worker. Set with request_gate(); unset outside a sync.
_request_gate: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("warden_request_gate", default=None)


async def pace_request() -> None:
    """Wait for the gate of this context, if any: call it before each request a connector sends by other means."""
    gate = _request_gate.get()
    if gate is not None:
        await gate()


@contextmanager
def request_gate(gate: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Await ``gate`` before every request attempt sent from this context (and tasks started in it)."""
    token = _request_gate.set(gate)
    try:
        yield
    finally:
        _request_gate.reset(token)


# How long a cancelled request may take to close its connection before it is given up on.
CANCEL_CLEANUP_SECONDS = 5.0


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retry bounds and the optional request policy for one site."""

    timeout_seconds: float = 20.0
    max_attempts: int = 4
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    max_total_wait_seconds: float = 120.0
    max_retry_after_seconds: float = 300.0
    user_agent: str = f"connector-warden/{__version__}"
    policy: SitePolicy | None = None


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


async def _wait_out_cancellation(exchange: asyncio.Future[httpx.Response]) -> None:
    """Wait for a cancelled exchange to finish closing, ignoring further cancellations of the caller."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_CLEANUP_SECONDS
    while not exchange.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            # NOTE: the connection of an exchange that does not finish closing in time may stay checked out.
            logger.warning("http.cancel_cleanup_timeout wait_seconds=%.1f", CANCEL_CLEANUP_SECONDS)
            return
        try:
            await asyncio.wait({exchange}, timeout=remaining)
        except asyncio.CancelledError:
            continue
    if not exchange.cancelled():
        # Retrieving the exception keeps asyncio from logging "exception was never retrieved".
        exchange.exception()


async def _send_and_read(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request`` and read its whole body in a task of its own.

    httpx 0.29 (with httpcore 1.0.9) closes the response when a read is cancelled once. A second
    cancellation interrupts that close and leaves the connection checked out of the pool for good.
    Running the exchange in its own task turns any number of cancellations of the caller into exactly
    one cancellation of the exchange.
    """
    exchange = asyncio.ensure_future(client.send(request))
    try:
        return await asyncio.shield(exchange)
    except asyncio.CancelledError:
        exchange.cancel()
        await _wait_out_cancellation(exchange)
        raise


def _robots_fetcher(client: httpx.AsyncClient, settings: HttpSettings) -> RobotsFetcher:
    unpoliced = replace(settings, policy=None)

    async def fetch(robots_url: str) -> httpx.Response:
        what = f"read robots.txt of {httpx.URL(robots_url).host}"
        return await send_with_backoff(client, "GET", robots_url, settings=unpoliced, what=what)

    return fetch


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
    :class:`SiteUnreachable` when the bounds run out. With ``settings.policy``
    set, it also raises what :func:`~warden.connectors.policy.admit_request`
    raises before a request is sent, and :class:`~warden.errors.LoginRequired`
    for a challenge page.
    """
    rng = rng or random.Random()
    policy = settings.policy
    waited = 0.0
    attempt = 0

    while True:
        attempt += 1
        retry_after: float | None = None
        if policy is not None:
            await admit_request(
                policy,
                client.build_request(method, url, params=params).url,
                what=what,
                user_agent=settings.user_agent,
                max_wait_seconds=settings.max_retry_after_seconds,
                fetch_robots=_robots_fetcher(client, settings),
            )

        await pace_request()

        request = client.build_request(method, url, params=params, headers=headers, data=data)
        try:
            response = await _send_and_read(client, request)
        except httpx.TransportError as exc:
            failure = f"{type(exc).__name__}"
            response = None
        else:
            if policy is not None and policy.stop_on_challenge:
                raise_for_challenge(response, policy, what=what)
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
