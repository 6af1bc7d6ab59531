"""``warden oauth authorize``: authorize an account's OAuth access path once, as a person."""

from __future__ import annotations

import asyncio
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Annotated

import typer

from warden.accounts import ACCOUNT_NAME_RULE
from warden.cli.accounts import _admin_vault_client
from warden.cli.app import app, console, fail, run_command

oauth_app = typer.Typer(help="OAuth access paths.", no_args_is_help=True)
app.add_typer(oauth_app, name="oauth")

CALLBACK_PATH = "/callback"


class _RedirectReceiver(HTTPServer):
    """A one-shot HTTP server on loopback that keeps the first redirect to the callback path."""

    redirect_url: str | None = None


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _RedirectReceiver

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        if not self.path.startswith(CALLBACK_PATH):
            self.send_error(404)
            return
        self.server.redirect_url = f"http://{self.server.server_address[0]}:{self.server.server_port}{self.path}"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"Connector Warden received the authorization. You can close this page.\n")

    def log_message(self, format: str, *args: object) -> None:
        # The default writes the request line, code included, to stderr.
        return


async def _authorize(account: str, *, timeout_seconds: float, paste: bool) -> None:
    from pydantic import SecretStr

    from blocks.account import ConnectorAccount
    from warden.credentials.authorize import finish_authorization, start_authorization
    from warden.credentials.oauth import OAuthGrantType
    from warden.credentials.provision import store_oauth_grant

    try:
        block = await ConnectorAccount.aload(account)
    except ValueError:
        fail("No such account", f"no account named '{account}' is registered; see `warden status`.", code=2)
    config = block.to_config(account)
    if config.oauth is None:
        fail(
            "No OAuth access path",
            f"account '{account}' has no 'oauth' settings on its Block. Add them with "
            f"`warden account add {account} --replace --access-path oauth --oauth-config FILE ...`.",
            code=2,
        )
    if config.oauth.grant_type == OAuthGrantType.CLIENT_CREDENTIALS:
        fail(
            "Nothing to authorize",
            f"account '{account}' uses the client_credentials grant, which needs no person's consent; "
            "its client secret is all it needs.",
            code=2,
        )

    admin = _admin_vault_client()
    fields = admin.secrets.kv.v2.read_secret_version(
        path=config.oauth_grant_path, mount_point=config.kv_mount, raise_on_deleted_version=True
    )["data"]["data"]

    client_secret = SecretStr(fields["client_secret"])

    receiver = _RedirectReceiver(("127.0.0.1", 0), _CallbackHandler)
    redirect_uri = f"http://127.0.0.1:{receiver.server_port}{CALLBACK_PATH}"
    request = start_authorization(config.oauth, redirect_uri=redirect_uri, account=account)
    console.print(f"Open this URL, log in as '{config.username}' and consent:\n")
    # Plain print: a console would wrap the URL at the terminal width and break copying it.
    print(request.url + "\n", flush=True)

    if paste:
        receiver.server_close()
        console.print("Then paste the address the browser was sent to (it fails to load; that is expected):")
        redirect_url = sys.stdin.readline().strip()
    else:
        thread = threading.Thread(target=receiver.handle_request, daemon=True)
        receiver.timeout = timeout_seconds
        thread.start()
        await asyncio.to_thread(thread.join, timeout_seconds + 1)
        receiver.server_close()
        redirect_url = receiver.redirect_url
        if redirect_url is None:
            fail("No redirect received", f"nothing came back to {redirect_uri} within {timeout_seconds:.0f} s.")

    tokens = await finish_authorization(config.oauth, client_secret, request, redirect_url, account=account)
    store_oauth_grant(admin, config.paths, refresh_token=tokens.refresh_token)
    console.print(
        f"Account '{account}' is authorized; its refresh token is in the vault. Sync it with `warden sync {account}`."
    )


@oauth_app.command("authorize")
def authorize(
    account: Annotated[str, typer.Argument(help=f"Account name: {ACCOUNT_NAME_RULE}.")],
    timeout_seconds: Annotated[float, typer.Option(help="How long to wait for the provider's redirect.")] = 300.0,
    paste: Annotated[
        bool,
        typer.Option("--paste", help="Read the redirect address from standard input (on a machine without a browser)."),
    ] = False,
) -> None:
    """Authorize an account's OAuth client once and store the refresh token in the vault.

    Needs VAULT_ADDR and an administrator's VAULT_TOKEN, and the account's client
    secret stored with `warden account add --oauth-client-secret-file`.
    """
    run_command(
        _authorize(account, timeout_seconds=timeout_seconds, paste=paste), what=f"authorize account '{account}'"
    )
