"""Prefect services the flows lend the library: events, global concurrency limits, retry rules.

Global concurrency limits hold across every worker process that talks to the
same Prefect server:

- ``browser``: browser jobs at once (default 2);
- ``site-<host>``: requests in flight to one site (default 2), one limit per
  host an account points at;
- ``site-rate-<host>``: requests started per second to one site, a rate limit
  whose slots decay at 2 per second (``slot_decay_per_second``) with a burst of
  2 (``limit``). Each request takes one slot with :meth:`PrefectLimits.site_rate`.

Every slot is taken with a lease of ``WARDEN_LEASE_SECONDS`` (default 300, at
least 60) that the holder renews while it runs, so the slots of a worker killed
with SIGKILL free when their lease ends.

They are created when missing and never overwritten, so a limit changed in the
Prefect UI or with ``prefect gcl update`` stays as the operator set it. A
``site-rate-<host>`` limit set to no decay is a configuration error, because
Prefect rejects rate limiting on it.

Several workers acquire slots from one Prefect server at once. Run that server on
PostgreSQL: on SQLite the concurrent writes fail with "database is locked", and
Prefect's clients retry them for seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
from prefect import Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, concurrency, rate_limit
from prefect.events import emit_event
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from warden.accounts import check_account_name
from warden.errors import BrowserCrashed, ConfigError, TransientError, WardenError, is_transient
from warden.events import WardenEvent
from warden.settings import get_settings

logger = logging.getLogger("warden.sync")

__all__ = [
    "BROWSER_LIMIT",
    "account_lock",
    "check_account_name",
    "DEFAULT_BROWSER_SLOTS",
    "DEFAULT_SITE_RATE_BURST",
    "DEFAULT_SITE_RATE_PER_SECOND",
    "DEFAULT_SITE_SLOTS",
    "PrefectEventSink",
    "PrefectLimits",
    "ensure_limit",
    "lease_seconds",
    "retry_browser_crash",
    "retry_transient",
    "site_limit_name",
    "site_rate_limit_name",
]

BROWSER_LIMIT = "browser"
DEFAULT_BROWSER_SLOTS = 2
DEFAULT_SITE_SLOTS = 2
# Requests per second to one site, and how many may start at once after an idle spell.
DEFAULT_SITE_RATE_PER_SECOND = 10.0
DEFAULT_SITE_RATE_BURST = 10


def lease_seconds() -> float:
    """Return the lease of a slot (``WARDEN_LEASE_SECONDS``, default 300).

    A live worker renews its leases; the server frees the slots of a killed
    worker once their lease ends, within its repossessor's interval (15 s).
    """
    return get_settings().lease_seconds


def site_limit_name(site: str) -> str:
    """Return the concurrency limit name of a site, e.g. ``site-127.0.0.1-8080``."""
    return "site-" + re.sub(r"[^A-Za-z0-9.-]", "-", site)


def site_rate_limit_name(site: str) -> str:
    """Return the rate limit name of a site, e.g. ``site-rate-127.0.0.1-8080``.

    NOTE: a host whose name starts with ``rate-`` gets a concurrency limit name of
    this form too: the concurrency limit of ``rate-a.example`` is the rate limit of ``a.example``.
    """
    return "site-rate-" + re.sub(r"[^A-Za-z0-9.-]", "-", site)


async def ensure_limit(name: str, slots: int, *, slot_decay_per_second: float | None = None) -> bool:
    """Create a global concurrency limit when it does not exist; return True when created.

    An existing limit keeps its settings. ``slot_decay_per_second`` makes the new
    limit a rate limit for :func:`prefect.concurrency.asyncio.rate_limit`.
    """
    if slot_decay_per_second is None:
        settings = GlobalConcurrencyLimitCreate(name=name, limit=slots)
    else:
        settings = GlobalConcurrencyLimitCreate(name=name, limit=slots, slot_decay_per_second=slot_decay_per_second)

    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            await client.create_global_concurrency_limit(settings)
        except ObjectAlreadyExists:
            # Another worker created it between the read and the create.
            return False
        return True


def slot_error(name: str, exc: ConcurrencySlotAcquisitionError) -> WardenError:
    """Return the error that explains why the Prefect server gave no slot of the limit ``name``."""
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 422:
        return ConfigError(
            f"The Prefect server rejected a request for 1 slot of the concurrency limit '{name}' "
            f"({cause.response.text[:200]}). Its limit is probably 0: set it with "
            f"`prefect gcl update {name} --limit 1` or higher, or delete it to get the default."
        )
    # Prefect's message, with strict=True, for a limit that does not exist.
    if "must be created" in str(exc):
        return TransientError(
            f"The concurrency limit '{name}' was deleted while this worker ran. The next sync creates it again."
        )
    return TransientError(
        f"Could not take a slot of the concurrency limit '{name}': {exc}. Check that the Prefect API is reachable."
    )


@contextmanager
def explain_slot_errors(name: str) -> Iterator[None]:
    """Raise a failed request for a slot of ``name`` as a ConfigError or TransientError with the cause and the fix."""
    try:
        yield
    except ConcurrencySlotAcquisitionError as exc:
        raise slot_error(name, exc) from exc


class PrefectLimits:
    """Browser and per-site slots, and per-site request rates, from Prefect's global concurrency limits."""

    def __init__(self) -> None:
        self._ensured: set[str] = set()

    async def _ensure(self, name: str, slots: int) -> None:
        if name not in self._ensured:
            await ensure_limit(name, slots)
            self._ensured.add(name)

    async def _ensure_rate_limit(self, name: str, site: str) -> None:
        if name in self._ensured:
            return
        await ensure_limit(name, DEFAULT_SITE_RATE_BURST, slot_decay_per_second=DEFAULT_SITE_RATE_PER_SECOND)

        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(name)
        if not limit.slot_decay_per_second:
            raise ConfigError(
                f"The global concurrency limit '{name}' has no slot decay, so it cannot limit the request rate "
                f"to site '{site}'. Set the rate with `prefect gcl update {name} --slot-decay-per-second "
                f"{DEFAULT_SITE_RATE_PER_SECOND:g}`, or delete the limit to get the default "
                f"({DEFAULT_SITE_RATE_PER_SECOND:g} requests/s, burst {DEFAULT_SITE_RATE_BURST})."
            )
        self._ensured.add(name)

    @asynccontextmanager
    async def browser_slot(self) -> AsyncIterator[None]:
        await self._ensure(BROWSER_LIMIT, DEFAULT_BROWSER_SLOTS)
        with explain_slot_errors(BROWSER_LIMIT):
            async with concurrency(BROWSER_LIMIT, occupy=1, lease_duration=lease_seconds(), strict=True):
                yield

    @asynccontextmanager
    async def site_slot(self, site: str) -> AsyncIterator[None]:
        name = site_limit_name(site)
        await self._ensure(name, DEFAULT_SITE_SLOTS)
        with explain_slot_errors(name):
            async with concurrency(name, occupy=1, lease_duration=lease_seconds(), strict=True):
                yield

    async def site_rate(self, site: str, timeout_seconds: float | None = None) -> None:
        """Take one slot of the site's rate limit ``site-rate-<host>`` before a request, waiting for one if needed.

        The slot is never released: the server frees slots at the limit's
        ``slot_decay_per_second``, which is the site's request rate across every worker.

        Raises:
            ConfigError: the limit exists but has no slot decay.
            TransientError: no slot freed within ``timeout_seconds``.
        """
        name = site_rate_limit_name(site)
        await self._ensure_rate_limit(name, site)
        try:
            with explain_slot_errors(name):
                await rate_limit(name, occupy=1, timeout_seconds=timeout_seconds, strict=True)
        except TimeoutError as exc:
            raise TransientError(
                f"No request slot for site '{site}' freed within {timeout_seconds:g} s on the rate limit '{name}', "
                "because other workers use the site's rate. Try again later, or raise the rate "
                f"with `prefect gcl update {name} --slot-decay-per-second RATE`."
            ) from exc


