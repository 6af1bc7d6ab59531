"""Register the project's Blocks, limits and accounts with Prefect and the vault.

These run with an administrator's vault token (set-up and ``warden account
add``), never inside a sync. Every function is idempotent.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import hvac
from pydantic import SecretStr

from blocks.account import ConnectorAccount
from blocks.vault import VaultConnection
from flows.orchestration import BROWSER_LIMIT, DEFAULT_BROWSER_SLOTS, DEFAULT_SITE_SLOTS, ensure_limit, site_limit_name
from warden.credentials.policies import AccountPaths
from warden.credentials.provision import RunnerCredentials, provision_account, provision_runner

__all__ = ["register_account", "register_block_types", "set_up_vault"]

logger = logging.getLogger("warden.setup")


async def register_block_types() -> None:
    """Register the project's Block types with the Prefect server (as ``prefect block register -m blocks``)."""
    for block_type in (VaultConnection, ConnectorAccount):
        await block_type.aregister_type_and_schema()


async def set_up_vault(admin: hvac.Client, *, block_name: str = "default") -> RunnerCredentials:
    """Provision the runner identity in the vault and save the vault Block; return the runner's credentials."""
    credentials = provision_runner(admin)
    await register_block_types()
    await VaultConnection(address=admin.url, role_id=credentials.role_id).asave(block_name, overwrite=True)
    await ensure_limit(BROWSER_LIMIT, DEFAULT_BROWSER_SLOTS)
    logger.info("setup.vault_block_saved name=%s address=%s", block_name, admin.url)
    return credentials


async def register_account(
    name: str,
    *,
    admin: hvac.Client,
    base_url: str,
    username: str,
    password: SecretStr | None,
    vault_block: str = "default",
    **block_fields: object,
) -> ConnectorAccount:
    """Create the account's vault key, policies and login secret, and save its Block under ``name``."""
    block = ConnectorAccount(
        base_url=base_url,
        username=username,
        vault_block=vault_block,
        login_secret_path=f"connectors/{name}",
        session_key=f"session-{name}",
        **block_fields,
    )
    config = block.to_config(name)

    paths = AccountPaths(
        account=name,
        kv_mount=config.kv_mount,
        login_secret_path=config.login_secret_path,
        transit_mount=config.transit_mount,
        session_key=config.session_key,
    )
    login_secret = {"password": password} if password is not None else None
    provision_account(admin, paths, login_secret)

    await block.asave(name, overwrite=True)
    await ensure_limit(site_limit_name(urlsplit(base_url).netloc), DEFAULT_SITE_SLOTS)
    logger.info("setup.account_registered account=%s connector=%s", name, block.connector)
    return block
