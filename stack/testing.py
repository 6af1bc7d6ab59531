"""Session-scoped pytest fixtures that run the real stack on free loopback ports.

Load them in ``tests/conftest.py``::

    pytest_plugins = ["stack.testing"]

Each fixture starts its component once per test session, in a run directory
below ``stack_run_dir``, and stops it by pid when the session ends. The mail
server needs root (see :mod:`stack.mail`). It validates IMAP XOAUTH2 and
OAUTHBEARER tokens at the ``oidc_provider`` fixture's introspection endpoint, so
requesting ``mail_server`` also starts the provider.

``prefect_server`` also points this test process at the server for the whole
session: it sets ``PREFECT_API_URL``, ``PREFECT_HOME`` (a client directory apart
from the server's), ``DO_NOT_TRACK=1`` and ``PREFECT_SERVER_ANALYTICS_ENABLED=false``
in ``os.environ``, so subprocesses inherit them, refreshes Prefect's settings if
Prefect is already imported, and restores all of it at the end.

``prefect_server_pg`` is a second Prefect server, on a database of the
``postgres_server`` fixture, for tests of what several workers share through
Prefect (global concurrency and rate limits), which SQLite serves too slowly.
It changes nothing in ``os.environ``: a test passes its ``api_url`` to the
processes it starts as ``PREFECT_API_URL``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stack.mail import MailServer
from stack.oidc import OidcProvider
from stack.openbao import OpenBaoDevServer
from stack.postgres import PostgresServer
from stack.prefect_server import PrefectServer

__all__ = [
    "mail_server",
    "oidc_provider",
    "openbao_server",
    "postgres_server",
    "prefect_server",
    "prefect_server_pg",
    "stack_run_dir",
    "worker_environment",
]


@pytest.fixture(scope="session")
def stack_run_dir() -> Iterator[Path]:
    """Create a directory (mode 0755) below the system's temporary directory for run directories.

    It is not below pytest's ``tmp_path``: ``/tmp/pytest-of-root`` has mode 0700,
    and the mail server's daemons run as other users. The directory is deleted after the session.
    """
    path = Path(tempfile.mkdtemp(prefix="warden-stack-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def openbao_server(stack_run_dir: Path) -> Iterator[OpenBaoDevServer]:
    """Start an OpenBao dev server for the test session; ``root_token`` is its root token."""
    server = OpenBaoDevServer(stack_run_dir / "openbao")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def oidc_provider(stack_run_dir: Path) -> Iterator[OidcProvider]:
    """Start the OAuth 2.0 / OIDC provider for the test session, with no users (see ``add_user``)."""
    provider = OidcProvider(stack_run_dir / "oidc")
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def mail_server(stack_run_dir: Path, oidc_provider: OidcProvider) -> Iterator[MailServer]:
    """Start Dovecot and Roundcube for the test session, with no users (see ``add_user``).

    Dovecot accepts XOAUTH2 and OAUTHBEARER with access tokens of ``oidc_provider``.
    """
    dovecot_client = oidc_provider.clients()["dovecot"]
    server = MailServer(
        stack_run_dir / "mail",
        oauth2_introspection_url=oidc_provider.introspection_endpoint,
        oauth2_client=(dovecot_client.client_id, dovecot_client.client_secret),
    )
    server.start()
    yield server
    server.stop()


def _refresh_prefect_settings() -> None:
    # Prefect builds its settings from the environment when it is imported; a
    # process that imported it earlier keeps the old ones until they are refreshed.
    context_module = sys.modules.get("prefect.context")
    if context_module is not None:
        context_module.refresh_global_settings_context()


def _drain_prefect_logs() -> None:
    # Send logs still queued for the API while the server runs; otherwise Prefect's log
    # worker tries at interpreter exit and prints "Error logging to API".
    handlers_module = sys.modules.get("prefect.logging.handlers")
    if handlers_module is not None:
        handlers_module.APILogWorker.drain_all(timeout=5)


@pytest.fixture(scope="session")
def prefect_server(stack_run_dir: Path) -> Iterator[PrefectServer]:
    """Start a Prefect server and make it the API of this process and its subprocesses."""
    server = PrefectServer(stack_run_dir / "prefect-server")
    server.start()

    client_home = stack_run_dir / "prefect-client"
    client_home.mkdir(exist_ok=True)
    settings = {
        "PREFECT_API_URL": server.api_url,
        "PREFECT_HOME": str(client_home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    _refresh_prefect_settings()
    try:
        yield server
    finally:
        _drain_prefect_logs()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _refresh_prefect_settings()
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(stack_run_dir: Path) -> Iterator[PostgresServer]:
    """Start a PostgreSQL cluster for the test session. ``create_database`` adds a database and returns its URL."""
    server = PostgresServer(stack_run_dir / "postgres")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prefect_server_pg(stack_run_dir: Path, postgres_server: PostgresServer) -> Iterator[PrefectServer]:
    """Start a Prefect server on the PostgreSQL database ``prefect``, without making it this process's API."""
    server = PrefectServer(
        stack_run_dir / "prefect-server-pg",
        database_url=postgres_server.create_database("prefect"),
    )
    server.start()
    yield server
    server.stop()


@contextmanager
def worker_environment(home: Path) -> Iterator[Path]:
    """Set the environment of a worker for a test module: its document store in ``home``.

    ``WARDEN_HOME`` points at ``home`` and ``WARDEN_STORE_URL`` is unset. On exit,
    these two and ``WARDEN_VAULT_SECRET_ID`` (which tests set after the vault
    set-up) get their earlier values back, and the cached settings are dropped
    both times, so the next module reads its own.
    """
    from warden.settings import get_settings

    names = ("WARDEN_HOME", "WARDEN_VAULT_SECRET_ID", "WARDEN_STORE_URL")
    previous = {name: os.environ.get(name) for name in names}
    os.environ["WARDEN_HOME"] = str(home)
    os.environ.pop("WARDEN_STORE_URL", None)
    get_settings.cache_clear()
    try:
        yield home
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
