"""Spawn, watch and stop the daemons of the local stack.

Every component keeps a pid file and a log file in its own run directory, and is
stopped by the pid it recorded, never by a process name. Errors::

    StackError
    └── ComponentError      names the component, its log file and the log's last lines
        ├── StartupError    a component exited or did not become ready in time
        └── StopError       a stop command failed or processes survived SIGKILL
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import psutil

__all__ = [
    "ComponentError",
    "ForegroundProcess",
    "StackError",
    "StartupError",
    "StopError",
    "find_process",
    "http_status",
    "is_alive",
    "log_tail",
    "open_private",
    "process_tree",
    "read_pid",
    "run_command",
    "stop_process_tree",
    "wait_for_exit",
    "wait_until",
    "write_private",
]

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 20
POLL_INTERVAL_SECONDS = 0.05

# Loopback health checks must never go through a proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(RuntimeError):
    """Base of the errors raised while starting or stopping the local stack."""


class ComponentError(StackError):
    """A component could not be started or stopped; the message quotes the end of its log."""

    action = "run"

    def __init__(self, component: str, reason: str, log_path: Path | None = None) -> None:
        message = f"{component} failed to {self.action}: {reason}."
        if log_path is not None:
            message += f" Log file: {log_path}."
            tail = log_tail(log_path)
            if tail:
                message += f"\nLast lines of the log:\n{tail}"
        super().__init__(message)
        self.component = component
        self.reason = reason
        self.log_path = log_path


class StartupError(ComponentError):
    """A component exited during startup or did not become ready in time."""

    action = "start"


class StartupTimeout(StartupError):
    """A component kept running but did not become ready in time; it was killed."""


class StopError(ComponentError):
    """A stop command failed, or processes of a component survived SIGKILL."""

    action = "stop"


def log_tail(path: Path, max_lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``max_lines`` lines of a log file, or "" when it cannot be read."""
    try:
        with path.open("rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            size = log_file.tell()
            log_file.seek(max(0, size - 16_384))
            data = log_file.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])


def open_private(path: Path) -> int:
    """Open ``path`` for appending with mode 0600 and return the file descriptor.

    Logs of the stack can contain secrets (the OpenBao dev server prints its root
    token), so they are readable by their owner only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600, replacing the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def read_pid(pid_path: Path) -> int | None:
    """Return the pid stored in ``pid_path``, or None when the file is missing or invalid."""
    try:
        text = pid_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def is_alive(pid: int) -> bool:
    """Return whether ``pid`` is a running process; a zombie counts as exited."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def find_process(pid_path: Path, name: str) -> int | None:
    """Return the pid in ``pid_path`` if that process is alive and is ``name``.

    ``name`` must occur in the process name or its command line, so that a stale
    pid file whose pid was reused by another program is ignored.
    """
    pid = read_pid(pid_path)
    if pid is None or not is_alive(pid):
        return None
    try:
        process = psutil.Process(pid)
        if name in process.name() or any(name in part for part in process.cmdline()):
            return pid
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def wait_until(
    predicate: Callable[[], bool],
    timeout_seconds: float,
    interval_seconds: float = POLL_INTERVAL_SECONDS,
) -> bool:
    """Call ``predicate`` until it returns True or ``timeout_seconds`` pass.

    Returns the last result of ``predicate``.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_seconds)


def http_status(url: str, *, headers: Mapping[str, str] | None = None, timeout_seconds: float = 2.0) -> int | None:
    """Return the status of GET ``url``, sent without a proxy, or None if the connection failed."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout_seconds) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def run_command(
    component: str,
    command: Sequence[str],
    log_path: Path,
    *,
    timeout_seconds: float = 30.0,
    env: Mapping[str, str] | None = None,
    error_type: type[ComponentError] = StartupError,
) -> None:
    """Run a command of ``component`` to completion, appending its output to ``log_path``.

    Used for daemons that fork into the background themselves (``dovecot``,
    ``php-fpm``, ``nginx``) and for their stop commands.

    Raises:
        ComponentError: of ``error_type``, when the command could not be run or
            exited with a non-zero status.
    """
    fd = open_private(log_path)
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            timeout=timeout_seconds,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error_type(component, f"`{' '.join(command)}` failed: {exc}", log_path) from exc
    finally:
        os.close(fd)
    if completed.returncode != 0:
        raise error_type(
            component,
            f"`{' '.join(command)}` exited with status {completed.returncode}",
            log_path,
        )


