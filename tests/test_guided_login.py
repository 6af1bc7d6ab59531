"""Guided and manual login on the real stack: OpenBao, Dovecot + Roundcube, Chromium, a Prefect server.

The guided logins run in a separate worker process, as a deployment's worker
runs them, and pause. This process plays the person in the Prefect UI: it
waits until each run is Paused and resumes it with
``resume_flow_run(flow_run_id, run_input=...)``.
The manual login runs ``warden login`` under Xvfb, and this process plays the
person at the window through Chromium's DevTools protocol.

Every account's mail user has one password at the site; what the vault holds
for it differs per case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import hvac
import pytest
import pytest_asyncio
from pydantic import SecretStr

from stack.testing import worker_environment

pytestmark = [pytest.mark.stack, pytest.mark.browser]

REPO_DIR = Path(__file__).resolve().parent.parent
PAUSE_WAIT_SECONDS = 60
RUN_WAIT_SECONDS = 90
# A run that a test failed to resume must not wait an hour for input.
INPUT_TIMEOUT_SECONDS = 150

# account: (password at the site, password stored in the vault)
ACCOUNTS = {
    "gl-new": ("gl-new-Site-4471", "gl-new-Outdated-0001"),
    "gl-wrong": ("gl-wrong-Site-8812", "gl-wrong-Outdated-0002"),
    "gl-code": ("gl-code-Site-3390", "gl-code-Site-3390"),
    "gl-empty": ("gl-empty-Site-5120", "gl-empty-Site-5120"),
    "gl-hand": ("gl-hand-Site-6603", "gl-hand-Outdated-0003"),
}
GUIDED_ACCOUNTS = ("gl-new", "gl-wrong", "gl-code", "gl-empty")
WRONG_NEW_PASSWORD = "gl-wrong-Mistyped-7777"
DEFAULT_UI_API_URL = "http://127.0.0.1:4200/api"

# One worker process runs every case's guided login at once, so Prefect and Playwright are imported once.
GUIDED_LOGIN_SCRIPT = """
import asyncio, json, sys
from flows.login import guided_login

async def main(timeout_seconds, accounts):
    states = await asyncio.gather(*(
        guided_login(account, reason="test: password changed", input_timeout_seconds=timeout_seconds, return_state=True)
        for account in accounts
    ))
    for account, state in zip(accounts, states):
        result = await state.aresult(raise_on_failure=False)
        outcome = result.model_dump(mode="json") if state.is_completed() else {"error": str(result)}
        print(json.dumps({"account": account, "state": state.type.value, **outcome}), flush=True)

asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
"""


def mail_user(account: str) -> str:
    return f"{account}-user"


@pytest.fixture(scope="module")
def login_env(openbao_server, mail_server, prefect_server, tmp_path_factory):
    """Environment of a worker: the store in a temporary WARDEN_HOME, the runner's secret id."""
    with worker_environment(tmp_path_factory.mktemp("warden-home")) as home:
        yield home


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registered(login_env, openbao_server, mail_server):
    """The vault runner, one mail user per account, and the accounts with their vault passwords."""
    from flows.registration import register_account, set_up_vault

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    for account, (site_password, stored_password) in ACCOUNTS.items():
        mail_server.add_user(mail_user(account), site_password)
        await register_account(
            account,
            admin=admin,
            base_url=mail_server.roundcube_url,
            username=mail_user(account),
            password=SecretStr(stored_password),
            session_lifetime_seconds=mail_server.session_lifetime_minutes * 60,
        )

    # Create the store's schema here: processes that open a new SQLite store at the same moment race to create it.
    document_store()
    return admin


def stored_password(admin: hvac.Client, account: str) -> str:
    secret = admin.secrets.kv.v2.read_secret_version(path=f"connectors/{account}", raise_on_deleted_version=True)
    return secret["data"]["data"]["password"]


def document_store():
    from warden.store import default_document_store

    return default_document_store()


async def probe_saved_session(account: str):
    """Probe the account's newest saved session the way a sync does, and revoke the token used."""
    from flows.sync import load_account
    from warden import steps
    from warden.credentials.policies import Action
    from warden.credentials.vault import VaultClient
    from warden.run import SyncRun

    config, vault_block = await load_account(account)
    run = SyncRun(config, vault=VaultClient(vault_block.settings()), documents=document_store())
    try:
        return await steps.probe(run, steps.issue_token(run, Action.PROBE))
    finally:
        steps.wipe(run)


async def paused_guided_runs(accounts: set[str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["guided-login"])))
    return {
        run.parameters["account"]: str(run.id)
        for run in runs
        if run.parameters.get("account") in accounts and run.state is not None and run.state.is_paused()
    }


