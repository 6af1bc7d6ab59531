"""One Chromium per worker process, shared by browser jobs, closed when the last job ends.

Each job gets a fresh incognito context (optionally seeded with a decrypted
state passed as a dict, so nothing touches disk) with a small viewport and
images, media and fonts blocked, and the context is closed in ``finally``.
Chromium is Debian's package driven by Playwright; Playwright's own browser
download is never used.

The launch flags keep Chromium quiet on a closed network: without
``--disable-background-networking`` and its companions it floods refused
connections to update and sync services.

No process of a browser outlives it: :mod:`warden.sessions.processes` finds
every process of a launch, including re-parented helpers, and the pool kills
whatever is left when the browser closes or crashes.

A job can carry a :class:`~warden.accounts.BrowserBudget`. While the job
runs, a watch samples the browser's processes every
``BUDGET_POLL_INTERVAL_SECONDS`` (see :mod:`warden.sessions.budget`). A job
over budget is stopped with :class:`BrowserBudgetExceeded`, and a job whose
browser dies is stopped with :class:`BrowserCrashed`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
from playwright.async_api import Browser, BrowserContext, Playwright, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

from warden.accounts import BrowserBudget
from warden.errors import BrowserBudgetExceeded, BrowserCrashed, BugError, ConfigError, SiteUnreachable
from warden.sessions.budget import UsageMeter, UsageSample, budget_overrun
from warden.sessions.processes import LAUNCH_TAG_VARIABLE, BrowserProcesses

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

BUDGET_POLL_INTERVAL_SECONDS = 0.25
CONTEXT_CLOSE_TIMEOUT_SECONDS = 10.0
BROWSER_CLOSE_TIMEOUT_SECONDS = 10.0
# After a clean close, helpers get this long to exit on their own before they are killed.
EXIT_GRACE_SECONDS = 1.0


class _Launch:
    """One running Chromium, its processes and the jobs using it."""

    def __init__(self, browser: Browser, processes: BrowserProcesses) -> None:
        self.browser = browser
        self.processes = processes
        self.jobs = 0
        self.cleanup: asyncio.Task[None] | None = None
        # closing: the pool closes an idle browser. stopping: the pool kills a browser that jobs still use.
        self.closing = False
        self.stopping = False
        self.disconnected = asyncio.Event()

    def alive(self) -> bool:
        return not self.disconnected.is_set() and self.browser.is_connected()

    def crashed(self) -> bool:
        """Return whether the browser stopped while jobs used it (killed, crashed, or stopped by the pool)."""
        if self.closing:
            return False
        return self.stopping or not self.alive() or not self.processes.leader_running()


class _JobWatch:
    """Stop one job, by cancelling its task, when it goes over budget or its browser dies.

    The task is cancelled the way ``asyncio.timeout`` does it, and the
    context manager turns the cancellation into :attr:`interruption`.
    """

    def __init__(self, launch: _Launch, *, budget: BrowserBudget | None, account: str) -> None:
        self._launch = launch
        self._budget = budget
        self._account = account
        self._job_task = asyncio.current_task()
        self._meter = UsageMeter(launch.processes.members) if budget is not None else None
        self._watch_task: asyncio.Task[None] | None = None
        self.interruption: BrowserBudgetExceeded | BrowserCrashed | None = None
        self.last_sample: UsageSample | None = None

    async def start(self) -> None:
        if self._meter is not None:
            await asyncio.to_thread(self._meter.start)
        self._watch_task = asyncio.create_task(self._watch(), name=f"browser-job-watch-{self._account}")

    def stop(self) -> None:
        """Cancel the watch. Once this returns, the watch cannot interrupt the job."""
        if self._watch_task is not None:
            self._watch_task.cancel()

    async def wait_stopped(self) -> None:
        if self._watch_task is not None:
            with suppress(asyncio.CancelledError):
                await self._watch_task

    def take_back_cancellation(self) -> bool:
        """Undo this watch's cancel request. Return False when something else cancelled the task as well."""
        if self._job_task is None:
            return True
        return self._job_task.uncancel() == 0

    async def _watch(self) -> None:
        while True:
            if self._launch.crashed():
                self._interrupt(
                    BrowserCrashed(
                        f"Chromium stopped during the browser job of account '{self._account}'. "
                        "The next job starts a new browser."
                    )
                )
                return

            if self._meter is not None and self._budget is not None:
                sample = await asyncio.to_thread(self._meter.sample)
                if sample.memory_bytes > self._budget.max_memory_bytes and not sample.memory_exact:
                    # Between exact reads the figure is partly estimated, so an overrun is confirmed on exact USS.
                    sample = await asyncio.to_thread(self._meter.sample, exact_memory=True)
                self.last_sample = sample
                overrun = budget_overrun(sample, self._budget, account=self._account)
                if overrun is not None:
                    self._interrupt(overrun)
                    return

            with suppress(TimeoutError):
                await asyncio.wait_for(self._launch.disconnected.wait(), BUDGET_POLL_INTERVAL_SECONDS)

    def _interrupt(self, error: BrowserBudgetExceeded | BrowserCrashed) -> None:
        sample = self.last_sample
        logger.warning(
            "browser.job_stopped account=%s reason=%s cpu_seconds=%s memory_bytes=%s",
            self._account,
            type(error).__name__,
            f"{sample.cpu_seconds:.2f}" if sample else "-",
            sample.memory_bytes if sample else "-",
        )
        self.interruption = error
        if self._job_task is not None:
            self._job_task.cancel()


