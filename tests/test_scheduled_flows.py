"""The scheduled flows on the real stack: session rotation, browser smoke test and browser version check.

Two accounts, each with its own mail user, because Roundcube fails one of two
concurrent first logins of the same user (both insert the user's row in its
users table). ``sched-near`` declares a session lifetime of 120 s, so its
forecast is always within the 300 s rotation margin the tests pass.
``sched-fresh`` declares 3600 s, so its forecast stays outside it. Only the
forecast reads these lifetimes. Roundcube's own lifetime is ten minutes here.
"""

from __future__ import annotations

import imaplib
import json
import logging
import os
from datetime import UTC, datetime, timedelta

import httpx
import hvac
import pytest
import pytest_asyncio
from pydantic import SecretStr

from flows.rotate import AccountsFailed, decide_rotation
from stack.testing import worker_environment
from warden.store.documents import StoredSession

NEAR = "sched-near"
FRESH = "sched-fresh"
GHOST = "sched-ghost"
MAIL_USERS = {NEAR: "sched-near-user", FRESH: "sched-fresh-user"}
MAIL_PASSWORD = "sched-Password-4410"
MARGIN_SECONDS = 300.0
SEEDED_MESSAGES = 3

stack = pytest.mark.stack
browser = pytest.mark.browser


# -- rotation decision, without servers ---------------------------------------------

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def stored(expires_in_seconds: float | None, captured_seconds_ago: float = 60.0) -> StoredSession:
    return StoredSession(
        account="a",
        version=3,
        ciphertext="vault:v1:x",
        captured_at=NOW - timedelta(seconds=captured_seconds_ago),
        saved_at=NOW,
        last_valid_at=NOW,
        expires_at=None if expires_in_seconds is None else NOW + timedelta(seconds=expires_in_seconds),
        forecast_source=None if expires_in_seconds is None else "sliding",
        source="probe",
    )


@pytest.mark.parametrize(
    ("session", "recapture", "action"),
    [
        (None, True, "captured"),
        (stored(expires_in_seconds=-5), True, "rotated"),
        (stored(expires_in_seconds=299), True, "rotated"),
        (stored(expires_in_seconds=300), True, "rotated"),
        (stored(expires_in_seconds=301), False, "skipped"),
        (stored(expires_in_seconds=None, captured_seconds_ago=3600), True, "rotated"),
        (stored(expires_in_seconds=None, captured_seconds_ago=3599), False, "skipped"),
    ],
    ids=["missing", "expired", "within-margin", "at-margin", "outside-margin", "old-no-forecast", "young-no-forecast"],
)
def test_rotation_decision(session, recapture, action):
    decision = decide_rotation(session, now=NOW, margin_seconds=300, max_age_seconds=3600)
    assert decision.recapture is recapture
    assert decision.action == action
    assert decision.reason


def test_rotation_decision_ignores_probe_saves_for_age():
    # A probe saves a new version of an old login: saved_at is recent, captured_at is not.
    session = stored(expires_in_seconds=None, captured_seconds_ago=7200)
    assert decide_rotation(session, now=NOW, margin_seconds=300, max_age_seconds=3600).recapture is True


# -- fixtures on the real stack ---------------------------------------------------------


@pytest.fixture(scope="module")
def flows_env(openbao_server, mail_server, prefect_server, tmp_path_factory):
    """Give this module a worker's environment, with the store in a temporary WARDEN_HOME, and restore it after."""
    with worker_environment(tmp_path_factory.mktemp("warden-home-scheduled")) as home:
        yield home


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def accounts(flows_env, openbao_server, mail_server):
    """The vault runner, two mail users with unread messages, and the two registered accounts."""
    from flows.registration import register_account, set_up_vault

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    for user in MAIL_USERS.values():
        mail_server.add_user(user, MAIL_PASSWORD)
        for number in range(1, SEEDED_MESSAGES + 1):
            raw = (
                f"From: sender@warden.test\r\nTo: {user}@warden.test\r\n"
                f"Subject: Scheduled flows message {number}\r\nMessage-ID: <sched-{number}@warden.test>\r\n\r\n"
                f"Body {number}.\r\n"
            ).encode()
            mail_server.append_message(user, MAIL_PASSWORD, raw)

    for name, lifetime_seconds in ((NEAR, 120.0), (FRESH, 3600.0)):
        await register_account(
            name,
            admin=admin,
            base_url=mail_server.roundcube_url,
            username=MAIL_USERS[name],
            password=SecretStr(MAIL_PASSWORD),
            session_lifetime_seconds=lifetime_seconds,
        )
    return [NEAR, FRESH]


def documents():
    from warden.store import default_document_store

    return default_document_store()


