"""The ``connector-sync`` flow: probe → refresh → scoped tokens → fetch → extract → wipe.

The account lists its access paths in order of preference (``oauth``, then
``browser-session``, for example). The flow takes the first that works and
falls back to the next only when one is unavailable: no grant stored, the
provider or the API unreachable, or the grant refused. The summary names the
path that served the sync and why the ones before it did not.

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

import asyncio
import logging
import os
import re
from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Scheduled
from prefect.utilities.urls import url_for

from blocks.account import ConnectorAccount
from blocks.vault import VaultConnection
from flows.orchestration import (
    PrefectEventSink,
    PrefectLimits,
    account_lock,
    check_account_name,
    retry_browser_crash,
    retry_transient,
)
from warden import oauth_steps, steps
from warden.accounts import AccessPath, AccountConfig
from warden.connectors.base import ProbeResult, ProbeState
from warden.credentials.policies import Action
from warden.credentials.tokens import RevocationProof, WrappedToken
from warden.credentials.vault import VaultClient
from warden.errors import (
    AccessPathUnavailable,
    AccessTokenRejected,
    AccountNotFound,
    LoginFailed,
    LoginRequired,
    RevocationUnproven,
    SiteUnreachable,
    WardenError,
)
from warden.events import EventName
from warden.logs import configure_logging
from warden.run import ExtractOutcome, FetchOutcome, SyncRun, SyncSummary
from warden.store import DocumentStore, default_document_store

__all__ = ["connector_sync", "sync_and_summarize"]

logger = logging.getLogger("warden.flows")

TASK_RETRIES = 2
TASK_RETRY_DELAYS_SECONDS = [2, 8]


def _document_store(url: str) -> DocumentStore:
    # NOTE: kept for callers written before default_document_store existed; remove once none is left.
    return default_document_store(url)


async def load_account(account: str) -> tuple[AccountConfig, VaultConnection]:
    """Load the account's Block and its vault Block; raise :class:`AccountNotFound` with the fix."""
    try:
        block = await ConnectorAccount.aload(account)
    except ValueError as exc:
        hint = (
            ""
            if os.environ.get("PREFECT_API_URL")
            else (
                " PREFECT_API_URL is not set, so this ran against a temporary Prefect server with no Blocks: "
                "load the stack's environment (`. .stack/env`) or set PREFECT_API_URL."
            )
        )
        raise AccountNotFound(
            f"No account named '{account}' is registered (no Warden Connector Account Block of that name). "
            f"Register it with `warden account add` or run `make demo` for the demo account.{hint}"
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


@task(name="refresh-session", **{**_task_options, "retry_condition_fn": retry_browser_crash})
async def refresh_session(run: SyncRun, wrapped: WrappedToken) -> None:
    """Log in with Chromium in a fresh context and store the new session, encrypted."""
    await steps.refresh(run, wrapped)


@task(name="fetch-items", **_task_options)
async def fetch_items(run: SyncRun, wrapped: WrappedToken) -> FetchOutcome:
    """Fetch new messages and attachments over HTTP with the saved session."""
    return await steps.fetch(run, wrapped)


@task(name="probe-grant", **_task_options)
async def probe_grant(run: SyncRun, wrapped: WrappedToken) -> ProbeResult:
    """Check the stored OAuth grant: is there an access token, and for how long."""
    return oauth_steps.probe_grant(run, wrapped)


@task(name="refresh-grant", **_task_options)
async def refresh_grant(run: SyncRun, wrapped: WrappedToken) -> None:
    """Get a fresh OAuth access token, with one provider request across every worker."""
    await oauth_steps.refresh_grant(run, wrapped)


@task(name="fetch-api-items", **_task_options)
async def fetch_api_items(run: SyncRun, wrapped: WrappedToken) -> FetchOutcome:
    """Fetch new items through the official API with the access token, then revoke it at the provider."""
    return await oauth_steps.fetch_api(run, wrapped)


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
async def connector_sync(account: str, route_with_roster: str | None = None) -> SyncSummary:
    """Sync one account: probe, refresh if needed, fetch, extract, then revoke every token issued.

    With ``route_with_roster``, a completed sync then runs ``route-documents`` with that roster Block.
    """
    # Installs the redaction filter on every handler, and JSON output when WARDEN_LOG_FORMAT=json.
    configure_logging(add_root_handler=False)
    run_logger = get_run_logger()

    summary = SyncSummary(account=account, access_path="none", probe="not run")
    summary.run_url = url_for("flow-run", obj_id=current_flow_run.id)
    documents = default_document_store()
    store_run_id = documents.start_run(account, current_flow_run.id)
    run: SyncRun | None = None
    proofs: list[RevocationProof] = []
    failure: BaseException | None = None

    try:
        check_account_name(account)
        # Loaded before the lock, so a misspelled account leaves no limit named after it behind.
        config, vault_block = await load_account(account)
        # One sync per account at a time, across every worker: a second one waits for the first.
        async with account_lock(account):
            run = SyncRun(
                config,
                vault=VaultClient(vault_block.settings()),
                documents=documents,
                events=PrefectEventSink(),
                limiter=PrefectLimits(),
                store_run_id=store_run_id,
            )
            launches_before = run.browser_pool.launches
            try:
                # Bookkeeping, not a task: it rarely finds anything, and then it logs and emits an event.
                summary.abandoned_runs = len(await asyncio.to_thread(steps.take_over, run))
                await _run_steps(run, summary)
            finally:
                summary.tokens_issued = len(run.ledger)
                proofs = await _wipe(run, run_logger)
                summary.browser_launches = run.browser_pool.launches - launches_before
    except Exception as exc:  # noqa: BLE001 - recorded in the summary, then re-raised below
        failure = exc
        summary.error = _describe_failure(exc)
        if isinstance(exc, WardenError) and not isinstance(exc, RevocationUnproven):
            run_logger.error("sync.failed account=%s kind=%s error=%s", account, exc.kind.value, exc)
        if isinstance(exc, LoginFailed | LoginRequired):
            summary.error += await _hand_over_to_guided_login(account, summary.error, run_logger)
    finally:
        _fill_counts(summary, run, documents, failed=failure is not None)
        abandoned_proofs = run.abandoned_proofs if run is not None else []
        summary.abandoned_tokens_revoked = sum(1 for proof in abandoned_proofs if proof.proven)
        summary.tokens_revoked = sum(1 for proof in proofs if proof.proven) - summary.abandoned_tokens_revoked
        state = "failed" if failure is not None else "completed"
        documents.finish_run(store_run_id, state=state, summary=summary.model_dump(mode="json"))
        await _publish_artifacts(summary, proofs)

    if failure is not None:
        raise failure
    if route_with_roster is not None:
        # A subflow run of its own: a routing failure fails this run, after the sync's results are saved.
        from flows.route import route_documents

        await asyncio.to_thread(route_documents, account, roster=route_with_roster)
    run_logger.info(
        "sync.done account=%s probe=%s refreshed=%s messages=%d attachments=%d extracted=%d failed=%d pending=%d",
        account,
        summary.probe,
        summary.refreshed,
        summary.messages_seen,
        summary.attachments_fetched,
        summary.attachments_extracted,
        summary.failed,
        summary.attachments_pending,
    )
    return summary


async def _run_steps(run: SyncRun, summary: SyncSummary) -> None:
    paths = run.account.access_paths
    for index, path in enumerate(paths):
        summary.access_path = path.value
        try:
            if path == AccessPath.OAUTH:
                await _run_oauth_path(run, summary)
            else:
                await _run_browser_path(run, summary)
            break
        except AccessPathUnavailable as exc:
            summary.paths_unavailable.append(f"{path.value}: {exc}")
            run.emit(EventName.ACCESS_PATH_UNAVAILABLE, path=path.value, reason=str(exc)[:300])
            logger.warning(
                "sync.path_unavailable account=%s path=%s reason=%s", run.account.name, path.value, str(exc)[:300]
            )
            if index == len(paths) - 1:
                raise
    await extract_attachments(run)
    if run.fetch_outcome is not None and run.fetch_outcome.resume_after_seconds is not None:
        await _schedule_rest(run, summary, run.fetch_outcome)


async def _schedule_rest(run: SyncRun, summary: SyncSummary, outcome: FetchOutcome) -> None:
    """Schedule the rest of a throttled fetch for after the site's reset time, instead of sleeping."""
    resume_at = datetime.now(UTC) + timedelta(seconds=outcome.resume_after_seconds or 0)
    summary.rescheduled_for = resume_at
    flow_run_id = None

    deployment_id = current_flow_run.deployment_id
    if deployment_id:
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(
                deployment_id,
                parameters={"account": run.account.name},
                state=Scheduled(scheduled_time=resume_at),
                tags=["warden-resume"],
            )
        flow_run_id = str(flow_run.id)
        summary.rescheduled_run_url = url_for("flow-run", obj_id=flow_run.id)
    else:
        # An ad hoc run has no deployment a worker could run later; the summary tells the caller when to run again.
        logger.warning(
            "fetch.not_rescheduled account=%s reason=no deployment resume_at=%s",
            run.account.name,
            resume_at.isoformat(timespec="seconds"),
        )

    run.emit(
        EventName.FETCH_RESCHEDULED,
        stopped_at=outcome.stopped_at,
        resume_at=resume_at.isoformat(timespec="seconds"),
        flow_run_id=flow_run_id,
    )


async def _run_browser_path(run: SyncRun, summary: SyncSummary) -> None:
    wrapped = await issue_scoped_token(run, Action.PROBE)
    probe = await probe_session(run, wrapped)
    summary.probe = probe.state.value
    steps.check_probe(run, probe)

    if probe.needs_refresh:
        wrapped = await issue_scoped_token(run, Action.REFRESH)
        await refresh_session(run, wrapped)
        summary.refreshed = True

    wrapped = await issue_scoped_token(run, Action.FETCH)
    await fetch_items(run, wrapped)


async def _run_oauth_path(run: SyncRun, summary: SyncSummary) -> None:
    path = AccessPath.OAUTH.value
    wrapped = await issue_scoped_token(run, Action.GRANT_PROBE)
    probe = await probe_grant(run, wrapped)
    summary.probe = probe.state.value
    if probe.state == ProbeState.MISSING:
        run.emit(EventName.LOGIN_REQUIRED, path=path, reason=probe.reason)
        raise AccessPathUnavailable(f"the account has no usable OAuth grant ({probe.reason})", path=path)

    try:
        if probe.needs_refresh:
            await refresh_grant(run, await issue_scoped_token(run, Action.GRANT_REFRESH))
            summary.refreshed = True
        try:
            await fetch_api_items(run, await issue_scoped_token(run, Action.API_FETCH))
        except AccessTokenRejected:
            # The API refused a token the grant called valid: it was revoked early, or expired meanwhile.
            # So refresh once and fetch once more. A second refusal makes the path unavailable.
            await refresh_grant(run, await issue_scoped_token(run, Action.GRANT_REFRESH))
            summary.refreshed = True
            await fetch_api_items(run, await issue_scoped_token(run, Action.API_FETCH))
    except LoginRequired as exc:
        run.emit(EventName.LOGIN_REQUIRED, path=path, reason=str(exc)[:300])
        raise AccessPathUnavailable(str(exc), path=path) from exc
    except (SiteUnreachable, AccessTokenRejected) as exc:
        raise AccessPathUnavailable(str(exc), path=path) from exc


async def _wipe(run: SyncRun, run_logger: logging.Logger | logging.LoggerAdapter) -> list[RevocationProof]:
    try:
        return await wipe_tokens(run)
    except RevocationUnproven as exc:
        run_logger.error("%s", exc)
        raise


def _fill_counts(summary: SyncSummary, run: SyncRun | None, documents: DocumentStore, *, failed: bool) -> None:
    if run is not None and run.fetch_outcome is not None:
        summary.messages_seen = run.fetch_outcome.messages_new
        summary.attachments_fetched = run.fetch_outcome.attachments_new
    if run is not None and run.extract_outcome is not None:
        summary.attachments_extracted = run.extract_outcome.extracted
        summary.attachments_skipped = run.extract_outcome.skipped
        summary.failed = run.extract_outcome.failed
    summary.attachments_pending = documents.pending_counts().get(summary.account, 0)
    summary.attachments_deferred = documents.pending_counts(status="deferred").get(summary.account, 0)
    if failed:
        summary.failed += 1


async def _hand_over_to_guided_login(
    account: str, reason: str, run_logger: logging.Logger | logging.LoggerAdapter
) -> str:
    """Start the guided login for a login only a person can fix; return a sentence to append to the error."""
    # Imported here because flows.login imports this module.
    from flows.login import start_guided_login

    try:
        guided_run_id = await start_guided_login(account, reason=reason)
    except Exception as exc:  # noqa: BLE001 - the sync's own failure is the one raised
        run_logger.warning("login.guided_start_failed account=%s error=%s", account, type(exc).__name__)
        return ""
    if guided_run_id is None:
        return (
            " Deploy the guided-login flow to be asked for input in the Prefect UI, "
            f"or run `warden login {account}` on a machine with a display."
        )
    return f" A guided login waits for input in the Prefect UI: {url_for('flow-run', obj_id=guided_run_id)}"


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, WardenError):
        return str(exc)
    # An unexpected error's text can carry data (SQL parameters, response bodies); the run's logs have the details.
    return f"Unexpected {type(exc).__name__}; see the flow run's logs for the traceback."


async def _publish_artifacts(summary: SyncSummary, proofs: list[RevocationProof]) -> None:
    # Prefect accepts only lowercase letters, digits and dashes in a key, so every other character becomes a dash.
    # An invalid account name then fails the run with its own error instead of the artifact's.
    key = "sync-" + re.sub(r"[^a-z0-9-]", "-", summary.account.lower())
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

    flow_run_id = state.state_details.flow_run_id
    try:
        record = default_document_store().run_by_flow_run_id(str(flow_run_id))
    except Exception:  # noqa: BLE001 - a damaged store that failed the run fails this read too; the state says why
        record = None
    if record and record.get("summary"):
        return False, record["summary"]
    # The run failed before it recorded a summary, for example on a bad setting or an unreadable store.
    summary = SyncSummary(account=account, access_path="none", probe="not run", failed=1, error=state.message)
    summary.run_url = url_for("flow-run", obj_id=flow_run_id) if flow_run_id else None
    return False, summary.model_dump(mode="json")
