"""Register the project's Blocks, limits and accounts with Prefect and the vault.

These run with an administrator's vault token (set-up and ``warden account
add``), never inside a sync. Every function is idempotent.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import requests
from prefect.blocks.core import Block
from pydantic import SecretStr

from blocks.account import ConnectorAccount
from blocks.notification import save_alert_webhook
from blocks.roster import ModelRoster
from blocks.vault import VaultConnection
from flows.automations import ensure_alerts, ensure_unresponsive_run_detection
from flows.orchestration import BROWSER_LIMIT, DEFAULT_BROWSER_SLOTS, DEFAULT_SITE_SLOTS, ensure_limit, site_limit_name
from warden.accounts import check_account_name
from warden.credentials.provision import RunnerCredentials, provision_account, provision_runner, store_oauth_grant
from warden.errors import ConfigError, VaultDenied, VaultUnavailable

__all__ = ["register_account", "register_block_types", "set_up_vault"]

logger = logging.getLogger("warden.setup")

ALERT_BLOCK_NAME = "warden-alerts"


async def register_block_types() -> None:
    """Register the project's Block types with the Prefect server (as ``prefect block register -m blocks``)."""
    for block_type in (VaultConnection, ConnectorAccount, ModelRoster):
        await block_type.aregister_type_and_schema()


async def set_up_vault(
    admin: hvac.Client, *, block_name: str = "default", alert_webhook_url: str | None = None
) -> RunnerCredentials:
    """Provision the runner identity in the vault and save the vault Block; return the runner's credentials.

    Also creates the automation that marks the flow runs of a dead worker Crashed
    (``warden-unresponsive-runs``). With ``alert_webhook_url``, also saves the
    ``warden-alerts`` webhook Block and creates the alerts (repeated login-required
    events, any unproven revocation, repeated browser crashes).
    """
    try:
        credentials = provision_runner(admin)
    except hvac.exceptions.Forbidden as exc:
        raise VaultDenied(
            f"The vault at {admin.url} refused the set-up (HTTP 403): the token in VAULT_TOKEN may not enable "
            "auth methods, write policies or roles. Use an administrator's token."
        ) from exc
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise VaultUnavailable(
            f"Could not set up the vault at {admin.url}: {type(exc).__name__}. "
            "Check VAULT_ADDR and that the vault is running and unsealed."
        ) from exc
    await register_block_types()
    await VaultConnection(address=admin.url, role_id=credentials.role_id).asave(block_name, overwrite=True)
    await ensure_limit(BROWSER_LIMIT, DEFAULT_BROWSER_SLOTS)
    await ensure_unresponsive_run_detection()
    if alert_webhook_url is not None:
        await save_alert_webhook(ALERT_BLOCK_NAME, alert_webhook_url)
        await ensure_alerts(ALERT_BLOCK_NAME)
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
    replace: bool = True,
    oauth_client_secret: SecretStr | None = None,
    **block_fields: object,
) -> ConnectorAccount:
    """Create the account's vault key, policies and login secret, and save its Block under ``name``.

    With ``replace=False`` an existing account of that name is left alone and
    :class:`ConfigError` is raised.
    """
    check_account_name(name)
    if not replace and await _block_exists(ConnectorAccount, name):
        raise ConfigError(f"Account '{name}' is already registered. Pass --replace to overwrite its settings.")
    if not await _block_exists(VaultConnection, vault_block):
        raise ConfigError(
            f"The vault Block '{vault_block}' does not exist, so account '{name}' could not use it. "
            "Create it with `warden setup`, or name an existing one with --vault-block."
        )

    block = ConnectorAccount(
        base_url=base_url,
        username=username,
        vault_block=vault_block,
        login_secret_path=f"connectors/{name}",
        session_key=f"session-{name}",
        **block_fields,
    )
    config = block.to_config(name)

    login_secret = {"password": password} if password is not None else None
    try:
        provision_account(admin, config.paths, login_secret)
        if oauth_client_secret is not None:
            store_oauth_grant(admin, config.paths, client_secret=oauth_client_secret)
    except hvac.exceptions.Forbidden as exc:
        raise VaultDenied(
            f"The vault at {admin.url} refused to set up account '{name}' (HTTP 403): the token in VAULT_TOKEN "
            "may not write policies, transit keys or the secret. Use an administrator's token."
        ) from exc
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        raise VaultUnavailable(
            f"Could not set up account '{name}' in the vault at {admin.url}: {type(exc).__name__}. "
            "Check VAULT_ADDR and that the vault is running and unsealed."
        ) from exc

    await block.asave(name, overwrite=True)
    await ensure_limit(site_limit_name(urlsplit(base_url).netloc), DEFAULT_SITE_SLOTS)
    logger.info("setup.account_registered account=%s connector=%s", name, block.connector)
    return block


async def _block_exists(block_type: type[Block], name: str) -> bool:
    try:
        await block_type.aload(name)
    except ValueError:
        return False
    return True
