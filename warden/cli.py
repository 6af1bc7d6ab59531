"""The ``warden`` command.

Commands that run or register flows import the Prefect layer lazily, so
``warden --help`` stays fast.

When a ``.stack`` directory made by ``python -m stack up`` exists in the
current directory (or ``WARDEN_STACK_DIR`` names one), its ``env`` files are
read first. Variables already set in the environment take precedence.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "load_stack_env"]

app = typer.Typer(
    help="Connector Warden: keep account connectors healthy and their data flowing.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)

STACK_ENV_FILES = ("env", "runner.env")
SUMMARY_FIELDS = (
    "account",
    "access_path",
    "probe",
    "refreshed",
    "messages_seen",
    "attachments_fetched",
    "attachments_extracted",
    "failed",
    "run_url",
)


def stack_dir() -> Path:
    return Path(os.environ.get("WARDEN_STACK_DIR", ".stack"))


def load_stack_env(directory: Path | None = None) -> list[str]:
    """Set variables from the dev stack's env files that are not set yet; return the names set."""
    directory = directory or stack_dir()
    loaded = []
    for name in STACK_ENV_FILES:
        path = directory / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "export":
                words = words[1:]
            if len(words) != 1 or "=" not in words[0]:
                continue
            key, value = words[0].split("=", 1)
            if key not in os.environ:
                os.environ[key] = value
                loaded.append(key)
    return loaded


@app.callback()
def main() -> None:
    load_stack_env()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "warden")


def _summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    row = {field: summary.get(field) for field in SUMMARY_FIELDS}
    row["tokens_issued"] = summary.get("tokens_issued", 0)
    row["tokens_revoked"] = summary.get("tokens_revoked", 0)
    row["error"] = summary.get("error")
    return row


def print_summary_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"Sync of account '{summary['account']}'", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in _summary_row(summary).items():
        if field in ("account", "run_url") or (field == "error" and value is None):
            continue
        table.add_row(field.replace("_", " "), str(value))
    console.print(table)
    if summary.get("run_url"):
        console.print(f"Prefect UI: {summary['run_url']}", soft_wrap=True)


@app.command()
def sync(
    account: Annotated[str, typer.Argument(help="Name of the account (its Block name).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Sync one account now: probe, refresh if needed, fetch, extract, wipe."""
    from flows.sync import sync_and_summarize

    completed, summary = asyncio.run(sync_and_summarize(account))
    if as_json:
        print(json.dumps(_summary_row(summary)))
    else:
        print_summary_table(summary)
        if not completed:
            err_console.print(f"[red]Sync failed:[/red] {summary.get('error')}")
    raise typer.Exit(code=0 if completed else 1)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List accounts with their session state, last run and pending extractions."""
    from flows.status import collect_status

    rows = asyncio.run(collect_status())
    if as_json:
        print(json.dumps(rows, default=str))
        return

    table = Table(title="Accounts")
    for column in ("account", "connector", "session", "expires", "last run", "finished", "messages", "pending"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["account"],
            row["connector"],
            row["session"],
            row["expires_at"] or "-",
            row["last_run_state"] or "never",
            row["last_run_finished_at"] or "-",
            str(row["messages"]),
            str(row["pending_extractions"]),
        )
    console.print(table)


def _admin_vault_client() -> Any:
    import hvac

    address = os.environ.get("VAULT_ADDR")
    token = os.environ.get("VAULT_TOKEN")
    if not address or not token:
        err_console.print(
            "[red]Missing vault administrator credentials:[/red] set VAULT_ADDR and VAULT_TOKEN "
            "(a token allowed to write policies, auth roles and transit keys)."
        )
        raise typer.Exit(code=2)
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

    credentials = asyncio.run(set_up_vault(_admin_vault_client(), block_name=vault_block))
    descriptor = os.open(secret_id_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(credentials.secret_id.get_secret_value() + "\n")
    console.print(f"Vault Block '{vault_block}' saved; runner secret id written to {secret_id_file}.")


account_app = typer.Typer(help="Register and inspect accounts.", no_args_is_help=True)
app.add_typer(account_app, name="account")


@account_app.command("add")
def account_add(
    name: Annotated[str, typer.Argument(help="Account name: lowercase letters, digits, '-' and '_'.")],
    url: Annotated[str, typer.Option(help="Base URL of the site, e.g. https://mail.example.com/.")],
    username: Annotated[str, typer.Option(help="User name to log in with.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of standard input.")
    ] = False,
    vault_block: Annotated[str, typer.Option(help="Name of the vault Block the account uses.")] = "default",
    session_lifetime_seconds: Annotated[
        float, typer.Option(help="Idle lifetime of a session at the site, in seconds.")
    ] = 600.0,
) -> None:
    """Register an account: vault policies, transit key and login secret, then its Block.

    Needs VAULT_ADDR and an administrator's VAULT_TOKEN. Without --password-stdin
    the login secret already stored in the vault is kept.
    """
    import sys

    from pydantic import SecretStr, ValidationError

    from flows.registration import register_account

    password = None
    if password_stdin:
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            err_console.print("[red]No password on standard input.[/red] Pipe it in, e.g. from your secret manager.")
            raise typer.Exit(code=2)
        password = SecretStr(line)

    try:
        asyncio.run(
            register_account(
                name,
                admin=_admin_vault_client(),
                base_url=url,
                username=username,
                password=password,
                vault_block=vault_block,
                session_lifetime_seconds=session_lifetime_seconds,
            )
        )
    except ValidationError as exc:
        err_console.print(f"[red]Invalid account settings for '{name}':[/red] {exc.errors()[0]['msg']}")
        raise typer.Exit(code=2) from exc
    console.print(f"Account '{name}' registered. Sync it with `warden sync {name}`.")


@app.command()
def demo() -> None:
    """Set up the demo account on the running dev stack and sync it (what `make demo` runs)."""
    from flows.demo import run_demo

    completed, summary = asyncio.run(run_demo(stack_dir()))
    print_summary_table(summary)
    if not completed:
        err_console.print(f"[red]Demo sync failed:[/red] {summary.get('error')}")
    raise typer.Exit(code=0 if completed else 1)


if __name__ == "__main__":
    app()
