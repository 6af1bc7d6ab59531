"""The retry layer, the site policy and the metadata cache against a programmable loopback app.

Waits are measured where they matter, at the server: the app records each
request's arrival on ``time.monotonic()``. Tolerances allow for scheduling
jitter on a loaded machine. A lower bound is relaxed by at most 50 ms: a
request that reaches the server late shortens the next gap although the client
waited in full, while a missing wait shows as a gap of a few milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import psutil
import pytest
from sites.throttle_app import ScriptedResponse, ThrottleApp

from warden.connectors.http import HttpSettings, build_client, send_with_backoff
from warden.connectors.metadata_cache import CACHE_EXTENSION, MetadataCache
from warden.connectors.policy import ActiveHours, SitePolicy, clear_policy_state
from warden.errors import ConfigError, LoginRequired, RateLimited, SiteUnreachable

pytestmark = pytest.mark.resilience

FAST = HttpSettings(
    timeout_seconds=5.0,
    max_attempts=4,
    backoff_base_seconds=0.05,
    backoff_max_seconds=0.2,
    max_total_wait_seconds=10.0,
    max_retry_after_seconds=10.0,
)
# Scheduling slack added to an upper bound, and taken from a lower bound.
LATE_SECONDS = 0.25
EARLY_SECONDS = 0.05


@pytest.fixture(scope="module")
def running_app():
    with ThrottleApp.running() as app:
        yield app


@pytest.fixture
def app(running_app):
    """The module's app with no scripts or recorded requests, and no spacing or robots.txt remembered."""
    running_app.reset()
    clear_policy_state()
    return running_app


def with_policy(app: ThrottleApp, **fields: object) -> HttpSettings:
    return replace(FAST, policy=SitePolicy(allowed_hosts=frozenset({app.host}), **fields))


def settings_with(**changes: object) -> HttpSettings:
    return replace(FAST, **changes)


async def get(app: ThrottleApp, path: str, settings: HttpSettings = FAST, **kwargs: object) -> httpx.Response:
    async with build_client(app.origin, settings=settings) as client:
        return await send_with_backoff(client, "GET", path, settings=settings, what=f"read {path}", **kwargs)


# -- backoff ---------------------------------------------------------------------------


async def test_backoff_gaps_follow_seeded_jitter(app):
    settings = settings_with(backoff_base_seconds=0.2, backoff_max_seconds=0.6, max_attempts=4)
    app.script("/items", ScriptedResponse(503), ScriptedResponse(502), ScriptedResponse(500), ScriptedResponse(200))

    response = await get(app, "/items", settings, rng=random.Random(1234))

    assert response.status_code == 200
    replay = random.Random(1234)
    caps = [min(0.6, 0.2 * 2 ** (attempt - 1)) for attempt in (1, 2, 3)]
    expected = [replay.uniform(0.0, cap) for cap in caps]
    gaps = app.gaps("/items")
    assert len(gaps) == 3
    for gap, wait, cap in zip(gaps, expected, caps, strict=True):
        assert gap >= wait - EARLY_SECONDS
        assert gap <= wait + LATE_SECONDS
        assert gap <= cap + LATE_SECONDS


async def test_retry_after_seconds_honoured(app):
    app.script("/items", ScriptedResponse(429, headers={"Retry-After": "1"}), ScriptedResponse(200))

    response = await get(app, "/items", rng=random.Random(0))

    assert response.status_code == 200
    [gap] = app.gaps("/items")
    assert gap >= 1.0 - EARLY_SECONDS
    assert gap <= 1.0 + LATE_SECONDS


async def test_retry_after_http_date_honoured(app):
    # An HTTP date has whole seconds, so a date two seconds ahead requests a wait between 1 and 2 s.
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    app.script("/items", ScriptedResponse(503, headers={"Retry-After": when}), ScriptedResponse(200))

    response = await get(app, "/items", rng=random.Random(0))

    assert response.status_code == 200
    [gap] = app.gaps("/items")
    assert gap >= 1.0 - EARLY_SECONDS
    assert gap <= 2.0 + LATE_SECONDS


async def test_retry_after_above_cap_raises(app):
    app.script("/items", ScriptedResponse(429, headers={"Retry-After": "3600"}))
    started = time.monotonic()

    with pytest.raises(RateLimited) as caught:
        await get(app, "/items", settings_with(max_retry_after_seconds=60.0))

    assert caught.value.retry_after_seconds == 3600.0
    assert "3600 s (Retry-After)" in str(caught.value)
    assert time.monotonic() - started < 1.0
    assert len(app.arrivals("/items")) == 1


