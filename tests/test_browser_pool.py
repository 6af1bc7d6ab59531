"""BrowserPool on real Chromium: headless mode, sharing, crashes, CPU and memory budgets, clean-up.

Logins that Roundcube can show run against the real stack's Roundcube; CPU
and memory hogs run on the test web app in ``tests/sites``. Every test counts
the Chromium processes of this test process before and after, by session id
and by the launch tag in their environment, independently of the pool's own
bookkeeping.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import httpx
import psutil
import pytest
from pydantic import SecretStr
from sites.webapp import WebAppSite

from warden.accounts import BrowserBudget
from warden.connectors.base import LoginCredentials, ProbeState
from warden.connectors.http import HttpSettings
from warden.connectors.roundcube import RoundcubeConnector
from warden.connectors.webapp import WebAppConnector, parse_webapp_options
from warden.errors import BrowserBudgetExceeded, BrowserCrashed, is_transient
from warden.sessions.browser import BrowserPool
from warden.sessions.budget import UsageMeter, UsageSample, budget_overrun
from warden.sessions.capture import login_and_capture
from warden.sessions.processes import LAUNCH_TAG_VARIABLE

pytestmark = pytest.mark.browser

MAIL_USER = "pool-user"
MAIL_PASSWORD = "pool-Password-4410"
MEBIBYTE = 1024 * 1024


def our_chromium_processes(session_ids: set[int]) -> list[psutil.Process]:
    """Return live processes in ``session_ids`` or carrying a launch tag of this test process."""
    tag_prefix = f"{os.getpid()}-"
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            in_session = os.getsid(process.pid) in session_ids
            if in_session or process.environ().get(LAUNCH_TAG_VARIABLE, "").startswith(tag_prefix):
                found.append(process)
        except (OSError, psutil.Error):
            continue
    return found


def cpu_seconds_in_message(message: str) -> float:
    match = re.search(r"used ([0-9.]+) CPU seconds", message)
    assert match, message
    return float(match.group(1))


def memory_bytes_in_message(message: str) -> int:
    match = re.search(r"\((\d+) bytes\), over", message)
    assert match, message
    return int(match.group(1))


@pytest.fixture(scope="module")
def site():
    with WebAppSite.running(users={"ada": "ada-password"}) as running_site:
        yield running_site


@pytest.fixture(scope="module")
def roundcube(mail_server):
    """The stack's Roundcube with a user who has logged in once.

    Roundcube creates its own row for a user at the first login, and two first
    logins at once race on that insert in SQLite: one of them fails with
    "Login failed." So one plain HTTP login goes first.
    """
    mail_server.add_user(MAIL_USER, MAIL_PASSWORD)
    with httpx.Client(base_url=mail_server.roundcube_url, follow_redirects=False, timeout=30) as client:
        login_page = client.get("/", params={"_task": "login"})
        token = re.search(r'name="_token" value="([^"]+)"', login_page.text)
        assert token, "the login page has no _token field"
        response = client.post(
            "/",
            params={"_task": "login"},
            data={
                "_token": token.group(1),
                "_task": "login",
                "_action": "login",
                "_timezone": "UTC",
                "_url": "",
                "_user": MAIL_USER,
                "_pass": MAIL_PASSWORD,
            },
        )
    assert response.status_code == 302
    return mail_server


@pytest.fixture
def pool():
    return BrowserPool()


def hog_connector(site: WebAppSite, login_path: str, pool: BrowserPool) -> RecordingLogin:
    """A webapp connector whose login page is one of the test site's hungry pages."""
    options = parse_webapp_options(
        {
            "login_path": login_path,
            "username_selector": "#username",
            "password_selector": "#password",
            "submit_selector": "#sign-in",
            "success_selector": "#signed-in",
            "probe_path": "/api/me",
            "form_timeout_seconds": 45,
        },
        account="hog",
    )
    return RecordingLogin(
        WebAppConnector(site.url, account="hog", http=HttpSettings(max_attempts=1), options=options), pool
    )


class RecordingLogin:
    """A connector whose login records the pool's browser and, with a barrier, waits for the other logins."""

    def __init__(self, inner, pool: BrowserPool, barrier: asyncio.Barrier | None = None) -> None:
        self.inner = inner
        self.pool = pool
        self.barrier = barrier
        self.kind = inner.kind
        self.auth_cookie_names = inner.auth_cookie_names
        self.supports_fetch = inner.supports_fetch
        self.browser_pids: list[int | None] = []

    async def login(self, page, credentials):
        self.browser_pids.append(self.pool.browser_pid)
        if self.barrier is not None:
            await self.barrier.wait()
        return await self.inner.login(page, credentials)


