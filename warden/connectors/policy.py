"""A site's request policy: where a connector may send requests, how often, when, and what stops it.

A :class:`SitePolicy` travels on :class:`~warden.connectors.http.HttpSettings`
as ``policy``, and :func:`~warden.connectors.http.send_with_backoff` applies it
to every attempt, so a connector that uses the one retry layer needs no code of
its own. Before a request is sent, :func:`admit_request` checks in this order:

1. host and path: the URL's host must be in ``allowed_hosts`` and its path
   under one of ``allowed_path_prefixes``. Otherwise :class:`ConfigError`
   names the host or path, and nothing is sent.
2. active hours: outside ``active_hours``, :class:`RateLimited` carries the
   seconds until the window opens in ``retry_after_seconds``, so the flow can
   reschedule the rest instead of holding a worker asleep.
3. robots.txt, for crawlers only (``crawler=True``): a path that the site's
   robots.txt disallows for our product token raises :class:`ConfigError`.
4. rate ceiling: requests to one origin (scheme, host, port) are spaced by at
   least ``60 / max_requests_per_minute`` seconds, or by the robots.txt
   ``Crawl-delay`` when that is longer. A wait longer than the settings'
   ``max_retry_after_seconds`` raises :class:`RateLimited` instead.

After each response, :func:`raise_for_challenge` raises :class:`LoginRequired`
for a CAPTCHA, consent or second-factor page, instead of retrying it or trying
to pass it.

Which connectors are crawlers: a crawler reads pages that a site publishes
for people, which is what robots.txt governs. An official API (the
``http-api`` connector, with the OAuth token the user granted) and the user's
own webmail session (``roundcube``) are not crawled targets. The user reads
their own account through the interface made for it, so their policies keep
``crawler=False`` and never fetch robots.txt.

Spacing and the robots.txt cache are kept per process. Limits across workers
belong to the orchestrator (Prefect concurrency limits), not to this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from protego import Protego
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from warden.errors import ConfigError, LoginRequired, RateLimited, SiteUnreachable

__all__ = [
    "DEFAULT_CHALLENGE_MARKERS",
    "ActiveHours",
    "RobotsFetcher",
    "SitePolicy",
    "admit_request",
    "clear_policy_state",
    "find_challenge",
    "product_token",
    "raise_for_challenge",
]

logger = logging.getLogger("warden.policy")

# Markers of the CAPTCHA widgets most sites embed (reCAPTCHA, hCaptcha, Cloudflare Turnstile) and of
# Cloudflare's challenge script. They are matched case-insensitively in HTML bodies only.
# NOTE: an ordinary page that embeds a CAPTCHA widget (a contact form) matches too. A connector that reads
# such pages sets its own challenge_markers.
DEFAULT_CHALLENGE_MARKERS = ("g-recaptcha", "h-captcha", "cf-turnstile", "/cdn-cgi/challenge-platform/")

# Cloudflare sets this header, with the value "challenge", on every kind of challenge page it serves.
CHALLENGE_HEADER = "cf-mitigated"

# How much of an HTML body is searched for challenge markers.
MAX_CHALLENGE_SCAN_BYTES = 256 * 1024

# RFC 9309 requires crawlers to parse at least the first 500 KiB of a robots.txt.
MAX_ROBOTS_BYTES = 500 * 1024

# RFC 9309 recommends following at least five redirects to a robots.txt.
MAX_ROBOTS_REDIRECTS = 5

RobotsFetcher = Callable[[str], Awaitable[httpx.Response]]
"""Sends ``GET`` for an absolute robots.txt URL through the retry layer and returns the response."""


class ActiveHours(BaseModel):
    """A daily window of local time in which requests may be sent; it may wrap past midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: time_of_day = Field(description="Local time the window opens, e.g. 08:00.")
    end: time_of_day = Field(description="Local time the window closes, e.g. 20:00; before start means overnight.")
    timezone: str = Field(default="UTC", description="IANA time zone of start and end, e.g. Europe/Berlin.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"is not a known IANA time zone: {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _non_empty(self) -> ActiveHours:
        if self.start == self.end:
            raise ValueError("start and end are equal; leave active_hours unset to allow every hour")
        return self

    def _contains(self, local: time_of_day) -> bool:
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_opening(self, now: datetime) -> datetime | None:
        """Return when the window next opens, in UTC, or None when ``now`` (aware) is inside it."""
        zone = ZoneInfo(self.timezone)
        local_now = now.astimezone(zone)
        if self._contains(local_now.time().replace(tzinfo=None)):
            return None

        opening_day: date = local_now.date()
        if local_now.time().replace(tzinfo=None) >= self.start:
            opening_day += timedelta(days=1)
        # Aware datetimes sharing a tzinfo subtract as wall-clock times, so the comparison is made in UTC.
        return datetime.combine(opening_day, self.start, tzinfo=zone).astimezone(UTC)


class SitePolicy(BaseModel):
    """The rules one connector follows toward its site: hosts, paths, rate, hours, robots.txt, challenges.

    Build one from the connector's base URL and put it on the connector's settings::

        policy = SitePolicy.for_base_url("https://news.example.org/archive/", crawler=True, max_requests_per_minute=30)
        settings = HttpSettings(policy=policy)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    allowed_hosts: frozenset[str] = Field(
        min_length=1, description="Host names requests may go to, compared without case and without port."
    )
    allowed_path_prefixes: tuple[str, ...] = Field(
        default=("/",),
        min_length=1,
        description="URL paths requests may go to. A prefix matches whole segments: /api allows /api/x, not /apix.",
    )
    max_requests_per_minute: float | None = Field(
        default=None, gt=0, description="Request-rate ceiling per origin in this process; None for no ceiling."
    )
    active_hours: ActiveHours | None = Field(
        default=None, description="Daily window in which requests may be sent; None for every hour."
    )
    crawler: bool = Field(
        default=False,
        description="True when the connector crawls pages published for people, so robots.txt applies. "
        "False for official APIs and for the user's own webmail session.",
    )
    robots_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds a fetched robots.txt is used before it is fetched again (RFC 9309: 24 h at most).",
    )
    stop_on_challenge: bool = Field(
        default=True, description="Raise LoginRequired when a response is a CAPTCHA, consent or second-factor page."
    )
    challenge_markers: tuple[str, ...] = Field(
        default=DEFAULT_CHALLENGE_MARKERS,
        description="Text that only a challenge page contains, matched without case in HTML bodies.",
    )
    challenge_statuses: frozenset[int] = Field(
        default=frozenset({511}),
        description="Statuses that by themselves mean a challenge. 511 is Network Authentication Required.",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _plain_hosts(cls, value: frozenset[str]) -> frozenset[str]:
        hosts = frozenset(host.strip().lower().strip("[]") for host in value)
        for host in hosts:
            if not host:
                raise ValueError("contains an empty host name")
            if "/" in host or (":" in host and not _is_ipv6(host)):
                raise ValueError(f"must contain host names without scheme, path or port, not {host!r}")
        return hosts

    @field_validator("allowed_path_prefixes")
    @classmethod
    def _absolute_prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for prefix in value:
            if not prefix.startswith("/"):
                raise ValueError(f"prefix {prefix!r} must start with '/'")
        return value

    @classmethod
    def for_base_url(cls, base_url: str, **fields: object) -> SitePolicy:
        """Return a policy that allows the base URL's host and everything under its path, with ``fields`` set."""
        parts = urlsplit(base_url)
        if not parts.hostname:
            raise ConfigError(f"Cannot build a site policy from {base_url!r}: it has no host. Use an absolute URL.")
        defaults: dict[str, object] = {
            "allowed_hosts": frozenset({parts.hostname}),
            "allowed_path_prefixes": (parts.path or "/",),
        }
        return cls.model_validate({**defaults, **fields})

    @property
    def min_interval_seconds(self) -> float:
        """Minimum time between two requests to one origin under the rate ceiling."""
        return 0.0 if self.max_requests_per_minute is None else 60.0 / self.max_requests_per_minute

    def check_target(self, url: httpx.URL, *, what: str) -> None:
        """Raise :class:`ConfigError` when ``url``'s host or path is outside the policy."""
        host = url.host.lower()
        if host not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts))
            raise ConfigError(
                f"Could not {what}: host {host} is not in the site policy's allowed_hosts ({allowed}), "
                "so the request was not sent. Add the host to allowed_hosts if the connector really needs it."
            )

        path = url.path or "/"
        decoded_segments = unquote(path).split("/")
        if "." in decoded_segments or ".." in decoded_segments:
            raise ConfigError(
                f"Could not {what}: path {path} on {host} contains an encoded '.' or '..' segment, which could "
                "leave the allowed paths once the server decodes it, so the request was not sent."
            )
        if not any(_under_prefix(path, prefix) for prefix in self.allowed_path_prefixes):
            allowed = ", ".join(self.allowed_path_prefixes)
            raise ConfigError(
                f"Could not {what}: path {path} on {host} is outside the site policy's allowed_path_prefixes "
                f"({allowed}), so the request was not sent. Add a prefix if the connector really needs it."
            )

    def check_active_hours(self, url: httpx.URL, *, what: str, now: datetime | None = None) -> None:
        """Raise :class:`RateLimited` with the wait until the window opens, when ``now`` is outside it."""
        if self.active_hours is None:
            return
        now = now or datetime.now(UTC)
        opening = self.active_hours.next_opening(now)
        if opening is None:
            return

        hours = self.active_hours
        wait_seconds = (opening - now.astimezone(UTC)).total_seconds()
        local_opening = opening.astimezone(ZoneInfo(hours.timezone))
        raise RateLimited(
            f"Could not {what}: the site policy allows requests to {url.host} only between "
            f"{hours.start:%H:%M} and {hours.end:%H:%M} ({hours.timezone}). The window opens at "
            f"{local_opening:%Y-%m-%d %H:%M %Z}, in {wait_seconds / 3600:.1f} h; schedule the rest for then.",
            retry_after_seconds=wait_seconds,
        )


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def _under_prefix(path: str, prefix: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    return path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _origin(url: httpx.URL) -> str:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme, 0)
    return f"{url.scheme}://{url.host.lower()}:{port}"