async def read_flow_run(flow_run_id: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(UUID(flow_run_id))


class GuidedWorker:
    """A process running the guided logins of ``GUIDED_ACCOUNTS``, with its output in files."""

    def __init__(self, directory: Path) -> None:
        self.stdout_path = directory / "worker.out"
        self.stderr_path = directory / "worker.err"
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-c", GUIDED_LOGIN_SCRIPT, str(INPUT_TIMEOUT_SECONDS), *GUIDED_ACCOUNTS],
                cwd=REPO_DIR,
                env={**os.environ, "PREFECT_LOGGING_EXTRA_LOGGERS": "warden"},
                stdout=stdout,
                stderr=stderr,
            )
        self.flow_run_ids: dict[str, str] = {}

    @property
    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def outcomes(self) -> dict[str, dict]:
        """Return each account's final state and summary or error, as the worker printed them."""
        lines = [json.loads(line) for line in self.stdout_path.read_text().splitlines() if line.startswith("{")]
        return {line["account"]: line for line in lines}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def guided(registered, tmp_path_factory):
    """The guided logins of every case, run by one worker process, all paused waiting for input."""
    worker = GuidedWorker(tmp_path_factory.mktemp("guided-worker"))
    try:
        deadline = time.monotonic() + PAUSE_WAIT_SECONDS
        while True:
            paused = await paused_guided_runs(set(GUIDED_ACCOUNTS))
            if len(paused) == len(GUIDED_ACCOUNTS):
                break
            assert worker.process.poll() is None, f"the guided login worker exited early:\n{worker.output}"
            assert time.monotonic() < deadline, f"only {sorted(paused)} paused within {PAUSE_WAIT_SECONDS} s"
            await asyncio.sleep(0.5)

        worker.flow_run_ids = paused
        yield worker
    finally:
        worker.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def resumed(guided):
    """Every guided login resumed once with its case's input and finished; values are the worker's outcomes."""
    from prefect.flow_runs import resume_flow_run

    inputs = {
        "gl-new": {"new_password": ACCOUNTS["gl-new"][0]},
        "gl-wrong": {"new_password": WRONG_NEW_PASSWORD},
        "gl-code": {"one_time_code": "123456"},
        "gl-empty": {},
    }
    for account, run_input in inputs.items():
        flow_run_id = guided.flow_run_ids[account]
        # test_prefect_ui_form_resumes_run may have resumed this one already, through the form.
        if (await read_flow_run(flow_run_id)).state.is_paused():
            await resume_flow_run(UUID(flow_run_id), run_input=run_input)

    await asyncio.to_thread(guided.process.wait, RUN_WAIT_SECONDS)
    outcomes = guided.outcomes()
    assert set(outcomes) == set(inputs), guided.output
    return outcomes


# -- while paused ----------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_paused_form_tells_what_to_do(guided):
    from prefect.client.orchestration import get_client

    flow_run_id = UUID(guided.flow_run_ids["gl-new"])
    async with get_client() as client:
        description = json.loads(await client.read_flow_run_input(flow_run_id, "paused-login-input-description"))
        schema = json.loads(await client.read_flow_run_input(flow_run_id, "paused-login-input-schema"))

    assert "one-time code" in description.lower()
    assert "new password" in description.lower()
    assert "warden login gl-new" in description
    assert "password changed" in description
    assert set(schema["properties"]) == {"one_time_code", "new_password"}
    for field in ("one_time_code", "new_password"):
        assert schema["properties"][field]["type"] == "string"
        assert schema["properties"][field]["format"] == "password"
        assert "default" not in schema["properties"][field]
    assert "required" not in schema


@pytest.mark.asyncio(loop_scope="session")
async def test_invalid_input_leaves_run_paused(guided):
    flow_run_id = guided.flow_run_ids["gl-empty"]
    url = f"{os.environ['PREFECT_API_URL']}/flow_runs/{flow_run_id}/resume"

    async with httpx.AsyncClient(timeout=30) as client:
        misspelled = await client.post(url, json={"run_input": {"password": ACCOUNTS["gl-empty"][0]}})
        wrong_type = await client.post(url, json={"run_input": {"new_password": 5120}})

    for response in (misspelled, wrong_type):
        assert response.status_code == 200
        assert response.json()["status"] == "REJECT"
    assert "'password' was unexpected" in misspelled.json()["details"]["reason"]
    assert "new_password" in wrong_type.json()["details"]["reason"]

    flow_run = await read_flow_run(flow_run_id)
    assert flow_run.state.is_paused()
    assert guided.process.poll() is None


