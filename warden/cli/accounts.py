"""``warden setup`` and ``warden account add``: vault set-up and account registration."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from warden.accounts import ACCOUNT_NAME, ACCOUNT_NAME_RULE
from warden.cli.app import app, console, fail, run_command

account_app = typer.Typer(help="Register accounts.", no_args_is_help=True)
app.add_typer(account_app, name="account")


def _admin_vault_client() -> Any:
    import hvac

    address = os.environ.get("VAULT_ADDR")
    token = os.environ.get("VAULT_TOKEN")
    if not address or not token:
        fail(
            "Missing vault administrator credentials",
            "set VAULT_ADDR and VAULT_TOKEN (a token allowed to write policies, auth roles and transit keys).",
            code=2,
        )
    client = hvac.Client(url=address)
    client.token = token
    return client


@app.command()
def setup(
    secret_id_file: Annotated[
        Path, typer.Option(help="File to write the runner's AppRole secret id to (created with mode 0600).")
    ],
    vault_block: Annotated[str, typer.Option(help="Name of the vault Block to save.")] = "default",
) -> None:
    """Prepare the vault (AppRole runner, token role, transit) and register the Block types.

    Needs VAULT_ADDR and an administrator's VAULT_TOKEN. Workers then need
    WARDEN_VAULT_SECRET_ID set to the content of the secret id file.
    """
    from flows.registration import set_up_vault

    credentials = run_command(set_up_vault(_admin_vault_client(), block_name=vault_block), what="set up the vault")
    descriptor = os.open(secret_id_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(credentials.secret_id.get_secret_value() + "\n")
    console.print(f"Vault Block '{vault_block}' saved; runner secret id written to {secret_id_file}.")


def _check_account_options(name: str, url: str, username: str, session_lifetime_seconds: float) -> None:
    if not ACCOUNT_NAME.fullmatch(name):
        fail("Invalid account name", f"{name!r}: use {ACCOUNT_NAME_RULE}.", code=2)

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail("Invalid --url", f"{url!r}: give the site's base URL with http:// or https:// and a host.", code=2)
    if not username.strip():
        fail("Invalid --username", "the user name is empty.", code=2)
    if session_lifetime_seconds <= 0:
        fail(
            "Invalid --session-lifetime-seconds",
            f"{session_lifetime_seconds:g}: give the site's idle session lifetime in seconds, above 0.",
            code=2,
        )


@account_app.command("add")
def account_add(
    name: Annotated[str, typer.Argument(help=f"Account name: {ACCOUNT_NAME_RULE}.")],
    url: Annotated[str, typer.Option(help="Base URL of the site, e.g. https://mail.example.com/.")],
    username: Annotated[str, typer.Option(help="User name to log in with.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
    ] = False,
    vault_block: Annotated[str, typer.Option(help="Name of the vault Block the account uses.")] = "default",
    session_lifetime_seconds: Annotated[
        float, typer.Option(help="Idle lifetime of a session at the site, in seconds.")
    ] = 600.0,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite an account of the same name instead of refusing.")
    ] = False,
) -> None:
    """Register an account: vault policies, transit key and login secret, then its Block.

    Needs VAULT_ADDR and an administrator's VAULT_TOKEN. Without --password-stdin
    the login secret already stored in the vault is kept.
    """
    from pydantic import SecretStr

    from flows.registration import register_account

    _check_account_options(name, url, username, session_lifetime_seconds)

    password = None
    if password_stdin:
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            fail("No password on standard input", "pipe it in, e.g. from your secret manager.", code=2)
        password = SecretStr(line)

    run_command(
        register_account(
            name,
            admin=_admin_vault_client(),
            base_url=url,
            username=username,
            password=password,
            vault_block=vault_block,
            session_lifetime_seconds=session_lifetime_seconds,
            replace=replace,
        ),
        what=f"register account '{name}'",
    )
    console.print(f"Account '{name}' registered. Sync it with `warden sync {name}`.")
