"""Start, stop and inspect the local real stack: ``python -m stack up|down|status``.

Usage (as root, because the mail server's daemons switch users)::

    python -m stack up [--dir .stack] [--database sqlite|postgresql]
                       [--mail-user NAME (--mail-password-file FILE | --mail-password-stdin)]
    . .stack/env
    python -m stack status [--dir .stack]
    python -m stack down [--dir .stack]

``up`` starts an OpenBao dev server, an OAuth 2.0 / OpenID Connect provider, the
mail server (Dovecot IMAP and Roundcube, which validates XOAUTH2 and OAUTHBEARER
tokens at the provider) and a Prefect server on free loopback ports, each in its
own run directory below ``--dir``. Components that are still running and healthy
are reused, except the mail server when the provider's introspection URL changed. The ports
chosen the first time are kept in ``DIR/stack.json`` (with URLs, pids and run
directories, never secrets) and reused while they are free. When
``PREFECT_API_URL`` is set in the environment to anything but this stack's own
server, ``up`` starts no Prefect server and writes that URL to ``DIR/env``.

``--database`` chooses where the Prefect server and the document store keep their
data. With ``sqlite``, the Prefect server uses ``DIR/prefect-server/prefect.db`` and
the document store ``DIR/warden/warden.db``. With ``postgresql``, ``up`` also starts
a PostgreSQL cluster in ``DIR/postgres`` (see :mod:`stack.postgres`), creates the
databases ``prefect`` and ``warden`` in it, runs the Prefect server on ``prefect``
and exports ``WARDEN_STORE_URL`` (the psycopg URL of ``warden``) in ``DIR/env``.
Without the option, ``up`` keeps the database that ``stack.json`` records, else
``sqlite``. A change restarts the Prefect server on the other database and copies
no data, and a change back to ``sqlite`` stops PostgreSQL.

``--mail-user`` adds a mailbox user, or sets its password, in the running mail
server and, with the same password, in the OIDC provider. The password never
comes from the command line. It is read either from
a file that only its owner can read (mode 0600 or stricter), without one
trailing newline, or from the first line of standard input.

``DIR/env`` (mode 0600) exports ``PREFECT_API_URL``, ``DO_NOT_TRACK``,
``PREFECT_SERVER_ANALYTICS_ENABLED``, ``PREFECT_HOME`` (``DIR/prefect-client``, a
directory apart from the server's), ``WARDEN_HOME`` (``DIR/warden``) and
``VAULT_ADDR``, and with PostgreSQL ``WARDEN_STORE_URL``, which contains the
password of the role ``warden`` (also in ``DIR/postgres/password``, mode 0600).
The OpenBao root token is in ``DIR/openbao/root-token`` (mode
0600) and changes on every start of OpenBao, which keeps its data in memory only.
The OIDC clients' secrets are in ``DIR/oidc/clients.json`` (mode 0600) and stay
the same across restarts, but the provider's tokens and grants do not.

``down`` stops, by their recorded pids, the processes that ``up`` started and
keeps the run directories, so mailboxes, OIDC users and client secrets,
Prefect's database and the PostgreSQL cluster survive. ``status`` exits with 0
when every component runs and 1 otherwise.

Keys of ``stack.json`` that other tools read (URLs show the password as ``***``)::

    database            sqlite or postgresql: the last --database of ``up``
    components.openbao  address, port, root_token_file, run_dir, pids
    components.oidc     issuer, port, clients_file, run_dir, pids
    components.mail     roundcube_url, imap_host, imap_port, http_port,
                        session_lifetime_minutes, oauth2_introspection_url, run_dir, pids
    components.postgres host, port, password_file, store_url, run_dir, pids
                        (only after an ``up`` with postgresql)
    components.prefect  external, api_url, and unless external: ui_url, port,
                        database, database_url, run_dir, pids
    mail_users          names added with --mail-user
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import signal
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from stack.mail import MailServer
from stack.oidc import OidcProvider
from stack.openbao import OpenBaoDevServer
from stack.ports import LOOPBACK, is_port_free
from stack.postgres import PostgresServer, find_postgres_bin_dir
from stack.prefect_server import PrefectServer
from stack.process import StackError, is_alive, read_pid, write_private

ComponentT = TypeVar("ComponentT", OidcProvider, PostgresServer)

STATE_FILE = "stack.json"
ENV_FILE = "env"
STATE_VERSION = 1
# OpenBao, the OIDC provider, the mail server and Prefect. PostgreSQL is a fifth with --database postgresql.
COMPONENT_COUNT = 4

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
DATABASES = (SQLITE, POSTGRESQL)
DATABASE_NAMES = {SQLITE: "SQLite", POSTGRESQL: "PostgreSQL"}
# The databases that `up --database postgresql` creates in the stack's cluster.
PREFECT_DATABASE = "prefect"
STORE_DATABASE = "warden"


@dataclass
class ComponentReport:
    """One row of the table that ``up``, ``down`` and ``status`` print."""

    name: str
    state: str
    address: str
    pids: list[int]
    run_dir: Path | None


class StackDirectory:
    """The ``--dir`` directory: run directories, ``stack.json`` and ``env``."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    @property
    def env_path(self) -> Path:
        return self.path / ENV_FILE

    def load_state(self) -> dict[str, Any]:
        """Return the content of ``stack.json``, or an empty state when there is none."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": STATE_VERSION, "components": {}}
        except json.JSONDecodeError as exc:
            raise self._unreadable(f"is not valid JSON ({exc})") from exc
        problem = state_shape_problem(state)
        if problem is not None:
            raise self._unreadable(f"has an unexpected shape: {problem}")
        state.setdefault("components", {})
        return state

    def _unreadable(self, problem: str) -> StackError:
        return StackError(
            f"{self.state_path} {problem}. Run `python -m stack down --dir {self.path}` "
            "(or `make stop`): it stops the processes in the pid files below that directory and sets "
            "the file aside, so the next `up` starts afresh on new ports (pass --database again if the "
            "stack used PostgreSQL)"
        )

    def save_state(self, state: dict[str, Any]) -> None:
        """Write ``stack.json``, which contains ports, URLs, pids and paths but no secrets."""
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.state_path)


# Fields of a component's entry in stack.json that must be whole numbers when present.
NUMERIC_FIELDS = ("port", "imap_port", "http_port", "session_lifetime_minutes")


def state_shape_problem(state: Any) -> str | None:
    """Return what is wrong with the shape of a parsed ``stack.json``, or None when it can be used."""
    if not isinstance(state, dict):
        return f"the top level is a JSON {type(state).__name__}, not an object"
    version = state.get("version", STATE_VERSION)
    if version != STATE_VERSION:
        return f"its version is {version!r}, and this release reads version {STATE_VERSION}"
    components = state.get("components", {})
    if not isinstance(components, dict):
        return "'components' is not an object"
    for name, entry in components.items():
        if not isinstance(entry, dict):
            return f"components.{name} is not an object"
        for field in NUMERIC_FIELDS:
            value = entry.get(field)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                return f"components.{name}.{field} is {value!r}, not a whole number"
        pids = entry.get("pids", [])
        if not isinstance(pids, list) or not all(isinstance(pid, int) for pid in pids):
            return f"components.{name}.pids is not a list of whole numbers"
    return None


def _progress(step: str) -> None:
    # On stderr, so the table on stdout stays machine-readable; flushed, so a slow start shows at once.
    print(f"==> {step}", file=sys.stderr, flush=True)


def _port_if_free(stored: dict[str, Any], key: str) -> int | None:
    port = stored.get(key)
    return port if isinstance(port, int) and is_port_free(port) else None


def _openbao(directory: StackDirectory, stored: dict[str, Any]) -> OpenBaoDevServer:
    return OpenBaoDevServer(directory.path / "openbao", port=stored.get("port"))


def _oidc(directory: StackDirectory, stored: dict[str, Any]) -> OidcProvider:
    return OidcProvider(directory.path / "oidc", port=stored.get("port"))


def _mail(directory: StackDirectory, stored: dict[str, Any]) -> MailServer:
    return MailServer(
        directory.path / "mail",
        imap_port=stored.get("imap_port"),
        http_port=stored.get("http_port"),
        session_lifetime_minutes=stored.get("session_lifetime_minutes", 10),
    )


def _prefect(directory: StackDirectory, stored: dict[str, Any]) -> PrefectServer:
    return PrefectServer(directory.path / "prefect-server", port=stored.get("port"))


def _postgres(directory: StackDirectory, stored: dict[str, Any]) -> PostgresServer:
    return PostgresServer(directory.path / "postgres", port=stored.get("port"))


def _redacted(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, safe to print and to keep in ``stack.json``."""
    return make_url(url).render_as_string(hide_password=True)