@pytest.mark.ui
@pytest.mark.asyncio(loop_scope="session")
async def test_prefect_ui_form_resumes_run(guided, prefect_server):
    """A person opens the paused run in the Prefect UI, types a one-time code in the form and submits."""
    from playwright.async_api import Route, async_playwright

    from warden.sessions.browser import CHROMIUM_ARGS

    api_url = prefect_server.api_url.rstrip("/")
    flow_run_id = guided.flow_run_ids["gl-code"]
    resume_bodies = []

    async def send_to_test_server(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname != "127.0.0.1":
            # Nothing leaves the machine, whatever the UI tries to load.
            await route.abort()
            return
        if url.endswith("/resume"):
            resume_bodies.append(json.loads(route.request.post_data))
        if not url.startswith(DEFAULT_UI_API_URL):
            await route.continue_()
            return

        # A UI told no API address calls the default one, 127.0.0.1:4200, which is not this server.
        await route.fulfill(response=await route.fetch(url=url.replace(DEFAULT_UI_API_URL, api_url)))

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=list(CHROMIUM_ARGS))
        try:
            page = await browser.new_page(viewport={"width": 1300, "height": 1000})
            await page.route("**/*", send_to_test_server)
            await page.goto(f"{prefect_server.ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}")
            await page.get_by_role("button", name="Resume").click()

            dialog = page.get_by_role("dialog")
            await dialog.get_by_text("needs a person to log in").wait_for()
            assert "warden login gl-code" in await dialog.inner_text()
            await dialog.locator("textarea").first.fill("123456")
            # The server's reply, not the UI's toast, which disappears after a few seconds.
            async with page.expect_response(lambda response: response.url.endswith("/resume")) as resumed:
                await dialog.get_by_role("button", name="Submit").click()
            resume_response = await resumed.value
        finally:
            await browser.close()

    assert resume_response.ok
    assert resume_bodies == [{"run_input": {"one_time_code": "123456"}}]
    assert not (await read_flow_run(flow_run_id)).state.is_paused()


# -- after one resume each -------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_new_password_stored_and_session_valid(resumed, guided, registered):
    outcome = resumed["gl-new"]
    assert outcome["state"] == "COMPLETED", outcome
    assert outcome["method"] == "new-password"
    assert outcome["password_stored"] is True
    assert outcome["probe"] == "valid"

    assert stored_password(registered, "gl-new") == ACCOUNTS["gl-new"][0]
    assert document_store().latest_session("gl-new").source == "guided-login"
    probe = await probe_saved_session("gl-new")
    assert probe.state.value == "valid"


@pytest.mark.asyncio(loop_scope="session")
async def test_run_input_deleted_from_prefect(resumed, guided):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    async with get_client() as client:
        for account in GUIDED_ACCOUNTS:
            flow_run_id = UUID(guided.flow_run_ids[account])
            left = await client.filter_flow_run_input(flow_run_id, key_prefix="", limit=100, exclude_keys=set())
            assert left == [], f"{account}: {[item.key for item in left]}"
            with pytest.raises(PrefectHTTPStatusError) as caught:
                await client.read_flow_run_input(flow_run_id, "paused-login-input-response")
            assert caught.value.response.status_code == 404


@pytest.mark.asyncio(loop_scope="session")
async def test_passwords_absent_from_logs(resumed, guided):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flow_run_ids = [UUID(flow_run_id) for flow_run_id in guided.flow_run_ids.values()]
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
    text = "\n".join(log.message for log in logs) + guided.output

    assert "login.done account=gl-new" in text
    for secret in (ACCOUNTS["gl-new"][0], WRONG_NEW_PASSWORD, ACCOUNTS["gl-code"][0], ACCOUNTS["gl-new"][1]):
        assert secret not in text


@pytest.mark.asyncio(loop_scope="session")
async def test_every_token_revoked(resumed, registered):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        for account, expected_actions in (("gl-new", ["store-password", "probe"]), ("gl-code", ["refresh", "probe"])):
            assert resumed[account]["tokens_issued"] == len(expected_actions)
            assert resumed[account]["tokens_revoked"] == len(expected_actions)
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"guided-login-{account}-revocations"]))
            )
            assert len(artifacts) == 1
            proofs = json.loads(artifacts[0].data)
            assert [proof["action"] for proof in proofs] == expected_actions
            for proof in proofs:
                assert proof["proven"] is True
                with pytest.raises(hvac.exceptions.InvalidRequest):
                    registered.auth.token.lookup_accessor(proof["accessor"])