class KillDuringLogin:
    """A Roundcube connector that SIGKILLs Chromium's main process once the login page has loaded."""

    def __init__(self, inner: RoundcubeConnector, pool: BrowserPool) -> None:
        self.inner = inner
        self.pool = pool
        self.kind = inner.kind
        self.auth_cookie_names = inner.auth_cookie_names
        self.supports_fetch = inner.supports_fetch
        self.killed_pid: int | None = None

    async def login(self, page, credentials):
        await page.goto(f"{self.inner.base_url}?_task=login", wait_until="domcontentloaded")
        self.killed_pid = self.pool.browser_pid
        os.kill(self.killed_pid, signal.SIGKILL)
        return await self.inner.login(page, credentials)


# -- headless mode ----------------------------------------------------------------


async def test_chromium_runs_new_headless_mode(pool):
    async with pool.context() as context:
        leader = psutil.Process(pool.browser_pid)
        session_ids = {pool.browser_pid}
        command_line = leader.cmdline()

        cdp = await context.browser.new_browser_cdp_session()
        version = await cdp.send("Browser.getVersion")
        await cdp.detach()

        page = await context.new_page()
        await page.goto("chrome://version")
        version_page = await page.inner_text("body")

    assert "--headless" in command_line
    assert not any(argument.startswith("--headless=") for argument in command_line)
    # The old headless mode reports the product HeadlessChrome/..., and the new one Chrome/...
    assert version["product"].startswith("Chrome/156.")
    assert "HeadlessChrome" in version["userAgent"]
    # chrome://version exists only in the full browser, so only in the new headless mode.
    assert "Command Line" in version_page
    assert "--headless" in version_page
    assert our_chromium_processes(session_ids) == []


# -- sharing and clean-up -----------------------------------------------------------


async def test_two_concurrent_jobs_share_one_browser(pool, roundcube):
    assert our_chromium_processes(set()) == []
    barrier = asyncio.Barrier(2)
    inner = RoundcubeConnector(roundcube.roundcube_url, account="pool-share", http=HttpSettings())
    connector = RecordingLogin(inner, pool, barrier)
    credentials = LoginCredentials(MAIL_USER, SecretStr(MAIL_PASSWORD))

    states = await asyncio.gather(
        *(
            login_and_capture(pool, connector, credentials, account="pool-share", budget=BrowserBudget())
            for _ in range(2)
        )
    )

    assert pool.launches == 1
    assert len(connector.browser_pids) == 2
    assert connector.browser_pids[0] is not None
    assert connector.browser_pids[0] == connector.browser_pids[1]
    assert pool.running is False
    assert pool.browser_pid is None
    assert our_chromium_processes({connector.browser_pids[0]}) == []
    assert pool.processes() == []
    for state in states:
        result, _ = await inner.probe(state)
        assert result.state == ProbeState.VALID


async def test_browser_killed_mid_login(pool, roundcube):
    assert our_chromium_processes(set()) == []
    inner = RoundcubeConnector(roundcube.roundcube_url, account="pool-crash", http=HttpSettings())
    killer = KillDuringLogin(inner, pool)
    credentials = LoginCredentials(MAIL_USER, SecretStr(MAIL_PASSWORD))

    with pytest.raises(BrowserCrashed) as raised:
        await login_and_capture(pool, killer, credentials, account="pool-crash", budget=BrowserBudget())

    assert killer.killed_pid is not None
    assert is_transient(raised.value)
    assert "pool-crash" in str(raised.value)
    assert our_chromium_processes({killer.killed_pid}) == []
    assert pool.processes() == []

    state = await login_and_capture(pool, inner, credentials, account="pool-crash", budget=BrowserBudget())
    result, _ = await inner.probe(state)

    assert result.state == ProbeState.VALID
    assert pool.launches == 2
    assert pool.running is False
    assert our_chromium_processes({killer.killed_pid}) == []
    assert pool.processes() == []


# -- budgets ------------------------------------------------------------------------


def test_budget_overrun_messages():
    budget = BrowserBudget(max_cpu_seconds=2.0, max_memory_bytes=600 * MEBIBYTE)
    within = UsageSample(cpu_seconds=1.9, memory_bytes=500 * MEBIBYTE, process_count=9, memory_exact=True)
    over_cpu = UsageSample(cpu_seconds=2.6, memory_bytes=500 * MEBIBYTE, process_count=9, memory_exact=True)
    over_memory = UsageSample(cpu_seconds=1.0, memory_bytes=700 * MEBIBYTE, process_count=9, memory_exact=True)

    assert budget_overrun(within, budget, account="alice") is None

    cpu_message = str(budget_overrun(over_cpu, budget, account="alice"))
    assert "account 'alice'" in cpu_message
    assert "used 2.60 CPU seconds" in cpu_message
    assert "limit of 2.00" in cpu_message
    assert "browser_max_cpu_seconds" in cpu_message

    memory_message = str(budget_overrun(over_memory, budget, account="alice"))
    assert "account 'alice'" in memory_message
    assert f"700 MiB of unique memory in Chromium ({700 * MEBIBYTE} bytes)" in memory_message
    assert f"limit of 600 MiB ({600 * MEBIBYTE} bytes)" in memory_message
    assert "browser_max_memory_bytes" in memory_message