def _reuse_or_start(current: ComponentT, replacement: Callable[[], ComponentT], label: str) -> tuple[ComponentT, str]:
    """Start ``replacement()`` unless ``current`` runs; return the running component and "reused" or "started".

    What is left of a stopped ``current``, such as a stale pid file, is cleaned up first.
    """
    if current.is_running():
        return current, "reused"
    current.stop()
    started = replacement()
    _progress(f"starting {label}")
    started.start()
    return started, "started"


def _up_openbao(directory: StackDirectory, state: dict[str, Any]) -> ComponentReport:
    stored = state["components"].get("openbao", {})
    server = _openbao(directory, stored)
    if server.is_running():
        action = "reused"
    else:
        server.stop()
        port = _port_if_free(stored, "port")
        if port is None or not is_port_free(port + 1):
            server = OpenBaoDevServer(server.run_dir)
        _progress("starting OpenBao")
        server.start()
        action = "started"
    state["components"]["openbao"] = {
        "run_dir": str(server.run_dir),
        "port": server.port,
        "address": server.address,
        "root_token_file": str(server.root_token_path),
        "pids": server.pids,
    }
    return ComponentReport("OpenBao", action, server.address, server.pids, server.run_dir)


def _up_oidc(directory: StackDirectory, state: dict[str, Any]) -> tuple[OidcProvider, str]:
    stored = state["components"].get("oidc", {})
    current = _oidc(directory, stored)
    provider, action = _reuse_or_start(
        current,
        lambda: OidcProvider(current.run_dir, port=_port_if_free(stored, "port")),
        "the OIDC provider",
    )
    state["components"]["oidc"] = {
        "run_dir": str(provider.run_dir),
        "port": provider.port,
        "issuer": provider.issuer,
        "clients_file": str(provider.clients_path),
        "pids": provider.pids,
    }
    return provider, action


