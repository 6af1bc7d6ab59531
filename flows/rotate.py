"""The ``rotate-sessions`` flow: log in again before a saved session expires.

For each account, the newest stored version of its session decides, without
decrypting it:

- no session saved yet: capture one;
- a forecast expiry (cookie, JWT or sliding lifetime) within ``margin_seconds``
  of now, or already past: log in again;
- no forecast: log in again when the session was captured by a login more than
  ``max_age_seconds`` ago.

A re-capture is the sync's browser login (``steps.refresh``), stored with the
source ``rotation`` under a scoped refresh token that is revoked, and the
revocation proven, before the account is done. The store keeps the last five
versions of each session, so an older working version survives a bad login.

Run it ad hoc::

    import asyncio
    from flows.rotate import rotate_sessions

    rows = asyncio.run(rotate_sessions(["demo"], margin_seconds=600))

One account's failure does not stop the others. The flow publishes a table
artifact with one row per account, then fails when any account failed, and the
error names those accounts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.account import registered_account_names
from flows.orchestration import PrefectEventSink, PrefectLimits, retry_transient
from flows.sync import (
    TASK_RETRIES,
    TASK_RETRY_DELAYS_SECONDS,
    issue_scoped_token,
    load_account,
    wipe_tokens,
)
from warden import steps
from warden.credentials.policies import Action
from warden.credentials.tokens import WrappedToken
from warden.credentials.vault import VaultClient
from warden.errors import ErrorKind, RevocationUnproven, WardenError
from warden.logs import configure_logging
from warden.run import SyncRun
from warden.store import default_document_store
from warden.store.documents import StoredSession

__all__ = [
    "AccountsFailed",
    "RotationDecision",
    "RotationRow",
    "decide_rotation",
    "describe_error",
    "for_each_account",
    "open_account_run",
    "raise_if_any_failed",
    "rotate_sessions",
    "scoped_tokens",
]

ROTATION_SOURCE = "rotation"
DEFAULT_MARGIN_SECONDS = 7200.0
DEFAULT_MAX_AGE_SECONDS = 86400.0
DEFAULT_MAX_PARALLEL_ACCOUNTS = 2

RowT = TypeVar("RowT")


# -- helpers shared with the smoke flow -------------------------------------------


class AccountsFailed(WardenError):
    """Some accounts of a per-account flow failed. ``failures`` maps each of them to its error message."""

    # The order decides which kind the whole batch takes: the one that needs a person soonest wins.
    _KIND_ORDER = (ErrorKind.BUG, ErrorKind.CONFIG, ErrorKind.UPSTREAM, ErrorKind.TRANSIENT)

    def __init__(
        self, operation: str, failures: dict[str, str], kinds: Sequence[ErrorKind] = (), rows: list | None = None
    ):
        names = ", ".join(f"'{name}'" for name in failures)
        super().__init__(
            f"{operation} failed for {len(failures)} account(s): {names}. "
            "The run's table artifact shows each error. Fix those accounts and run the flow again."
        )
        self.failures = failures
        self.rows = rows or []
        present = set(kinds)
        self.kind = next((kind for kind in self._KIND_ORDER if kind in present), ErrorKind.UPSTREAM)


def describe_error(exc: BaseException) -> str:
    """Return the message of a project error, or the type and message of any other exception."""
    return str(exc) if isinstance(exc, WardenError) else f"{type(exc).__name__}: {exc}"


async def open_account_run(account: str) -> SyncRun:
    """Load the account's Blocks and return a run that issues its tokens and emits its events through Prefect."""
    config, vault_block = await load_account(account)
    return SyncRun(
        config,
        vault=VaultClient(vault_block.settings()),
        documents=default_document_store(),
        events=PrefectEventSink(),
        limiter=PrefectLimits(),
    )


