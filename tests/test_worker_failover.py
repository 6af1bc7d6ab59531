"""A worker killed with SIGKILL in the middle of a batch: the next run finishes its accounts, nothing is lost.

Two worker processes share six OAuth accounts that read their mailboxes over
IMAP (twelve messages each) on the session's Dovecot, against a Prefect server
on PostgreSQL and a document store on PostgreSQL. Once the first worker has
stored part of a mailbox, its whole process group is killed, as when its host
goes down. The other worker finishes its own accounts. A third worker then runs
the next batch over all six accounts, as the next scheduled run would.

The workers take their slots with a lease of ``LEASE_SECONDS``, the shortest
Prefect accepts, so the dead worker's account lock and site slot free within
about a minute. The test checks that they do, and that every mailbox ends up
stored exactly once, and that the next sync of the interrupted account revokes
the tokens the dead worker left.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scale import (
    BenchStack,
    collect_rows,
    register_accounts,
    release,
    start_workers,
    stop_workers,
    wait_until_ready,
    worker_log_path,
)
from flows.automations import HEARTBEAT_SECONDS, UNRESPONSIVE_AFTER_SECONDS
from stack.mail import MailServer
from stack.oidc import OidcProvider
from stack.openbao import OpenBaoDevServer
from stack.postgres import PostgresServer
from stack.prefect_server import PrefectServer
from stack.testing import worker_environment

pytestmark = [pytest.mark.stack, pytest.mark.scale, pytest.mark.oauth, pytest.mark.timeout(600)]

ACCOUNTS = 6
LEASE_SECONDS = 60
# Prefect's repossessor looks for ended leases every 15 s; the rest covers a busy 2-core host.
SLOT_FREED_WITHIN_SECONDS = LEASE_SECONDS + 15 + 45
WORKER_TIMEOUT_SECONDS = 300.0


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Not below pytest's tmp_path, whose parents the mail server's daemons cannot enter.
    path = Path(tempfile.mkdtemp(prefix="warden-failover-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bench_stack(
    run_dir: Path,
    openbao_server: OpenBaoDevServer,
    oidc_provider: OidcProvider,
    mail_server: MailServer,
    postgres_server: PostgresServer,
    prefect_server_pg: PrefectServer,
) -> Iterator[BenchStack]:
    """The session's servers, with this process's Prefect client pointed at the PostgreSQL-backed server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api = {PREFECT_API_URL: prefect_server_pg.api_url}
    with worker_environment(run_dir / "warden"), temporary_settings(updates=api):
        yield BenchStack(run_dir, openbao_server, oidc_provider, mail_server, postgres_server, prefect_server_pg)


async def active_slots(name: str) -> int:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(name)
    return limit.active_slots


async def held_limits() -> dict[str, int]:
    """Return every concurrency limit (not the rate limits, whose slots decay) that has a slot taken."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        limits = await client.read_global_concurrency_limits(limit=200)
    return {
        limit.name: limit.active_slots for limit in limits if limit.active_slots and not limit.slot_decay_per_second
    }


async def running_flow_runs() -> dict[str, str]:
    """Return the flow runs in a Running state: name by id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=running, limit=200)
    return {str(run.id): run.name for run in runs}