def _oidc_report(provider: OidcProvider, state: str) -> ComponentReport:
    return ComponentReport("OIDC", state, provider.issuer, provider.pids, provider.run_dir)


def _up_mail(directory: StackDirectory, state: dict[str, Any], provider: OidcProvider) -> tuple[MailServer, str]:
    stored = state["components"].get("mail", {})
    server = _mail(directory, stored)
    introspection_url = provider.introspection_endpoint
    dovecot_client = provider.clients()["dovecot"]
    # A Dovecot started against an earlier provider port would reject every token.
    if server.is_running() and stored.get("oauth2_introspection_url") == introspection_url:
        action = "reused"
    else:
        server.stop()
        server = MailServer(
            server.run_dir,
            imap_port=_port_if_free(stored, "imap_port"),
            http_port=_port_if_free(stored, "http_port"),
            session_lifetime_minutes=server.session_lifetime_minutes,
            oauth2_introspection_url=introspection_url,
            oauth2_client=(dovecot_client.client_id, dovecot_client.client_secret),
        )
        _progress("starting the mail server (Dovecot, php-fpm, nginx)")
        server.start()
        action = "started"
    state["components"]["mail"] = _mail_state(server, introspection_url)
    return server, action


def _mail_state(server: MailServer, introspection_url: str) -> dict[str, Any]:
    return {
        "run_dir": str(server.run_dir),
        "imap_host": server.imap_host,
        "imap_port": server.imap_port,
        "http_port": server.http_port,
        "roundcube_url": server.roundcube_url,
        "session_lifetime_minutes": server.session_lifetime_minutes,
        "oauth2_introspection_url": introspection_url,
        "pids": server.pids,
    }


