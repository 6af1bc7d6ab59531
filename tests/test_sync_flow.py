"""connector_sync end to end on the real stack: OpenBao, Dovecot + Roundcube, Chromium, Prefect.

The account is seeded with the generated demo documents. The first sync has no
saved session, so it logs in with Chromium; the second replays the session
over HTTP and finds nothing new.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import hvac
import psutil
import pytest
import pytest_asyncio
from pydantic import SecretStr

from stack.testing import worker_environment
from warden.demo.documents import build_demo_documents, build_demo_messages
from warden.demo.seed import seed_mailbox
from warden.errors import AccountNotFound, LoginFailed

pytestmark = [pytest.mark.stack, pytest.mark.browser]

# Files changed before this module's first fixture ran are not scanned for secrets, and only the
# secrets registered since then are looked for (other modules register fake ones of their own).
MODULE_STARTED = time.time()
SECRETS_BEFORE: set[str] = set()

ACCOUNT = "e2e"
WRONG_PASSWORD_ACCOUNT = "e2e-wrong"
MAIL_USER = "e2e-user"
MAIL_PASSWORD = "e2e-Password-7781"


# Every process this test session starts inherits this marker, including Chromium helpers that get
# re-parented, so the count below ignores browsers that other programs on the machine run.
RUN_MARKER = f"warden-test-{uuid.uuid4().hex}"
os.environ["WARDEN_TEST_RUN_MARKER"] = RUN_MARKER


def chromium_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "exe"]):
        name = (process.info["name"] or "") + (process.info["exe"] or "")
        if "chrom" not in name:
            continue
        try:
            if process.environ().get("WARDEN_TEST_RUN_MARKER") == RUN_MARKER:
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return found


@pytest.fixture(scope="module")
def sync_env(openbao_server, mail_server, prefect_server, stack_run_dir, tmp_path_factory):
    """Environment of a worker: the store in a temporary WARDEN_HOME, the runner's secret id."""
    global MODULE_STARTED, SECRETS_BEFORE
    from warden.credentials import redaction

    MODULE_STARTED = time.time()
    SECRETS_BEFORE = set(redaction._secrets)
    with worker_environment(tmp_path_factory.mktemp("warden-home")) as home:
        yield home


class CapturingHandler(logging.Handler):
    """Keeps every record this process logs, formatted as a handler would write it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def log_capture():
    """Every log line of this module's syncs, for the secrets scan. Redaction filters it like any handler."""
    handler = CapturingHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def registered(sync_env, openbao_server, mail_server, log_capture):
    """The vault runner, the mail user with the demo messages, and two registered accounts."""
    from flows.registration import register_account, set_up_vault

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    mail_server.add_user(MAIL_USER, MAIL_PASSWORD)
    messages = build_demo_messages(to_address=f"{MAIL_USER}@warden.test", from_address="sender@warden.test")
    seed_mailbox(mail_server.imap_host, mail_server.imap_port, MAIL_USER, SecretStr(MAIL_PASSWORD), messages)

    for name, password in ((ACCOUNT, MAIL_PASSWORD), (WRONG_PASSWORD_ACCOUNT, "not-the-password")):
        await register_account(
            name,
            admin=admin,
            base_url=mail_server.roundcube_url,
            username=MAIL_USER,
            password=SecretStr(password),
            session_lifetime_seconds=mail_server.session_lifetime_minutes * 60,
        )
    return {"admin": admin, "messages": messages}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_sync(registered):
    from flows.sync import connector_sync

    summary = await connector_sync(ACCOUNT)
    return summary


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def second_sync(first_sync):
    from flows.sync import connector_sync

    return await connector_sync(ACCOUNT)


