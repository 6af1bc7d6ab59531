"""The ``connector-sync`` flow: probe → refresh → scoped tokens → fetch → extract → wipe.

Run it ad hoc from Python::

    import asyncio
    from flows.sync import connector_sync

    summary = asyncio.run(connector_sync("demo"))
    print(summary.model_dump_json(indent=2))

Each step is a task. Tasks retry only transient errors
(:class:`warden.errors.TransientError`); tasks that use the browser or a site
hold a slot of a global concurrency limit. The wipe runs even when an earlier
task failed, and the flow's final state still shows that failure.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_flow_run
from prefect.utilities.urls import url_for

from blocks.account import ConnectorAccount
from blocks.vault import VaultConnection
from flows.orchestration import PrefectEventSink, PrefectLimits, retry_transient
from warden import steps
from warden.accounts import AccountConfig
from warden.connectors.base import ProbeResult
from warden.credentials.policies import Action
from warden.credentials.redaction import install_redaction
from warden.credentials.tokens import RevocationProof, WrappedToken
from warden.credentials.vault import VaultClient
from warden.errors import AccountNotFound, RevocationUnproven, WardenError
from warden.run import SyncRun, SyncSummary
from warden.settings import get_settings
from warden.steps import ExtractOutcome, FetchOutcome
from warden.store import DocumentStore

__all__ = ["connector_sync", "sync_and_summarize"]

logger = logging.getLogger("warden.flows")

ACCESS_PATH_BROWSER_SESSION = "browser-session"
TASK_RETRIES = 2
TASK_RETRY_DELAYS_SECONDS = [2, 8]


@lru_cache(maxsize=4)
def _document_store(url: str) -> DocumentStore:
    return DocumentStore(url)


async def load_account(account: str) -> tuple[AccountConfig, VaultConnection]:
    """Load the account's Block and its vault Block; raise :class:`AccountNotFound` with the fix."""
    try:
        block = await ConnectorAccount.aload(account)
    except ValueError as exc:
        raise AccountNotFound(
            f"No account named '{account}' is registered (no Warden Connector Account Block of that name). "
            "Register it with `warden account add` or run `make demo` for the demo account."
        ) from exc

    try:
        vault_block = await VaultConnection.aload(block.vault_block)
    except ValueError as exc:
        raise AccountNotFound(
            f"Account '{account}' names the vault Block '{block.vault_block}', which does not exist. "
            "Create it with `warden setup`."
        ) from exc
    return block.to_config(account), vault_block


# -- tasks ----------------------------------------------------------------------

_task_options = dict(
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS_SECONDS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)


@task(name="issue-scoped-token", **_task_options)
async def issue_scoped_token(run: SyncRun, action: Action) -> WrappedToken:
    """Issue a response-wrapped vault token allowed only ``action`` on this account."""
    return steps.issue_token(run, action)


@task(name="probe-session", **_task_options)
async def probe_session(run: SyncRun, wrapped: WrappedToken) -> ProbeResult:
    """Check the saved session over HTTP, without a browser."""
    return await steps.probe(run, wrapped)


@task(name="refresh-session", **_task_options)
async def refresh_session(run: SyncRun, wrapped: WrappedToken) -> None:
    """Log in with Chromium in a fresh context and store the new session, encrypted."""
    await steps.refresh(run, wrapped)


@task(name="fetch-items", **_task_options)
async def fetch_items(run: SyncRun, wrapped: WrappedToken) -> FetchOutcome:
    """Fetch new messages and attachments over HTTP with the saved session."""
    return await steps.fetch(run, wrapped)


@task(name="extract-attachments", **_task_options)
async def extract_attachments(run: SyncRun) -> ExtractOutcome:
    """Extract text from every pending attachment, each in a sandboxed process."""
    return await steps.extract(run)


@task(name="wipe-tokens", retries=0, cache_policy=NO_CACHE)
async def wipe_tokens(run: SyncRun) -> list[RevocationProof]:
    """Revoke every token this run issued and prove each revocation."""
    return steps.wipe(run)


# -- flow -----------------------------------------------------------------------