def _mail_report(server: MailServer, state: str) -> ComponentReport:
    address = f"{server.roundcube_url} (IMAP {server.imap_host}:{server.imap_port})"
    return ComponentReport("mail", state, address, server.pids, server.run_dir)


def _check_postgresql_installed() -> None:
    """Check, before anything starts, that PostgreSQL's binaries and the psycopg driver are installed.

    Raises:
        StartupError: Debian's postgresql package is missing.
        StackError: psycopg is missing.
    """
    find_postgres_bin_dir()
    if importlib.util.find_spec("psycopg") is None:
        raise StackError(
            "--database postgresql needs the psycopg driver for the document store, and it is not installed "
            f"in {sys.prefix}; run `bash stack/install.sh`, which installs the project's postgres extra"
        )


def _up_postgres(directory: StackDirectory, state: dict[str, Any]) -> tuple[PostgresServer, ComponentReport]:
    """Start or reuse the PostgreSQL cluster in ``DIR/postgres`` and create the stack's databases in it."""
    stored = state["components"].get("postgres", {})
    current = _postgres(directory, stored)
    server, action = _reuse_or_start(
        current, lambda: PostgresServer(current.run_dir, port=_port_if_free(stored, "port")), "PostgreSQL"
    )

    for name in (PREFECT_DATABASE, STORE_DATABASE):
        server.create_database(name)
    state["components"]["postgres"] = {
        "run_dir": str(server.run_dir),
        "host": LOOPBACK,
        "port": server.port,
        "password_file": str(server.password_path),
        "store_url": _redacted(server.sync_database_url(STORE_DATABASE)),
        "pids": server.pids,
    }
    return server, _postgres_report(server, action)


def _postgres_report(server: PostgresServer, state: str) -> ComponentReport:
    return ComponentReport("PostgreSQL", state, f"{LOOPBACK}:{server.port}", server.pids, server.run_dir)


def _stop_unused_postgres(directory: StackDirectory, state: dict[str, Any]) -> ComponentReport | None:
    """Stop the PostgreSQL cluster of a stack that now uses SQLite.

    Its entry in ``stack.json`` stays, so that a change back to PostgreSQL reuses the port.
    """
    stored = state["components"].get("postgres")
    if stored is None:
        return None
    server = _postgres(directory, stored)
    if server.pid is None:
        stored["pids"] = []
        return None

    _progress("stopping PostgreSQL, which the stack no longer uses (its databases stay in the run directory)")
    server.stop()
    stored["pids"] = server.pids
    return _postgres_report(server, "stopped")


def _announce_database_change(directory: StackDirectory, previous: str, database: str) -> None:
    """Print that a change of ``--database`` restarts the Prefect server and copies no data."""
    _progress(
        f"the stack used {DATABASE_NAMES[previous]} and now uses {DATABASE_NAMES[database]}: "
        "the Prefect server restarts on the new database. Flow runs, deployments, Blocks and stored "
        f"documents stay in the {DATABASE_NAMES[previous]} databases and are not copied. `make demo` "
        "registers the demo account again on the new database"
    )
    if database == SQLITE:
        _progress(
            f"{directory.env_path} no longer sets WARDEN_STORE_URL; "
            "run `unset WARDEN_STORE_URL` in shells that loaded the earlier file"
        )


