"""The webapp connector against the test web app: sessionStorage logins, IndexedDB, challenges, login walls.

These are behaviours Roundcube cannot show: a login kept only in
sessionStorage, a bearer API, an IndexedDB database with zero object stores,
a CAPTCHA page, and a sliding cookie session a few seconds long.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pydantic import SecretStr
from sites.webapp import CHALLENGE_MARKER, LOGIN_MARKER, WebAppSite

from warden.accounts import AccountConfig, BrowserBudget
from warden.connectors.base import LoginCredentials, ProbeState
from warden.connectors.http import HttpSettings
from warden.connectors.registry import build_connector
from warden.connectors.webapp import WebAppConnector, parse_webapp_options
from warden.errors import ConfigError, LoginFailed, LoginRequired
from warden.sessions.browser import BrowserPool
from warden.sessions.capture import login_and_capture
from warden.sessions.state import SessionState

USER = "ada"
PASSWORD = "ada-Password-5150"
CREDENTIALS = LoginCredentials(USER, SecretStr(PASSWORD))

BASE_OPTIONS = {
    "login_path": "/login",
    "username_selector": "#username",
    "password_selector": "#password",
    "submit_selector": "#sign-in",
    "success_selector": "#signed-in",
    "success_url_pattern": "/app$",
    "error_selector": "#login-error:not([hidden])",
    "probe_path": "/api/me",
    "login_marker": LOGIN_MARKER,
    "challenge_marker": CHALLENGE_MARKER,
    "bearer_storage": "sessionStorage",
    "bearer_key": "access_token",
}


@pytest.fixture(scope="module")
def running_site():
    with WebAppSite.running(users={USER: PASSWORD}) as site:
        yield site


@pytest.fixture
def site(running_site):
    """The module's site, reset to its default settings with no logins."""
    running_site.configure()
    return running_site


@pytest.fixture
def pool():
    return BrowserPool()


def make_connector(base_url: str, *, account: str = "spa", **option_changes: object) -> WebAppConnector:
    options = parse_webapp_options({**BASE_OPTIONS, **option_changes}, account=account)
    return WebAppConnector(base_url, account=account, http=HttpSettings(max_attempts=1), options=options)


async def capture(pool: BrowserPool, connector: WebAppConnector) -> SessionState:
    return await login_and_capture(pool, connector, CREDENTIALS, account=connector.account, budget=BrowserBudget())


# -- options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"username_selector": None}, "option 'username_selector' is missing"),
        ({"submit_button": "#go"}, "option 'submit_button' is unknown"),
        ({"probe_path": "https://elsewhere.example/api"}, "option 'probe_path' must be a path on the account's site"),
        ({"bearer_key": None}, "set both bearer_storage and bearer_key, or neither"),
        ({"success_selector": None, "success_url_pattern": None}, "set success_selector or success_url_pattern"),
        ({"success_url_pattern": "(unclosed"}, "option 'success_url_pattern' is not a valid regular expression"),
        ({"bearer_storage": "cookies"}, "option 'bearer_storage'"),
    ],
)
def test_invalid_options_named(change, expected):
    options = {**BASE_OPTIONS, **change}
    options = {name: value for name, value in options.items() if value is not None}

    with pytest.raises(ConfigError) as raised:
        parse_webapp_options(options, account="spa")

    message = str(raised.value)
    assert "Account 'spa'" in message
    assert expected in message


def test_registry_builds_webapp():
    config = AccountConfig(
        name="spa",
        connector="webapp",
        connector_options=BASE_OPTIONS,
        base_url="http://127.0.0.1:9/",
        username=USER,
        login_secret_path="connectors/spa",
        session_key="spa",
    )
    connector = build_connector(config)

    assert isinstance(connector, WebAppConnector)
    assert connector.kind == "webapp"
    assert connector.supports_fetch is False
    assert connector.options.bearer_key == "access_token"

    with pytest.raises(ConfigError, match="option 'probe_path' is missing"):
        build_connector(config.model_copy(update={"connector_options": {"username_selector": "#u"}}))


def test_open_raises_config_error():
    connector = make_connector("http://127.0.0.1:9/")
    with pytest.raises(ConfigError, match="cannot list or fetch items"):
        connector.open(SessionState())


# -- sessionStorage ---------------------------------------------------------------


async def test_session_storage_login_probes_valid(pool, site):
    connector = make_connector(site.url)

    state = await capture(pool, connector)
    valid, rotated = await connector.probe(state)
    stored = SessionState.from_bytes(state.to_bytes(), account="spa")
    valid_after_storage, _ = await connector.probe(stored)
    without_session_storage = state.model_copy(update={"session_storage": {}})
    expired, _ = await connector.probe(without_session_storage)

    assert state.cookies == []
    assert all(origin.local_storage == [] for origin in state.origins)
    assert list(state.session_storage) == [site.origin]
    assert state.session_storage[site.origin]["access_token"].count(".") == 2
    assert valid.state == ProbeState.VALID
    assert valid.elapsed_seconds > 0
    assert rotated.session_storage == state.session_storage
    assert valid_after_storage.state == ProbeState.VALID
    assert expired.state == ProbeState.EXPIRED
    assert "HTTP 401" in expired.reason
    assert "no 'access_token' in sessionStorage" in expired.reason


