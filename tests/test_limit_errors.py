"""Limits in Prefect: the error when a limit gives no slot (its name and the fix), and the lock wait's log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flows import orchestration
from flows.orchestration import PrefectLimits, account_lock, ensure_limit
from warden.errors import ConfigError

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


async def test_account_limit_of_zero_names_fix(prefect_server) -> None:
    await ensure_limit("account-zero-slots", 0)

    with pytest.raises(ConfigError, match=r"'account-zero-slots'.*prefect gcl update account-zero-slots --limit 1"):
        async with account_lock("zero-slots"):
            pass


async def test_site_limit_of_zero_names_fix(prefect_server) -> None:
    await ensure_limit("site-zero.example", 0)

    with pytest.raises(ConfigError, match=r"'site-zero.example'.*--limit 1"):
        async with PrefectLimits().site_slot("zero.example"):
            pass


async def test_lock_wait_is_logged(prefect_server, caplog, monkeypatch) -> None:
    monkeypatch.setattr(orchestration, "LOCK_WAIT_NOTICE_SECONDS", 0.2)
    caplog.set_level(logging.INFO, logger="warden.sync")
    holder_inside = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with account_lock("waited-for"):
            holder_inside.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holder_inside.wait()
    asyncio.get_running_loop().call_later(1.0, release.set)
    async with account_lock("waited-for"):
        pass
    await holder

    notices = [record.getMessage() for record in caplog.records if "sync.waiting_for_lock" in record.getMessage()]
    assert len(notices) == 1
    assert "account=waited-for limit=account-waited-for" in notices[0]
