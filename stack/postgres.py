"""A PostgreSQL cluster on loopback, from the binaries of Debian's ``postgresql`` package.

Prefect's server runs on it where SQLite is too slow: SQLite returns "database is
locked" under concurrent writes, which Prefect's clients retry, so global
concurrency limits shared by several workers crawl on it::

    server = PostgresServer(Path(".stack/postgres"))
    server.start()
    url = server.create_database("prefect")  # postgresql+asyncpg://warden:...@127.0.0.1:PORT/prefect
    prefect = PrefectServer(Path(".stack/prefect-server"), database_url=url)
    server.stop()

The cluster lives in ``run_dir/data`` and survives restarts. ``initdb`` and the
server refuse to run as root, so when this process is root they run as the
``postgres`` system user (through ``setpriv``), which then owns ``run_dir/data``.
The server listens on ``127.0.0.1`` only and opens no Unix socket. Every connection
authenticates with SCRAM-SHA-256 as the role ``warden``, the cluster's superuser,
whose random password is in ``run_dir/password`` (mode 0600). The password is
part of every URL this module returns, so pass those URLs on, never log them.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from stack.ports import LOOPBACK, free_port, is_port_free
from stack.process import (
    ForegroundProcess,
    StackError,
    StartupError,
    find_process,
    process_tree,
    run_command,
    stop_process_tree,
    write_private,
)

__all__ = ["PostgresServer", "find_postgres_bin_dir"]

COMPONENT = "PostgreSQL"
ROLE = "warden"
# The Debian user that owns the cluster when this process runs as root.
CLUSTER_OWNER = "postgres"
DEBIAN_POSTGRESQL_ROOT = Path("/usr/lib/postgresql")
INSTALL_HINT = "install Debian's postgresql package: bash stack/install.sh"
# Names that PostgreSQL takes as identifiers without quoting, of at most 63 bytes.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def find_postgres_bin_dir(root: Path = DEBIAN_POSTGRESQL_ROOT) -> Path:
    """Return the ``bin`` directory of the newest PostgreSQL version below ``root``.

    Debian installs each major version to ``/usr/lib/postgresql/VERSION/bin``.

    Raises:
        StartupError: no version with ``initdb`` and ``postgres`` is installed.
    """
    candidates = []
    for postgres in root.glob("*/bin/postgres"):
        bin_dir = postgres.parent
        version = bin_dir.parent.name
        if version.isdigit() and (bin_dir / "initdb").is_file():
            candidates.append((int(version), bin_dir))
    if not candidates:
        raise StartupError(COMPONENT, f"no {root}/VERSION/bin with `postgres` and `initdb`; {INSTALL_HINT}")
    return max(candidates)[1]


def _owner_command(command: list[str]) -> list[str]:
    """Return ``command`` run as ``CLUSTER_OWNER`` when this process is root, else unchanged."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise StartupError(
            COMPONENT, "`setpriv` (Debian package util-linux) is missing; it runs PostgreSQL as postgres"
        )
    # setpriv execs the command itself, so the pid it starts with is the postmaster's.
    return [setpriv, f"--reuid={CLUSTER_OWNER}", f"--regid={CLUSTER_OWNER}", "--init-groups", "--", *command]