def _up_prefect(directory: StackDirectory, state: dict[str, Any], database_url: SecretStr | None) -> ComponentReport:
    """Start or reuse the Prefect server on ``database_url`` (SQLite in its run directory when None).

    A running server on another database, or on a PostgreSQL server at another
    address, is restarted, so that the server always uses the stack's database.
    """
    stored = state["components"].get("prefect", {})
    own_api_url = None if stored.get("external") else stored.get("api_url")
    external_url = os.environ.get("PREFECT_API_URL")
    if external_url and external_url != own_api_url:
        state["components"]["prefect"] = {"external": True, "api_url": external_url, "pids": []}
        return ComponentReport("Prefect", "external", external_url, [], None)

    server = _prefect(directory, {} if stored.get("external") else stored)
    expected = PrefectServer(server.run_dir, port=server.port, database_url=database_url)
    # A stack.json written before --database existed has no database_url, because its server always used SQLite.
    running_url = stored.get("database_url") or server.redacted_database_url
    running = server.is_running()
    if running and running_url == expected.redacted_database_url:
        server = expected
        action = "reused"
    else:
        if running:
            _progress(f"restarting the Prefect server: it runs on {running_url}, not {expected.redacted_database_url}")
        server.stop()
        server = PrefectServer(server.run_dir, port=_port_if_free(stored, "port"), database_url=database_url)
        _progress("starting the Prefect server (about 5 s, longer on a new PostgreSQL database)")
        server.start()
        action = "started"
    state["components"]["prefect"] = {
        "external": False,
        "run_dir": str(server.run_dir),
        "port": server.port,
        "api_url": server.api_url,
        "ui_url": server.ui_url,
        "database": SQLITE if database_url is None else POSTGRESQL,
        "database_url": server.redacted_database_url,
        "pids": server.pids,
    }
    return ComponentReport("Prefect", action, server.api_url, server.pids, server.run_dir)


