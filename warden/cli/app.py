"""The Typer application, the dev stack's environment, and how commands report failures."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from warden.errors import WardenError

__all__ = ["app", "console", "err_console", "fail", "load_stack_env", "run_command", "stack_dir"]

app = typer.Typer(
    help="Connector Warden: keep account connectors healthy and their data flowing.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

STACK_ENV_FILES = ("env", "runner.env")

T = TypeVar("T")


def stack_dir() -> Path:
    return Path(os.environ.get("WARDEN_STACK_DIR", ".stack"))


def fail(title: str, message: str, *, code: int = 1) -> NoReturn:
    """Print ``title: message`` in red on standard error and exit with ``code``."""
    err_console.print(f"[red]{escape(title)}:[/red] {escape(message)}")
    raise typer.Exit(code=code)


def load_stack_env(directory: Path | None = None) -> list[str]:
    """Set variables from the dev stack's env files that are not set yet; return the names set."""
    directory = directory or stack_dir()
    loaded = []
    for name in STACK_ENV_FILES:
        path = directory / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                fail(
                    "Invalid environment file",
                    f"{path}, line {number}: {exc}. Fix or delete the line, "
                    "or run `make demo` to write the file again.",
                    code=2,
                )
            if words and words[0] == "export":
                words = words[1:]
            if len(words) != 1 or "=" not in words[0]:
                continue
            key, value = words[0].split("=", 1)
            if key not in os.environ:
                os.environ[key] = value
                loaded.append(key)
    _drop_stale_store_url(directory)
    return loaded


def _drop_stale_store_url(directory: Path) -> None:
    """Unset a WARDEN_STORE_URL that points at the stack's PostgreSQL after the stack went back to SQLite.

    A shell that loaded the env file of the PostgreSQL stack keeps the variable, and
    the stack has stopped that database, so every command would fail to open the store.
    """
    url = os.environ.get("WARDEN_STORE_URL")
    if not url:
        return
    try:
        state = json.loads((directory / "stack.json").read_text(encoding="utf-8"))
        postgres = state["components"]["postgres"]
        address = f"@{postgres['host']}:{postgres['port']}/"
        uses_sqlite = state.get("database") != "postgresql"
    except (OSError, ValueError, KeyError, TypeError):
        return
    if uses_sqlite and address in url:
        del os.environ["WARDEN_STORE_URL"]
        err_console.print(
            "[yellow]note:[/yellow] WARDEN_STORE_URL points at the dev stack's PostgreSQL, which the stack no "
            f"longer uses, so it is ignored. Run `unset WARDEN_STORE_URL`, or load {directory / 'env'} again."
        )


@app.callback()
def main() -> None:
    load_stack_env()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "warden")


def _prefect_unreachable(exc: BaseException) -> bool:
    import httpx

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError):
            return True
        if isinstance(seen, RuntimeError) and "Failed to reach API" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run_command(coroutine: Coroutine[Any, Any, T], *, what: str, on_failure: Callable[[str], None] | None = None) -> T:
    """Run a command's coroutine; turn expected failures into one clear line and exit code 1.

    ``what`` names the command's work in the message, e.g. "sync account 'demo'".
    ``on_failure``, when given, receives that message first, e.g. to print it as JSON.
    """
    from warden.console import quiet_expected_tracebacks

    quiet_expected_tracebacks()
    try:
        return asyncio.run(coroutine)
    except WardenError as exc:
        message = str(exc)
    except Exception as exc:
        if not _prefect_unreachable(exc):
            raise
        api_url = os.environ.get("PREFECT_API_URL")
        where = f"the Prefect API at {api_url}" if api_url else "a Prefect API (PREFECT_API_URL is not set)"
        message = (
            f"{where} is unreachable ({type(exc).__name__}). Start the stack with `make demo` or "
            "`python -m stack up`, or set PREFECT_API_URL to a running server."
        )
    if on_failure is not None:
        on_failure(message)
    fail(f"Could not {what}", message)