async def test_503_storm_stops_after_max_attempts(app):
    app.set_default("/items", ScriptedResponse(503))

    with pytest.raises(SiteUnreachable) as caught:
        await get(app, "/items", settings_with(max_attempts=4), rng=random.Random(0))

    assert "HTTP 503 after 4 attempts" in str(caught.value)
    assert len(app.arrivals("/items")) == 4


async def test_503_storm_stops_at_max_total_wait(app):
    app.set_default("/items", ScriptedResponse(503, headers={"Retry-After": "1"}))

    with pytest.raises(SiteUnreachable) as caught:
        await get(app, "/items", settings_with(max_attempts=50, max_total_wait_seconds=2.5))

    # Two waits of 1 s fit in 2.5 s; a third would not, so the third response is the last.
    assert "after 3 attempts and 2.0 s of waiting" in str(caught.value)
    assert len(app.arrivals("/items")) == 3


async def test_429_storm_raises_rate_limited(app):
    app.set_default("/items", ScriptedResponse(429, headers={"Retry-After": "0"}))

    with pytest.raises(RateLimited) as caught:
        await get(app, "/items", settings_with(max_attempts=3))

    assert "still rate limited (HTTP 429) after 3 attempts" in str(caught.value)
    assert len(app.arrivals("/items")) == 3


