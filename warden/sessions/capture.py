"""Log in with Chromium in a fresh context and capture the whole session.

Playwright's ``storage_state()`` saves cookies and localStorage, and IndexedDB
only when asked (``indexed_db=True``); it never saves sessionStorage, so the
page's sessionStorage is read separately. The context is closed before this
returns, whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from warden.accounts import BrowserBudget
from warden.connectors.base import Connector, LoginCredentials
from warden.errors import BrowserCrashed, SiteUnreachable
from warden.sessions.browser import BrowserPool
from warden.sessions.state import SessionState

__all__ = ["login_and_capture"]

logger = logging.getLogger("warden.browser")

# JavaScript that copies the page's sessionStorage, which Playwright's storage_state() leaves out.
READ_SESSION_STORAGE = "() => Object.fromEntries(Object.entries(window.sessionStorage))"


async def login_and_capture(
    pool: BrowserPool,
    connector: Connector,
    credentials: LoginCredentials,
    *,
    account: str,
    budget: BrowserBudget,
    storage_state: dict[str, Any] | None = None,
) -> SessionState:
    """Log in on a fresh page and return the captured session.

    ``storage_state`` seeds the fresh context (as Playwright's dict, never a file), e.g. with the
    previous session, so cookies a site uses to recognise the device are sent with the login.

    Raises the connector's :class:`~warden.errors.LoginFailed` or
    :class:`~warden.errors.LoginRequired` unchanged, :class:`SiteUnreachable`
    on a timeout, :class:`BrowserCrashed` when the browser fails, and
    :class:`~warden.errors.BrowserBudgetExceeded` when the job uses more CPU
    seconds or memory than ``budget`` allows.
    """
    try:
        async with pool.context(storage_state=storage_state, budget=budget, account=account) as context:
            page = await context.new_page()
            extras = await asyncio.wait_for(connector.login(page, credentials), timeout=budget.timeout_seconds)
            storage_state = await context.storage_state(indexed_db=True)
            origin = await page.evaluate("() => window.location.origin")
            session_storage = {origin: await page.evaluate(READ_SESSION_STORAGE)}
    except (TimeoutError, PlaywrightTimeoutError) as exc:
        raise SiteUnreachable(
            f"The login of account '{account}' timed out after {budget.timeout_seconds:.0f} s. "
            "Check that the site is up, or raise the account's browser_timeout_seconds."
        ) from exc
    except PlaywrightError as exc:
        raise BrowserCrashed(
            f"The browser failed during the login of account '{account}': {exc.message[:200]}. "
            "The next sync starts a new browser."
        ) from exc

    state = SessionState.from_playwright(storage_state, session_storage=session_storage, extras=extras)
    state.register_secrets()
    logger.info(
        "browser.session_captured account=%s cookies=%d origins=%d",
        account,
        len(state.cookies),
        len(state.origins),
    )
    return state