async def test_cpu_budget_overrun_stops_job(pool, site):
    assert our_chromium_processes(set()) == []
    connector = hog_connector(site, "/burn-cpu?seconds=40", pool)
    budget = BrowserBudget(max_cpu_seconds=2.0, timeout_seconds=60)
    credentials = LoginCredentials("ada", SecretStr("ada-password"))
    started = time.monotonic()

    with pytest.raises(BrowserBudgetExceeded) as raised:
        await login_and_capture(pool, connector, credentials, account="burner", budget=budget)

    elapsed_seconds = time.monotonic() - started
    message = str(raised.value)
    assert "account 'burner'" in message
    assert "limit of 2.00" in message
    assert "browser_max_cpu_seconds" in message
    assert cpu_seconds_in_message(message) > 2.0
    assert elapsed_seconds < 30
    assert pool.running is False
    assert pool.processes() == []
    assert our_chromium_processes(set(connector.browser_pids)) == []


async def test_memory_budget_overrun_stops_job(pool, site):
    assert our_chromium_processes(set()) == []
    connector = hog_connector(site, "/hog-memory?max_mb=3072&step_mb=64&interval_ms=50", pool)
    limit_bytes = 700 * MEBIBYTE
    budget = BrowserBudget(max_memory_bytes=limit_bytes, timeout_seconds=60)
    credentials = LoginCredentials("ada", SecretStr("ada-password"))

    with pytest.raises(BrowserBudgetExceeded) as raised:
        await login_and_capture(pool, connector, credentials, account="hungry", budget=budget)

    message = str(raised.value)
    assert "account 'hungry'" in message
    assert f"({limit_bytes} bytes)" in message
    assert "browser_max_memory_bytes" in message
    assert memory_bytes_in_message(message) > limit_bytes
    assert pool.running is False
    assert pool.processes() == []
    assert our_chromium_processes(set(connector.browser_pids)) == []


async def test_budget_overrun_spares_other_job(pool, site):
    """Stopping one job closes its context, and a job sharing the browser keeps working."""
    assert our_chromium_processes(set()) == []
    quiet_page_ready = asyncio.Event()
    burner_stopped = asyncio.Event()
    outcome: dict[str, object] = {}

    async def quiet_job():
        async with pool.context(account="quiet") as context:
            page = await context.new_page()
            await page.goto(f"{site.url}login")
            outcome["session_ids"] = {pool.browser_pid}
            quiet_page_ready.set()
            await burner_stopped.wait()

            meter = UsageMeter(pool.processes)
            await asyncio.to_thread(meter.start)
            await asyncio.sleep(1.0)
            outcome["cpu_after_stop"] = (await asyncio.to_thread(meter.sample)).cpu_seconds
            await page.fill("#username", "ada")
            outcome["quiet_value"] = await page.input_value("#username")

    async def burner_job():
        await quiet_page_ready.wait()
        try:
            async with pool.context(account="burner", budget=BrowserBudget(max_cpu_seconds=2.0)) as context:
                page = await context.new_page()
                await page.goto(f"{site.url}burn-cpu?seconds=40", wait_until="commit")
                await asyncio.sleep(40)
        except BrowserBudgetExceeded as exc:
            outcome["burner_error"] = exc
        finally:
            burner_stopped.set()

    await asyncio.wait_for(asyncio.gather(quiet_job(), burner_job()), timeout=60)

    assert isinstance(outcome["burner_error"], BrowserBudgetExceeded)
    assert "account 'burner'" in str(outcome["burner_error"])
    assert outcome["quiet_value"] == "ada"
    # The busy renderer went with the burner's context: the browser is nearly idle afterwards.
    assert outcome["cpu_after_stop"] < 0.5
    assert pool.launches == 1
    assert our_chromium_processes(outcome["session_ids"]) == []


async def test_stuck_context_close_stops_browser(pool, site, monkeypatch):
    """A context that does not close in time takes the browser down, and the other job ends with BrowserCrashed."""
    assert our_chromium_processes(set()) == []
    monkeypatch.setattr("warden.sessions.browser.CONTEXT_CLOSE_TIMEOUT_SECONDS", 0)
    first_done = asyncio.Event()
    outcome: dict[str, object] = {}

    async def first_job():
        try:
            async with pool.context(account="first") as context:
                page = await context.new_page()
                await page.goto(f"{site.url}login")
                outcome["session_ids"] = {pool.browser_pid}
        finally:
            first_done.set()

    async def second_job():
        try:
            async with pool.context(account="second") as context:
                page = await context.new_page()
                await page.goto(f"{site.url}login")
                await first_done.wait()
                await asyncio.sleep(30)
        except BrowserCrashed as exc:
            outcome["second_error"] = exc

    await asyncio.wait_for(asyncio.gather(first_job(), second_job()), timeout=60)

    assert isinstance(outcome["second_error"], BrowserCrashed)
    assert "account 'second'" in str(outcome["second_error"])
    assert pool.launches == 1
    assert pool.running is False
    assert our_chromium_processes(outcome["session_ids"]) == []
