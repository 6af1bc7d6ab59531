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
    alert_webhook_url: Annotated[
        str | None,
        typer.Option(help="Webhook that receives the alerts (login required, unproven revocation, browser crashes)."),
    ] = None,
) -> None:
    """Prepare the vault (AppRole runner, token role, transit) and register the Block types.

    Needs VAULT_ADDR and an administrator's VAULT_TOKEN. Workers then need
    WARDEN_VAULT_SECRET_ID set to the content of the secret id file.
    """
    from flows.registration import set_up_vault

    if alert_webhook_url is not None:
        parts = urlsplit(alert_webhook_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            fail(
                "Invalid --alert-webhook-url",
                f"{alert_webhook_url!r}: give the webhook's http:// or https:// URL with a host.",
                code=2,
            )
    credentials = run_command(
        set_up_vault(_admin_vault_client(), block_name=vault_block, alert_webhook_url=alert_webhook_url),
        what="set up the vault",
    )
    descriptor = os.open(secret_id_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(credentials.secret_id.get_secret_value() + "\n")
    console.print(f"Vault Block '{vault_block}' saved; runner secret id written to {secret_id_file}.")
    if alert_webhook_url is not None:
        console.print("Alerts created: login required, unproven revocations and browser crashes go to the webhook.")


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
    access_path: Annotated[
        list[str] | None,
        typer.Option(help="Access path, repeated in order of preference: oauth, browser-session (the default)."),
    ] = None,
    oauth_config: Annotated[
        Path | None,
        typer.Option(
            help="JSON file with the OAuth client (client_id, token_url, authorization_url, revocation_url, "
            "introspection_url, scope) and the API (api_connector, api_options). No secrets."
        ),
    ] = None,
    oauth_client_secret_file: Annotated[
        Path | None, typer.Option(help="File (mode 0600) holding the OAuth client secret, stored in the vault.")
    ] = None,
) -> None:
    """Register an account: vault policies, transit key and login secret, then its Block.

    Needs VAULT_ADDR and an administrator's VAULT_TOKEN. Without --password-stdin
    the login secret already stored in the vault is kept.
    """
    from pydantic import SecretStr

    from flows.registration import register_account

    _check_account_options(name, url, username, session_lifetime_seconds)

    oauth_fields = _oauth_fields(oauth_config, access_path) if oauth_config or access_path else {}
    client_secret = _read_secret_file(oauth_client_secret_file) if oauth_client_secret_file else None

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
            oauth_client_secret=client_secret,
            **oauth_fields,
        ),
        what=f"register account '{name}'",
    )
    console.print(f"Account '{name}' registered. Sync it with `warden sync {name}`.")
    if password is None and "browser-session" in (oauth_fields.get("access_paths") or ["browser-session"]):
        console.print(
            "No password given: a login secret already in the vault is kept. If none is stored yet, "
            f"store one with `warden account add {name} --replace ... --password-stdin`."
        )
    if (
        oauth_fields.get("oauth")
        and oauth_fields["oauth"].get("grant_type", "authorization_code") != "client_credentials"
    ):
        console.print(f"Authorize its OAuth access path once with `warden oauth authorize {name}`.")


def _oauth_fields(config_file: Path | None, access_paths: list[str] | None) -> dict[str, Any]:
    import json

    from pydantic import ValidationError

    from warden.accounts import AccessPath
    from warden.credentials.oauth import OAuthSettings

    fields: dict[str, Any] = {}
    valid_paths = [path.value for path in AccessPath]
    for path in access_paths or []:
        if path not in valid_paths:
            fail("Invalid --access-path", f"{path!r}: use one of {', '.join(valid_paths)}.", code=2)
    if access_paths:
        fields["access_paths"] = access_paths

    if config_file is not None:
        try:
            document = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            fail("Unreadable --oauth-config", f"{config_file}: {exc}. Give a JSON object.", code=2)
        if not isinstance(document, dict):
            fail("Invalid --oauth-config", f"{config_file} holds no JSON object.", code=2)
        for key in ("api_connector", "api_options"):
            if key in document:
                fields[key] = document.pop(key)
        if any("secret" in key for key in document):
            fail("Secret in --oauth-config", "pass the client secret with --oauth-client-secret-file only.", code=2)
        try:
            fields["oauth"] = OAuthSettings.model_validate(document).model_dump(mode="json")
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
            fail("Invalid --oauth-config", f"{config_file}: {problems}.", code=2)

    if "oauth" in (access_paths or []) and "oauth" not in fields:
        fail("Missing --oauth-config", "the access path 'oauth' needs the OAuth client settings.", code=2)
    return fields


def _read_secret_file(path: Path) -> Any:
    from pydantic import SecretStr

    try:
        mode = path.stat().st_mode
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        fail("Unreadable secret file", f"{path}: {exc.strerror}.", code=2)
    if mode & 0o077:
        fail("Secret file readable by others", f"{path} has mode {mode & 0o777:o}; run `chmod 600 {path}`.", code=2)
    if not value:
        fail("Empty secret file", f"{path} is empty.", code=2)
    return SecretStr(value)
