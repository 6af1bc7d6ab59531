"""Set up the demo account on the running dev stack, then sync it: what ``warden demo`` runs.

Steps, each idempotent:

1. provision the runner identity in the dev OpenBao with its root token and
   save the vault Block; the runner's AppRole secret id goes to
   ``.stack/runner.env`` (mode 0600), for later ``warden`` commands;
2. create the ``demo`` mail user with a random password kept only in OpenBao
   (Dovecot stores a salted hash of it);
3. seed the demo mailbox with generated documents;
4. register the ``demo`` account (Block, vault policies, transit key) with two
   access paths: ``oauth`` (IMAP with XOAUTH2, through the stack's OAuth
   provider) first, ``browser-session`` (Roundcube) as the fallback;
5. authorize the OAuth client once, playing the person at the provider's login
   page, unless the vault already holds a refresh token;
6. run ``connector_sync("demo")``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
from pydantic import SecretStr

from flows.registration import register_account, set_up_vault
from flows.sync import sync_and_summarize
from stack.mail import MailServer
from stack.oidc import OidcProvider
from warden.accounts import AccountConfig
from warden.credentials.authorize import finish_authorization, start_authorization
from warden.credentials.oauth import OAuthClient, OAuthSettings
from warden.credentials.provision import store_oauth_grant
from warden.demo.documents import build_demo_messages
from warden.demo.seed import seed_mailbox
from warden.errors import ConfigError

__all__ = ["DEMO_ACCOUNT", "authorize_with_login", "run_demo"]

logger = logging.getLogger("warden.demo")

DEMO_ACCOUNT = "demo"
DEMO_ADDRESS = "demo@warden.test"
DEMO_SENDER = "Connector Warden Demo <sender@warden.test>"
RUNNER_ENV_FILE = "runner.env"


def _read_stack(stack_dir: Path) -> dict[str, Any]:
    state_path = stack_dir / "stack.json"
    if not state_path.is_file():
        raise ConfigError(
            f"No dev stack found: {state_path} does not exist. Start it with `python -m stack up --dir {stack_dir}` "
            "or run `make demo`."
        )
    return json.loads(state_path.read_text())["components"]


def _write_runner_env(stack_dir: Path, secret_id: SecretStr) -> None:
    path = stack_dir / RUNNER_ENV_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# AppRole secret id of the dev stack's runner identity. Never commit or share.\n")
        handle.write(f"export WARDEN_VAULT_SECRET_ID={secret_id.get_secret_value()}\n")
    os.chmod(path, 0o600)


def _demo_password(admin: hvac.Client) -> SecretStr:
    """Return the demo password stored in the vault, or a new random one when none is stored yet."""
    try:
        response = admin.secrets.kv.v2.read_secret_version(
            path=f"connectors/{DEMO_ACCOUNT}", mount_point="secret", raise_on_deleted_version=True
        )
        return SecretStr(response["data"]["data"]["password"])
    except (hvac.exceptions.InvalidPath, KeyError):
        return SecretStr(secrets.token_urlsafe(18))


async def run_demo(stack_dir: Path) -> tuple[bool, dict[str, Any]]:
    """Prepare the demo account on the dev stack in ``stack_dir`` and sync it once."""
    components = _read_stack(stack_dir)
    openbao = components["openbao"]
    mail = components["mail"]

    admin = hvac.Client(url=openbao["address"], token=Path(openbao["root_token_file"]).read_text().strip())
    runner = await set_up_vault(admin)
    _write_runner_env(stack_dir, runner.secret_id)
    os.environ["WARDEN_VAULT_SECRET_ID"] = runner.secret_id.get_secret_value()

    password = _demo_password(admin)
    mail_server = MailServer(
        Path(mail["run_dir"]),
        imap_port=mail["imap_port"],
        http_port=mail["http_port"],
        session_lifetime_minutes=mail["session_lifetime_minutes"],
    )
    mail_server.add_user(DEMO_ACCOUNT, password.get_secret_value())
    added = seed_mailbox(
        mail["imap_host"],
        mail["imap_port"],
        DEMO_ACCOUNT,
        password,
        build_demo_messages(to_address=DEMO_ADDRESS, from_address=DEMO_SENDER),
    )
    logger.info("demo.mailbox_ready added=%d", added)

    oauth_fields: dict[str, Any] = {}
    provider = None
    if "oidc" in components:
        provider = OidcProvider(Path(components["oidc"]["run_dir"]), port=components["oidc"]["port"])
        provider.add_user(DEMO_ACCOUNT, password.get_secret_value())
        oauth_fields = {
            "access_paths": ["oauth", "browser-session"],
            "oauth": OAuthSettings(
                client_id="warden",
                token_url=provider.token_endpoint,
                authorization_url=provider.authorization_endpoint,
                revocation_url=provider.revocation_endpoint,
                introspection_url=provider.introspection_endpoint,
                scope="mail.read",
            ).model_dump(mode="json"),
            "api_connector": "imap",
            "api_options": {"host": mail["imap_host"], "port": mail["imap_port"], "tls": False},
            "oauth_client_secret": provider.clients()["warden"].client_secret,
        }

    block = await register_account(
        DEMO_ACCOUNT,
        admin=admin,
        base_url=mail["roundcube_url"],
        username=DEMO_ACCOUNT,
        password=password,
        session_lifetime_seconds=mail["session_lifetime_minutes"] * 60,
        **oauth_fields,
    )
    if provider is not None:
        await _authorize_once(admin, block.to_config(DEMO_ACCOUNT), provider, password)
    return await sync_and_summarize(DEMO_ACCOUNT)


async def _authorize_once(
    admin: hvac.Client, config: AccountConfig, provider: OidcProvider, password: SecretStr
) -> None:
    """Store a refresh token for the demo account unless the vault has one the provider still accepts."""
    grant = admin.secrets.kv.v2.read_secret_version(
        path=config.oauth_grant_path, mount_point=config.kv_mount, raise_on_deleted_version=True
    )["data"]["data"]
    client_secret = provider.clients()["warden"].client_secret
    # The dev provider keeps grants in memory: after a restart the stored refresh token means nothing to it.
    if grant.get("refresh_token"):
        client = OAuthClient(config.oauth, client_secret, account=config.name)
        if (await client.introspect(SecretStr(grant["refresh_token"]))).get("active") is True:
            return

    await authorize_with_login(admin, config, provider, DEMO_ACCOUNT, password)
    logger.info("demo.oauth_authorized account=%s", config.name)


async def authorize_with_login(
    admin: hvac.Client, config: AccountConfig, provider: OidcProvider, username: str, password: SecretStr
) -> None:
    """Authorize an account at the dev stack's provider as its user would, and store the refresh token.

    The provider's login and consent pages are filled in over HTTP instead of by a person.
    """
    client_secret = provider.clients()["warden"].client_secret
    # The redirect is never followed, so the loopback port does not need a listener.
    request = start_authorization(config.oauth, redirect_uri="http://127.0.0.1:9/callback", account=config.name)
    redirect_url = await asyncio.to_thread(provider.complete_login, request.url, username, password.get_secret_value())
    tokens = await finish_authorization(config.oauth, client_secret, request, redirect_url, account=config.name)
    store_oauth_grant(admin, config.paths, refresh_token=tokens.refresh_token)