@flow(name="connector-sync", log_prints=False)
async def connector_sync(account: str) -> SyncSummary:
    """Sync one account: probe, refresh if needed, fetch, extract, then revoke every token issued."""
    install_redaction()
    run_logger = get_run_logger()

    config, vault_block = await load_account(account)
    settings = get_settings()
    documents = _document_store(settings.resolved_store_url())
    run = SyncRun(
        config,
        vault=VaultClient(vault_block.settings()),
        documents=documents,
        events=PrefectEventSink(),
        limiter=PrefectLimits(),
    )
    launches_before = run.browser_pool.launches

    summary = SyncSummary(account=account, access_path=ACCESS_PATH_BROWSER_SESSION, probe="not run")
    summary.run_url = url_for("flow-run", obj_id=current_flow_run.id)
    store_run_id = documents.start_run(account, current_flow_run.id)
    failure: BaseException | None = None

    try:
        wrapped = await issue_scoped_token(run, Action.PROBE)
        probe = await probe_session(run, wrapped)
        summary.probe = probe.state.value
        steps.check_probe(run, probe)

        if probe.needs_refresh:
            wrapped = await issue_scoped_token(run, Action.REFRESH)
            await refresh_session(run, wrapped)
            summary.refreshed = True

        wrapped = await issue_scoped_token(run, Action.FETCH)
        fetched = await fetch_items(run, wrapped)
        summary.messages_seen = fetched.messages_new
        summary.attachments_fetched = fetched.attachments_new

        extracted = await extract_attachments(run)
        summary.attachments_extracted = extracted.extracted
        summary.failed = extracted.failed
    except Exception as exc:  # noqa: BLE001 - recorded, the wipe runs, then re-raised below
        failure = exc
        summary.failed += 1
        summary.error = str(exc) if isinstance(exc, WardenError) else f"{type(exc).__name__}: {exc}"
    finally:
        summary.tokens_issued = len(run.ledger)
        try:
            proofs = await wipe_tokens(run)
        except RevocationUnproven as exc:
            run_logger.error("%s", exc)
            if failure is None:
                failure = exc
                summary.failed += 1
                summary.error = str(exc)
            proofs = run.proofs
        summary.tokens_revoked = sum(1 for proof in proofs if proof.proven)
        summary.browser_launches = run.browser_pool.launches - launches_before

        state = "failed" if failure is not None else "completed"
        documents.finish_run(store_run_id, state=state, summary=summary.model_dump(mode="json"))
        await _publish_artifacts(summary, proofs)

    if failure is not None:
        raise failure
    run_logger.info(
        "sync.done account=%s probe=%s refreshed=%s messages=%d attachments=%d extracted=%d failed=%d",
        account,
        summary.probe,
        summary.refreshed,
        summary.messages_seen,
        summary.attachments_fetched,
        summary.attachments_extracted,
        summary.failed,
    )
    return summary


async def _publish_artifacts(summary: SyncSummary, proofs: list[RevocationProof]) -> None:
    key = f"sync-{summary.account}".replace("_", "-")
    row = summary.model_dump(mode="json", exclude={"run_url", "error"})
    await acreate_table_artifact(key=key, table=[row], description=f"Sync summary of account '{summary.account}'")

    if proofs:
        await acreate_table_artifact(
            key=f"{key}-revocations",
            table=[proof.model_dump(mode="json") for proof in proofs],
            description="Every vault token this run issued, when it was revoked, and whether a lookup proved it.",
        )

    if summary.error:
        await acreate_markdown_artifact(
            key=f"{key}-failure",
            markdown=f"## Sync of `{summary.account}` failed\n\n{summary.error}\n",
            description="What failed and what to do.",
        )


async def sync_and_summarize(account: str) -> tuple[bool, dict]:
    """Run ``connector_sync`` for ``account``; return whether it completed, and its summary as a dict.

    A failed run's summary is read back from the document store, where the
    flow records it before it raises.
    """
    state = await connector_sync(account, return_state=True)
    if state.is_completed():
        summary = await state.aresult()
        return True, summary.model_dump(mode="json")

    store = _document_store(get_settings().resolved_store_url())
    record = store.run_by_flow_run_id(str(state.state_details.flow_run_id))
    if record and record.get("summary"):
        return False, record["summary"]
    return False, {"account": account, "error": state.message, "failed": 1}