def read_password_file(path: Path) -> str:
    """Return the password in ``path``, without one trailing newline.

    Raises:
        StackError: the file is missing, or group or others may read or write it.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StackError(f"could not read the mail password file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StackError(
            f"the mail password file {path} has mode {stat.S_IMODE(mode):04o}; "
            f"run `chmod 600 {shlex.quote(str(path))}` so that only its owner can read it"
        )
    return text.removesuffix("\n").removesuffix("\r")


def _mail_password(args: argparse.Namespace) -> str | None:
    if args.mail_user is None:
        if args.mail_password_file or args.mail_password_stdin:
            raise StackError("a mail password was given without --mail-user")
        return None
    if args.mail_password_file is not None:
        return read_password_file(args.mail_password_file)
    if args.mail_password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise StackError("no mail password on standard input")
        return password
    raise StackError("--mail-user needs --mail-password-file FILE or --mail-password-stdin")


def write_env_file(directory: StackDirectory, state: dict[str, Any], store_url: SecretStr | None = None) -> None:
    """Write ``DIR/env`` (mode 0600): the ``export`` lines that point clients at the stack.

    ``store_url``, the document store's URL with its password, becomes ``WARDEN_STORE_URL``.
    Without it, the document store is SQLite in ``WARDEN_HOME``.
    """
    components = state["components"]
    client_home = directory.path / "prefect-client"
    warden_home = directory.path / "warden"
    client_home.mkdir(parents=True, exist_ok=True)
    warden_home.mkdir(mode=0o700, parents=True, exist_ok=True)

    variables = {
        "PREFECT_API_URL": components["prefect"]["api_url"],
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(client_home),
        "WARDEN_HOME": str(warden_home),
        "VAULT_ADDR": components["openbao"]["address"],
    }
    load_command = ". " + shlex.quote(str(directory.env_path))
    lines = [
        f"# Written by `python -m stack up`. Load it with: {load_command}",
        f"# The OpenBao root token is in {components['openbao']['root_token_file']}.",
    ]
    if store_url is not None:
        variables["WARDEN_STORE_URL"] = store_url.get_secret_value()
        lines.append("# WARDEN_STORE_URL contains the PostgreSQL password: keep this file private.")
    lines.extend(f"export {name}={shlex.quote(value)}" for name, value in variables.items())
    if store_url is None:
        # A shell that loaded the file of a PostgreSQL stack gets the SQLite store back when it loads this one.
        lines.append("unset WARDEN_STORE_URL")
    write_private(directory.env_path, "\n".join(lines) + "\n")


def print_databases(directory: StackDirectory, state: dict[str, Any]) -> None:
    """Print where the Prefect server and the document store keep their data, with passwords as ``***``."""
    components = state["components"]
    prefect_url = components.get("prefect", {}).get("database_url")
    if prefect_url:
        print(f"Prefect database: {prefect_url}")
    if state.get("database") == POSTGRESQL and "postgres" in components:
        print(f"Document store (WARDEN_STORE_URL): {components['postgres']['store_url']}")
    else:
        print(f"Document store: sqlite:///{directory.path / 'warden' / 'warden.db'}")


def print_table(reports: list[ComponentReport]) -> None:
    """Print one aligned line per component: name, state, address, pids and run directory."""
    rows = [("COMPONENT", "STATE", "ADDRESS", "PIDS", "RUN DIR")]
    for report in reports:
        pids = ",".join(str(pid) for pid in report.pids) or "-"
        rows.append((report.name, report.state, report.address, pids, str(report.run_dir or "-")))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def command_up(args: argparse.Namespace) -> int:
    """Start or reuse every component, add the mail user, write ``stack.json`` and ``env``."""
    if os.geteuid() != 0:
        raise StackError(
            "`python -m stack up` must run as root, because Dovecot, php-fpm and nginx switch users; run it with sudo"
        )
    directory = StackDirectory(args.dir)
    password = _mail_password(args)
    state = directory.load_state()
    previous_database = state.get("database", SQLITE)
    database = args.database or previous_database
    if args.database is None and "database" not in state and _postgres(directory, {}).data_dir.is_dir():
        _progress(
            f"starting on SQLite, although {directory.path / 'postgres'} contains a PostgreSQL cluster of an "
            "earlier stack; pass --database postgresql (make demo DATABASE=postgresql) to use it"
        )
    if database == POSTGRESQL:
        _check_postgresql_installed()
    if state["components"] and database != previous_database:
        _announce_database_change(directory, previous_database, database)
    state["version"] = STATE_VERSION
    state["database"] = database
    reports: list[ComponentReport] = []
    store_url: SecretStr | None = None

    try:
        reports.append(_up_openbao(directory, state))
        provider, action = _up_oidc(directory, state)
        reports.append(_oidc_report(provider, action))
        mail_server, action = _up_mail(directory, state, provider)
        reports.append(_mail_report(mail_server, action))
        if args.mail_user is not None and password is not None:
            mail_server.add_user(args.mail_user, password)
            provider.add_user(args.mail_user, password)
            users = set(state.get("mail_users", [])) | {args.mail_user}
            state["mail_users"] = sorted(users)

        if database == POSTGRESQL:
            postgres, report = _up_postgres(directory, state)
            reports.append(report)
            store_url = SecretStr(postgres.sync_database_url(STORE_DATABASE))
            reports.append(_up_prefect(directory, state, SecretStr(postgres.database_url(PREFECT_DATABASE))))
        else:
            # Prefect first, so that it has closed its connections when PostgreSQL stops.
            reports.append(_up_prefect(directory, state, None))
            stopped = _stop_unused_postgres(directory, state)
            if stopped is not None:
                reports.append(stopped)
    finally:
        # Record whatever runs by now, so that `down` can stop it after a failure.
        directory.save_state(state)

    write_env_file(directory, state, store_url)
    print_table(reports)
    print()
    print_databases(directory, state)
    print(f"Load the environment with: . {shlex.quote(str(directory.env_path))}")
    print(f"OpenBao root token file: {state['components']['openbao']['root_token_file']}")
    print(f"OIDC issuer: {state['components']['oidc']['issuer']}")
    print(f"OIDC clients file: {state['components']['oidc']['clients_file']}")
    if state.get("mail_users"):
        print(f"Mail users: {', '.join(state['mail_users'])}")
    return 0


def command_down(args: argparse.Namespace) -> int:
    """Stop, by their recorded pids, every process that ``up`` started from ``--dir``."""
    directory = StackDirectory(args.dir)
    if not directory.state_path.exists():
        print(f"No stack in {directory.path}: {directory.state_path} does not exist.")
        return 0
    try:
        state = directory.load_state()
    except StackError:
        print(f"warning: {directory.state_path} is unreadable; stopping by pid files instead", file=sys.stderr)
        return _stop_by_pid_files(directory)
    components = state["components"]
    reports: list[ComponentReport] = []
    errors: list[StackError] = []

    # Stop in the reverse order of `up`, and try every component even if one fails.
    prefect_state = components.get("prefect", {})
    if prefect_state and not prefect_state.get("external"):
        prefect = _prefect(directory, prefect_state)
        reports.append(ComponentReport("Prefect", "stopped", prefect.api_url, [], prefect.run_dir))
        _stop_component(prefect, prefect_state, reports[-1], errors)
    if "postgres" in components:
        postgres = _postgres(directory, components["postgres"])
        reports.append(_postgres_report(postgres, "stopped"))
        _stop_component(postgres, components["postgres"], reports[-1], errors)
    if "mail" in components:
        mail_server = _mail(directory, components["mail"])
        reports.append(_mail_report(mail_server, "stopped"))
        _stop_component(mail_server, components["mail"], reports[-1], errors)
    if "oidc" in components:
        provider = _oidc(directory, components["oidc"])
        reports.append(_oidc_report(provider, "stopped"))
        _stop_component(provider, components["oidc"], reports[-1], errors)
    if "openbao" in components:
        openbao = _openbao(directory, components["openbao"])
        reports.append(ComponentReport("OpenBao", "stopped", openbao.address, [], openbao.run_dir))
        _stop_component(openbao, components["openbao"], reports[-1], errors)

    directory.save_state(state)
    print_table(reports)
    # Components that stack.json no longer lists, e.g. after it was edited by hand.
    leftovers = _stop_pid_file_processes(directory)
    if leftovers:
        print(f"Stopped {leftovers} more processes found in pid files below {directory.path}.")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


def _belongs_to(process: psutil.Process, directory: Path) -> bool:
    """Return whether a process was started from ``directory``: named in its command line, cwd or environment."""
    marker = str(directory)
    try:
        if any(marker in part for part in process.cmdline()) or process.cwd().startswith(marker):
            return True
        return any(marker in value for value in process.environ().values())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _stop_by_pid_files(directory: StackDirectory, timeout_seconds: float = 10.0) -> int:
    """Stop the processes in the pid files below ``directory`` when ``stack.json`` cannot be read.

    Only a process whose command line, working directory or environment names the
    directory is stopped, so a pid reused by another program is left alone. The
    unreadable state file is kept as ``stack.json.corrupt``; the next ``up`` starts afresh.
    """
    stopped = _stop_pid_file_processes(directory, timeout_seconds)
    directory.state_path.replace(directory.state_path.with_name(STATE_FILE + ".corrupt"))
    print(
        f"Stopped {stopped} processes found in pid files below {directory.path}; "
        f"the unreadable state file is kept as {STATE_FILE}.corrupt."
    )
    return 0


def _pid_file_processes(directory: StackDirectory) -> list[tuple[Path, psutil.Process]]:
    """Return the live processes named in pid files below ``directory`` that belong to it, with their pid files."""
    found = []
    for pid_path in sorted(directory.path.rglob("*.pid")):
        pid = read_pid(pid_path)
        if pid is None or not is_alive(pid):
            continue
        process = psutil.Process(pid)
        if _belongs_to(process, directory.path):
            found.append((pid_path, process))
    return found


def _stop_pid_file_processes(directory: StackDirectory, timeout_seconds: float = 10.0) -> int:
    """Stop the live processes named in pid files below ``directory`` that belong to it; return how many."""
    # SIGINT is PostgreSQL's fast shutdown. SIGTERM would make it wait until every client disconnected.
    postgres_pid_path = _postgres(directory, {}).pid_path
    processes = []
    for pid_path, process in _pid_file_processes(directory):
        processes.append(process)
        process.send_signal(signal.SIGINT if pid_path == postgres_pid_path else signal.SIGTERM)

    _, alive = psutil.wait_procs(processes, timeout=timeout_seconds)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=timeout_seconds)
    return len(processes)


def _stop_component(
    component: PrefectServer | PostgresServer | MailServer | OidcProvider | OpenBaoDevServer,
    stored: dict[str, Any],
    report: ComponentReport,
    errors: list[StackError],
) -> None:
    try:
        component.stop()
    except StackError as exc:
        errors.append(exc)
        report.state = "stop failed"
    report.pids = component.pids
    stored["pids"] = report.pids


def command_status(args: argparse.Namespace) -> int:
    """Print whether each component of ``--dir`` runs; return 0 only if all of them do."""
    directory = StackDirectory(args.dir)
    state = directory.load_state()
    components = state["components"]
    uses_postgres = state.get("database") == POSTGRESQL
    reports: list[ComponentReport] = []

    if "openbao" in components:
        openbao = _openbao(directory, components["openbao"])
        running = openbao.is_running()
        reports.append(
            ComponentReport(
                "OpenBao",
                "running" if running else "stopped",
                openbao.address,
                openbao.pids,
                openbao.run_dir,
            )
        )
    if "oidc" in components:
        provider = _oidc(directory, components["oidc"])
        reports.append(_oidc_report(provider, "running" if provider.is_running() else "stopped"))
    if "mail" in components:
        mail_server = _mail(directory, components["mail"])
        reports.append(_mail_report(mail_server, "running" if mail_server.is_running() else "stopped"))
    postgres_shown = False
    if "postgres" in components:
        postgres = _postgres(directory, components["postgres"])
        running = postgres.is_running()
        # After a change back to SQLite the entry stays for its port. The cluster is then shown only while it runs.
        if uses_postgres or running:
            reports.append(_postgres_report(postgres, "running" if running else "stopped"))
            postgres_shown = True
    prefect_state = components.get("prefect", {})
    if prefect_state.get("external"):
        reports.append(ComponentReport("Prefect", "external", prefect_state["api_url"], [], None))
    elif prefect_state:
        prefect = _prefect(directory, prefect_state)
        running = prefect.is_running()
        reports.append(
            ComponentReport(
                "Prefect",
                "running" if running else "stopped",
                prefect.api_url,
                prefect.pids,
                prefect.run_dir,
            )
        )

    if not reports:
        leftovers = _pid_file_processes(directory)
        if leftovers:
            pids = ", ".join(str(process.pid) for _, process in leftovers)
            print(
                f"{directory.state_path} lists no component, but {len(leftovers)} processes from pid files "
                f"below {directory.path} still run (pids {pids}). Stop them with `python -m stack down`."
            )
            return 1
        print(f"No stack in {directory.path}; start one with `python -m stack up`.")
        return 1
    print_table(reports)
    print()
    print_databases(directory, state)
    all_running = all(report.state in ("running", "external") for report in reports)
    expected_count = COMPONENT_COUNT + 1 if uses_postgres or postgres_shown else COMPONENT_COUNT
    return 0 if all_running and len(reports) == expected_count else 1


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``python -m stack``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=Path(".stack"),
        help="directory for run directories, stack.json and env (default: .stack)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description="Start, stop and inspect the local stack: OpenBao, an OIDC provider, mail "
        "(Dovecot and Roundcube), Prefect and, with --database postgresql, PostgreSQL, on loopback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", parents=[common], help="start or reuse every component and write DIR/env")
    up.add_argument(
        "--database",
        choices=DATABASES,
        help="database of the Prefect server and the document store: sqlite (files below DIR) or postgresql "
        "(a PostgreSQL cluster in DIR/postgres); default: the one DIR used last, else sqlite",
    )
    up.add_argument(
        "--mail-user",
        help="mailbox user to add or update in the mail server and, with the same password, in the OIDC provider",
    )
    password = up.add_mutually_exclusive_group()
    password.add_argument(
        "--mail-password-file",
        type=Path,
        help="file (mode 0600) that contains the password of --mail-user",
    )
    password.add_argument(
        "--mail-password-stdin",
        action="store_true",
        help="read the password of --mail-user from the first line of standard input",
    )
    up.set_defaults(handler=command_up)

    down = commands.add_parser("down", parents=[common], help="stop every process of the stack")
    down.set_defaults(handler=command_down)
    status = commands.add_parser("status", parents=[common], help="show which components run; exit 1 if one does not")
    status.set_defaults(handler=command_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m stack`` with ``argv`` and return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