async def settled_task_runs(flow_run_id, timeout_seconds: float = 30.0):
    """Return the task runs of a flow run once each has a final state.

    The server records task run states from events, so they can lag behind the flow run's end.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    deadline = time.monotonic() + timeout_seconds
    async with get_client() as client:
        while True:
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), task_run_filter=TaskRunFilter()
            )
            settled = all(run.state is not None and run.state.is_final() for run in task_runs)
            if settled or time.monotonic() > deadline:
                return task_runs
            await asyncio.sleep(0.5)


def stored_attachments():
    from warden.store import default_document_store

    return default_document_store().attachments_for(ACCOUNT)


@pytest.mark.asyncio(loop_scope="session")
async def test_first_sync_logs_in_once(first_sync, registered):
    assert first_sync.probe == "missing"
    assert first_sync.refreshed is True
    assert first_sync.browser_launches == 1
    assert first_sync.messages_seen == len(registered["messages"])
    assert first_sync.attachments_fetched >= 8
    assert first_sync.attachments_extracted == first_sync.attachments_fetched
    assert first_sync.failed == 0
    assert first_sync.tokens_issued == 3
    assert first_sync.tokens_revoked == 3


@pytest.mark.asyncio(loop_scope="session")
async def test_demo_documents_extracted(first_sync):
    attachments = stored_attachments()
    texts_by_name = {row["filename"]: row["text"] or "" for row in attachments if row["filename"]}
    all_text = "\n".join(row["text"] or "" for row in attachments)

    for document in build_demo_documents():
        text = texts_by_name.get(document.filename, all_text)
        for word in document.expected_words:
            assert word in text, f"{word!r} missing from the text extracted from {document.filename}"


@pytest.mark.asyncio(loop_scope="session")
async def test_scanned_pages_went_through_ocr(first_sync):
    methods = {
        row["filename"]: {page["method"] for page in (row["details"] or {}).get("pages", [])}
        for row in stored_attachments()
        if row["filename"]
    }
    ocr_files = {name for name, used in methods.items() if "ocr" in used}
    text_files = {name for name, used in methods.items() if used == {"text"}}
    assert any(name.endswith(".png") for name in ocr_files)
    assert any(name.endswith(".pdf") for name in ocr_files)
    assert any(name.endswith(".pdf") for name in text_files)


@pytest.mark.asyncio(loop_scope="session")
async def test_mailbox_left_unread(first_sync, mail_server):
    with imaplib.IMAP4(mail_server.imap_host, mail_server.imap_port) as imap:
        imap.login(MAIL_USER, MAIL_PASSWORD)
        imap.select("INBOX", readonly=True)
        status, data = imap.fetch("1:*", "(FLAGS)")
    assert status == "OK"
    flags = b" ".join(data)
    assert b"\\Seen" not in flags


@pytest.mark.asyncio(loop_scope="session")
async def test_no_chromium_left_after_sync(first_sync):
    assert chromium_processes() == []


@pytest.mark.asyncio(loop_scope="session")
async def test_second_sync_replays_session(second_sync):
    assert second_sync.probe == "valid"
    assert second_sync.refreshed is False
    assert second_sync.browser_launches == 0
    assert second_sync.messages_seen == 0
    assert second_sync.attachments_fetched == 0
    assert second_sync.tokens_issued == 2
    assert second_sync.tokens_revoked == 2


@pytest.mark.asyncio(loop_scope="session")
async def test_rerun_stores_no_duplicates(second_sync, registered):
    from warden.store import default_document_store

    store = default_document_store()
    assert store.message_count(ACCOUNT) == len(registered["messages"])
    assert store.pending_counts().get(ACCOUNT, 0) == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_next_sync_revokes_abandoned_tokens(second_sync, registered):
    from flows.sync import connector_sync, load_account
    from warden import steps
    from warden.credentials.policies import Action
    from warden.credentials.vault import VaultClient
    from warden.run import SyncRun
    from warden.store import default_document_store

    # A run whose worker dies after it issued two tokens: it never wipes.
    store = default_document_store()
    config, vault_block = await load_account(ACCOUNT)
    dead_run_id = store.start_run(ACCOUNT, "dead-worker-run")
    store.take_over_runs(ACCOUNT, dead_run_id)
    dead = SyncRun(config, vault=VaultClient(vault_block.settings()), documents=store, store_run_id=dead_run_id)
    issued = [steps.issue_token(dead, Action.PROBE), steps.issue_token(dead, Action.FETCH)]
    accessors = [wrapped.accessor for wrapped in issued] + [dead.vault.runner_accessor]

    summary = await connector_sync(ACCOUNT)

    assert summary.abandoned_runs == 1
    assert summary.abandoned_tokens_revoked == 3
    assert summary.tokens_revoked == summary.tokens_issued
    for accessor in accessors:
        with pytest.raises(hvac.exceptions.InvalidRequest):
            registered["admin"].auth.token.lookup_accessor(accessor)
    assert store.unrevoked_tokens(ACCOUNT) == []
    assert store.run_by_flow_run_id("dead-worker-run")["state"] == "abandoned"
    assert store.last_runs()[ACCOUNT]["state"] == "completed"


@pytest.mark.asyncio(loop_scope="session")
async def test_flow_run_has_six_tasks(first_sync):
    flow_run_id = first_sync.run_url.rsplit("/", 1)[-1]
    task_runs = await settled_task_runs(flow_run_id)
    names = {run.name.rsplit("-", 1)[0] for run in task_runs}
    assert names == {
        "issue-scoped-token",
        "probe-session",
        "refresh-session",
        "fetch-items",
        "extract-attachments",
        "wipe-tokens",
    }
    assert all(run.state.is_completed() for run in task_runs)


@pytest.mark.asyncio(loop_scope="session")
async def test_failed_login_still_wipes(registered):
    from flows.sync import connector_sync, sync_and_summarize

    state = await connector_sync(WRONG_PASSWORD_ACCOUNT, return_state=True)
    assert state.is_failed()
    with pytest.raises(LoginFailed):
        await state.aresult()

    completed, summary = await sync_and_summarize(WRONG_PASSWORD_ACCOUNT)
    assert completed is False
    assert summary["refreshed"] is False
    assert summary["tokens_issued"] == 2
    assert summary["tokens_revoked"] == 2
    assert "rejected the login" in summary["error"]
    assert "password" in summary["error"]


@pytest.mark.asyncio(loop_scope="session")
async def test_unknown_account_names_the_fix(registered):
    from flows.sync import connector_sync

    state = await connector_sync("no-such-account", return_state=True)
    with pytest.raises(AccountNotFound) as caught:
        await state.aresult()
    assert "warden account add" in str(caught.value)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("name", ["a b", "../etc", "demo;rm"])
async def test_invalid_account_name_is_the_error(sync_env, name):
    from flows.sync import connector_sync

    state = await connector_sync(name, return_state=True)

    assert state.is_failed()
    with pytest.raises(AccountNotFound, match="is not a valid account name"):
        await state.aresult()


def run_cli_sync_json(**environment: str) -> subprocess.CompletedProcess:
    """Run ``warden sync ACCOUNT --json`` in a subprocess, with no stack env file and ``environment`` added."""
    return subprocess.run(
        [sys.executable, "-m", "warden.cli", "sync", ACCOUNT, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "WARDEN_STACK_DIR": "/nonexistent", **environment},
    )


def test_cli_sync_prints_json(second_sync):
    result = run_cli_sync_json()
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "account",
        "access_path",
        "probe",
        "refreshed",
        "messages_seen",
        "attachments_fetched",
        "attachments_extracted",
        "failed",
        "run_url",
    ):
        assert key in output
    assert output["account"] == ACCOUNT
    assert output["probe"] == "valid"
    assert output["messages_seen"] == 0
    assert output["run_url"].startswith(os.environ["PREFECT_API_URL"].removesuffix("/api"))


def test_cli_status_lists_account(second_sync):
    result = subprocess.run(
        [sys.executable, "-m", "warden.cli", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WARDEN_STACK_DIR": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    rows = {row["account"]: row for row in json.loads(result.stdout)}
    assert rows[ACCOUNT]["last_run_state"] == "completed"
    assert rows[ACCOUNT]["session"] != "none"
    assert rows[ACCOUNT]["pending_extractions"] == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_forecast_expired_refreshes_first(registered, mail_server, openbao_server):
    """A sliding 5-minute session last proven valid 6 minutes ago is refreshed before any work."""
    from datetime import timedelta

    from sqlalchemy import update

    from flows.registration import register_account
    from flows.sync import connector_sync
    from warden.store import default_document_store, schema

    await register_account(
        "e2e-sliding",
        admin=registered["admin"],
        base_url=mail_server.roundcube_url,
        username=MAIL_USER,
        password=SecretStr(MAIL_PASSWORD),
        session_lifetime_seconds=300,
    )
    first = await connector_sync("e2e-sliding")
    assert first.refreshed is True

    store = default_document_store()
    six_minutes_ago = datetime.now(UTC) - timedelta(minutes=6)
    with store._engine.begin() as connection:
        connection.execute(
            update(schema.sessions)
            .where(schema.sessions.c.account == "e2e-sliding")
            .values(last_valid_at=six_minutes_ago)
        )

    second = await connector_sync("e2e-sliding")
    assert second.probe == "expired"
    assert second.refreshed is True
    assert second.browser_launches == 1
    assert second.messages_seen == 0
    assert store.latest_session("e2e-sliding").source == "fetch"


@pytest.mark.asyncio(loop_scope="session")
async def test_transit_key_rotation_keeps_sessions(second_sync, registered):
    from flows.sync import connector_sync
    from warden.store import default_document_store

    store = default_document_store()
    before = store.latest_session(ACCOUNT).ciphertext
    registered["admin"].secrets.transit.rotate_key(name=f"session-{ACCOUNT}")

    summary = await connector_sync(ACCOUNT)
    assert summary.probe == "valid"
    assert summary.refreshed is False
    latest = store.latest_session(ACCOUNT).ciphertext
    assert before.split(":")[1] != latest.split(":")[1]
    assert latest.startswith("vault:v2:")


@pytest.mark.asyncio(loop_scope="session")
async def test_imported_session_probed_then_stored(second_sync, registered, mail_server, tmp_path):
    from flows.registration import register_account
    from flows.sync import load_account
    from warden import steps
    from warden.credentials.policies import Action
    from warden.credentials.vault import VaultClient
    from warden.errors import SessionRejected
    from warden.run import SyncRun
    from warden.sessions.importing import load_session_file
    from warden.store import default_document_store

    await register_account(
        "e2e-import",
        admin=registered["admin"],
        base_url=mail_server.roundcube_url,
        username=MAIL_USER,
        password=None,
    )
    config, vault_block = await load_account(ACCOUNT)
    store = default_document_store()

    # Export the working session of the e2e account as a bare cookie array, the way a browser extension would.
    source_run = SyncRun(config, vault=VaultClient(vault_block.settings()), documents=store)
    token = source_run.token_for(steps.issue_token(source_run, Action.PROBE))
    exported = source_run.sessions.load(token).state
    steps.wipe(source_run)
    path = tmp_path / "cookies.json"
    path.write_text(
        json.dumps(
            [
                {"name": c.name, "value": c.value, "domain": c.domain, "path": c.path, "session": True}
                for c in exported.cookies
            ]
        )
    )

    import_config, _ = await load_account("e2e-import")
    run = SyncRun(import_config, vault=VaultClient(vault_block.settings()), documents=store)
    state, _report = load_session_file(path)
    # The file holds the session in clear, so it goes right after the import, as `warden session import` advises.
    path.unlink()
    result = await steps.import_state(run, steps.issue_token(run, Action.PROBE), state)
    assert result.state.value == "valid"
    assert store.latest_session("e2e-import").source == "import"

    rejected = state.model_copy(update={"cookies": [c.model_copy(update={"value": "bogus"}) for c in state.cookies]})
    with pytest.raises(SessionRejected) as caught:
        await steps.import_state(run, steps.issue_token(run, Action.PROBE), rejected)
    assert "Nothing was stored" in str(caught.value)
    steps.wipe(run)


@pytest.mark.asyncio(loop_scope="session")
async def test_imap_down_fails_then_recovers(registered, stack_run_dir):
    """A Roundcube that cannot reach IMAP fails the sync; once IMAP is back the next sync logs in again."""
    import signal
    import time

    from flows.registration import register_account
    from flows.sync import connector_sync
    from stack.mail import MailServer
    from warden.errors import SessionRejected, SiteUnreachable
    from warden.store import default_document_store

    server = MailServer(stack_run_dir / "mail-imap-down")
    server.start()
    try:
        server.add_user(MAIL_USER, MAIL_PASSWORD)
        seed_mailbox(
            server.imap_host, server.imap_port, MAIL_USER, SecretStr(MAIL_PASSWORD), registered["messages"][:2]
        )
        await register_account(
            "e2e-imap-down",
            admin=registered["admin"],
            base_url=server.roundcube_url,
            username=MAIL_USER,
            password=SecretStr(MAIL_PASSWORD),
        )
        assert (await connector_sync("e2e-imap-down")).messages_seen == 2

        dovecot_pid = int((server.dovecot_base_dir / "master.pid").read_text())
        os.kill(dovecot_pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while psutil.pid_exists(dovecot_pid) and time.monotonic() < deadline:
            time.sleep(0.05)

        state = await connector_sync("e2e-imap-down", return_state=True)
        assert state.is_failed()
        with pytest.raises(SessionRejected) as caught:
            await state.aresult()
        assert "Connection to storage server failed" in str(caught.value)
        assert default_document_store().latest_session("e2e-imap-down").rejected_at is not None

        # Still down: the refreshed login must say the mail server is unreachable, not that the password is wrong.
        state = await connector_sync("e2e-imap-down", return_state=True)
        with pytest.raises(SiteUnreachable) as caught:
            await state.aresult()
        assert "could not reach its mail server" in str(caught.value)

        server.stop()
        server.start()
        recovered = await connector_sync("e2e-imap-down")
        assert recovered.probe in ("expired", "missing")
        assert recovered.refreshed is True
        assert recovered.messages_seen == 0
    finally:
        server.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_concurrent_syncs_do_not_overlap(second_sync, registered, mail_server):
    import asyncio

    from flows.sync import connector_sync
    from warden.store import default_document_store

    extra = build_demo_messages(to_address=f"{MAIL_USER}@warden.test", from_address="other@warden.test")
    for index, message in enumerate(extra[:3]):
        del message["Message-ID"]
        message["Message-ID"] = f"<concurrent-{index}-{uuid.uuid4().hex}@warden.test>"
    seed_mailbox(mail_server.imap_host, mail_server.imap_port, MAIL_USER, SecretStr(MAIL_PASSWORD), extra[:3])

    first, second = await asyncio.gather(connector_sync(ACCOUNT), connector_sync(ACCOUNT))
    assert first.messages_seen + second.messages_seen == 3
    assert first.error is None
    assert second.error is None
    assert default_document_store().message_count(ACCOUNT) == len(registered["messages"]) + 3


@pytest.mark.asyncio(loop_scope="session")
async def test_denied_policy_fails_without_partial_state(registered, mail_server):
    """A vault policy that denies the fetch fails the sync once, names the path, and stores no message."""
    from flows.registration import register_account
    from flows.sync import connector_sync
    from warden.errors import VaultDenied
    from warden.store import default_document_store

    await register_account(
        "e2e-denied",
        admin=registered["admin"],
        base_url=mail_server.roundcube_url,
        username=MAIL_USER,
        password=SecretStr(MAIL_PASSWORD),
    )
    registered["admin"].sys.create_or_update_policy(
        "warden-acct-e2e-denied-fetch", 'path "sys/nothing" { capabilities = ["read"] }'
    )

    state = await connector_sync("e2e-denied", return_state=True)
    assert state.is_failed()
    with pytest.raises(VaultDenied) as caught:
        await state.aresult()
    assert "'e2e-denied'" in str(caught.value)
    assert "transit/decrypt/session-e2e-denied" in str(caught.value)

    store = default_document_store()
    assert store.message_count("e2e-denied") == 0
    assert store.cursor("e2e-denied", "INBOX") is None

    task_runs = await settled_task_runs(state.state_details.flow_run_id)
    fetch_runs = [run for run in task_runs if run.name.startswith("fetch-items")]
    assert len(fetch_runs) == 1
    assert fetch_runs[0].run_count == 1
    wipe_runs = [run for run in task_runs if run.name.startswith("wipe-tokens")]
    assert wipe_runs[0].state.is_completed()


@pytest.mark.asyncio(loop_scope="session")
async def test_unproven_revocation_fails_the_run(registered, mail_server, openbao_server):
    """A runner that may not revoke its tokens: the run fails and says so, and an event is emitted."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from blocks.vault import VaultConnection
    from flows.registration import register_account
    from flows.sync import sync_and_summarize

    admin = registered["admin"]
    admin.sys.create_or_update_policy(
        "runner-without-revoke-flow",
        'path "auth/token/create/warden-action" { capabilities = ["update"] }\n'
        'path "auth/token/lookup-accessor" { capabilities = ["update"] }\n',
    )
    admin.auth.approle.create_or_update_approle("no-revoke-flow", token_policies=["runner-without-revoke-flow"])
    role_id = admin.auth.approle.read_role_id("no-revoke-flow")["data"]["role_id"]
    os.environ["E2E_NO_REVOKE_SECRET_ID"] = admin.auth.approle.generate_secret_id("no-revoke-flow")["data"]["secret_id"]
    await VaultConnection(
        address=openbao_server.address, role_id=role_id, secret_id_env="E2E_NO_REVOKE_SECRET_ID"
    ).asave("no-revoke", overwrite=True)
    await register_account(
        "e2e-no-revoke",
        admin=admin,
        base_url=mail_server.roundcube_url,
        username=MAIL_USER,
        password=SecretStr(MAIL_PASSWORD),
        vault_block="no-revoke",
    )

    completed, summary = await sync_and_summarize("e2e-no-revoke")
    assert completed is False
    assert summary["tokens_issued"] == 3
    assert summary["tokens_revoked"] == 0
    assert "Could not prove that 3 of 3 tokens" in summary["error"]
    assert "403" in summary["error"]

    # Events reach the server asynchronously; give them a few seconds.
    deadline = time.monotonic() + 10
    async with get_client() as client:
        while True:
            page = await client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["warden.revocation.unproven"]),
                    resource=EventResourceFilter(id=["warden.account.e2e-no-revoke"]),
                ),
                limit=50,
            )
            if len(page.events) >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert sorted(event.payload["action"] for event in page.events) == ["fetch", "probe", "refresh"]


