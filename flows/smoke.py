"""The ``smoke-test-sessions`` flow: open each account's saved session in a real browser.

The sync's probe checks a session over plain HTTP. This flow checks what a
person would see. Per account, it decrypts the newest session with a scoped
probe token and loads it into a fresh Chromium context. There it opens a
harmless authenticated page and checks that the page shows the logged-in user,
not the login form. For Roundcube that page is the inbox list (``?_task=mail``), which
lists messages without opening any, so no message is marked read.

The site may rotate cookies during the visit, so the context's storage state
after a logged-in visit is stored as a new version with the source ``smoke``.

Run it ad hoc::

    import asyncio
    from flows.smoke import smoke_test_sessions

    rows = asyncio.run(smoke_test_sessions(["demo"]))

Every account gets a row in the table artifact. The flow fails at the end when
any account's session did not work, and the error names those accounts.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urljoin

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from blocks.account import registered_account_names
from flows.orchestration import retry_transient
from flows.rotate import (
    DEFAULT_MAX_PARALLEL_ACCOUNTS,
    describe_error,
    for_each_account,
    open_account_run,
    raise_if_any_failed,
    scoped_tokens,
)
from flows.sync import TASK_RETRIES, TASK_RETRY_DELAYS_SECONDS, issue_scoped_token
from warden.accounts import BrowserBudget
from warden.connectors.roundcube import REQUEST_TOKEN_EXTRA
from warden.credentials.policies import Action
from warden.credentials.tokens import WrappedToken
from warden.errors import BrowserCrashed, SessionRejected, SiteUnreachable, StateCorrupt
from warden.events import EventName
from warden.logs import configure_logging
from warden.run import SyncRun
from warden.sessions.browser import BrowserPool
from warden.sessions.capture import READ_SESSION_STORAGE
from warden.sessions.forecast import forecast_expiry
from warden.sessions.state import SessionState

__all__ = ["SMOKE_PAGES", "PageVisit", "SmokePage", "SmokeRow", "smoke_test_sessions", "visit_with_session"]

SMOKE_SOURCE = "smoke"


class SessionNotWorking(SessionRejected):
    """The smoke test found no saved session, or a session the site no longer accepts.

    ``result`` is the value the table shows: ``no-session`` or ``logged-out``.
    """

    def __init__(self, message: str, *, result: str) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SmokePage:
    """A harmless authenticated page of one connector kind, and the scripts that read it.

    ``logged_in_script`` is a JavaScript function that returns true when the
    page shows the logged-in user. ``extras_script`` returns the values to keep
    in the state's extras, which are read again because the site may change them.
    """

    path: str
    logged_in_script: str
    extras_script: str


# TODO: move these to the connectors (a smoke page per Connector) so that adding a site needs no change here.
SMOKE_PAGES: dict[str, SmokePage] = {
    "roundcube": SmokePage(
        # Only the message list, because _action=show or preview would mark a message read.
        path="?_task=mail&_mbox=INBOX",
        logged_in_script=(
            "() => Boolean(window.rcmail && rcmail.env && rcmail.env.task === 'mail'"
            " && !document.querySelector('#rcmloginuser'))"
        ),
        extras_script=(
            "() => (window.rcmail && rcmail.env && rcmail.env.request_token)"
            f" ? {{{REQUEST_TOKEN_EXTRA}: rcmail.env.request_token}} : {{}}"
        ),
    ),
}


@dataclass(frozen=True)
class PageVisit:
    """The outcome of one visit: whether the page showed the logged-in user, and the state after it."""

    logged_in: bool
    state: SessionState
    status: int | None
    seconds: float


async def visit_with_session(
    pool: BrowserPool,
    page_spec: SmokePage,
    base_url: str,
    state: SessionState,
    *,
    account: str,
    timeout_seconds: float,
    budget: BrowserBudget | None = None,
) -> PageVisit:
    """Open ``page_spec`` below ``base_url`` in a fresh context seeded with ``state``, and read the result.

    The returned state has the cookies and web storage of the context after
    the visit, the extras the page reported over the old ones, and the old
    ``captured_at``, because it is still the same login. Raises
    :class:`SiteUnreachable` on a timeout or refused connection,
    :class:`BrowserCrashed` when the browser fails, and the pool's
    :class:`~warden.errors.BrowserBudgetExceeded` when the visit goes over ``budget``.
    """
    url = urljoin(base_url, page_spec.path)
    started = time.perf_counter()

    async def visit() -> PageVisit:
        async with pool.context(storage_state=state.to_playwright(), budget=budget, account=account) as context:
            page = await context.new_page()
            response = await page.goto(url, wait_until="load")
            logged_in = bool(await page.evaluate(page_spec.logged_in_script))
            extras = await page.evaluate(page_spec.extras_script) or {}
            storage_state = await context.storage_state(indexed_db=True)
            origin = await page.evaluate("() => window.location.origin")
            session_storage = {**state.session_storage, origin: await page.evaluate(READ_SESSION_STORAGE)}

        after = SessionState.from_playwright(
            storage_state,
            session_storage=session_storage,
            extras={**state.extras, **{key: str(value) for key, value in extras.items() if value}},
        ).model_copy(update={"captured_at": state.captured_at})
        after.register_secrets()
        return PageVisit(
            logged_in=logged_in,
            state=after,
            status=response.status if response is not None else None,
            seconds=time.perf_counter() - started,
        )

    try:
        return await asyncio.wait_for(visit(), timeout=timeout_seconds)
    except (TimeoutError, PlaywrightTimeoutError) as exc:
        raise SiteUnreachable(
            f"Opening {url} with the saved session of account '{account}' timed out after {timeout_seconds:.0f} s. "
            "Check that the site is up, or raise the account's browser_timeout_seconds."
        ) from exc
    except PlaywrightError as exc:
        if "net::ERR_" in exc.message:
            raise SiteUnreachable(
                f"Could not open {url} for account '{account}': {exc.message.splitlines()[0][:200]}. "
                "Check that the site is up and the account's base URL."
            ) from exc
        raise BrowserCrashed(
            f"The browser failed while opening {url} for account '{account}': {exc.message[:200]}. "
            "The next run starts a new browser."
        ) from exc


class SmokeRow(BaseModel):
    """The smoke test of one account, as its table artifact shows it."""

    account: str
    result: str = Field(description="ok, logged-out, no-session, unreadable, unsupported or failed.")
    seconds: float = Field(default=0.0, description="Wall time of the browser visit, in seconds.")
    new_version: int | None = Field(default=None, description="Version stored with the rotated cookies, if any.")
    detail: str = ""


@task(
    name="smoke-test-session",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS_SECONDS,
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
async def smoke_test_session(run: SyncRun, wrapped: WrappedToken) -> SmokeRow:
    """Open the account's authenticated page with its saved session; store the rotated cookies when logged in."""
    account = run.account.name
    page_spec = SMOKE_PAGES.get(run.connector.kind)
    if page_spec is None:
        return SmokeRow(
            account=account, result="unsupported", detail=f"connector '{run.connector.kind}' has no smoke page"
        )

    token = run.token_for(wrapped)
    loaded = run.sessions.load(token)
    if loaded is None:
        raise SessionNotWorking(
            f"Account '{account}' has no saved session to test. Run `warden sync {account}` to log in.",
            result="no-session",
        )

    started_at = datetime.now(UTC)
    async with run.limiter.browser_slot():
        try:
            visit = await visit_with_session(
                run.browser_pool,
                page_spec,
                run.account.base_url,
                loaded.state,
                account=account,
                timeout_seconds=run.account.browser.timeout_seconds,
                budget=run.account.browser,
            )
        except BrowserCrashed as exc:
            run.emit(EventName.BROWSER_CRASHED, error=str(exc)[:200])
            raise

    run.emit(
        EventName.SESSION_PROBED,
        state="valid" if visit.logged_in else "expired",
        reason="smoke test in a browser",
        elapsed_seconds=round(visit.seconds, 3),
        method="browser",
    )
    if not visit.logged_in:
        # The site showed its login form, so the session is gone and its cookies are not worth storing.
        raise SessionNotWorking(
            f"The saved session of account '{account}' (version {loaded.version}) opened the login form "
            f"(HTTP {visit.status}) instead of the logged-in page. The next sync logs in again.",
            result="logged-out",
        )

    forecast = forecast_expiry(
        visit.state,
        last_valid_at=started_at,
        sliding_lifetime_seconds=run.account.session_lifetime_seconds,
        auth_cookie_names=run.connector.auth_cookie_names,
    )
    version = run.sessions.save(token, visit.state, last_valid_at=started_at, forecast=forecast, source=SMOKE_SOURCE)
    return SmokeRow(account=account, result="ok", seconds=round(visit.seconds, 3), new_version=version)