@asynccontextmanager
async def scoped_tokens(run: SyncRun):
    """Run the body, then revoke every token the run issued and prove it, also when the body failed.

    When both fail, the body's error is raised and the unproven revocation is
    logged. A cancelled body skips the wipe, and its tokens then end with their
    TTL (the account's ``token_ttl_seconds``).
    """
    try:
        yield
    except Exception:
        try:
            await wipe_tokens(run)
        except RevocationUnproven as exc:
            get_run_logger().error("%s", exc)
        raise
    await wipe_tokens(run)


async def for_each_account(
    names: Sequence[str],
    work: Callable[[str], Awaitable[RowT]],
    failed_row: Callable[[str, BaseException], RowT],
    *,
    max_parallel: int,
) -> list[tuple[RowT, BaseException | None]]:
    """Run ``work`` for every account, at most ``max_parallel`` at once, and return each row with its error, in order.

    An account whose ``work`` raises gets ``failed_row(name, error)``, and the others go on.
    """
    semaphore = asyncio.Semaphore(max_parallel)
    run_logger = get_run_logger()

    async def one(name: str) -> tuple[RowT, BaseException | None]:
        async with semaphore:
            try:
                return await work(name), None
            except Exception as exc:  # noqa: BLE001 - one account's failure must not stop the others
                run_logger.error("account.failed account=%s error=%s", name, describe_error(exc))
                return failed_row(name, exc), exc

    return list(await asyncio.gather(*(one(name) for name in dict.fromkeys(names))))


def raise_if_any_failed(
    operation: str, outcomes: list[tuple[RowT, BaseException | None]], name_of: Callable[[RowT], str]
) -> None:
    """Raise :class:`AccountsFailed` naming every account whose work raised."""
    failures = {name_of(row): describe_error(exc) for row, exc in outcomes if exc is not None}
    if failures:
        kinds = [exc.kind if isinstance(exc, WardenError) else ErrorKind.BUG for _, exc in outcomes if exc]
        raise AccountsFailed(operation, failures, kinds, rows=[row for row, _ in outcomes])


