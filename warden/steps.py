"""The steps of one sync, as plain async functions the flow's tasks call.

Each step takes the :class:`~warden.run.SyncRun` and, where it needs a
secret, the wrapped token issued for it. The steps never retry on their own;
the HTTP layer retries single requests, and the orchestrator retries a whole
step only for :class:`~warden.errors.TransientError`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime

from pydantic import ValidationError

from warden.accounts import AccountConfig
from warden.connectors.base import LoginCredentials, ProbeResult, ProbeState
from warden.connectors.mime import message_record_from_raw
from warden.credentials.policies import Action
from warden.credentials.tokens import RevocationProof, ScopedToken, WrappedToken
from warden.errors import (
    BrowserBudgetExceeded,
    BrowserCrashed,
    ConfigError,
    LoginFailed,
    LoginLocked,
    LoginRequired,
    RateLimited,
    RevocationUnproven,
    SessionRejected,
    SiteUnreachable,
    StateCorrupt,
    UnexpectedResponse,
    WardenError,
)
from warden.events import EventName
from warden.extraction import FAILURE_STATUSES, ExtractionSettings, extract_in_sandbox
from warden.extraction.background import stored_status
from warden.run import ExtractOutcome, FetchOutcome, SyncRun
from warden.sessions.capture import login_and_capture
from warden.sessions.forecast import Forecast, forecast_expiry, refresh_margin
from warden.sessions.state import SessionState

__all__ = [
    "ExtractOutcome",
    "FetchOutcome",
    "check_probe",
    "extract",
    "extraction_settings",
    "fetch",
    "import_state",
    "issue_token",
    "probe",
    "refresh",
    "stop_for_later",
    "wipe",
]

logger = logging.getLogger("warden.sync")

# A long extraction logs how far it got after every this many attachments.
PROGRESS_EVERY = 25


def utc_now() -> datetime:
    return datetime.now(UTC)


def _forecast(run: SyncRun, state: SessionState, last_valid_at: datetime | None) -> Forecast:
    return forecast_expiry(
        state,
        last_valid_at=last_valid_at,
        sliding_lifetime_seconds=run.account.session_lifetime_seconds,
        auth_cookie_names=run.connector.auth_cookie_names,
    )


# -- take over ------------------------------------------------------------------


def take_over(run: SyncRun) -> list[int]:
    """Close the account's runs whose worker died, revoke the tokens the journal shows unrevoked, return the runs' ids.

    Call it while holding the account's lock. The proofs go to ``run.abandoned_proofs``,
    which the wipe reports with the run's own. An unproven one fails the run there.
    """
    if run.store_run_id is None:
        return []
    abandoned = run.documents.take_over_runs(run.account.name, run.store_run_id)
    # Tokens of abandoned runs, and of earlier runs whose wipe could not prove a revocation.
    leftovers = run.documents.unrevoked_tokens(run.account.name)
    if not abandoned and not leftovers:
        return []

    proofs = [run.vault.revoke_and_prove(token) for token in leftovers]
    run.journal_revocations(proofs)
    run.abandoned_proofs = proofs
    proven = sum(1 for proof in proofs if proof.proven)
    abandoned_ids = ",".join(str(run_id) for run_id in abandoned)
    logger.warning(
        "sync.took_over account=%s abandoned_runs=%s tokens_left=%d tokens_revoked=%d",
        run.account.name,
        abandoned_ids or "none",
        len(leftovers),
        proven,
    )
    run.emit(
        EventName.RUN_ABANDONED,
        abandoned_runs=abandoned_ids,
        tokens_left=len(leftovers),
        tokens_revoked=proven,
    )
    return abandoned


# -- issue ----------------------------------------------------------------------


def issue_token(run: SyncRun, action: Action) -> WrappedToken:
    """Create the wrapped, scoped token for one action and record it for the wipe."""
    wrapped = run.vault.issue(run.account.paths, action, ttl_seconds=run.account.token_ttl_seconds)
    run.ledger.record_issued(wrapped)
    run.emit(
        EventName.TOKEN_ISSUED,
        action=action.value,
        accessor=wrapped.accessor,
        ttl_seconds=run.account.token_ttl_seconds,
        num_uses=wrapped.num_uses,
    )
    return wrapped


# -- probe ----------------------------------------------------------------------


async def probe(run: SyncRun, wrapped: WrappedToken) -> ProbeResult:
    """Check the saved session without a browser, store the rotated cookies, and forecast its expiry."""
    token = run.token_for(wrapped)
    started = utc_now()

    try:
        loaded = run.sessions.load(token)
    except StateCorrupt as exc:
        logger.warning("session.unreadable account=%s error=%s", run.account.name, exc)
        result = ProbeResult(state=ProbeState.MISSING, reason=str(exc), elapsed_seconds=0.0)
        run.emit(EventName.SESSION_PROBED, state=result.state.value, reason="stored session unreadable")
        return result

    if loaded is None:
        result = ProbeResult(state=ProbeState.MISSING, reason="no session saved yet", elapsed_seconds=0.0)
        run.emit(EventName.SESSION_PROBED, state=result.state.value, reason=result.reason, elapsed_seconds=0.0)
        return result

    if loaded.rejected_at is not None:
        reason = f"the site refused this session during work at {loaded.rejected_at.isoformat(timespec='seconds')}"
        result = ProbeResult(state=ProbeState.EXPIRED, reason=reason, elapsed_seconds=0.0)
        run.emit(EventName.SESSION_PROBED, state=result.state.value, reason=reason, elapsed_seconds=0.0)
        return result

    stored_forecast = _forecast(run, loaded.state, loaded.last_valid_at)
    seconds_left = stored_forecast.seconds_left()
    if seconds_left is not None and seconds_left <= 0:
        # Replaying a session the forecast calls dead costs a request and proves nothing new.
        reason = (
            f"the {stored_forecast.source} forecast says the session expired "
            f"{-seconds_left:.0f} s ago ({stored_forecast.expires_at.isoformat(timespec='seconds')})"
        )
        result = ProbeResult(state=ProbeState.EXPIRED, reason=reason, elapsed_seconds=0.0)
        run.emit(EventName.SESSION_PROBED, state=result.state.value, reason=reason, elapsed_seconds=0.0)
        return result

    async with run.site_access(run.account.site):
        result, rotated = await run.connector.probe(loaded.state)

    if result.state == ProbeState.VALID:
        forecast = _forecast(run, rotated, last_valid_at=started)
        lifetime = run.account.session_lifetime_seconds
        margin = refresh_margin(lifetime, fraction=run.account.refresh_margin_fraction)
        seconds_left = forecast.seconds_left()
        if seconds_left is not None and seconds_left <= margin.total_seconds():
            result = result.model_copy(
                update={
                    "state": ProbeState.EXPIRING,
                    "reason": f"valid, but the {forecast.source} forecast expires in {seconds_left:.0f} s",
                }
            )
        result = result.model_copy(update={"expires_at": forecast.expires_at})
        run.sessions.save(token, rotated, last_valid_at=started, forecast=forecast, source="probe")
    elif result.state in (ProbeState.UNKNOWN, ProbeState.CHALLENGE):
        # The server responded, so it may have rotated cookies. Keep them, but not as proof of validity.
        forecast = _forecast(run, rotated, loaded.last_valid_at)
        run.sessions.save(token, rotated, last_valid_at=loaded.last_valid_at, forecast=forecast, source="probe")

    run.emit(
        EventName.SESSION_PROBED,
        state=result.state.value,
        reason=result.reason,
        elapsed_seconds=round(result.elapsed_seconds, 4),
    )
    logger.info(
        "session.probed account=%s state=%s elapsed_seconds=%.3f",
        run.account.name,
        result.state.value,
        result.elapsed_seconds,
    )
    return result


def check_probe(run: SyncRun, result: ProbeResult) -> None:
    """Raise for probe outcomes no automatic refresh can fix; return for valid or refreshable ones."""
    if result.state == ProbeState.CHALLENGE:
        run.emit(EventName.LOGIN_REQUIRED, reason=result.reason)
        raise LoginRequired(
            f"The site of account '{run.account.name}' asks for a challenge (CAPTCHA, second factor or consent): "
            f"{result.reason}. Clear the challenge by logging in once in a browser, "
            f"then run `warden sync {run.account.name}`."
        )
    if result.state == ProbeState.UNREACHABLE:
        raise SiteUnreachable(result.reason)
    if result.state == ProbeState.UNKNOWN:
        raise UnexpectedResponse(
            f"The probe of account '{run.account.name}' could not tell whether the session works: {result.reason}"
        )


async def import_state(run: SyncRun, wrapped: WrappedToken, state: SessionState) -> ProbeResult:
    """Probe a session brought from elsewhere and store it only when the site accepts it."""
    token = run.token_for(wrapped)
    started = utc_now()

    async with run.site_access(run.account.site):
        result, rotated = await run.connector.probe(state)

    if result.state not in (ProbeState.VALID, ProbeState.EXPIRING):
        raise SessionRejected(
            f"The imported session for account '{run.account.name}' does not work at {run.account.base_url}: "
            f"the probe returned {result.state.value} ({result.reason}). Nothing was stored; export a fresh session."
        )

    forecast = _forecast(run, rotated, last_valid_at=started)
    version = run.sessions.save(token, rotated, last_valid_at=started, forecast=forecast, source="import")
    run.emit(EventName.SESSION_REFRESHED, method="import", version=version, cookies=len(rotated.cookies))
    return result


# -- refresh --------------------------------------------------------------------


async def refresh(run: SyncRun, wrapped: WrappedToken, *, source: str = "browser-login") -> SessionState:
    """Log in with Chromium in a fresh context, capture the session, encrypt and store it.

    ``source`` is recorded with the stored version, e.g. ``rotation`` for a scheduled re-capture.
    """
    token = run.token_for(wrapped)
    secret = run.vault.read_login_secret(token, run.account.paths)
    password = secret.get("password")
    if password is None:
        raise ConfigError(
            f"The vault secret of account '{run.account.name}' at '{run.account.paths.login_secret_policy_path}' "
            "has no 'password' key. Store it with `warden account add` or `bao kv put`."
        )
    credentials = LoginCredentials(username=run.account.username, password=password)
    # NOTE: Python strings cannot be overwritten in place; dropping the references is as far as the
    # password's lifetime in memory can be shortened here.
    del secret, password

    # The old session seeds the new context, so cookies a site keeps to recognise a device survive the login.
    try:
        previous = run.sessions.load(token, fallback=False)
    except StateCorrupt:
        previous = None

    async with run.limiter.browser_slot():
        try:
            state = await login_and_capture(
                run.browser_pool,
                run.connector,
                credentials,
                account=run.account.name,
                budget=run.account.browser,
                storage_state=previous.state.to_playwright() if previous else None,
            )
        except (LoginFailed, LoginLocked, LoginRequired) as exc:
            run.emit(EventName.LOGIN_REQUIRED, reason=type(exc).__name__)
            raise
        except BrowserCrashed as exc:
            run.emit(EventName.BROWSER_CRASHED, error=str(exc)[:200])
            raise
        except BrowserBudgetExceeded as exc:
            run.emit(EventName.BROWSER_BUDGET_EXCEEDED, error=str(exc)[:200])
            raise
        finally:
            del credentials

    now = utc_now()
    forecast = _forecast(run, state, last_valid_at=now)
    version = run.sessions.save(token, state, last_valid_at=now, forecast=forecast, source=source)
    run.emit(EventName.SESSION_REFRESHED, method=source, version=version, cookies=len(state.cookies))
    return state


# -- fetch ----------------------------------------------------------------------


async def fetch(run: SyncRun, wrapped: WrappedToken) -> FetchOutcome:
    """Fetch new messages of every mailbox over HTTP; store each with the cursor, then the rotated session."""
    if not run.connector.supports_fetch:
        logger.info("fetch.skipped account=%s connector=%s reason=no items", run.account.name, run.connector.kind)
        return FetchOutcome()

    token = run.token_for(wrapped)
    loaded = run.sessions.load(token)
    if loaded is None:
        raise SessionRejected(
            f"Account '{run.account.name}' has no saved session to fetch with. Run the sync again, which logs in again."
        )

    # The run keeps the outcome, so a fetch that fails midway still reports what it stored.
    outcome = run.fetch_outcome = FetchOutcome()
    account = run.account.name
    async with run.site_access(run.account.site), run.connector.open(loaded.state) as session:
        failed = True
        rejected = False
        mailbox = ""
        try:
            try:
                for mailbox in run.account.mailboxes:
                    cursor = run.documents.cursor(account, mailbox)
                    after_uid = cursor[1] if cursor else 0
                    known = run.documents.message_count(account, mailbox)
                    refs, _count = await session.list_new(mailbox, after_uid=after_uid, known_count=known)

                    for ref in refs:
                        raw = await session.fetch_raw(ref)
                        record = message_record_from_raw(ref, raw)
                        if run.documents.save_message(account, record):
                            outcome.messages_new += 1
                            outcome.attachments_new += len(record.attachments)
                    outcome.mailboxes[mailbox] = len(refs)
            except RateLimited as exc:
                stop_for_later(run, outcome, exc, mailbox)
            failed = False
        except SessionRejected:
            rejected = True
            raise
        finally:
            outcome.requests_sent = session.requests_sent
            # A long fetch may have outlived its first token; token_for renews it when needed.
            _save_rotated_after_fetch(
                run, run.token_for(wrapped), session.current_state(), rejected=rejected, failed=failed
            )

    logger.info(
        "fetch.done account=%s messages_new=%d attachments_new=%d requests=%d",
        account,
        outcome.messages_new,
        outcome.attachments_new,
        outcome.requests_sent,
    )
    return outcome


def stop_for_later(run: SyncRun, outcome: FetchOutcome, exc: RateLimited, mailbox: str) -> None:
    """Keep what was stored and mark the fetch for resumption, when the site asks for a wait no worker should sleep.

    Re-raises ``exc`` when its wait is short enough to be a plain retry.
    """
    wait = exc.retry_after_seconds
    if wait is None or wait <= run.account.http.max_retry_after_seconds:
        raise exc
    cursor = run.documents.cursor(run.account.name, mailbox) if mailbox else None
    outcome.resume_after_seconds = wait
    outcome.stopped_at = f"{mailbox} after UID {cursor[1] if cursor else 0}"
    logger.warning(
        "fetch.throttled account=%s stopped_at=%r resume_after_seconds=%.0f",
        run.account.name,
        outcome.stopped_at,
        wait,
    )
    run.emit(EventName.FETCH_THROTTLED, stopped_at=outcome.stopped_at, retry_after_seconds=wait)


def _save_rotated_after_fetch(
    run: SyncRun, token: ScopedToken, rotated: SessionState, *, rejected: bool, failed: bool
) -> None:
    # Cookies the server rotated must be stored even when the fetch failed, or the next replay kills the session.
    now = utc_now()
    forecast = _forecast(run, rotated, now)
    try:
        version = run.sessions.save(token, rotated, last_valid_at=now, forecast=forecast, source="fetch")
        if rejected:
            run.sessions.reject(version)
    except WardenError as exc:
        if not failed:
            raise
        # The fetch's own error is the one to report; this one is logged so it is not lost.
        logger.error("session.save_failed account=%s error=%s", run.account.name, exc)


# -- extract --------------------------------------------------------------------


def extraction_settings(account: AccountConfig) -> ExtractionSettings:
    """Build the account's extraction settings from its ``extraction_options``; raise ConfigError naming a bad one."""
    options = {**account.extraction_options, "ocr_enabled": account.ocr_enabled}
    if "passwords" in options:
        raise ConfigError(
            f"Account '{account.name}' sets 'passwords' in extraction_options. Passwords are secrets and must "
            "not be kept in a Block."
        )
    try:
        return ExtractionSettings.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise ConfigError(
            f"Account '{account.name}' has invalid extraction_options ({problems}). "
            f"Valid options: {', '.join(sorted(ExtractionSettings.model_fields))}."
        ) from exc