async def artifact_data(flow_run_id, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    assert len(found) == 1, f"expected one artifact {key!r} of flow run {flow_run_id}, found {len(found)}"
    data = found[0].data
    return json.loads(data) if found[0].type == "table" and isinstance(data, str) else data


async def open_library_run(account: str):
    """Build a SyncRun for the test itself, whose events are logged instead of sent to Prefect."""
    from flows.sync import load_account
    from warden.credentials.vault import VaultClient
    from warden.run import SyncRun

    config, vault_block = await load_account(account)
    return SyncRun(config, vault=VaultClient(vault_block.settings()), documents=documents())


async def load_session(account: str):
    from warden import steps
    from warden.credentials.policies import Action

    run = await open_library_run(account)
    wrapped = steps.issue_token(run, Action.PROBE)
    try:
        return run, run.sessions.load(run.token_for(wrapped))
    finally:
        steps.wipe(run)


# -- rotation -----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_rotation(accounts):
    from flows.rotate import rotate_sessions

    return await rotate_sessions(accounts, margin_seconds=MARGIN_SECONDS)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def second_rotation(first_rotation):
    from flows.rotate import rotate_sessions

    before = {name: documents().latest_session(name) for name in (NEAR, FRESH)}
    state = await rotate_sessions([NEAR, FRESH, GHOST], margin_seconds=MARGIN_SECONDS, return_state=True)
    return before, state


@stack
@pytest.mark.asyncio(loop_scope="session")
async def test_registered_accounts_lists_blocks(accounts):
    from blocks.account import registered_account_names as registered_accounts

    names = await registered_accounts()
    assert {NEAR, FRESH} <= set(names)
    assert names == sorted(names)


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_rotation_captures_missing_sessions(first_rotation):
    rows = {row.account: row for row in first_rotation}
    assert set(rows) == {NEAR, FRESH}
    for name in (NEAR, FRESH):
        assert rows[name].action == "captured"
        assert rows[name].old_version is None
        assert rows[name].new_version == 1
        assert documents().latest_session(name).source == "rotation"


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_rotation_recaptures_near_expiry(second_rotation):
    before, state = second_rotation
    error = await state.aresult(raise_on_failure=False)
    assert isinstance(error, AccountsFailed)
    rows = {row.account: row for row in error.rows}

    assert rows[NEAR].action == "rotated"
    assert "within the 300 s margin" in rows[NEAR].reason
    assert rows[NEAR].old_version == before[NEAR].version
    assert rows[NEAR].new_version == before[NEAR].version + 1
    newest = documents().latest_session(NEAR)
    assert newest.version == rows[NEAR].new_version
    assert newest.source == "rotation"
    assert newest.captured_at > before[NEAR].captured_at


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_rotation_skips_fresh_session(second_rotation):
    before, state = second_rotation
    rows = {row.account: row for row in (await state.aresult(raise_on_failure=False)).rows}

    assert rows[FRESH].action == "skipped"
    assert rows[FRESH].new_version is None
    assert documents().latest_session(FRESH).version == before[FRESH].version


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_rotation_failure_names_account(second_rotation):
    _, state = second_rotation
    assert state.is_failed()
    error = await state.aresult(raise_on_failure=False)
    assert error.failures.keys() == {GHOST}
    assert f"'{GHOST}'" in str(error)
    assert "warden account add" in error.failures[GHOST]
    assert {row.account: row.action for row in error.rows}[GHOST] == "failed"


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_rotation_publishes_table(second_rotation):
    _, state = second_rotation
    table = await artifact_data(state.state_details.flow_run_id, "session-rotation")
    actions = {row["account"]: row["action"] for row in table}
    assert actions == {NEAR: "rotated", FRESH: "skipped", GHOST: "failed"}
    assert all("old_expires_at" in row and "new_version" in row for row in table)


# -- smoke test -----------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def logged_out(second_rotation, mail_server):
    """Log FRESH's saved session out at Roundcube, so the server has destroyed it."""
    from warden.connectors.base import ProbeState

    run, loaded = await load_session(FRESH)
    request_token = loaded.state.extras["request_token"]
    async with httpx.AsyncClient(base_url=mail_server.roundcube_url, cookies=loaded.state.cookie_jar()) as client:
        response = await client.get("", params={"_task": "logout", "_token": request_token})
    assert response.status_code in (200, 302)

    result, _ = await run.connector.probe(loaded.state)
    assert result.state == ProbeState.EXPIRED, "the logout should have destroyed the session"
    return documents().latest_session(FRESH).version


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def smoke(logged_out):
    from flows.smoke import smoke_test_sessions

    before = documents().latest_session(NEAR).version
    state = await smoke_test_sessions([NEAR, FRESH], return_state=True)
    return before, state


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_smoke_ok_for_valid_session(smoke):
    before, state = smoke
    error = await state.aresult(raise_on_failure=False)
    rows = {row.account: row for row in error.rows}

    assert rows[NEAR].result == "ok"
    assert rows[NEAR].seconds > 0
    assert rows[NEAR].new_version == before + 1
    newest = documents().latest_session(NEAR)
    assert newest.version == before + 1
    assert newest.source == "smoke"


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_smoke_reports_logged_out_session(smoke, logged_out):
    _, state = smoke
    assert state.is_failed()
    error = await state.aresult(raise_on_failure=False)
    rows = {row.account: row for row in error.rows}

    assert error.failures.keys() == {FRESH}
    assert rows[FRESH].result == "logged-out"
    assert "login form" in rows[FRESH].detail
    assert rows[FRESH].new_version is None
    assert documents().latest_session(FRESH).version == logged_out


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_smoke_publishes_table(smoke):
    _, state = smoke
    table = await artifact_data(state.state_details.flow_run_id, "session-smoke-test")
    assert {row["account"]: row["result"] for row in table} == {NEAR: "ok", FRESH: "logged-out"}


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_smoke_saved_state_still_works(smoke):
    from warden import steps
    from warden.connectors.base import ProbeState
    from warden.credentials.policies import Action

    run = await open_library_run(NEAR)
    wrapped = steps.issue_token(run, Action.PROBE)
    try:
        result = await steps.probe(run, wrapped)
    finally:
        steps.wipe(run)
    assert result.state in (ProbeState.VALID, ProbeState.EXPIRING)


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("account", [NEAR, FRESH])
async def test_smoke_leaves_mailbox_unread(smoke, mail_server, account):
    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port) as imap:
        imap.login(MAIL_USERS[account], MAIL_PASSWORD)
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("1:*", "(FLAGS)")
    assert status == "OK"
    flags = [item for item in data if isinstance(item, bytes)]
    assert len(flags) == SEEDED_MESSAGES
    assert not any(b"\\Seen" in item for item in flags)