async def test_connection_refused_retried_then_reported(caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caplog.set_level(logging.INFO, logger="warden.http")
    settings = settings_with(max_attempts=3)

    with pytest.raises(SiteUnreachable) as caught:
        async with build_client(f"http://127.0.0.1:{port}", settings=settings) as client:
            await send_with_backoff(client, "GET", "/items", settings=settings, what="read /items")

    assert "ConnectError after 3 attempts" in str(caught.value)
    retries = [record for record in caplog.records if record.getMessage().startswith("http.retry")]
    assert len(retries) == 2


# -- policy ----------------------------------------------------------------------------


async def test_policy_rejects_other_host(app):
    policy = SitePolicy(allowed_hosts=frozenset({"mail.example.org"}))
    settings = settings_with(policy=policy)

    with pytest.raises(ConfigError) as caught:
        await get(app, "/items", settings)

    assert "host 127.0.0.1 is not in the site policy's allowed_hosts (mail.example.org)" in str(caught.value)
    assert app.arrivals() == []


@pytest.mark.parametrize("path", ["/admin", "/apikeys", "/api/%2e%2e/admin", "/api/%2E%2E%2Fadmin"])
async def test_policy_rejects_path_outside_prefixes(app, path):
    settings = with_policy(app, allowed_path_prefixes=("/api",))

    with pytest.raises(ConfigError) as caught:
        await get(app, path, settings)

    assert "so the request was not sent" in str(caught.value)
    assert app.arrivals() == []


async def test_policy_allows_path_under_prefix(app):
    response = await get(app, "/api/items", with_policy(app, allowed_path_prefixes=("/api",)))

    assert response.status_code == 200


async def test_policy_for_base_url(app):
    policy = SitePolicy.for_base_url(app.url("/archive/"))

    assert policy.allowed_hosts == frozenset({"127.0.0.1"})
    assert policy.allowed_path_prefixes == ("/archive/",)


async def test_robots_disallowed_path_rejected(app):
    app.set_default(
        "/robots.txt",
        ScriptedResponse(body=b"User-agent: *\nDisallow: /\n\nUser-agent: connector-warden\nDisallow: /private\n"),
    )
    settings = with_policy(app, crawler=True)

    with pytest.raises(ConfigError) as caught:
        await get(app, "/private/report.html", settings)
    first = await get(app, "/public/index.html", settings)
    second = await get(app, "/public/about.html", settings)

    assert "robots.txt of 127.0.0.1 disallows /private/report.html for connector-warden" in str(caught.value)
    assert first.status_code == 200
    assert second.status_code == 200
    assert app.arrivals("/private/report.html") == []
    assert len(app.arrivals("/robots.txt")) == 1
    assert app.arrivals("/robots.txt")[0].headers["user-agent"].startswith("connector-warden/")


async def test_robots_fetched_again_after_ttl(app):
    app.set_default("/robots.txt", ScriptedResponse(body=b"User-agent: *\nDisallow: /private\n"))
    settings = with_policy(app, crawler=True, robots_ttl_seconds=0.3)

    await get(app, "/page", settings)
    await get(app, "/page", settings)
    await asyncio.sleep(0.35)
    await get(app, "/page", settings)

    assert len(app.arrivals("/robots.txt")) == 2


async def test_robots_missing_allows_everything(app):
    app.set_default("/robots.txt", ScriptedResponse(404, body=b"not found"))

    response = await get(app, "/private/page", with_policy(app, crawler=True))

    assert response.status_code == 200


async def test_robots_unreachable_blocks_until_readable(app):
    app.script("/robots.txt", ScriptedResponse(503))
    settings = with_policy(app, crawler=True)

    with pytest.raises(SiteUnreachable):
        await get(app, "/page", settings_with(max_attempts=1, policy=settings.policy))
    assert app.arrivals("/page") == []

    response = await get(app, "/page", settings)
    assert response.status_code == 200
    assert len(app.arrivals("/robots.txt")) == 2


async def test_robots_ignored_when_not_crawler(app):
    app.set_default("/robots.txt", ScriptedResponse(body=b"User-agent: *\nDisallow: /\n"))

    response = await get(app, "/page", with_policy(app))

    assert response.status_code == 200
    assert app.arrivals("/robots.txt") == []


async def test_robots_crawl_delay_spaces_requests(app):
    app.set_default("/robots.txt", ScriptedResponse(body=b"User-agent: *\nCrawl-delay: 0.3\n"))
    settings = with_policy(app, crawler=True)

    async with build_client(app.origin, settings=settings) as client:
        for _ in range(3):
            await send_with_backoff(client, "GET", "/page", settings=settings, what="read /page")

    for gap in app.gaps("/page"):
        assert gap >= 0.3 - EARLY_SECONDS


async def test_rate_ceiling_spaces_concurrent_requests(app):
    settings = with_policy(app, max_requests_per_minute=300)

    async with build_client(app.origin, settings=settings) as client:
        responses = await asyncio.gather(
            *(send_with_backoff(client, "GET", "/page", settings=settings, what="read /page") for _ in range(4))
        )

    assert [response.status_code for response in responses] == [200, 200, 200, 200]
    gaps = app.gaps("/page")
    assert len(gaps) == 3
    for gap in gaps:
        assert gap >= 0.2 - EARLY_SECONDS


async def test_rate_ceiling_wait_above_cap_raises(app):
    settings = with_policy(app, max_requests_per_minute=1)
    settings = settings_with(max_retry_after_seconds=5.0, policy=settings.policy)

    await get(app, "/page", settings)
    with pytest.raises(RateLimited) as caught:
        await get(app, "/page", settings)

    assert "request-rate ceiling for 127.0.0.1 would hold this request for 60 s" in str(caught.value)
    assert caught.value.retry_after_seconds == pytest.approx(60, abs=1)
    assert len(app.arrivals("/page")) == 1


async def test_active_hours_outside_raises_with_wait(app):
    now = datetime.now(UTC)
    hours = ActiveHours(start=(now + timedelta(hours=2)).time(), end=(now + timedelta(hours=3)).time())

    with pytest.raises(RateLimited) as caught:
        await get(app, "/page", with_policy(app, active_hours=hours))

    assert caught.value.retry_after_seconds == pytest.approx(7200, abs=60)
    assert "The window opens at" in str(caught.value)
    assert app.arrivals() == []


async def test_active_hours_inside_sends(app):
    now = datetime.now(UTC)
    hours = ActiveHours(start=(now - timedelta(hours=1)).time(), end=(now + timedelta(hours=1)).time())

    response = await get(app, "/page", with_policy(app, active_hours=hours))

    assert response.status_code == 200


def test_active_hours_opening_across_dst_change():
    hours = ActiveHours(start="08:00", end="18:00", timezone="Europe/Berlin")
    # 01:30 CET on the night clocks move to CEST; 08:00 CEST that morning is 06:00 UTC, 5.5 h later.
    now = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)

    opening = hours.next_opening(now)

    assert opening == datetime(2025, 3, 30, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("utc_hour", "inside"),
    [(21, False), (23, True), (5, True), (6, False), (12, False)],
)
def test_active_hours_overnight_window(utc_hour, inside):
    hours = ActiveHours(start="22:00", end="06:00")

    opening = hours.next_opening(datetime(2025, 6, 2, utc_hour, 30, tzinfo=UTC))

    assert (opening is None) == inside


