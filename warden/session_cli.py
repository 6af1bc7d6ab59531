"""``warden session``: import a session exported elsewhere, and list stored versions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from warden.errors import WardenError

__all__ = ["session_app"]

session_app = typer.Typer(help="Import and inspect saved sessions.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


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
        console.print(f"  {line}")

    config, vault_block = await load_account(account)
    run = SyncRun(
        config,
        vault=VaultClient(vault_block.settings()),
        documents=default_document_store(),
    )
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
    try:
        state = asyncio.run(_import_session(account, path))
    except WardenError as exc:
        err_console.print(f"[red]Import failed:[/red] {exc}")
        raise typer.Exit(code=1) from exc
    console.print(f"Session for '{account}' stored (probe: {state}).")
    console.print(f"[yellow]Delete {path} now:[/yellow] it contains the session in clear text.")


@session_app.command("list")
def list_sessions(
    account: Annotated[str, typer.Argument(help="Account whose stored session versions to list.")],
) -> None:
    """List the stored versions of an account's session: when, from what, and the forecast expiry."""
    from warden.store import default_document_store

    versions = default_document_store().session_versions(account)

    if not versions:
        err_console.print(f"No stored session for account '{account}'.")
        raise typer.Exit(code=1)

    table = Table(title=f"Sessions of '{account}'")
    for column in ("version", "source", "captured", "saved", "last valid", "forecast expiry"):
        table.add_column(column)
    for version in versions:
        times = (version.captured_at, version.saved_at, version.last_valid_at, version.expires_at)
        table.add_row(
            str(version.version),
            version.source or "-",
            *(value.isoformat(timespec="seconds") if value else "-" for value in times),
        )
    console.print(table)
