"""``warden login`` and ``warden session``: sessions captured by hand, imported, or listed."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from warden.cli.app import app, console, err_console, fail, run_command

session_app = typer.Typer(help="Import and inspect saved sessions.", no_args_is_help=True)
app.add_typer(session_app, name="session")


def has_display() -> bool:
    """Return True when a browser window can open here: an X11 or Wayland display, or macOS or Windows."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@app.command()
def login(
    account: Annotated[str, typer.Argument(help="Name of the account (its Block name).")],
    timeout_seconds: Annotated[
        float, typer.Option(help="How long to wait for you to log in, in seconds.", min=1)
    ] = 600.0,
    remote_debugging_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve Chromium's DevTools protocol on 127.0.0.1:PORT so a program can drive the window, "
            "as the tests do. Any local process can then read the session; leave it off otherwise.",
            min=1,
            max=65535,
        ),
    ] = None,
) -> None:
    """Log in by hand in a Chromium window and save the session (needs a display).

    Opens the account's site, waits until the connector's probe accepts the
    window's cookies, saves that session encrypted, and closes the window.
    """
    if not has_display():
        fail(
            "No display",
            "DISPLAY and WAYLAND_DISPLAY are not set, so `warden login` cannot open a browser window here. "
            "Use the guided login instead: in the Prefect UI, run the deployment guided-login/guided-login with "
            f"account={account} (or `prefect deployment run guided-login/guided-login -p account={account}`), "
            "open the paused run, click Resume and enter a one-time code or a new password. "
            f"Or run `warden login {account}` on a machine with a display.",
            code=2,
        )

    from flows.login import manual_login

    async def run_manual_login() -> tuple[bool, Any]:
        state = await manual_login(
            account, timeout_seconds=timeout_seconds, remote_debugging_port=remote_debugging_port, return_state=True
        )
        return state.is_completed(), await state.aresult(raise_on_failure=False)

    console.print(f"Log in to account '{escape(account)}' in the Chromium window; it closes once the login is saved.")
    completed, outcome = run_command(run_manual_login(), what=f"log in account '{account}'")
    if not completed:
        fail("Login failed", str(outcome))

    console.print(
        f"Session of account '{escape(account)}' saved (version {outcome.session_version}, probe {outcome.probe}); "
        f"{outcome.tokens_revoked} of {outcome.tokens_issued} vault tokens revoked.",
        soft_wrap=True,
    )


async def _import_session(account: str, path: Path) -> str:
    from flows.sync import load_account
    from warden import steps
    from warden.credentials.policies import Action
    from warden.credentials.vault import VaultClient
    from warden.run import SyncRun
    from warden.sessions.importing import load_session_file
    from warden.store import default_document_store

    state, report = load_session_file(path)
    for line in report.lines():
        console.print(f"  {escape(line)}")

    config, vault_block = await load_account(account)
    run = SyncRun(config, vault=VaultClient(vault_block.settings()), documents=default_document_store())
    try:
        result = await steps.import_state(run, steps.issue_token(run, Action.PROBE), state)
    finally:
        steps.wipe(run)
    return result.state.value


@session_app.command("import")
def import_session(
    account: Annotated[str, typer.Argument(help="Account to store the session for.")],
    path: Annotated[Path, typer.Argument(help="Playwright storage state or cookie array (JSON).")],
) -> None:
    """Normalise a session file, probe it at the site, and store it encrypted if it works."""
    state = run_command(_import_session(account, path), what=f"import a session for account '{account}'")
    console.print(f"Session for '{escape(account)}' stored (probe: {state}).")
    console.print(f"[yellow]Delete {escape(str(path))} now:[/yellow] it contains the session in clear text.")


@session_app.command("list")
def list_sessions(
    account: Annotated[str, typer.Argument(help="Account whose stored session versions to list.")],
) -> None:
    """List the stored versions of an account's session: when, from what, and the forecast expiry (UTC)."""
    from warden.store import default_document_store

    versions = default_document_store().session_versions(account)
    if not versions:
        err_console.print(f"No stored session for account '{escape(account)}'.")
        raise typer.Exit(code=1)

    table = Table(title=f"Sessions of '{escape(account)}' (UTC)")
    for column in ("version", "source", "captured", "saved", "last valid", "forecast expiry", "refused"):
        table.add_column(column)
    for version in versions:
        times = (version.captured_at, version.saved_at, version.last_valid_at, version.expires_at, version.rejected_at)
        table.add_row(
            str(version.version),
            version.source or "-",
            *(value.strftime("%Y-%m-%d %H:%M:%S") if value else "-" for value in times),
        )
    console.print(table)