# A second sync of an account waits this long for the first before it gives up.
ACCOUNT_LOCK_TIMEOUT_SECONDS = 900
# A sync that has waited this long for the account's lock logs that it waits.
LOCK_WAIT_NOTICE_SECONDS = 2.0


@asynccontextmanager
async def account_lock(account: str) -> AsyncIterator[None]:
    """Hold the account's one-slot global concurrency limit, so syncs of one account never overlap."""
    name = f"account-{account}"
    await ensure_limit(name, 1)
    lease = lease_seconds()
    notice = asyncio.get_running_loop().call_later(
        LOCK_WAIT_NOTICE_SECONDS,
        lambda: logger.info(
            "sync.waiting_for_lock account=%s limit=%s timeout_seconds=%d lease_seconds=%d",
            account,
            name,
            ACCOUNT_LOCK_TIMEOUT_SECONDS,
            lease,
        ),
    )
    try:
        with explain_slot_errors(name):
            async with concurrency(
                name,
                occupy=1,
                lease_duration=lease,
                strict=True,
                timeout_seconds=ACCOUNT_LOCK_TIMEOUT_SECONDS,
            ):
                notice.cancel()
                yield
    except TimeoutError as exc:
        raise TransientError(
            f"Another sync of account '{account}' held its lock for over {ACCOUNT_LOCK_TIMEOUT_SECONDS} s. "
            f"Check for a stuck run in the Prefect UI; its slot on the limit '{name}' frees when the run ends."
        ) from exc
    finally:
        notice.cancel()


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