@pytest.mark.asyncio(loop_scope="session")
async def test_wrong_password_fails_once(resumed, guided, registered):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    assert resumed["gl-wrong"]["state"] == "FAILED"
    flow_run_id = UUID(guided.flow_run_ids["gl-wrong"])
    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        states = await client.read_flow_run_states(flow_run_id)
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    message = flow_run.state.message
    assert "rejected the new password" in message
    assert "still holds the previous password" in message
    assert "prefect deployment run guided-login/guided-login -p account=gl-wrong" in message
    # One run up to the pause and one after the resume, with no retry state in between.
    assert [state.name for state in states] == ["Pending", "Running", "Paused", "Running", "Failed"]

    logins = [task_run for task_run in task_runs if task_run.name.startswith("log-in-once")]
    assert len(logins) == 1
    assert logins[0].run_count == 1
    assert logins[0].state.is_failed()

    assert stored_password(registered, "gl-wrong") == ACCOUNTS["gl-wrong"][1]
    assert document_store().latest_session("gl-wrong") is None


@pytest.mark.asyncio(loop_scope="session")
async def test_wrong_password_emits_login_required_again(resumed):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    event_filter = EventFilter(
        event=EventNameFilter(name=["warden.login.required"]),
        resource=EventResourceFilter(id=["warden.account.gl-wrong"]),
    )
    # The server stores events in batches, so an event can take a few seconds to show up.
    deadline = time.monotonic() + 20
    while True:
        async with get_client() as client:
            page = await client.read_events(filter=event_filter, limit=50)
        stages = sorted(event.payload.get("stage") for event in page.events)
        if len(stages) >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert stages == ["login-failed", "waiting-for-input"]


@pytest.mark.asyncio(loop_scope="session")
async def test_one_time_code_uses_stored_password(resumed, registered):
    outcome = resumed["gl-code"]
    assert outcome["state"] == "COMPLETED", outcome
    assert outcome["method"] == "one-time-code"
    assert outcome["password_stored"] is False
    assert stored_password(registered, "gl-code") == ACCOUNTS["gl-code"][1]
    assert document_store().latest_session("gl-code").source == "guided-login"


@pytest.mark.asyncio(loop_scope="session")
async def test_empty_input_fails_with_message(resumed):
    outcome = resumed["gl-empty"]
    assert outcome["state"] == "FAILED"
    assert "neither a one-time code nor a new password" in outcome["error"]
    assert "fill in at least one field" in outcome["error"]
    assert document_store().latest_session("gl-empty") is None


def test_store_password_token_writes_only(registered):
    from blocks.vault import VaultConnection
    from warden.credentials.policies import AccountPaths, Action
    from warden.credentials.vault import VaultClient
    from warden.errors import VaultDenied

    paths = AccountPaths(
        account="gl-code",
        kv_mount="secret",
        login_secret_path="connectors/gl-code",
        transit_mount="transit",
        session_key="session-gl-code",
    )
    vault = VaultClient(VaultConnection.load("default").settings())
    try:
        wrapped = vault.issue(paths, Action.STORE_PASSWORD, ttl_seconds=30)
        token = vault.unwrap(wrapped)
        with pytest.raises(VaultDenied):
            vault.read_login_secret(token, paths)
        other = dataclasses.replace(paths, account="gl-new", login_secret_path="connectors/gl-new")
        with pytest.raises(VaultDenied):
            vault.write_login_secret(token, other, {"password": SecretStr("not-for-this-token")})
        assert stored_password(registered, "gl-new") != "not-for-this-token"
        assert vault.revoke_and_prove(wrapped).proven
    finally:
        vault.logout()


# -- starting a guided login -------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_start_without_deployment_returns_none(registered, caplog):
    from flows.login import start_guided_login

    with caplog.at_level("WARNING", logger="warden.flows"):
        assert await start_guided_login("gl-new") is None
    assert "prefect deployment run guided-login/guided-login -p account=gl-new" in caplog.text


@pytest.mark.asyncio(loop_scope="session")
async def test_start_with_deployment_runs_once(registered):
    from prefect.client.orchestration import get_client

    from flows.login import start_guided_login

    async with get_client() as client:
        flow_id = await client.create_flow_from_name("guided-login")
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name="guided-login", entrypoint="flows/login.py:guided_login"
        )
    try:
        first = await start_guided_login("gl-new", reason="test")
        second = await start_guided_login("gl-new")
        other = await start_guided_login("gl-code")

        assert first is not None
        assert second == first
        assert other not in (None, first)
        flow_run = await read_flow_run(first)
        assert flow_run.parameters == {"account": "gl-new", "reason": "test"}
        assert flow_run.state.is_scheduled()
    finally:
        async with get_client() as client:
            for flow_run_id in {first, other} - {None}:
                await client.delete_flow_run(UUID(flow_run_id))
            await client.delete_deployment(deployment_id)


