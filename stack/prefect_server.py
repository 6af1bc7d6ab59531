"""A Prefect API server (``prefect server start``) on loopback, with the UI.

The server runs with ``PREFECT_HOME=run_dir``, so its SQLite database
(``run_dir/prefect.db``) and settings stay in the run directory. Anonymous usage
reporting is off (``DO_NOT_TRACK=1``, ``PREFECT_SERVER_ANALYTICS_ENABLED=false``)::

    server = PrefectServer(Path(".stack/prefect-server"))
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    server.stop()

A new database needs Prefect's migrations, which took about 5 s of a 9 s cold
start of Prefect 3.9.1 on a 2-core machine. So the first start migrates an empty
database in a cache directory, once per Prefect version, and every new run
directory starts from a copy of it. The server was then healthy in about 3.5 s.

With ``database_url`` the server uses that database instead, for example
PostgreSQL from :mod:`stack.postgres`, which serves concurrent writes where SQLite
returns "database is locked"::

    server = PrefectServer(Path(".stack/prefect-pg"), database_url=postgres.create_database("prefect"))

Prefect migrates a new PostgreSQL database on its first start, which then took
6.8 s instead of 3.5 s (PostgreSQL 15, same machine). The URL contains the
database password, so the server object keeps it as a ``SecretStr`` and shows
only :attr:`PrefectServer.redacted_database_url`.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.engine import make_url

from stack.ports import LOOPBACK, free_port, is_port_free
from stack.process import (
    ForegroundProcess,
    StartupError,
    find_process,
    http_status,
    run_command,
    stop_process_tree,
)

__all__ = ["PrefectServer", "default_cache_dir"]

COMPONENT = "Prefect server"
DATABASE_NAME = "prefect.db"

# Settings that would point the server at another home, profile or database
# than its run directory, or at another API.
_INHERITED_SETTINGS_TO_DROP = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_HOME",
    "PREFECT_PROFILES_PATH",
    "PREFECT_API_DATABASE_CONNECTION_URL",
    "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_UI_API_URL",
    "PREFECT_SERVER_UI_API_URL",
)


def default_cache_dir() -> Path:
    """Directory for the migrated template database: ``$XDG_CACHE_HOME/connector-warden``."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "connector-warden"


def _server_environment(prefect_home: Path, database_url: str | None, api_url: str | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in _INHERITED_SETTINGS_TO_DROP}
    env["PREFECT_HOME"] = str(prefect_home)
    if api_url is not None:
        # The UI calls the API at this URL; without it Prefect 3.9.1 tells the UI http://127.0.0.1:4200/api.
        env["PREFECT_UI_API_URL"] = api_url
    env["DO_NOT_TRACK"] = "1"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if database_url is not None:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    return env


class PrefectServer:
    """One ``prefect server start`` process listening on ``127.0.0.1:port``.

    Args:
        run_dir: ``PREFECT_HOME`` of the server: database, pid file and log.
        port: API and UI port; a free port when None.
        database_url: ``PREFECT_API_DATABASE_CONNECTION_URL``, for example a
            ``postgresql+asyncpg://`` URL with its password; SQLite in ``run_dir``
            when None. It reaches the server through its environment, not its
            command line.
        cache_dir: where the migrated template SQLite database is kept;
            :func:`default_cache_dir` when None.
    """

    def __init__(
        self,
        run_dir: Path,
        port: int | None = None,
        *,
        database_url: str | SecretStr | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.port = port if port is not None else free_port()
        if isinstance(database_url, str):
            database_url = SecretStr(database_url)
        self.database_url: SecretStr | None = database_url
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()

    @property
    def api_url(self) -> str:
        """Value for ``PREFECT_API_URL``."""
        return f"http://{LOOPBACK}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The dashboard's URL, ending in ``/``."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def redacted_database_url(self) -> str:
        """The server's database URL with the password replaced by ``***``, safe to log."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{self.run_dir / DATABASE_NAME}"
        return make_url(self.database_url.get_secret_value()).render_as_string(hide_password=True)

    @property
    def pid_path(self) -> Path:
        """File that stores the server's pid."""
        return self.run_dir / "prefect-server.pid"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self.run_dir / "prefect-server.log"

    @property
    def pid(self) -> int | None:
        """Pid of the running server, or None when it is not running."""
        return find_process(self.pid_path, "prefect")

    @property
    def pids(self) -> list[int]:
        """Pids of every running process of this component."""
        pid = self.pid
        return [] if pid is None else [pid]

    def is_running(self) -> bool:
        """Return whether the recorded process is alive and ``/api/health`` returns 200."""
        return self.pid is not None and self._is_healthy()

    def _is_healthy(self) -> bool:
        return http_status(f"{self.api_url}/health", timeout_seconds=2.0) == 200

    def start(self, timeout_seconds: float = 90.0) -> None:
        """Start the server and wait until ``/api/health`` returns 200.

        Raises:
            StartupError: the server is already running from this run directory,
                the port is in use, or the server did not become healthy in time.
        """
        running_pid = self.pid
        if running_pid is not None:
            raise StartupError(COMPONENT, f"it is already running from {self.run_dir} with pid {running_pid}")
        if not is_port_free(self.port):
            raise StartupError(COMPONENT, f"port {self.port} on {LOOPBACK} is already in use")

        self.run_dir.mkdir(parents=True, exist_ok=True)
        database_url = None if self.database_url is None else self.database_url.get_secret_value()
        if database_url is None:
            self._seed_database()

        command = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        process = ForegroundProcess(
            COMPONENT,
            command,
            log_path=self.log_path,
            pid_path=self.pid_path,
            env=_server_environment(self.run_dir, database_url, self.api_url),
            cwd=self.run_dir,
        )
        process.start()
        process.wait_ready(self._is_healthy, timeout_seconds)

    def stop(self, timeout_seconds: float = 15.0) -> None:
        """Stop the server and all of its processes by the recorded pid, and wait until they exited.

        Sends SIGTERM to the server's process group, then SIGKILL to what is left
        after ``timeout_seconds``. SIGINT stopped Prefect 3.9.1 more slowly (2.7 s
        against 1.9 s for SIGTERM, on a 2-core machine).
        """
        pid = self.pid
        if pid is not None:
            stop_process_tree(COMPONENT, pid, timeout_seconds=timeout_seconds, log_path=self.log_path)
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> PrefectServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _seed_database(self) -> None:
        database = self.run_dir / DATABASE_NAME
        if database.exists():
            return
        template = self._template_database()
        # The backup API copies a consistent snapshot even if the template has a WAL file.
        source = sqlite3.connect(template)
        target = sqlite3.connect(database)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()

    def _template_database(self) -> Path:
        """Return the cached, migrated empty database for this Prefect version, creating it once."""
        version = importlib.metadata.version("prefect")
        template_dir = self.cache_dir / f"prefect-{version}-sqlite"
        template = template_dir / DATABASE_NAME
        if template.exists():
            return template

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix="prefect-db-", dir=self.cache_dir))
        try:
            run_command(
                COMPONENT,
                [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
                self.run_dir / "database-upgrade.log",
                timeout_seconds=300.0,
                env=_server_environment(build_dir, None),
            )
            try:
                build_dir.rename(template_dir)
            except OSError:
                # Another process created the template first; its copy is as good.
                if not template.exists():
                    raise
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        return template
