"""The error a sync gets when Prefect gives no slot of a limit: the limit's name and the command that fixes it."""

from __future__ import annotations

import pytest

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