async def _prefect_texts(flow_names: list[str]) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, LogFilter

    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(), limit=200)
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(), limit=200)
    texts = [log.message for log in logs]
    texts.extend(json.dumps(artifact.data, default=str) for artifact in artifacts)
    return texts


def _files_to_scan(roots: list[Path], excluded: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        for path in root.rglob("*"):
            if any(path.is_relative_to(skip) for skip in excluded):
                continue
            try:
                recent = path.is_file() and not path.is_symlink() and path.stat().st_mtime >= MODULE_STARTED
                if recent and path.stat().st_size < 200 * 1024 * 1024:
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.mark.secrets
@pytest.mark.asyncio(loop_scope="session")
async def test_no_secret_in_clear(
    second_sync, registered, sync_env, stack_run_dir, prefect_server, mail_server, log_capture
):
    """After the syncs above, no known secret is in any file, database, log line or artifact.

    Known secrets: the mailbox password and every value registered for redaction in this process
    (vault tokens, the session's cookie values, Roundcube's request token). The mail server's own
    run directories are not scanned: Roundcube keeps its session ids in its database, as any site does.
    """
    from warden.credentials import redaction

    secrets = {value for value in redaction._secrets - SECRETS_BEFORE if len(value) >= 8}
    secrets.add(MAIL_PASSWORD)
    assert len(secrets) > 5

    repo = Path(__file__).resolve().parent.parent
    roots = [repo, Path(tempfile.gettempdir()), sync_env, Path(os.environ["PREFECT_HOME"]), prefect_server.run_dir]
    # Other pytest runs on the machine, and other modules of this one, keep their own files below
    # /tmp/pytest-of-USER; this module's store (sync_env) is scanned as a root of its own.
    temporary = Path(tempfile.gettempdir())
    excluded = [repo / ".venv", repo / ".git", *stack_run_dir.glob("mail*"), *temporary.glob("pytest-of-*")]
    leaks = []
    for path in _files_to_scan(roots, excluded):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        leaks.extend(f"{path}: {secret[:4]}..." for secret in secrets if secret.encode() in data)
    assert leaks == []

    texts = [*log_capture.lines, *await _prefect_texts([])]
    assert len(texts) > 20, "too few log lines and artifacts captured to make the scan meaningful"
    leaked_texts = [text[:120] for text in texts if any(secret in text for secret in secrets)]
    assert leaked_texts == []


def test_cli_sync_json_on_bad_setting(prefect_server):
    result = run_cli_sync_json(WARDEN_LEASE_SECONDS="5")

    assert result.returncode == 1
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["account"] == ACCOUNT
    assert output["probe"] == "not run"
    assert output["failed"] == 1
    assert "WARDEN_LEASE_SECONDS='5'" in output["error"]
    assert "WARDEN_LEASE_SECONDS" in result.stderr


def test_cli_sync_json_on_bad_log_format(prefect_server):
    result = run_cli_sync_json(WARDEN_LOG_FORMAT="xml")

    assert result.returncode == 1
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["probe"] == "not run"
    assert output["access_path"] == "none"
    assert output["messages_seen"] == 0
    assert output["failed"] == 1
    assert output["run_url"]
    assert "WARDEN_LOG_FORMAT='xml'" in output["error"]


def test_cli_sync_json_on_damaged_store(prefect_server, tmp_path):
    from sqlalchemy import text

    from warden.store import DocumentStore

    store = DocumentStore(f"sqlite:///{tmp_path / 'warden.db'}")
    with store._engine.begin() as connection:
        connection.execute(text("DROP TABLE runs"))
    store.close()

    result = run_cli_sync_json(WARDEN_HOME=str(tmp_path), WARDEN_STORE_URL="")

    assert result.returncode == 1
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["probe"] == "not run"
    assert output["failed"] == 1
    assert "lacks part of its schema: no such table: runs" in output["error"]
    assert "Restore a backup" in output["error"]