def product_token(user_agent: str) -> str:
    """Return the product token of a user agent (``connector-warden`` of ``connector-warden/0.1.0``)."""
    return user_agent.split("/", 1)[0].strip()


# -- challenge pages -----------------------------------------------------------------


def find_challenge(response: httpx.Response, policy: SitePolicy) -> str | None:
    """Return why ``response`` looks like a challenge page, or None.

    A challenge is a status in ``challenge_statuses``, Cloudflare's ``cf-mitigated: challenge`` header, or a
    marker in an HTML body that is not a download (``Content-Disposition: attachment``). An unread streamed
    body is not searched.
    """
    if response.status_code in policy.challenge_statuses:
        return f"HTTP {response.status_code}"
    if response.headers.get(CHALLENGE_HEADER, "").strip().lower() == "challenge":
        return f"HTTP {response.status_code} with {CHALLENGE_HEADER}: challenge"

    content_type = response.headers.get("content-type", "").lower()
    is_html = content_type.startswith(("text/html", "application/xhtml+xml"))
    is_download = response.headers.get("content-disposition", "").lower().startswith("attachment")
    if not is_html or is_download or not policy.challenge_markers:
        return None

    try:
        body = response.content[:MAX_CHALLENGE_SCAN_BYTES]
    except httpx.ResponseNotRead:
        return None
    text = body.decode("utf-8", errors="replace").lower()
    for marker in policy.challenge_markers:
        if marker.lower() in text:
            return f"HTTP {response.status_code} with the marker {marker!r}"
    return None