async def extract(run: SyncRun, settings: ExtractionSettings | None = None) -> ExtractOutcome:
    """Extract every pending attachment of the account, each in its own sandboxed process."""
    settings = settings or extraction_settings(run.account)
    pending = run.documents.pending_attachments(run.account.name)
    outcome = run.extract_outcome = ExtractOutcome()
    parallel = asyncio.Semaphore(max(1, min(2, os.cpu_count() or 1)))

    async def extract_one(item) -> None:
        async with parallel:
            result = await asyncio.to_thread(
                extract_in_sandbox,
                item.data,
                filename=item.filename,
                declared_type=item.declared_type,
                settings=settings,
            )

        details = result.model_dump(mode="json", exclude={"text"})
        run.documents.record_extraction(
            item.id,
            status=stored_status(result),
            mime_type=result.mime_type,
            text=result.text,
            error=result.error,
            details=details,
        )
        outcome.by_status[result.status] = outcome.by_status.get(result.status, 0) + 1
        if result.status in ("ok", "partial"):
            outcome.extracted += 1
        if result.status in ("encrypted", "unsupported"):
            outcome.skipped += 1
        if result.deferred:
            outcome.deferred += 1
        if result.status in FAILURE_STATUSES:
            outcome.failed += 1
            run.emit(
                EventName.EXTRACTION_FAILED,
                message_uid=item.message_uid,
                part_index=item.part_index,
                mime_type=result.mime_type,
                error=(result.error or "")[:200],
            )

        done = sum(outcome.by_status.values())
        if done % PROGRESS_EVERY == 0 and done < len(pending):
            logger.info("extract.progress account=%s done=%d total=%d", run.account.name, done, len(pending))

    await asyncio.gather(*(extract_one(item) for item in pending))
    logger.info(
        "extract.done account=%s pending=%d extracted=%d failed=%d",
        run.account.name,
        len(pending),
        outcome.extracted,
        outcome.failed,
    )
    return outcome