def _chown_to_owner(path: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwnam(CLUSTER_OWNER)
    except KeyError as exc:
        raise StartupError(
            COMPONENT, f"there is no system user '{CLUSTER_OWNER}' to own the cluster; {INSTALL_HINT}"
        ) from exc
    os.chown(path, owner.pw_uid, owner.pw_gid)


def _server_environment() -> dict[str, str]:
    # The caller's PG* variables are left out because they would change what the binaries connect to.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


class PostgresServer:
    """One ``postgres`` server process listening on ``127.0.0.1:port``, with its cluster in ``run_dir/data``.

    Args:
        run_dir: directory for the cluster, the password file, the pid file and the logs.
            When this process is root, the ``postgres`` user must be able to enter it.
        port: TCP port; a free port when None. The cluster does not store the port,
            so a restart may use another one.
    """

    def __init__(self, run_dir: Path, port: int | None = None) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.port = port if port is not None else free_port()
        self._password: SecretStr | None = None

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self.run_dir / "data"

    @property
    def password_path(self) -> Path:
        """File (mode 0600) that stores the password of the role ``warden``."""
        return self.run_dir / "password"

    @property
    def pid_path(self) -> Path:
        """File that stores the postmaster's pid."""
        return self.run_dir / "postgres.pid"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self.run_dir / "postgres.log"

    @property
    def role(self) -> str:
        """The role every URL of this server logs in as."""
        return ROLE

    @property
    def password(self) -> SecretStr:
        """Password of the role ``warden``, read from ``password_path``.

        Raises:
            StackError: the cluster was never initialized in this run directory.
        """
        if self._password is None:
            try:
                password = self.password_path.read_text(encoding="utf-8").strip()
            except FileNotFoundError as exc:
                raise StackError(f"{COMPONENT}: no password file at {self.password_path}; call start() first") from exc
            self._password = SecretStr(password)
        return self._password

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None when it is not running."""
        return find_process(self.pid_path, "postgres")

    @property
    def pids(self) -> list[int]:
        """Pids of the postmaster and of every backend and helper process it started."""
        pid = self.pid
        return [] if pid is None else process_tree(pid)

    def is_running(self) -> bool:
        """Return whether the recorded postmaster is alive and accepts connections."""
        return self.pid is not None and self._is_ready()

    def _is_ready(self) -> bool:
        # pg_isready checks that the server accepts connections, without logging in.
        command = [
            str(find_postgres_bin_dir() / "pg_isready"),
            "--quiet",
            f"--host={LOOPBACK}",
            f"--port={self.port}",
            "--timeout=1",
        ]
        try:
            completed = subprocess.run(command, env=_server_environment(), timeout=5.0, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return completed.returncode == 0

    def start(self, timeout_seconds: float = 30.0) -> None:
        """Create the cluster if ``run_dir`` has none, start the server and wait until it accepts connections.

        Raises:
            StartupError: PostgreSQL is not installed, the server is already running
                from this run directory, the port is in use, ``initdb`` failed, or the
                server did not become ready in time.
        """
        bin_dir = find_postgres_bin_dir()
        running_pid = self.pid
        if running_pid is not None:
            raise StartupError(COMPONENT, f"it is already running from {self.run_dir} with pid {running_pid}")
        if not is_port_free(self.port):
            raise StartupError(COMPONENT, f"port {self.port} on {LOOPBACK} is already in use")

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initialize_cluster(bin_dir)

        # Settings go on the command line, so postgresql.conf stays as initdb wrote it
        # and a restart on another port needs no edit.
        command = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={LOOPBACK}",
            "-c",
            "unix_socket_directories=",
        ]
        process = ForegroundProcess(
            COMPONENT,
            _owner_command(command),
            log_path=self.log_path,
            pid_path=self.pid_path,
            env=_server_environment(),
            cwd=self.data_dir,
        )
        process.start()
        process.wait_ready(self._is_ready, timeout_seconds)

    def _initialize_cluster(self, bin_dir: Path) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StartupError(
                COMPONENT,
                f"{self.data_dir} is not empty but holds no cluster (PG_VERSION is missing); "
                "delete it to create a new cluster",
            )

        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.data_dir.chmod(0o700)
        _chown_to_owner(self.data_dir)
        password = secrets.token_urlsafe(24)
        write_private(self.password_path, password + "\n")
        self._password = SecretStr(password)

        # initdb reads the superuser's password from a file, so it never shows in the
        # process list. The file must be readable by the cluster's owner.
        initdb_password_path = self.run_dir / "initdb-password"
        write_private(initdb_password_path, password + "\n")
        _chown_to_owner(initdb_password_path)
        command = [
            str(bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={ROLE}",
            f"--pwfile={initdb_password_path}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ]
        try:
            run_command(
                COMPONENT,
                _owner_command(command),
                self.run_dir / "initdb.log",
                timeout_seconds=120.0,
                env=_server_environment(),
            )
        except StartupError:
            self.password_path.unlink(missing_ok=True)
            self._password = None
            raise
        finally:
            initdb_password_path.unlink(missing_ok=True)

    def stop(self, timeout_seconds: float = 15.0) -> None:
        """Stop the server with a fast shutdown and wait until its processes exited. The cluster stays.

        SIGINT makes the postmaster roll back open transactions, disconnect its
        clients and write a shutdown checkpoint. SIGTERM would wait for every client,
        such as a Prefect server's connection pool, to disconnect first.
        """
        pid = self.pid
        if pid is not None:
            stop_process_tree(
                COMPONENT,
                pid,
                stop_signal=signal.SIGINT,
                timeout_seconds=timeout_seconds,
                log_path=self.log_path,
            )
        self.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def create_database(self, name: str) -> str:
        """Create the database ``name`` owned by ``warden`` unless it exists; return its asyncpg URL.

        Raises:
            ValueError: ``name`` is not a lowercase SQL identifier.
            StackError: the server is not running, or ``psql`` failed.
        """
        _check_database_name(name)
        if self.pid is None:
            raise StackError(f"{COMPONENT} is not running from {self.run_dir}; call start() first")

        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self._psql(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def database_url(self, name: str) -> str:
        """Return the SQLAlchemy URL of database ``name`` for the asyncpg driver, password included.

        This is the form ``PREFECT_API_DATABASE_CONNECTION_URL`` takes.
        """
        return self._url("asyncpg", name)

    def sync_database_url(self, name: str) -> str:
        """Return the SQLAlchemy URL of database ``name`` for the psycopg (version 3) driver, password included.

        Raises:
            StackError: psycopg is not installed.
        """
        if importlib.util.find_spec("psycopg") is None:
            raise StackError(
                f"{COMPONENT}: a synchronous URL needs the psycopg driver, which is not installed; "
                "run `pip install 'psycopg[binary]'` or use database_url() with asyncpg"
            )
        return self._url("psycopg", name)

    def _url(self, driver: str, name: str) -> str:
        _check_database_name(name)
        password = quote(self.password.get_secret_value(), safe="")
        return f"postgresql+{driver}://{ROLE}:{password}@{LOOPBACK}:{self.port}/{name}"

    def _psql(self, sql: str) -> str:
        """Run one SQL statement in the database ``postgres`` as ``warden`` and return its unaligned output."""
        env = _server_environment()
        # PGPASSWORD reaches psql through its environment, which only root and the
        # process's own user can read, and stays out of the process list.
        env["PGPASSWORD"] = self.password.get_secret_value()
        command = [
            str(find_postgres_bin_dir() / "psql"),
            f"--host={LOOPBACK}",
            f"--port={self.port}",
            f"--username={ROLE}",
            "--dbname=postgres",
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            f"--command={sql}",
        ]
        try:
            completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30.0, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"{COMPONENT}: `psql --command={sql!r}` failed: {exc}") from exc
        if completed.returncode != 0:
            raise StackError(
                f"{COMPONENT}: `psql --command={sql!r}` exited with status {completed.returncode}: "
                f"{completed.stderr.strip()}"
            )
        return completed.stdout.strip()


def _check_database_name(name: str) -> None:
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(
            f"invalid database name {name!r}: use 1 to 63 lowercase letters, digits and underscores, "
            "starting with a letter or underscore"
        )