def raise_for_challenge(response: httpx.Response, policy: SitePolicy, *, what: str) -> None:
    """Raise :class:`LoginRequired` when ``response`` is a CAPTCHA, consent or second-factor page."""
    reason = find_challenge(response, policy)
    if reason is None:
        return
    url = response.request.url
    raise LoginRequired(
        f"Could not {what}: {url.host} returned a challenge page ({reason}) for {url.path} instead of the "
        "expected response. The connector does not try to pass it. A person must open the site in a browser "
        "and clear it, then sync again."
    )


# -- per-process state: spacing and robots.txt ----------------------------------------


class _RequestSpacing:
    """The next free send time per origin, shared by every event loop and thread of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next_free: dict[str, float] = {}

    def reserve(self, origin: str, *, interval_seconds: float, max_wait_seconds: float) -> tuple[float, bool]:
        """Return the wait until the next slot for ``origin`` and whether it was booked (not beyond the maximum)."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_free.get(origin, now))
            wait = slot - now
            if wait > max_wait_seconds:
                return wait, False
            self._next_free[origin] = slot + interval_seconds
            return wait, True

    def clear(self) -> None:
        with self._lock:
            self._next_free.clear()


class _RobotsRules:
    """A parsed robots.txt, or no rules at all (everything allowed) when it is unavailable (HTTP 4xx)."""

    def __init__(self, parser: Protego | None, *, fetched_at: float, status: int) -> None:
        self.parser = parser
        self.fetched_at = fetched_at
        self.status = status

    def allows(self, url: httpx.URL, token: str) -> bool:
        return self.parser is None or self.parser.can_fetch(str(url), token)

    def crawl_delay_seconds(self, token: str) -> float | None:
        return None if self.parser is None else self.parser.crawl_delay(token)