# -- warden login ----------------------------------------------------------------


def test_warden_login_without_display():
    environment = {name: value for name, value in os.environ.items() if name not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run(
        [sys.executable, "-m", "warden.cli", "login", "gl-hand"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_DIR,
        env={**environment, "WARDEN_STACK_DIR": "/nonexistent"},
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "No display" in message
    assert "guided-login/guided-login" in message
    assert "account=gl-hand" in message
    assert "one-time code or a new password" in message


@pytest.fixture
def xvfb_display():
    """Start Xvfb on a free display number without a TCP listener; yield the DISPLAY value."""
    program = shutil.which("Xvfb")
    if program is None:
        pytest.skip("Xvfb is not installed (Debian package xvfb)")

    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [program, "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "1280x800x24"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as pipe:
            number = pipe.readline().strip()
        assert number, "Xvfb did not report its display number"
        yield f":{number}"
    finally:
        process.terminate()
        process.wait(10)


def start_warden_login(account: str, display: str, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "warden.cli", "login", account, "--timeout-seconds", "60"]
    return subprocess.Popen(
        [*command, "--remote-debugging-port", str(port)],
        cwd=REPO_DIR,
        env={**os.environ, "DISPLAY": display, "WARDEN_STACK_DIR": "/nonexistent"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def login_window_page(playwright, process: subprocess.Popen, port: int):
    """Connect to the window of ``warden login`` through its DevTools port; return its page once the form shows."""
    from playwright.async_api import Error as PlaywrightError

    deadline = time.monotonic() + 30
    while True:
        try:
            browser = await playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
            break
        except PlaywrightError:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the login window never served the DevTools protocol"
            await asyncio.sleep(0.25)

    page = next(page for context in browser.contexts for page in context.pages)
    await page.wait_for_selector("#rcmloginuser", timeout=15_000)
    return page


async def finish_warden_login(process: subprocess.Popen) -> tuple[str, str]:
    try:
        return await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.mark.asyncio(loop_scope="session")
async def test_warden_login_by_hand(registered, xvfb_display):
    from playwright.async_api import async_playwright

    from stack.ports import free_port

    port = free_port()
    process = start_warden_login("gl-hand", xvfb_display, port)
    try:
        async with async_playwright() as playwright:
            # The person: type the user name and password into the window and submit.
            page = await login_window_page(playwright, process, port)
            await page.fill("#rcmloginuser", mail_user("gl-hand"))
            await page.fill("#rcmloginpwd", ACCOUNTS["gl-hand"][0])
            await page.click("#rcmloginsubmit")
    finally:
        stdout, stderr = await finish_warden_login(process)

    assert process.returncode == 0, stderr
    assert "Session of account 'gl-hand' saved" in " ".join(stdout.split())
    assert document_store().latest_session("gl-hand").source == "manual-login"
    probe = await probe_saved_session("gl-hand")
    assert probe.state.value == "valid"


@pytest.mark.asyncio(loop_scope="session")
async def test_warden_login_window_closed(registered, xvfb_display):
    from playwright.async_api import async_playwright

    from stack.ports import free_port

    port = free_port()
    process = start_warden_login("gl-hand", xvfb_display, port)
    try:
        async with async_playwright() as playwright:
            page = await login_window_page(playwright, process, port)
            await page.close()
    finally:
        _stdout, stderr = await finish_warden_login(process)

    assert process.returncode == 1
    message = " ".join(stderr.split())
    assert "was closed before the login was complete" in message
    assert "warden login gl-hand" in message


@pytest.mark.asyncio(loop_scope="session")
async def test_session_by_hand_fetches_messages(registered, mail_server):
    from email.message import EmailMessage

    from flows.sync import sync_and_summarize

    if document_store().latest_session("gl-hand") is None:
        pytest.skip("needs the session test_warden_login_by_hand saves")
    message = EmailMessage()
    message["From"] = "sender@warden.test"
    message["To"] = f"{mail_user('gl-hand')}@warden.test"
    message["Subject"] = "After a login by hand"
    message.set_content("Fetched with the session a person captured.")
    mail_server.append_message(mail_user("gl-hand"), ACCOUNTS["gl-hand"][0], message.as_bytes())

    completed, summary = await sync_and_summarize("gl-hand")
    assert completed, summary["error"]
    assert summary["messages_seen"] == 1
