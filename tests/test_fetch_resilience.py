"""Polite fetching against Roundcube behind nginx's limit_req: waits honoured, long waits rescheduled.

An nginx proxy (stack.throttle) sits in front of Roundcube and rate-limits
message downloads only, so login, probe and list pass. With a short
``Retry-After`` the sync waits and gets everything. With one longer than a
worker may sleep, it stores what it has, schedules the rest, and reports it.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import hvac
import pytest
import pytest_asyncio
from pydantic import SecretStr

from stack.testing import worker_environment
from stack.throttle import ThrottlingProxy
from warden.demo.documents import build_demo_messages
from warden.demo.seed import seed_mailbox

pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.resilience]

MAIL_USER = "polite-user"
MAIL_PASSWORD = "polite-Password-3317"


@pytest.fixture(scope="module")
def sync_env(openbao_server, mail_server, prefect_server, tmp_path_factory):
    with worker_environment(tmp_path_factory.mktemp("warden-home-polite")) as home:
        yield home


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def mailbox(sync_env, openbao_server, mail_server):
    from flows.registration import set_up_vault

    admin = hvac.Client(url=openbao_server.address, token=openbao_server.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    mail_server.add_user(MAIL_USER, MAIL_PASSWORD)
    messages = build_demo_messages(to_address=f"{MAIL_USER}@warden.test", from_address="sender@warden.test")
    seed_mailbox(mail_server.imap_host, mail_server.imap_port, MAIL_USER, SecretStr(MAIL_PASSWORD), messages)
    return {"admin": admin, "total": len(messages)}


async def register(mailbox, name: str, base_url: str, mail_server) -> None:
    from flows.registration import register_account

    await register_account(
        name,
        admin=mailbox["admin"],
        base_url=base_url,
        username=MAIL_USER,
        password=SecretStr(MAIL_PASSWORD),
        session_lifetime_seconds=mail_server.session_lifetime_minutes * 60,
    )


@pytest.fixture
def proxy_factory(stack_run_dir, mail_server):
    proxies = []

    def start(**options) -> ThrottlingProxy:
        proxy = ThrottlingProxy(
            stack_run_dir / f"throttle-{uuid.uuid4().hex[:8]}", upstream_port=mail_server.http_port, **options
        )
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


async def test_short_retry_after_waited(mailbox, mail_server, proxy_factory):
    from flows.sync import connector_sync
    from warden.store import default_document_store

    proxy = proxy_factory(rate_per_minute=120, burst=0, reject=True, retry_after_seconds=2)
    await register(mailbox, "polite-short", proxy.url, mail_server)

    summary = await connector_sync("polite-short")

    assert summary.messages_seen == mailbox["total"]
    assert summary.rescheduled_for is None
    assert default_document_store().message_count("polite-short") == mailbox["total"]

    # Every rejected download was sent again no sooner than the Retry-After the proxy gave.
    by_uri: dict[str, list[dict]] = defaultdict(list)
    for entry in proxy.requests():
        by_uri[entry["uri"]].append(entry)
    rejected = 0
    for entries in by_uri.values():
        for rejected_entry, next_entry in zip(entries, entries[1:], strict=False):
            if rejected_entry["status"] == 429:
                rejected += 1
                assert next_entry["time"] - rejected_entry["time"] >= 2.0 - 0.05
    assert rejected > 0, "the proxy rejected nothing, so no wait was tested"

    # A re-run with nothing new costs the site at most two requests (probe and list) and downloads nothing.
    before = len(proxy.requests())
    again = await connector_sync("polite-short")
    assert again.messages_seen == 0
    assert again.browser_launches == 0
    assert len(proxy.requests()) - before <= 2


async def test_long_retry_after_rescheduled(mailbox, mail_server, proxy_factory, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter

    from blocks.account import ConnectorAccount
    from flows.sync import connector_sync
    from warden.store import default_document_store

    proxy = proxy_factory(rate_per_minute=6, burst=2, reject=True, retry_after_seconds=600)
    await register(mailbox, "polite-long", proxy.url, mail_server)

    # The run behaves as a run of a deployment, so it can schedule its own continuation.
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("connector-sync")
        deployment_id = await client.create_deployment(
            **DeploymentCreate(flow_id=flow_id, name=f"resume-{uuid.uuid4().hex[:6]}").model_dump(
                include={"flow_id", "name"}
            )
        )
    os.environ["PREFECT__RUNTIME__FLOW_RUN__DEPLOYMENT_ID"] = str(deployment_id)
    try:
        started = datetime.now(UTC)
        summary = await connector_sync("polite-long")
    finally:
        os.environ.pop("PREFECT__RUNTIME__FLOW_RUN__DEPLOYMENT_ID", None)

    assert 0 < summary.messages_seen < mailbox["total"]
    assert summary.rescheduled_for is not None
    assert 590 <= (summary.rescheduled_for - started).total_seconds() <= 615
    assert summary.rescheduled_run_url

    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        )
    [scheduled] = runs
    assert scheduled.state.is_scheduled()
    assert scheduled.parameters == {"account": "polite-long"}
    assert abs((scheduled.state.state_details.scheduled_time - summary.rescheduled_for).total_seconds()) < 1

    # The continuation (here run at once, without the proxy) fetches exactly the rest.
    block = await ConnectorAccount.aload("polite-long")
    block.base_url = mail_server.roundcube_url
    await block.asave("polite-long", overwrite=True)
    rest = await connector_sync("polite-long")
    assert summary.messages_seen + rest.messages_seen == mailbox["total"]
    assert default_document_store().message_count("polite-long") == mailbox["total"]


async def test_killed_sync_exactly_once(mailbox, mail_server, proxy_factory, sync_env):
    """kill -9 the flow process mid-fetch, run again: every message exactly once, the store intact."""
    import signal
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    from prefect.client.orchestration import get_client

    from flows.sync import connector_sync
    from warden.store import default_document_store

    # nginx delays downloads to one a second, so the kill lands in the middle of the fetch.
    proxy = proxy_factory(rate_per_minute=60, burst=20, reject=False)
    await register(mailbox, "polite-kill", proxy.url, mail_server)
    store = default_document_store()

    repository = Path(__file__).resolve().parent.parent
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import asyncio; from flows.sync import connector_sync; asyncio.run(connector_sync('polite-kill'))",
        ],
        cwd=repository,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while store.message_count("polite-kill") < 2:
        assert worker.poll() is None, "the sync ended before it could be killed"
        assert time.monotonic() < deadline, "the sync stored nothing within 120 s"
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    stored_before = store.message_count("polite-kill")
    assert stored_before < mailbox["total"]

    # A killed worker's slot on the account lock stays taken until its lease runs out.
    # Deleting the limit frees it at once, as an operator would, and the next sync recreates it.
    async with get_client() as client:
        await client.delete_global_concurrency_limit_by_name("account-polite-kill")

    summary = await connector_sync("polite-kill")
    assert summary.messages_seen == mailbox["total"] - stored_before
    assert store.message_count("polite-kill") == mailbox["total"]

    database = Path(sync_env) / "warden.db"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        duplicates = connection.execute(
            "SELECT uid, COUNT(*) FROM messages WHERE account = 'polite-kill' GROUP BY uid HAVING COUNT(*) > 1"
        ).fetchall()
        assert duplicates == []
        cursor_uid = connection.execute(
            "SELECT last_uid FROM cursors WHERE account = 'polite-kill' AND mailbox = 'INBOX'"
        ).fetchone()[0]
        highest_uid = connection.execute("SELECT MAX(uid) FROM messages WHERE account = 'polite-kill'").fetchone()[0]
        assert cursor_uid == highest_uid
    leftovers = [path.name for path in Path(sync_env).iterdir() if not path.name.startswith("warden.db")]
    assert leftovers == []