# -- wipe -----------------------------------------------------------------------


def wipe(run: SyncRun) -> list[RevocationProof]:
    """Revoke every token the run issued and prove each revocation; raise if any is unproven.

    The proofs of the OAuth access tokens revoked at the provider after each fetch,
    and of the tokens revoked when the run took over abandoned runs, are reported too.
    """
    own_proofs = [run.vault.revoke_and_prove(wrapped) for wrapped in run.ledger.issued()]
    run.journal_revocations(own_proofs)
    run.ledger.drop_secrets()
    runner_accessor = run.vault.runner_accessor
    if run.vault.logout() and runner_accessor is not None:
        run.journal_logout(runner_accessor)
    proofs = [*run.abandoned_proofs, *run.oauth_proofs, *own_proofs]
    run.proofs = proofs

    for proof in proofs:
        if proof.proven:
            run.emit(EventName.TOKEN_REVOKED, accessor=proof.accessor, action=proof.action)
        else:
            run.emit(EventName.REVOCATION_UNPROVEN, accessor=proof.accessor, action=proof.action, detail=proof.detail)

    unproven = [proof for proof in proofs if not proof.proven]
    if unproven:
        listing = "; ".join(f"accessor {proof.accessor} ({proof.action}): {proof.detail}" for proof in unproven)
        raise RevocationUnproven(
            f"Could not prove that {len(unproven)} of {len(proofs)} tokens of account '{run.account.name}' "
            f"are revoked: {listing}. Revoke vault tokens by hand with `bao token revoke -accessor ACCESSOR` "
            "and check the runner policy grants auth/token/revoke-accessor and lookup-accessor; for an OAuth "
            "token (accessor oauth-...), check the provider's revocation and introspection endpoints."
        )
    return proofs