def iso_seconds(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


# -- decision ---------------------------------------------------------------------


@dataclass(frozen=True)
class RotationDecision:
    """Whether to log in again, the action the table shows, and why."""

    recapture: bool
    action: str
    reason: str


def decide_rotation(
    stored: StoredSession | None, *, now: datetime, margin_seconds: float, max_age_seconds: float
) -> RotationDecision:
    """Decide from the newest stored version whether the session must be captured again.

    The age of a session without a forecast counts from ``captured_at``, the
    time of the login that produced it. Probes and fetches store new versions
    of the same login, so their save times do not make the session younger.
    """
    if stored is None:
        return RotationDecision(True, "captured", "no session saved yet")

    if stored.expires_at is not None:
        seconds_left = (stored.expires_at - now).total_seconds()
        source = stored.forecast_source or "stored"
        if seconds_left <= 0:
            return RotationDecision(True, "rotated", f"the {source} forecast expired {-seconds_left:.0f} s ago")
        if seconds_left <= margin_seconds:
            return RotationDecision(
                True,
                "rotated",
                f"the {source} forecast expires in {seconds_left:.0f} s, within the {margin_seconds:.0f} s margin",
            )
        return RotationDecision(False, "skipped", f"the {source} forecast expires in {seconds_left:.0f} s")

    age_seconds = (now - stored.captured_at).total_seconds()
    if age_seconds >= max_age_seconds:
        return RotationDecision(
            True,
            "rotated",
            f"no forecast, and the session was captured {age_seconds:.0f} s ago (max age {max_age_seconds:.0f} s)",
        )
    return RotationDecision(False, "skipped", f"no forecast; the session was captured {age_seconds:.0f} s ago")


# -- task and flow ----------------------------------------------------------------


class RotationRow(BaseModel):
    """The rotation's outcome for one account, as a row of the table artifact."""

    account: str
    action: str = Field(description="captured, rotated, skipped or failed.")
    reason: str
    old_expires_at: str | None = Field(default=None, description="Forecast expiry of the version found, ISO 8601.")
    old_version: int | None = None
    new_version: int | None = Field(default=None, description="Version stored by the new login, if any.")
    new_expires_at: str | None = None


@task(
    name="rotate-session",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS_SECONDS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
async def rotate_session(run: SyncRun, wrapped: WrappedToken) -> None:
    """Log in with Chromium in a fresh context and store the session as a new version with source ``rotation``."""
    await steps.refresh(run, wrapped, source=ROTATION_SOURCE)


async def _rotate_account(account: str, *, margin_seconds: float, max_age_seconds: float) -> RotationRow:
    run = await open_account_run(account)
    stored = run.documents.latest_session(account)
    decision = decide_rotation(
        stored, now=datetime.now(UTC), margin_seconds=margin_seconds, max_age_seconds=max_age_seconds
    )
    row = RotationRow(
        account=account,
        action=decision.action,
        reason=decision.reason,
        old_expires_at=iso_seconds(stored.expires_at) if stored else None,
        old_version=stored.version if stored else None,
    )
    if not decision.recapture:
        return row

    async with scoped_tokens(run):
        wrapped = await issue_scoped_token(run, Action.REFRESH)
        await rotate_session(run, wrapped)

    # NOTE: steps.refresh does not return the version it saved, so the newest version is read back.
    # A sync of the same account that saves in between would be reported here instead.
    newest = run.documents.latest_session(account)
    if newest is not None:
        row.new_version = newest.version
        row.new_expires_at = iso_seconds(newest.expires_at)
    return row


@flow(name="rotate-sessions", log_prints=False)
async def rotate_sessions(
    accounts: list[str] | None = None,
    margin_seconds: Annotated[float, Field(ge=0)] = DEFAULT_MARGIN_SECONDS,
    max_age_seconds: Annotated[float, Field(gt=0)] = DEFAULT_MAX_AGE_SECONDS,
    max_parallel_accounts: Annotated[int, Field(ge=1, le=16)] = DEFAULT_MAX_PARALLEL_ACCOUNTS,
) -> list[RotationRow]:
    """Log in again for every account whose session expires within ``margin_seconds`` or is too old.

    Args:
        accounts: account names; every registered account when None.
        margin_seconds: log in again when the forecast expiry is this close or past. Keep it above the
            schedule's interval, so no session expires between two runs.
        max_age_seconds: for sessions without a forecast, log in again when the login is this old.
        max_parallel_accounts: accounts handled at once; browser logins also wait for the ``browser``
            global concurrency limit.
    """
    # Installs the redaction filter on every handler, and JSON output when WARDEN_LOG_FORMAT=json.
    configure_logging(add_root_handler=False)
    run_logger = get_run_logger()
    names = accounts if accounts is not None else await registered_account_names()

    async def work(account: str) -> RotationRow:
        return await _rotate_account(account, margin_seconds=margin_seconds, max_age_seconds=max_age_seconds)

    def failed_row(account: str, exc: BaseException) -> RotationRow:
        return RotationRow(account=account, action="failed", reason=describe_error(exc))

    outcomes = await for_each_account(names, work, failed_row, max_parallel=max_parallel_accounts)
    rows = [row for row, _ in outcomes]

    await acreate_table_artifact(
        key="session-rotation",
        table=[row.model_dump(mode="json") for row in rows],
        description=f"Session rotation of {len(rows)} account(s), margin {margin_seconds:.0f} s.",
    )
    counts = {action: sum(1 for row in rows if row.action == action) for action in sorted({r.action for r in rows})}
    summary = " ".join(f"{action}={count}" for action, count in counts.items())
    run_logger.info("rotation.done accounts=%d %s", len(rows), summary)

    raise_if_any_failed("Session rotation", outcomes, lambda row: row.account)
    return rows