class _RobotsCache:
    """robots.txt per origin, fetched once per TTL however many coroutines ask at the same time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, _RobotsRules] = {}
        # asyncio locks belong to one event loop, so each loop gets its own per origin.
        self._fetch_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    def _fresh(self, origin: str, ttl_seconds: float) -> _RobotsRules | None:
        with self._lock:
            rules = self._rules.get(origin)
        if rules is None or time.monotonic() - rules.fetched_at >= ttl_seconds:
            return None
        return rules

    def _fetch_lock(self, origin: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._fetch_locks.setdefault(loop, {}).setdefault(origin, asyncio.Lock())

    async def rules_for(self, url: httpx.URL, policy: SitePolicy, fetch: RobotsFetcher, *, what: str) -> _RobotsRules:
        origin = _origin(url)
        rules = self._fresh(origin, policy.robots_ttl_seconds)
        if rules is not None:
            return rules

        async with self._fetch_lock(origin):
            rules = self._fresh(origin, policy.robots_ttl_seconds)
            if rules is None:
                rules = await _fetch_robots(url, policy, fetch, what=what)
                with self._lock:
                    self._rules[origin] = rules
            return rules

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()


async def _fetch_robots(url: httpx.URL, policy: SitePolicy, fetch: RobotsFetcher, *, what: str) -> _RobotsRules:
    """Fetch and parse ``/robots.txt`` for the origin of ``url``, following redirects to allowed hosts.

    A 4xx means no rules, because RFC 9309 lets crawlers access everything then. A 5xx or a connection
    failure raises :class:`SiteUnreachable` (or the retry layer's :class:`RateLimited`) and nothing is
    cached, so no page is fetched until robots.txt can be read. That is the complete disallow RFC 9309
    requires while robots.txt is unreachable.
    """
    robots_url = url.copy_with(path="/robots.txt", query=None, fragment=None)
    response = await fetch(str(robots_url))
    for _hop in range(MAX_ROBOTS_REDIRECTS):
        if not response.is_redirect:
            break
        target = robots_url.join(response.headers.get("Location", ""))
        if target.host.lower() not in policy.allowed_hosts:
            # NOTE: a robots.txt that redirects off the allowed hosts counts as unavailable (no rules),
            # because the policy forbids sending the request there.
            break
        robots_url = target
        response = await fetch(str(robots_url))

    status = response.status_code
    fetched_at = time.monotonic()
    if status >= 500:
        raise SiteUnreachable(
            f"Could not {what}: robots.txt of {url.host} returned HTTP {status}, and pages of a site whose "
            "robots.txt cannot be read are not fetched. The sync will try again on its next run."
        )
    if status >= 400 or response.is_redirect:
        logger.info("policy.robots_unavailable origin=%s status=%d", _origin(url), status)
        return _RobotsRules(None, fetched_at=fetched_at, status=status)

    text = response.content[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
    logger.info("policy.robots_fetched origin=%s status=%d bytes=%d", _origin(url), status, len(text))
    return _RobotsRules(Protego.parse(text), fetched_at=fetched_at, status=status)


_SPACING = _RequestSpacing()
_ROBOTS = _RobotsCache()


def clear_policy_state() -> None:
    """Forget every origin's spacing and cached robots.txt in this process (for tests and reconfiguration)."""
    _SPACING.clear()
    _ROBOTS.clear()


async def _wait_for_slot(url: httpx.URL, *, interval_seconds: float, max_wait_seconds: float, what: str) -> None:
    if interval_seconds <= 0:
        return
    origin = _origin(url)
    wait, booked = _SPACING.reserve(origin, interval_seconds=interval_seconds, max_wait_seconds=max_wait_seconds)
    if not booked:
        raise RateLimited(
            f"Could not {what}: the request-rate ceiling for {url.host} would hold this request for {wait:.0f} s, "
            f"more than the {max_wait_seconds:.0f} s a worker may sleep (max_retry_after_seconds), because earlier "
            "requests are queued or robots.txt sets a long Crawl-delay. The rest will run after that time.",
            retry_after_seconds=wait,
        )
    if wait > 0:
        logger.debug("policy.spacing host=%s wait_seconds=%.2f", url.host, wait)
        await asyncio.sleep(wait)


async def admit_request(
    policy: SitePolicy,
    url: httpx.URL,
    *,
    what: str,
    user_agent: str,
    max_wait_seconds: float,
    fetch_robots: RobotsFetcher,
) -> None:
    """Check ``url`` against ``policy`` and wait for its rate slot; raise when the request must not be sent.

    Raises :class:`ConfigError` for a host or path outside the policy or disallowed by robots.txt,
    :class:`RateLimited` outside the active hours or when the rate slot is further away than
    ``max_wait_seconds``, and whatever ``fetch_robots`` raises when robots.txt cannot be read.
    """
    policy.check_target(url, what=what)
    policy.check_active_hours(url, what=what)

    interval_seconds = policy.min_interval_seconds
    if policy.crawler:
        token = product_token(user_agent)

        async def spaced_fetch(robots_url: str) -> httpx.Response:
            await _wait_for_slot(
                url, interval_seconds=policy.min_interval_seconds, max_wait_seconds=max_wait_seconds, what=what
            )
            return await fetch_robots(robots_url)

        rules = await _ROBOTS.rules_for(url, policy, spaced_fetch, what=what)
        if not rules.allows(url, token):
            raise ConfigError(
                f"Could not {what}: robots.txt of {url.host} disallows {url.path} for {token}, so the request "
                "was not sent. Remove this path from the connector's configuration, or use the site's API."
            )
        interval_seconds = max(interval_seconds, rules.crawl_delay_seconds(token) or 0.0)

    await _wait_for_slot(url, interval_seconds=interval_seconds, max_wait_seconds=max_wait_seconds, what=what)