class BrowserPool:
    """A lazily launched Chromium shared by the browser jobs of this process."""

    def __init__(self, chromium_path: Path = Path("/usr/bin/chromium")) -> None:
        self._chromium_path = chromium_path
        self._lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._current: _Launch | None = None
        self._open_launches: set[_Launch] = set()
        self._all_processes: list[BrowserProcesses] = []
        self.launches = 0

    @property
    def running(self) -> bool:
        return self._current is not None and self._current.alive()

    @property
    def browser_pid(self) -> int | None:
        """The Chromium main process id, for resource accounting; None when not running."""
        if self._current is None or not self._current.alive():
            return None
        return self._current.processes.leader_pid

    def processes(self) -> list[psutil.Process]:
        """Return the running processes of every browser this pool launched. The call blocks for a few ms."""
        found: list[psutil.Process] = []
        for processes in self._all_processes:
            found.extend(processes.members())
        return found

    @asynccontextmanager
    async def context(
        self,
        *,
        storage_state: dict[str, Any] | None = None,
        budget: BrowserBudget | None = None,
        account: str = "-",
    ) -> AsyncIterator[BrowserContext]:
        """Yield a fresh incognito context; close it, and the browser when idle, on exit.

        With ``budget``, the CPU seconds and unique memory of the browser's
        processes are sampled while the job runs, and the job is stopped with
        :class:`BrowserBudgetExceeded` when it goes over either limit. The
        browser's launch is not charged to the job: measuring starts once the
        browser is running.

        NOTE: jobs that share the browser are charged conservatively. Each job
        is charged with every process of the browser, because Chromium does
        not say which context a helper process works for. A job can therefore
        be stopped for what a concurrent job used, but no job goes over its
        limit unnoticed.

        Raises :class:`BrowserCrashed` when the browser dies during the job,
        whether the job was waiting on Playwright or on something else.
        """
        launch = await self._acquire()
        watch = _JobWatch(launch, budget=budget, account=account)
        context: BrowserContext | None = None
        try:
            await watch.start()
            context = await launch.browser.new_context(
                storage_state=storage_state,
                viewport=VIEWPORT,
                service_workers="block",
                accept_downloads=False,
            )
            await context.route("**/*", _block_heavy_resources)
            yield context
        except BaseException as exc:
            watch.stop()
            replacement = _job_error(exc, watch, launch, account=account)
            if replacement is None:
                raise
            raise replacement from (None if isinstance(exc, asyncio.CancelledError) else exc)
        else:
            watch.stop()
            # The job swallowed the watch's cancellation, or ended in the same step as the watch stopped it.
            if watch.interruption is not None:
                watch.take_back_cancellation()
                raise watch.interruption
        finally:
            watch.stop()
            await watch.wait_stopped()
            if context is not None:
                await self._close_context(context, launch, account=account)
            await self._release(launch)

    # -- launching and closing ----------------------------------------------

    async def _acquire(self) -> _Launch:
        async with self._lock:
            launch = self._current
            if launch is None or not launch.alive():
                launch = await self._launch()
                self._current = launch
            launch.jobs += 1
            return launch

    async def _release(self, launch: _Launch) -> None:
        async with self._lock:
            launch.jobs -= 1
            if launch.jobs > 0:
                return
            if self._current is launch:
                self._current = None
            await self._close_launch(launch)

            if not self._open_launches and self._playwright is not None:
                playwright, self._playwright = self._playwright, None
                await playwright.stop()

    async def _launch(self) -> _Launch:
        if not self._chromium_path.exists():
            raise ConfigError(
                f"Chromium was not found at {self._chromium_path}. Install Debian's `chromium` package "
                "(stack/install.sh does) or set WARDEN_CHROMIUM_PATH."
            )

        if self._playwright is None:
            self._playwright = await async_playwright().start()

        tag = f"{os.getpid()}-{uuid.uuid4().hex}"
        try:
            # Headless mode: Playwright 1.65 passes a bare `--headless` (see `_innerDefaultArgs` in
            # playwright/driver/package/lib/coreBundle.js), and with `executable_path` it runs Debian's
            # full Chromium, not Playwright's chromium-headless-shell download, which is where the old
            # mode lives. So Chromium 156 runs in the new headless mode. Checked on the running browser:
            # the main process's command line contains `--headless` with no `=old`, CDP's
            # Browser.getVersion reports the product `Chrome/156...` (the old mode reports
            # `HeadlessChrome/...`), and chrome://version, which the old mode lacks, renders.
            # tests/test_browser_pool.py checks all three.
            browser = await self._playwright.chromium.launch(
                executable_path=str(self._chromium_path),
                headless=True,
                args=list(CHROMIUM_ARGS),
                chromium_sandbox=False,
                env={**os.environ, LAUNCH_TAG_VARIABLE: tag},
            )
        except PlaywrightError as exc:
            await asyncio.to_thread(BrowserProcesses(leader_pid=None, tag=tag).kill)
            raise SiteUnreachable(f"Could not launch Chromium at {self._chromium_path}: {exc.message}") from exc

        processes = await asyncio.to_thread(BrowserProcesses.discover, tag)
        if processes is None:
            with suppress(PlaywrightError):
                await browser.close()
            await asyncio.to_thread(BrowserProcesses(leader_pid=None, tag=tag).kill)
            raise BugError(
                f"Chromium at {self._chromium_path} started, but its main process was not found among this "
                "process's descendants, so its processes cannot be tracked or limited. The executable must "
                "exec Chromium (as Debian's /usr/bin/chromium script does), not fork it."
            )

        launch = _Launch(browser, processes)
        browser.on("disconnected", lambda _browser: self._on_disconnected(launch))
        self._open_launches.add(launch)
        self._all_processes = [known for known in self._all_processes if not known.ended] + [processes]
        self.launches += 1
        logger.info(
            "browser.launched path=%s version=%s pid=%s",
            self._chromium_path,
            browser.version,
            processes.leader_pid,
        )
        return launch

    def _on_disconnected(self, launch: _Launch) -> None:
        launch.disconnected.set()
        if launch.closing or launch.stopping:
            return
        logger.warning("browser.crashed pid=%s jobs=%d", launch.processes.leader_pid, launch.jobs)
        # Kill the helpers now. The jobs' watches stop the jobs, and the last job to end closes the launch.
        launch.cleanup = asyncio.get_running_loop().create_task(self._kill_processes(launch))

    async def _kill_processes(self, launch: _Launch, *, grace_seconds: float = 0.0) -> None:
        killed = await asyncio.to_thread(launch.processes.kill, grace_seconds=grace_seconds)
        if killed:
            logger.info("browser.processes_killed pid=%s count=%d", launch.processes.leader_pid, killed)

    async def _close_context(self, context: BrowserContext, launch: _Launch, *, account: str) -> None:
        if not launch.alive():
            return
        try:
            await asyncio.wait_for(context.close(), CONTEXT_CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            # A context that does not close may keep a renderer busy: stop the whole browser.
            # Other jobs on it then end with BrowserCrashed.
            logger.warning(
                "browser.context_close_timed_out account=%s timeout_seconds=%.0f",
                account,
                CONTEXT_CLOSE_TIMEOUT_SECONDS,
            )
            await self._stop_launch(launch)
        except PlaywrightError as exc:
            logger.warning("browser.context_close_failed account=%s error=%s", account, exc.message[:200])

    async def _stop_launch(self, launch: _Launch) -> None:
        logger.warning("browser.stopping pid=%s jobs=%d", launch.processes.leader_pid, launch.jobs)
        launch.stopping = True
        launch.disconnected.set()
        await self._kill_processes(launch)

    async def _close_launch(self, launch: _Launch) -> None:
        launch.closing = True
        try:
            await asyncio.wait_for(launch.browser.close(), BROWSER_CLOSE_TIMEOUT_SECONDS)
        except (PlaywrightError, TimeoutError) as exc:
            logger.warning("browser.close_failed pid=%s error=%s", launch.processes.leader_pid, _describe(exc))
        if launch.cleanup is not None:
            await launch.cleanup
        await self._kill_processes(launch, grace_seconds=EXIT_GRACE_SECONDS)
        self._open_launches.discard(launch)
        logger.info("browser.closed pid=%s", launch.processes.leader_pid)


def _job_error(
    exc: BaseException, watch: _JobWatch, launch: _Launch, *, account: str
) -> BrowserBudgetExceeded | BrowserCrashed | None:
    """Return the error a job that raised ``exc`` should end with instead, or None to re-raise ``exc``."""
    if isinstance(exc, GeneratorExit):
        return None
    if watch.interruption is not None:
        others_cancelled = not watch.take_back_cancellation()
        if others_cancelled and isinstance(exc, asyncio.CancelledError):
            return None
        return watch.interruption
    if isinstance(exc, PlaywrightError) and launch.crashed():
        return BrowserCrashed(
            f"Chromium stopped during the browser job of account '{account}': {exc.message[:200]}. "
            "The next job starts a new browser."
        )
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PlaywrightError):
        return exc.message[:200]
    return type(exc).__name__


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