async def test_empty_indexeddb_kept_in_capture(pool, site):
    site.configure(empty_indexeddb=True)
    connector = make_connector(site.url)

    state = await capture(pool, connector)
    origins = {origin.origin: origin for origin in state.origins}
    databases_in_state = (origins[site.origin].model_extra or {}).get("indexedDB")
    restored = SessionState.from_bytes(state.to_bytes(), account="spa")

    async with pool.context(storage_state=restored.to_playwright(), account="spa") as context:
        page = await context.new_page()
        await page.goto(f"{site.url}login")
        databases_in_browser = await page.evaluate(
            "async () => (await indexedDB.databases()).map((database) => [database.name, database.version])"
        )

    assert databases_in_state == [{"name": "offline-cache", "version": 1, "stores": []}]
    assert databases_in_browser == [["offline-cache", 1]]


# -- challenges, wrong passwords, login walls -------------------------------------


async def test_challenge_page_probes_challenge(site):
    site.configure(challenge=True)
    connector = make_connector(site.url)
    state = SessionState(session_storage={site.origin: {"access_token": "a.b.c"}})

    result, returned = await connector.probe(state)

    assert result.state == ProbeState.CHALLENGE
    assert "HTTP 403" in result.reason
    assert returned.session_storage == state.session_storage


async def test_challenge_page_stops_login(pool, site):
    site.configure(challenge=True)
    connector = make_connector(site.url)

    with pytest.raises(LoginRequired, match="showed a challenge"):
        await capture(pool, connector)

    assert "POST /api/login" not in site.requests


async def test_wrong_password_fails_login(pool, site):
    connector = make_connector(site.url)

    with pytest.raises(LoginFailed, match="rejected the login of user 'ada'"):
        await login_and_capture(
            pool,
            connector,
            LoginCredentials(USER, SecretStr("not-the-password")),
            account="spa",
            budget=BrowserBudget(),
        )


@pytest.mark.parametrize(
    ("login_wall", "reason"),
    [
        ("status", "returned HTTP 401"),
        ("redirect", "redirected to the login page"),
        ("page", "returned the login page"),
    ],
)
async def test_login_wall_probes_expired(site, login_wall, reason):
    site.configure(auth="cookie", login_wall=login_wall)
    connector = make_connector(site.url, bearer_storage=None, bearer_key=None)
    state = SessionState(cookies=[{"name": "sid", "value": "forgotten", "domain": "127.0.0.1"}])

    result, _ = await connector.probe(state)

    assert result.state == ProbeState.EXPIRED
    assert reason in result.reason


async def test_unreachable_site_probes_unreachable():
    # A socket that is bound but not listening refuses connections, and it is this test's own.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        connector = make_connector(f"http://127.0.0.1:{port}/")

        result, returned = await connector.probe(SessionState())

    assert result.state == ProbeState.UNREACHABLE
    assert "Could not probe the session of account 'spa'" in result.reason
    assert returned.cookies == []


# -- sliding cookie session -------------------------------------------------------


async def test_sliding_cookie_session_rotates(pool, site):
    lifetime_seconds = 2.5
    site.configure(auth="cookie", cookie_lifetime_seconds=lifetime_seconds, login_wall="redirect")
    connector = make_connector(site.url, bearer_storage=None, bearer_key=None, auth_cookie_names=["sid"])

    captured = await capture(pool, connector)
    captured_at = time.monotonic()
    state = captured
    results = []
    cookie_values = [state.cookies[0].value]
    # Probes 0.6 s apart until they span more than the lifetime: only sliding keeps the session that long.
    while time.monotonic() - captured_at <= lifetime_seconds + 0.3:
        await asyncio.sleep(0.6)
        result, state = await connector.probe(state)
        results.append(result.state)
        cookie_values.append(state.cookies[0].value)
    stale, _ = await connector.probe(captured)
    await asyncio.sleep(lifetime_seconds + 0.5)
    idle, _ = await connector.probe(state)

    assert [cookie.name for cookie in captured.cookies] == ["sid"]
    assert captured.cookies[0].http_only is True
    assert results == [ProbeState.VALID] * len(results)
    assert len(set(cookie_values)) == len(cookie_values)
    assert state.cookies[0].http_only is True
    assert stale.state == ProbeState.EXPIRED
    assert idle.state == ProbeState.EXPIRED
    assert "redirected to the login page" in idle.reason
