"""Capture a session that a person logs in to by hand, in a visible Chromium window.

Used by ``warden login ACCOUNT`` on a machine with a display. The window opens
on the account's site. Every ``poll_seconds`` the window's cookies are replayed
with the connector's probe. Once the probe accepts them, the session is
captured with its web storage and the connector's page extras, and the window
closes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from playwright.async_api import Browser, BrowserContext, async_playwright
from playwright.async_api import Error as PlaywrightError

from warden.connectors.base import Connector, ProbeState
from warden.errors import BrowserCrashed, LoginRequired, SiteUnreachable
from warden.run import SyncRun
from warden.sessions.browser import CHROMIUM_ARGS
from warden.sessions.capture import READ_SESSION_STORAGE
from warden.sessions.state import SessionState
from warden.settings import get_settings

__all__ = ["HEADED_CHROMIUM_ARGS", "capture_by_hand"]

logger = logging.getLogger("warden.browser")

MANUAL_POLL_SECONDS = 2.0
# With this hint Chromium uses Wayland when WAYLAND_DISPLAY is set, and X11 otherwise.
HEADED_CHROMIUM_ARGS = (*CHROMIUM_ARGS, "--ozone-platform-hint=auto")


async def _read_session_storage(context: BrowserContext) -> dict[str, dict[str, str]]:
    storage: dict[str, dict[str, str]] = {}
    for page in context.pages:
        try:
            origin = await page.evaluate("() => window.location.origin")
            storage[origin] = await page.evaluate(READ_SESSION_STORAGE)
        except PlaywrightError:
            # A page that is navigating or closing has no storage to read; the cookies carry the login.
            continue
    return storage


async def _read_page_extras(connector: Connector, context: BrowserContext) -> dict[str, str]:
    if not context.pages:
        return {}
    return await connector.read_page_extras(context.pages[-1])


def _window_open(browser: Browser, context: BrowserContext) -> bool:
    return browser.is_connected() and any(not page.is_closed() for page in context.pages)


def _window_closed(account: str) -> LoginRequired:
    return LoginRequired(
        f"The browser window for account '{account}' was closed before the login was complete. "
        f"Run `warden login {account}` again."
    )


async def _close_browser(browser: Browser) -> None:
    if not browser.is_connected():
        return
    try:
        await browser.close()
    except PlaywrightError as exc:
        logger.warning("browser.close_failed error=%s", exc.message)


async def capture_by_hand(
    run: SyncRun,
    *,
    timeout_seconds: float,
    poll_seconds: float = MANUAL_POLL_SECONDS,
    remote_debugging_port: int | None = None,
) -> tuple[ProbeState, SessionState]:
    """Open a visible Chromium window on the site and wait until the probe accepts the window's cookies.

    Returns the probe state and the session, with the cookies the probe's request rotated. The window
    is closed before this returns. Raises :class:`LoginRequired` when the person closes
    the window or does not log in within ``timeout_seconds``.
    """
    account = run.account.name
    args = list(HEADED_CHROMIUM_ARGS)
    if remote_debugging_port is not None:
        # Chromium binds the DevTools port to 127.0.0.1 unless --remote-debugging-address names another address
        # (seen with Debian's Chromium 156).
        args.append(f"--remote-debugging-port={remote_debugging_port}")

    async with async_playwright() as playwright:
        try:
            browser = await playwright.chromium.launch(
                executable_path=str(get_settings().chromium_path), headless=False, args=args, chromium_sandbox=False
            )
        except PlaywrightError as exc:
            raise BrowserCrashed(
                f"Could not open a Chromium window for account '{account}': {exc.message[:200]}"
            ) from exc

        context: BrowserContext | None = None
        try:
            context = await browser.new_context(no_viewport=True)
            page = await context.new_page()
            try:
                await page.goto(run.account.base_url, wait_until="domcontentloaded")
            except PlaywrightError as exc:
                if not _window_open(browser, context):
                    raise _window_closed(account) from exc
                raise SiteUnreachable(
                    f"Could not open {run.account.base_url} in the browser window for account '{account}': "
                    f"{exc.message[:200]}. Check that the site is up and the account's base URL."
                ) from exc
            logger.info("login.window_opened account=%s url=%s", account, run.account.base_url)

            deadline = time.monotonic() + timeout_seconds
            probes = 0
            while True:
                if not _window_open(browser, context):
                    raise _window_closed(account)

                state = SessionState.from_playwright(await context.storage_state(indexed_db=True))
                if state.cookies:
                    probes += 1
                    async with run.site_access(run.account.site):
                        result, rotated = await run.connector.probe(state)
                    if result.state in (ProbeState.VALID, ProbeState.EXPIRING):
                        logger.info("login.by_hand_detected account=%s probes=%d", account, probes)
                        captured = rotated.model_copy(
                            update={
                                "session_storage": await _read_session_storage(context),
                                "extras": await _read_page_extras(run.connector, context),
                            }
                        )
                        captured.register_secrets()
                        return result.state, captured

                if time.monotonic() >= deadline:
                    raise LoginRequired(
                        f"Account '{account}' was not logged in within {timeout_seconds:.0f} s "
                        f"(the probe accepted none of the window's sessions). Run `warden login {account}` again, "
                        "or give more time with --timeout-seconds."
                    )
                await asyncio.sleep(poll_seconds)
        except PlaywrightError as exc:
            if context is None or not _window_open(browser, context):
                raise _window_closed(account) from exc
            raise BrowserCrashed(
                f"The browser failed during the login of account '{account}': {exc.message[:200]}"
            ) from exc
        finally:
            await _close_browser(browser)
            logger.info("login.window_closed account=%s", account)