def test_active_hours_rejects_unknown_zone():
    with pytest.raises(ValueError, match="not a known IANA time zone"):
        ActiveHours(start="08:00", end="18:00", timezone="Mars/Olympus")


@pytest.mark.parametrize(
    "response",
    [
        ScriptedResponse(403, headers={"Content-Type": "text/html"}, body=b'<div class="g-recaptcha"></div>'),
        ScriptedResponse(503, headers={"cf-mitigated": "challenge", "Content-Type": "text/html"}, body=b"wait"),
        ScriptedResponse(511, headers={"Content-Type": "text/html"}, body=b"sign in to the network"),
        ScriptedResponse(200, headers={"Content-Type": "text/html"}, body=b"<form class='cf-turnstile'>"),
    ],
    ids=["recaptcha-403", "cloudflare-503", "status-511", "turnstile-200"],
)
async def test_challenge_page_raises_login_required(app, response):
    app.script("/page", response)

    with pytest.raises(LoginRequired) as caught:
        await get(app, "/page", with_policy(app))

    assert "returned a challenge page" in str(caught.value)
    assert "does not try to pass it" in str(caught.value)
    assert len(app.arrivals("/page")) == 1


async def test_challenge_marker_in_download_ignored(app):
    body = b"<p>How to add a g-recaptcha to your form</p>"
    headers = {"Content-Type": "text/html", "Content-Disposition": 'attachment; filename="howto.html"'}
    app.script("/download", ScriptedResponse(200, headers=headers, body=body))

    response = await get(app, "/download", with_policy(app))

    assert response.content == body


async def test_challenge_page_returned_without_policy(app):
    app.script("/page", ScriptedResponse(403, headers={"Content-Type": "text/html"}, body=b'<div class="g-recaptcha">'))

    response = await get(app, "/page")

    assert response.status_code == 403


async def test_logs_carry_no_url_query(app, caplog):
    caplog.set_level(logging.DEBUG, logger="warden")
    app.set_default("/robots.txt", ScriptedResponse(body=b"User-agent: *\nCrawl-delay: 0.05\n"))
    app.script("/page", ScriptedResponse(503))
    settings = with_policy(app, crawler=True)

    async with build_client(app.origin, settings=settings) as client:
        await send_with_backoff(client, "GET", "/page", settings=settings, what="read /page", params={"k": "s3cr3t"})
        await MetadataCache().get(
            client, "/page", settings=settings, what="read /page", scope="a", params={"k": "s3cr3t"}
        )

    warden_records = [record for record in caplog.records if record.name.startswith("warden")]
    assert warden_records
    assert all("s3cr3t" not in record.getMessage() for record in warden_records)


# -- cancellation ----------------------------------------------------------------------


def checked_out(client: httpx.AsyncClient) -> list[object]:
    """Return the pool's connections that are neither idle nor closed, i.e. still lent to a request."""
    pool = client._transport._pool
    return [connection for connection in pool.connections if not connection.is_idle() and not connection.is_closed()]


def established_sockets_to(port: int) -> int:
    connections = psutil.Process().net_connections(kind="tcp")
    return sum(1 for conn in connections if conn.raddr and conn.raddr.port == port and conn.status == "ESTABLISHED")


async def cancel_twice(task: asyncio.Task[object]) -> None:
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_download_cancelled_twice_releases_connections(app):
    slow = ScriptedResponse(
        200,
        headers={"Content-Type": "application/octet-stream", "Content-Disposition": "attachment"},
        body=b"x" * 200_000,
        chunk_count=40,
        chunk_delay_seconds=0.05,
    )
    settings = settings_with(timeout_seconds=2.0)
    port = httpx.URL(app.origin).port

    async with build_client(app.origin, settings=settings) as client:
        # As many downloads as the pool has connections: a leak of each would leave none for the next request.
        for index in range(4):
            app.script(f"/part/{index}", slow)
            task = asyncio.create_task(
                send_with_backoff(client, "GET", f"/part/{index}", settings=settings, what=f"download part {index}")
            )
            await asyncio.sleep(0.2)
            await cancel_twice(task)

        assert checked_out(client) == []
        assert client._transport._pool._requests == []
        response = await send_with_backoff(client, "GET", "/after", settings=settings, what="read /after")
        assert response.status_code == 200
        assert established_sockets_to(port) == len(client._transport._pool.connections)