async def _smoke_account(account: str) -> SmokeRow:
    run = await open_account_run(account)
    async with scoped_tokens(run):
        wrapped = await issue_scoped_token(run, Action.PROBE)
        return await smoke_test_session(run, wrapped)


def _failed_row(account: str, exc: BaseException) -> SmokeRow:
    if isinstance(exc, StateCorrupt):
        result = "unreadable"
    elif isinstance(exc, SessionNotWorking):
        result = exc.result
    else:
        result = "failed"
    return SmokeRow(account=account, result=result, detail=describe_error(exc))


@flow(name="smoke-test-sessions", log_prints=False)
async def smoke_test_sessions(
    accounts: list[str] | None = None,
    max_parallel_accounts: Annotated[int, Field(ge=1, le=16)] = DEFAULT_MAX_PARALLEL_ACCOUNTS,
) -> list[SmokeRow]:
    """Open every account's saved session in a browser and report whether it shows the logged-in page.

    Args:
        accounts: account names; every registered account when None.
        max_parallel_accounts: accounts tested at once; each visit also waits for the ``browser``
            global concurrency limit.
    """
    # Installs the redaction filter on every handler, and JSON output when WARDEN_LOG_FORMAT=json.
    configure_logging(add_root_handler=False)
    run_logger = get_run_logger()
    names = accounts if accounts is not None else await registered_account_names()

    outcomes = await for_each_account(names, _smoke_account, _failed_row, max_parallel=max_parallel_accounts)
    rows = [row for row, _ in outcomes]

    await acreate_table_artifact(
        key="session-smoke-test",
        table=[row.model_dump(mode="json") for row in rows],
        description=f"Browser smoke test of the saved sessions of {len(rows)} account(s).",
    )
    run_logger.info(
        "smoke.done accounts=%d ok=%d failed=%d",
        len(rows),
        sum(1 for row in rows if row.result == "ok"),
        sum(1 for _, exc in outcomes if exc is not None),
    )

    raise_if_any_failed("The session smoke test", outcomes, lambda row: row.account)
    return rows