def _reap_if_child(pid: int) -> None:
    # A child of this process stays a zombie until it is waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_for_exit(pids: Sequence[int], timeout_seconds: float) -> list[int]:
    """Wait until every pid has exited and return the pids still alive after the timeout.

    Reaps the pids that are children of this process, so they do not stay zombies.
    """

    def all_exited() -> bool:
        for pid in pids:
            _reap_if_child(pid)
        return not any(is_alive(pid) for pid in pids)

    wait_until(all_exited, timeout_seconds)
    return [pid for pid in pids if is_alive(pid)]


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and the pids of all its descendants, or [] when ``pid`` has exited."""
    try:
        root = psutil.Process(pid)
        return [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _send_signal(pid: int, sig: signal.Signals) -> None:
    # A process started by ForegroundProcess leads its own process group: signal the
    # whole group so that its workers get the signal too.
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_process_tree(
    component: str,
    pid: int,
    *,
    stop_signal: signal.Signals = signal.SIGTERM,
    stop_command: Sequence[str] | None = None,
    timeout_seconds: float = 10.0,
    log_path: Path | None = None,
) -> None:
    """Stop ``pid`` and every process it started, then wait until all of them exited.

    Runs ``stop_command`` when given (for example ``nginx -s quit``) and sends
    ``stop_signal`` when there is none or it fails. The signal goes to the whole
    process group when ``pid`` leads one. Processes still alive after
    ``timeout_seconds`` get SIGKILL.

    Raises:
        StopError: a process survived SIGKILL.
    """
    pids = process_tree(pid)
    if not pids:
        return

    stopped_by_command = False
    if stop_command is not None and log_path is not None:
        try:
            run_command(
                component,
                stop_command,
                log_path,
                timeout_seconds=timeout_seconds,
                error_type=StopError,
            )
            stopped_by_command = True
        except StopError as exc:
            logger.warning("%s: stop command failed, sending %s instead: %s", component, stop_signal.name, exc)
    if not stopped_by_command:
        _send_signal(pid, stop_signal)

    alive = wait_for_exit(pids, timeout_seconds)
    if not alive:
        return

    logger.warning(
        "%s: processes %s still alive %g seconds after the stop request; sending SIGKILL",
        component,
        alive,
        timeout_seconds,
    )
    for alive_pid in alive:
        _send_signal(alive_pid, signal.SIGKILL)
    alive = wait_for_exit(alive, 5.0)
    if alive:
        raise StopError(component, f"processes {alive} are still alive after SIGKILL", log_path)


class ForegroundProcess:
    """A server that stays in the foreground, started in its own session and process group.

    The process's stdout and stderr go to ``log_path`` (mode 0600) and its pid to
    ``pid_path``. A new session keeps it running after the starting program exits
    and lets :func:`stop_process_tree` signal all of its children at once.
    """

    def __init__(
        self,
        component: str,
        command: Sequence[str],
        *,
        log_path: Path,
        pid_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.component = component
        self.command = list(command)
        self.log_path = log_path
        self.pid_path = pid_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        """Start the process, write its pid file and return its pid."""
        fd = open_private(self.log_path)
        try:
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(self.component, f"could not run {self.command[0]}: {exc}") from exc
        finally:
            os.close(fd)
        self.pid_path.write_text(f"{self.popen.pid}\n", encoding="ascii")
        return self.popen.pid

    def wait_ready(self, check: Callable[[], bool], timeout_seconds: float) -> None:
        """Poll ``check`` until it returns True.

        Raises:
            StartupError: the process exited, or ``check`` stayed False for
                ``timeout_seconds``; the process is stopped first.
        """
        if self.popen is None:
            raise StartupError(self.component, "wait_ready() was called before start()")
        popen = self.popen

        def ready_or_exited() -> bool:
            return popen.poll() is not None or check()

        try:
            ready = wait_until(ready_or_exited, timeout_seconds)
        except BaseException:
            # For example KeyboardInterrupt: leave no half-started server behind.
            stop_process_tree(self.component, popen.pid, stop_signal=signal.SIGKILL)
            raise
        if popen.poll() is not None:
            raise StartupError(self.component, f"the process exited with status {popen.returncode}", self.log_path)
        if not ready:
            stop_process_tree(self.component, popen.pid, stop_signal=signal.SIGKILL)
            raise StartupTimeout(self.component, f"not ready after {timeout_seconds:g} seconds", self.log_path)