async def test_cancel_twice_before_headers_releases(app):
    app.script("/slow", ScriptedResponse(200, headers_delay_seconds=1.0))

    async with build_client(app.origin, settings=FAST) as client:
        task = asyncio.create_task(send_with_backoff(client, "GET", "/slow", settings=FAST, what="read /slow"))
        await asyncio.sleep(0.2)
        await cancel_twice(task)

        assert checked_out(client) == []
        response = await send_with_backoff(client, "GET", "/after", settings=FAST, what="read /after")
        assert response.status_code == 200


# -- metadata cache --------------------------------------------------------------------


async def read_folders(client: httpx.AsyncClient, cache: MetadataCache, *, scope: str = "demo") -> httpx.Response:
    return await cache.get(client, "/folders", settings=FAST, what="list folders of account 'demo'", scope=scope)


async def test_metadata_served_from_memory_within_ttl(app):
    app.serve_resource("/folders", b'["INBOX", "Archive"]', etag='"v1"')
    cache = MetadataCache(ttl_seconds=60)

    async with build_client(app.origin, settings=FAST) as client:
        responses = [await read_folders(client, cache) for _ in range(3)]

    assert [response.extensions[CACHE_EXTENSION] for response in responses] == ["miss", "hit", "hit"]
    assert all(response.json() == ["INBOX", "Archive"] for response in responses)
    assert len(app.arrivals("/folders")) == 1


async def test_metadata_revalidated_with_etag(app):
    app.serve_resource("/folders", b'["INBOX"]', etag='"v1"')
    cache = MetadataCache(ttl_seconds=0)

    async with build_client(app.origin, settings=FAST) as client:
        first = await read_folders(client, cache)
        second = await read_folders(client, cache)
        app.serve_resource("/folders", b'["INBOX", "Sent"]', etag='"v2"')
        third = await read_folders(client, cache)
        fourth = await read_folders(client, cache)

    arrivals = app.arrivals("/folders")
    assert [r.extensions[CACHE_EXTENSION] for r in (first, second, third, fourth)] == [
        "miss",
        "revalidated",
        "miss",
        "revalidated",
    ]
    assert second.status_code == 200
    assert second.json() == ["INBOX"]
    assert fourth.json() == ["INBOX", "Sent"]
    assert "if-none-match" not in arrivals[0].headers
    assert arrivals[1].headers["if-none-match"] == '"v1"'
    assert arrivals[3].headers["if-none-match"] == '"v2"'


async def test_metadata_revalidated_with_last_modified(app):
    app.serve_resource("/folders", b'["INBOX"]', last_modified=1_700_000_000)
    cache = MetadataCache(ttl_seconds=0)

    async with build_client(app.origin, settings=FAST) as client:
        await read_folders(client, cache)
        second = await read_folders(client, cache)

    assert second.extensions[CACHE_EXTENSION] == "revalidated"
    assert app.arrivals("/folders")[1].headers["if-modified-since"] == "Tue, 14 Nov 2023 22:13:20 GMT"


async def test_metadata_kept_apart_per_scope(app):
    app.serve_resource("/folders", b'["INBOX"]', etag='"v1"')
    cache = MetadataCache(ttl_seconds=60)

    async with build_client(app.origin, settings=FAST) as client:
        alice = await read_folders(client, cache, scope="alice")
        bob = await read_folders(client, cache, scope="bob")

    assert alice.extensions[CACHE_EXTENSION] == "miss"
    assert bob.extensions[CACHE_EXTENSION] == "miss"
    assert "if-none-match" not in app.arrivals("/folders")[1].headers


async def test_metadata_no_store_not_kept(app):
    no_store = ScriptedResponse(200, headers={"Cache-Control": "no-store", "ETag": '"v1"'}, body=b"[]")
    app.script("/folders", no_store, no_store)
    cache = MetadataCache(ttl_seconds=60)

    async with build_client(app.origin, settings=FAST) as client:
        await read_folders(client, cache)
        second = await read_folders(client, cache)

    assert second.extensions[CACHE_EXTENSION] == "miss"
    assert len(app.arrivals("/folders")) == 2


async def test_metadata_error_status_not_kept(app):
    app.script("/folders", ScriptedResponse(404, body=b"no such endpoint"), ScriptedResponse(200, body=b"[]"))
    cache = MetadataCache(ttl_seconds=60)

    async with build_client(app.origin, settings=FAST) as client:
        first = await read_folders(client, cache)
        second = await read_folders(client, cache)

    assert first.status_code == 404
    assert second.status_code == 200
    assert second.extensions[CACHE_EXTENSION] == "miss"
