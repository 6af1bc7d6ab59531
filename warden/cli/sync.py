"""``warden sync``, ``warden status`` and ``warden demo``."""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from warden.cli.app import app, console, err_console, run_command, stack_dir

# The keys `warden sync --json` always prints first, in this order; the rest of the summary follows.
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
OPTIONAL_FIELDS = (
    "attachments_skipped",
    "attachments_pending",
    "attachments_deferred",
    "tokens_issued",
    "tokens_revoked",
    "browser_launches",
    "abandoned_runs",
    "abandoned_tokens_revoked",
    "paths_unavailable",
    "rescheduled_for",
    "rescheduled_run_url",
    "error",
)

# Shown in the table only when a run took over from a worker that died.
TAKEOVER_FIELDS = ("abandoned_runs", "abandoned_tokens_revoked")


def summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the summary with its keys in the documented order."""
    return {field: summary.get(field) for field in (*SUMMARY_FIELDS, *OPTIONAL_FIELDS)}


def print_summary_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"Sync of account '{escape(str(summary.get('account')))}'", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in summary_row(summary).items():
        if field in ("account", "run_url", "error") or value is None or value == []:
            continue
        if field in TAKEOVER_FIELDS and not value:
            continue
        if isinstance(value, list):
            value = "; ".join(map(str, value))
        table.add_row(field.replace("_", " "), escape(str(value)))
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

    def print_error_object(message: str) -> None:
        from warden.run import SyncSummary

        failed = SyncSummary(account=account, access_path="none", probe="not run", failed=1, error=message)
        print(json.dumps(summary_row(failed.model_dump(mode="json"))))

    completed, summary = run_command(
        sync_and_summarize(account),
        what=f"sync account '{account}'",
        on_failure=print_error_object if as_json else None,
    )
    if as_json:
        print(json.dumps(summary_row(summary)))
    else:
        print_summary_table(summary)
        if not completed:
            err_console.print(f"[red]Sync failed:[/red] {escape(str(summary.get('error')))}")
    raise typer.Exit(code=0 if completed else 1)


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%m-%d %H:%M")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List accounts with their session state, last run and pending extractions (times in UTC)."""
    from flows.status import collect_status

    rows = run_command(collect_status(), what="list the accounts")
    if as_json:
        print(json.dumps(rows, default=str))
        return

    table = Table(title="Accounts (times UTC)")
    for column in ("account", "paths", "session", "expires", "last run", "via", "at", "msgs", "pending", "deferred"):
        table.add_column(column, no_wrap=column in ("account", "expires", "at"))
    for row in rows:
        table.add_row(
            escape(row["account"]),
            escape(",".join(_short_path(path) for path in row["access_paths"])),
            row["session"],
            _short_time(row["expires_at"]),
            row["last_run_state"] or "never",
            escape(_short_path(row["last_access_path"]) if row["last_access_path"] else "-"),
            _short_time(row["last_run_finished_at"]),
            str(row["messages"]),
            str(row["pending_extractions"]),
            str(row["deferred_extractions"]),
        )
    # Piped output has no terminal width; a narrow default would cut every column to a few letters.
    Console(width=max(console.width, 120) if not console.is_terminal else None).print(table)
    if not rows:
        where = (
            "PREFECT_API_URL is not set, so this listed a temporary Prefect server: load the stack's environment "
            "(`. .stack/env`) or set PREFECT_API_URL"
            if not os.environ.get("PREFECT_API_URL")
            else f"on the Prefect API at {os.environ['PREFECT_API_URL']}"
        )
        err_console.print(f"No account is registered ({where}). Add one with `warden account add` or `make demo`.")


def _short_path(path: str) -> str:
    # "browser-session" would take a third of an 80-column terminal.
    return "browser" if path == "browser-session" else path


@app.command()
def demo() -> None:
    """Set up the demo account on the running dev stack and sync it (what `make demo` runs)."""
    from flows.demo import run_demo

    completed, summary = run_command(run_demo(stack_dir()), what="run the demo")
    print_summary_table(summary)
    if not completed:
        err_console.print(f"[red]Demo sync failed:[/red] {escape(str(summary.get('error')))}")
    raise typer.Exit(code=0 if completed else 1)