@stack
@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_smoke_without_session_fails(accounts, smoke, openbao_server, mail_server):
    from flows.registration import register_account
    from flows.smoke import smoke_test_sessions

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    await register_account(
        "sched-empty", admin=admin, base_url=mail_server.roundcube_url, username=MAIL_USERS[NEAR], password=None
    )
    state = await smoke_test_sessions(["sched-empty"], return_state=True)
    error = await state.aresult(raise_on_failure=False)
    assert isinstance(error, AccountsFailed)
    assert error.rows[0].result == "no-session"
    assert "warden sync sched-empty" in error.rows[0].detail


@browser
@pytest.mark.asyncio(loop_scope="session")
async def test_visit_refused_connection_unreachable():
    from flows.smoke import SMOKE_PAGES, visit_with_session
    from stack.ports import free_port
    from warden.errors import SiteUnreachable
    from warden.sessions.browser import BrowserPool
    from warden.sessions.state import SessionState

    closed_port = free_port()
    with pytest.raises(SiteUnreachable, match="ERR_CONNECTION_REFUSED"):
        await visit_with_session(
            BrowserPool(),
            SMOKE_PAGES["roundcube"],
            f"http://127.0.0.1:{closed_port}/",
            SessionState(),
            account="nowhere",
            timeout_seconds=30,
        )


# -- browser version check ------------------------------------------------------------------


def installed_chromium_version() -> str:
    import subprocess

    output = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, check=True).stdout
    return output.split()[1]


def playwright_browsers_json() -> dict:
    from pathlib import Path

    import playwright

    path = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    return {entry["name"]: entry for entry in json.loads(path.read_text())["browsers"]}


@stack
@pytest.mark.asyncio(loop_scope="session")
async def test_browser_check_returns_both_versions(prefect_server):
    from flows.browser_check import check_browser

    versions = await check_browser(max_major_drift=1000)
    assert versions.chromium_version == installed_chromium_version()
    assert versions.expected_version == playwright_browsers_json()["chromium"]["browserVersion"]
    assert versions.expected_revision == playwright_browsers_json()["chromium"]["revision"]
    assert versions.drifted is False


@stack
@pytest.mark.asyncio(loop_scope="session")
async def test_browser_check_warns_on_drift(prefect_server, caplog):
    from flows.browser_check import check_browser

    installed_major = int(installed_chromium_version().split(".")[0])
    fake_expected = f"{installed_major + 3}.0.1.2"
    caplog.set_level(logging.INFO)

    state = await check_browser(max_major_drift=0, expected_version=fake_expected, return_state=True)
    versions = await state.aresult()
    assert versions.major_drift == 3
    assert versions.drifted is True
    assert versions.expected_source == "parameter"

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any("browser.version_drift" in record.getMessage() for record in warnings)
    markdown = await artifact_data(state.state_details.flow_run_id, "browser-versions")
    assert "Warning" in markdown
    assert fake_expected in markdown


@stack
@pytest.mark.asyncio(loop_scope="session")
async def test_browser_check_quiet_when_matching(prefect_server, caplog):
    from flows.browser_check import check_browser

    caplog.set_level(logging.INFO)
    versions = await check_browser(max_major_drift=0, expected_version=installed_chromium_version())
    assert versions.major_drift == 0
    assert versions.drifted is False
    assert not [record for record in caplog.records if "browser.version_drift" in record.getMessage()]


@stack
@pytest.mark.asyncio(loop_scope="session")
async def test_browser_check_rejects_bad_version(prefect_server):
    from flows.browser_check import check_browser
    from warden.errors import ConfigError

    state = await check_browser(expected_version="latest", return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="159.0.8154.6"):
        await state.aresult()
