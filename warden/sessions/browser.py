"""One Chromium per worker process, shared by browser jobs, closed when the last job ends.

Each job gets a fresh incognito context (optionally seeded with a decrypted
state passed as a dict, so nothing touches disk) with a small viewport and
images, media and fonts blocked, and the context is closed in ``finally``.
Chromium is Debian's package driven by Playwright; Playwright's own browser
download is never used.

The launch flags keep Chromium quiet on a closed network: without
``--disable-background-networking`` and its companions it floods refused
connections to update and sync services.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Playwright, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

from warden.errors import ConfigError, SiteUnreachable

__all__ = ["BrowserPool", "get_browser_pool"]

logger = logging.getLogger("warden.browser")

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--disable-quic",
    "--mute-audio",
)
BLOCKED_RESOURCE_TYPES = frozenset({"image", "media", "font"})
VIEWPORT = {"width": 1024, "height": 720}


class BrowserPool:
    """A lazily launched Chromium shared by the browser jobs of this process."""

    def __init__(self, chromium_path: Path = Path("/usr/bin/chromium")) -> None:
        self._chromium_path = chromium_path
        self._lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._jobs = 0
        self.launches = 0

    @property
    def running(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    @property
    def browser_pid(self) -> int | None:
        """The Chromium main process id, for resource accounting; None when not running."""
        browser = self._browser
        process = getattr(getattr(browser, "_impl_obj", None), "_browser_process", None)
        return getattr(process, "pid", None)

    async def _ensure_browser(self) -> Browser:
        if self._browser is not None and self._browser.is_connected():
            return self._browser

        if not self._chromium_path.exists():
            raise ConfigError(
                f"Chromium was not found at {self._chromium_path}. Install Debian's `chromium` package "
                "(stack/install.sh does) or set WARDEN_CHROMIUM_PATH."
            )

        if self._playwright is None:
            self._playwright = await async_playwright().start()
        try:
            self._browser = await self._playwright.chromium.launch(
                executable_path=str(self._chromium_path),
                headless=True,
                args=list(CHROMIUM_ARGS),
                chromium_sandbox=False,
            )
        except PlaywrightError as exc:
            raise SiteUnreachable(f"Could not launch Chromium at {self._chromium_path}: {exc.message}") from exc

        self.launches += 1
        logger.info("browser.launched path=%s version=%s", self._chromium_path, self._browser.version)
        return self._browser

    async def _close_when_idle(self) -> None:
        if self._jobs > 0:
            return
        browser, playwright = self._browser, self._playwright
        self._browser = None
        self._playwright = None
        if browser is not None:
            try:
                await browser.close()
            except PlaywrightError as exc:
                logger.warning("browser.close_failed error=%s", exc.message)
        if playwright is not None:
            await playwright.stop()
        if browser is not None:
            logger.info("browser.closed")

    @asynccontextmanager
    async def context(self, *, storage_state: dict[str, Any] | None = None) -> AsyncIterator[BrowserContext]:
        """Yield a fresh incognito context; close it, and the browser when idle, on exit."""
        async with self._lock:
            browser = await self._ensure_browser()
            self._jobs += 1

        context: BrowserContext | None = None
        try:
            context = await browser.new_context(
                storage_state=storage_state,
                viewport=VIEWPORT,
                service_workers="block",
                accept_downloads=False,
            )
            await context.route("**/*", _block_heavy_resources)
            yield context
        finally:
            if context is not None:
                try:
                    await context.close()
                except PlaywrightError as exc:
                    logger.warning("browser.context_close_failed error=%s", exc.message)
            async with self._lock:
                self._jobs -= 1
                await self._close_when_idle()


async def _block_heavy_resources(route: Route) -> None:
    if route.request.resource_type in BLOCKED_RESOURCE_TYPES:
        await route.abort()
    else:
        await route.continue_()


_pool: BrowserPool | None = None


def get_browser_pool(chromium_path: Path | None = None) -> BrowserPool:
    """Return this process's browser pool."""
    global _pool
    if _pool is None:
        _pool = BrowserPool(chromium_path or Path("/usr/bin/chromium"))
    return _pool
