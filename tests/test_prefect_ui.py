"""The Prefect UI of a local server, driven with Chromium after a real sync.

A person who opens the sync's flow run in the UI finds its task runs, the
summary artifact, and the warden events of the account in the event feed.
"""

from __future__ import annotations

import os

import hvac
import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright, expect
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from stack.testing import worker_environment
from warden.demo.documents import build_demo_messages
from warden.demo.seed import seed_mailbox
from warden.sessions.browser import CHROMIUM_ARGS

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.ui]

ACCOUNT = "ui-mail"
MAIL_USER = "ui-user"
MAIL_PASSWORD = "ui-Password-3307"
CHROMIUM_PATH = "/usr/bin/chromium"
# The task runs of a first sync over the Roundcube path, which logs in with a browser.
SYNC_TASKS = {
    "issue-scoped-token",
    "probe-session",
    "refresh-session",
    "fetch-items",
    "extract-attachments",
    "wipe-tokens",
}
# The UI loads its data after the page; this bounds each wait for it.
UI_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def sync_env(openbao_server, mail_server, prefect_server, tmp_path_factory):
    """Environment of a worker: the store in a temporary WARDEN_HOME, the runner's secret id."""
    with worker_environment(tmp_path_factory.mktemp("warden-home-ui")) as home:
        yield home


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def synced_run_id(sync_env, openbao_server, mail_server) -> str:
    """Register an account with the demo mailbox, sync it once, and return the flow run's id."""
    from flows.registration import register_account, set_up_vault
    from flows.sync import connector_sync

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    mail_server.add_user(MAIL_USER, MAIL_PASSWORD)
    messages = build_demo_messages(to_address=f"{MAIL_USER}@warden.test", from_address="sender@warden.test")
    seed_mailbox(mail_server.imap_host, mail_server.imap_port, MAIL_USER, SecretStr(MAIL_PASSWORD), messages)
    await register_account(
        ACCOUNT,
        admin=admin,
        base_url=mail_server.roundcube_url,
        username=MAIL_USER,
        password=SecretStr(MAIL_PASSWORD),
        session_lifetime_seconds=mail_server.session_lifetime_minutes * 60,
    )

    state = await connector_sync(ACCOUNT, return_state=True)
    assert state.is_completed(), state.message
    return str(state.state_details.flow_run_id)


@pytest_asyncio.fixture(loop_scope="session")
async def page(prefect_server):
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=list(CHROMIUM_ARGS))
        context = await browser.new_context(base_url=prefect_server.ui_url, viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield await context.new_page()
        finally:
            await browser.close()


async def open_flow_run(page: Page, flow_run_id: str, flow_run_name: str) -> None:
    await page.goto(f"runs/flow-run/{flow_run_id}")
    await expect(page.get_by_text(flow_run_name, exact=True).first).to_be_visible()
    await expect(page.get_by_text("Completed", exact=True).first).to_be_visible()


@pytest.mark.asyncio(loop_scope="session")
async def test_flow_run_shows_task_runs(page: Page, synced_run_id: str) -> None:
    async with get_client() as client:
        flow_run = await client.read_flow_run(synced_run_id)
    await open_flow_run(page, synced_run_id, flow_run.name)

    await page.get_by_role("tablist").get_by_text("Task Runs", exact=True).click()
    task_runs = page.locator("#task-runs-content")
    for task_name in sorted(SYNC_TASKS):
        # Task run names are the task name and a suffix, e.g. "probe-session-a1b".
        await expect(task_runs.get_by_text(task_name).first, f"task run {task_name}").to_be_visible()


@pytest.mark.asyncio(loop_scope="session")
async def test_flow_run_shows_summary_artifact(page: Page, synced_run_id: str) -> None:
    async with get_client() as client:
        flow_run = await client.read_flow_run(synced_run_id)
    await open_flow_run(page, synced_run_id, flow_run.name)

    await page.get_by_role("tablist").get_by_text("Artifacts", exact=True).click()
    artifacts = page.locator("#artifacts-content")
    await expect(artifacts.get_by_text(f"sync-{ACCOUNT}", exact=True).first).to_be_visible()


@pytest.mark.asyncio(loop_scope="session")
async def test_event_feed_shows_account_events(page: Page, synced_run_id: str) -> None:
    await page.goto("events")

    await expect(page.get_by_text("warden.session.probed").first).to_be_visible()
    await expect(page.get_by_text("warden.token.revoked").first).to_be_visible()
