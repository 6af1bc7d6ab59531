"""Prefect services the flows lend the library: events, global concurrency limits, retry rules.

Global concurrency limits hold across every worker process that talks to the
same Prefect server:

- ``browser``: browser jobs at once (default 2);
- ``site-<host>``: requests in flight to one site (default 2), one limit per
  host an account points at.

They are created when missing and never overwritten, so a limit changed in the
Prefect UI or with ``prefect gcl update`` stays as the operator set it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prefect import Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.asyncio import concurrency
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from warden.accounts import check_account_name
from warden.errors import BrowserCrashed, TransientError, is_transient
from warden.events import WardenEvent

__all__ = [
    "BROWSER_LIMIT",
    "account_lock",
    "check_account_name",
    "DEFAULT_BROWSER_SLOTS",
    "DEFAULT_SITE_SLOTS",
    "PrefectEventSink",
    "PrefectLimits",
    "ensure_limit",
    "retry_browser_crash",
    "retry_transient",
    "site_limit_name",
]

BROWSER_LIMIT = "browser"
DEFAULT_BROWSER_SLOTS = 2
DEFAULT_SITE_SLOTS = 2
# A slot held longer than this is released by the server, so a killed worker cannot hold it forever.
LEASE_SECONDS = 300


def site_limit_name(site: str) -> str:
    """Return the concurrency limit name of a site, e.g. ``site-127.0.0.1-8080``."""
    return "site-" + re.sub(r"[^A-Za-z0-9.-]", "-", site)


async def ensure_limit(name: str, slots: int) -> bool:
    """Create a global concurrency limit when it does not exist; return True when created."""
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            return True


class PrefectLimits:
    """Browser and per-site slots from Prefect's global concurrency limits."""

    def __init__(self) -> None:
        self._ensured: set[str] = set()

    async def _ensure(self, name: str, slots: int) -> None:
        if name not in self._ensured:
            await ensure_limit(name, slots)
            self._ensured.add(name)

    @asynccontextmanager
    async def browser_slot(self) -> AsyncIterator[None]:
        await self._ensure(BROWSER_LIMIT, DEFAULT_BROWSER_SLOTS)
        async with concurrency(BROWSER_LIMIT, occupy=1, lease_duration=LEASE_SECONDS, strict=True):
            yield

    @asynccontextmanager
    async def site_slot(self, site: str) -> AsyncIterator[None]:
        name = site_limit_name(site)
        await self._ensure(name, DEFAULT_SITE_SLOTS)
        async with concurrency(name, occupy=1, lease_duration=LEASE_SECONDS, strict=True):
            yield


# A second sync of an account waits this long for the first before it gives up.
ACCOUNT_LOCK_TIMEOUT_SECONDS = 900


@asynccontextmanager
async def account_lock(account: str) -> AsyncIterator[None]:
    """Hold the account's one-slot global concurrency limit, so syncs of one account never overlap."""
    name = f"account-{account}"
    await ensure_limit(name, 1)
    try:
        async with concurrency(
            name, occupy=1, lease_duration=LEASE_SECONDS, strict=True, timeout_seconds=ACCOUNT_LOCK_TIMEOUT_SECONDS
        ):
            yield
    except TimeoutError as exc:
        raise TransientError(
            f"Another sync of account '{account}' held its lock for over {ACCOUNT_LOCK_TIMEOUT_SECONDS} s. "
            f"Check for a stuck run in the Prefect UI; its slot on the limit '{name}' frees when the run ends."
        ) from exc


class PrefectEventSink:
    """Emit each event to Prefect with the account as its resource."""

    def emit(self, event: WardenEvent) -> None:
        emit_event(
            event=event.name.value,
            resource={
                "prefect.resource.id": f"warden.account.{event.account}",
                "prefect.resource.name": event.account,
                "prefect.resource.role": "account",
            },
            payload=event.payload,
        )


def retry_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a task only when it failed with a transient error (``warden.errors.TransientError``)."""
    return isinstance(state.data, BaseException) and is_transient(state.data)


def retry_browser_crash(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a login only when the browser itself died.

    Every login attempt counts against the site's failed-login limit (Roundcube locks a user out after
    three a minute), so a login that reached the site is never repeated within a run.
    """
    return isinstance(state.data, BrowserCrashed)