async def flow_run_states(ids: list[str]) -> dict[str, tuple[str, str]]:
    """Return the state type and message of each flow run in ``ids``."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = [await client.read_flow_run(run_id) for run_id in ids]
    return {str(run.id): (run.state.type.value, run.state.message or "") for run in runs}


def wait_until_crashed(ids: list[str], deadline: float) -> dict[str, tuple[str, str]]:
    states = asyncio.run(flow_run_states(ids))
    while any(state != "CRASHED" for state, _ in states.values()) and time.monotonic() < deadline:
        time.sleep(2)
        states = asyncio.run(flow_run_states(ids))
    return states


def stored_messages(store_url: str, account: str) -> int:
    from warden.store import DocumentStore

    store = DocumentStore(store_url)
    try:
        return store.message_count(account)
    finally:
        store.close()


def wait_for_partial_mailbox(store_url: str, accounts: list[str], expected: int, timeout_seconds: float) -> str:
    """Return the first of ``accounts`` whose mailbox is stored in part (some messages, not all)."""
    from warden.store import DocumentStore

    store = DocumentStore(store_url)
    deadline = time.monotonic() + timeout_seconds
    try:
        while time.monotonic() < deadline:
            for account in accounts:
                if 0 < store.message_count(account) < expected:
                    return account
            time.sleep(0.05)
    finally:
        store.close()
    raise AssertionError(f"No account of {accounts} was stored in part within {timeout_seconds:g} s")


def test_killed_worker_accounts_finish_on_next_run(bench_stack: BenchStack, postgres_server: PostgresServer):
    from warden.store import DocumentStore

    secret_id, rounds, message_count, site = asyncio.run(
        register_accounts(bench_stack, ACCOUNTS, rounds=1, prefix="failover")
    )
    accounts = rounds[1]
    postgres_server.create_database("failover_store")
    store_url = postgres_server.sync_database_url("failover_store")
    environment = {
        **bench_stack.environment(store_url, secret_id),
        "WARDEN_LEASE_SECONDS": str(LEASE_SECONDS),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
    }
    events_path = bench_stack.run_dir / "limit-events.jsonl"
    doomed_share, surviving_share = accounts[0::2], accounts[1::2]

    workers = start_workers(
        [doomed_share, surviving_share], environment, events_path, 1, bench_stack.run_dir, label="batch"
    )
    try:
        wait_until_ready(workers, bench_stack.run_dir, "batch")
        release(workers)

        interrupted = wait_for_partial_mailbox(store_url, doomed_share, message_count, timeout_seconds=180)
        os.killpg(workers[0].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        workers[0].wait()
        stored_at_kill = {account: stored_messages(store_url, account) for account in doomed_share}

        # The dead worker still holds the account's lock: nothing released it.
        assert asyncio.run(active_slots(f"account-{interrupted}")) == 1
        surviving_rows = collect_rows(
            workers[1], worker_log_path(bench_stack.run_dir, "batch", 2), WORKER_TIMEOUT_SECONDS
        )
    finally:
        stop_workers(workers)
    assert [row["account"] for row in surviving_rows if row["completed"]] == surviving_share
    # What still runs now is the dead worker's: its batch and the sync of the interrupted account.
    orphaned = asyncio.run(running_flow_runs())
    assert len(orphaned) == 2, orphaned

    # The next run takes every account; the interrupted one waits for its lock to be repossessed.
    next_run = start_workers([accounts], environment, events_path, 2, bench_stack.run_dir, label="next")
    try:
        wait_until_ready(next_run, bench_stack.run_dir, "next")
        release(next_run)
        freed_after = None
        while next_run[0].poll() is None and freed_after is None:
            if asyncio.run(active_slots(f"account-{interrupted}")) == 0:
                freed_after = time.monotonic() - killed_at
            time.sleep(1)
        next_rows = collect_rows(next_run[0], worker_log_path(bench_stack.run_dir, "next", 1), WORKER_TIMEOUT_SECONDS)
    finally:
        stop_workers(next_run)

    assert [row["account"] for row in next_rows if not row["completed"]] == []
    if freed_after is not None:
        assert freed_after <= SLOT_FREED_WITHIN_SECONDS
    assert asyncio.run(held_limits()) == {}

    # The dead worker's flow runs stopped sending heartbeats, so the automation marked them Crashed.
    deadline = killed_at + UNRESPONSIVE_AFTER_SECONDS + HEARTBEAT_SECONDS + 60
    states = wait_until_crashed(list(orphaned), deadline)
    assert {state for state, _ in states.values()} == {"CRASHED"}, states
    assert all("No heartbeat" in message for _, message in states.values()), states

    # Every mailbox stored exactly once and every attachment extracted: the dead worker's accounts
    # resumed after their last stored message, the other worker's found nothing new.
    store = DocumentStore(store_url)
    try:
        counts = {account: store.message_count(account) for account in accounts}
        pending = store.pending_counts()
        unrevoked = {account: store.unrevoked_tokens(account) for account in accounts}
    finally:
        store.close()
    assert counts == dict.fromkeys(accounts, message_count)
    assert {account: pending.get(account, 0) for account in accounts} == dict.fromkeys(accounts, 0)
    new_messages = {row["account"]: row["messages_seen"] for row in next_rows}
    expected_new = {account: message_count - stored_at_kill.get(account, message_count) for account in accounts}
    assert 0 < expected_new[interrupted] < message_count
    assert new_messages == expected_new

    # The interrupted account's next sync closed the dead run and revoked what it had issued:
    # at least its login token and one per-action token, each proven by a failed lookup.
    abandoned = {row["account"]: row["abandoned_runs"] for row in next_rows}
    assert abandoned == {account: int(account == interrupted) for account in accounts}
    revoked = {row["account"]: row["abandoned_tokens_revoked"] for row in next_rows}
    assert revoked[interrupted] >= 2
    assert unrevoked == dict.fromkeys(accounts, [])
