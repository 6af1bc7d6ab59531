"""Sync every registered account, or a given list, as one flow run that fans out per account.

Two ways to fan out, chosen by ``deployment``:

- ``deployment=None``: each account is a ``connector_sync`` subflow of this run,
  at most ``max_concurrent_accounts`` at a time, all in this worker's process.
- ``deployment="connector-sync/sync-account"`` (a deployment of ``connector_sync``
  on a process work pool): each account becomes a flow run of that deployment,
  which any worker of the pool picks up, so the batch spreads over every host.
  This run waits for all of them.

The browser slots, per-site slots and per-site request rates are Prefect global
concurrency limits taken inside ``connector_sync``, so they hold across every
worker in both modes. A failed account is recorded with ``completed: False`` in
the returned rows and the table artifact, and the other accounts go on. The
batch run itself completes, because each account's own flow run carries its
failure state.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.deployments import run_deployment

from blocks.account import registered_account_names
from flows.sync import sync_and_summarize
from warden.store import default_document_store

__all__ = ["sync_all_accounts"]

DEFAULT_MAX_CONCURRENT_ACCOUNTS = 8
# How long a deployment run of one account may take, from scheduling to its end, before it counts as failed.
DEFAULT_ACCOUNT_TIMEOUT_SECONDS = 3600.0
# Columns of the artifact, so failed rows (which lack most counts) line up with completed ones.
SUMMARY_COLUMNS = (
    "account",
    "completed",
    "access_path",
    "probe",
    "refreshed",
    "messages_seen",
    "attachments_fetched",
    "attachments_extracted",
    "attachments_pending",
    "failed",
    "browser_launches",
    "abandoned_runs",
    "abandoned_tokens_revoked",
    "error",
)


async def _sync_as_subflow(account: str) -> tuple[bool, dict[str, Any]]:
    return await sync_and_summarize(account)


async def _sync_as_deployment_run(account: str, deployment: str, timeout_seconds: float) -> tuple[bool, dict]:
    flow_run = await run_deployment(
        deployment,
        parameters={"account": account},
        timeout=timeout_seconds,
        as_subflow=True,
    )
    state = flow_run.state
    # The run's return value stays with the worker that ran it, but its summary is in the shared document store.
    record = default_document_store().run_by_flow_run_id(str(flow_run.id))
    if state is not None and state.is_completed():
        return True, (record or {}).get("summary") or {"account": account}
    if record and record.get("summary"):
        return False, record["summary"]
    message = state.message if state is not None else "no state"
    state_name = state.name if state is not None else "unknown"
    return False, {"account": account, "error": f"flow run {flow_run.id} ended {state_name}: {message}", "failed": 1}


def _row(account: str, completed: bool, summary: dict[str, Any]) -> dict[str, Any]:
    row = {column: summary.get(column) for column in SUMMARY_COLUMNS}
    row["account"] = account
    row["completed"] = completed
    return row


@flow(name="sync-all-accounts", log_prints=False)
async def sync_all_accounts(
    accounts: list[str] | None = None,
    deployment: str | None = None,
    max_concurrent_accounts: int = DEFAULT_MAX_CONCURRENT_ACCOUNTS,
    account_timeout_seconds: float = DEFAULT_ACCOUNT_TIMEOUT_SECONDS,
) -> list[dict[str, Any]]:
    """Sync each account (by default every registered one); return one summary row per account.

    Args:
        accounts: account names; every registered account when None.
        deployment: ``FLOW/DEPLOYMENT`` name of a ``connector_sync`` deployment to run each
            account on the work pool; None runs each account as a subflow in this process.
        max_concurrent_accounts: accounts started at once by this run. The global limits
            still bound browsers and requests per site across all runs.
        account_timeout_seconds: with ``deployment``, how long to wait for one account's run.
    """
    if max_concurrent_accounts < 1:
        raise ValueError(f"max_concurrent_accounts must be at least 1, got {max_concurrent_accounts}")
    run_logger = get_run_logger()
    names = sorted(set(accounts)) if accounts is not None else await registered_account_names()
    run_logger.info("sync_all.start accounts=%d deployment=%s", len(names), deployment or "subflows")

    gate = asyncio.Semaphore(max_concurrent_accounts)
    finished: list[str] = []

    async def sync_one(account: str) -> dict[str, Any]:
        async with gate:
            try:
                if deployment is None:
                    completed, summary = await _sync_as_subflow(account)
                else:
                    completed, summary = await _sync_as_deployment_run(account, deployment, account_timeout_seconds)
            except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others
                run_logger.error("sync_all.account_failed account=%s error=%s", account, exc)
                completed, summary = False, {"error": f"{type(exc).__name__}: {exc}", "failed": 1}
        finished.append(account)
        run_logger.info(
            "sync_all.progress account=%s completed=%s done=%d total=%d", account, completed, len(finished), len(names)
        )
        return _row(account, completed, summary)

    rows = list(await asyncio.gather(*(sync_one(account) for account in names)))
    failed = [row["account"] for row in rows if not row["completed"]]
    await acreate_table_artifact(
        key="sync-all-accounts",
        table=rows,
        description=f"One row per account: {len(rows) - len(failed)} completed, {len(failed)} failed.",
    )
    if failed:
        run_logger.error("sync_all.done accounts=%d failed=%d failed_accounts=%s", len(rows), len(failed), failed)
    else:
        run_logger.info("sync_all.done accounts=%d failed=0", len(rows))
    return rows
