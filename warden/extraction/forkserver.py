"""A fork server for the extraction sandbox: each worker is forked from a process that has the readers loaded.

A new ``python -m warden.extraction.worker`` spends 0.2 to 0.4 s of CPU on
imports before it reads the first byte, which is most of the work for a small
attachment. The fork server is one process per worker process, started with the
same minimal environment as a plain worker (no credentials). It imports the
extraction modules once, then only forks. It never reads an attachment. Each
forked worker, like a plain one:

* leads its own session and process group;
* gets its resource limits from the parent (``prlimit``) before the parent
  sends it any attachment byte, and sets them again itself;
* works in its own working and temporary directory;
* extracts one attachment and exits, so no state passes from one file to the next.

The server leaves an exited worker as a zombie until the parent requests that it
reap it. Until then the worker's process group id cannot be reused, so the parent
can kill the group safely, as with a child of its own.

Protocol, on a ``SOCK_SEQPACKET`` socket pair, one JSON object per message:

* server to parent, once: ``{"ready": true, "vm_size_kib": N}``;
* parent to server: ``{"spawn": ID, "work_dir": PATH}`` with three file
  descriptors, the worker's stdin, stdout and stderr; the server replies
  ``{"spawn": ID, "pid": PID}`` or ``{"spawn": ID, "errno": N}``;
* server to parent: ``{"exited": PID}`` when a worker exits;
* parent to server: ``{"reap": PID}``; the server replies
  ``{"reaped": PID, "returncode": N, "maxrss_kib": N}``.

When the parent closes its end, the server kills the workers that still run,
with their process groups, and exits.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ForkServer", "ForkedWorker", "ForkServerDied", "fork_server"]

logger = logging.getLogger(__name__)

# Not ``-m warden.extraction.forkserver``: the package imports this module before runpy would run it.
SERVER_COMMAND = "import sys; from warden.extraction.forkserver import main; sys.exit(main(sys.argv))"
MESSAGE_BYTES = 64 * 1024
START_TIMEOUT_SECONDS = 60.0
SPAWN_TIMEOUT_SECONDS = 30.0
# A worker killed with SIGKILL is reaped within milliseconds, so this only bounds a server that stopped replying.
REAP_TIMEOUT_SECONDS = 30.0
# Modules each worker would import for some format; missing extras are skipped.
PRELOADED_MODULES = (
    "warden.extraction.worker",
    "warden.extraction.pdf",
    "warden.extraction.office",
    "warden.extraction.archives",
    "warden.extraction.email",
    "warden.extraction.ocr",
    "warden.extraction.images",
    "warden.extraction.sevenzip",
    "warden.extraction.rar",
    "pypdfium2",
    "pdfplumber",
    "docx",
    "openpyxl",
    "msoffcrypto",
    "py7zr",
    "rarfile",
    "pytesseract",
    "PIL.Image",
    "magic",
)


class ForkServerDied(Exception):
    """The fork server exited, so a worker's exit status is unknown."""


# -- the parent's side ----------------------------------------------------------------


@dataclass
class _Waiter:
    """The reply the reader thread received for one spawn or one worker, and the event that signals it."""

    event: threading.Event = field(default_factory=threading.Event)
    message: dict[str, Any] | None = None


class ForkedWorker:
    """One worker forked by the server: its pid and the parent's ends of its three pipes."""

    def __init__(self, server: ForkServer, pid: int, stdin: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self.stdin = open(stdin, "wb", buffering=0)  # noqa: SIM115 - closed by the sandbox's exchange
        self.stdout = open(stdout, "rb", buffering=0)  # noqa: SIM115
        self.stderr = open(stderr, "rb", buffering=0)  # noqa: SIM115
        self._server = server

    def wait_until_exit(self, deadline: float) -> bool:
        """Wait until the worker exits, leaving it a zombie; return False if the monotonic ``deadline`` came first."""
        return self._server._wait_for_exit(self.pid, deadline)

    def reap(self) -> tuple[int, int]:
        """Have the server reap the worker; return its exit code and peak resident memory in bytes.

        Raises:
            ForkServerDied: the server exited before it reported the worker's status.
        """
        message = self._server._reap(self.pid)
        return int(message["returncode"]), int(message["maxrss_kib"]) * 1024


class ForkServer:
    """The parent's connection to one fork server process.

    ``environment`` is the server's whole environment, which every worker inherits with its
    own ``HOME`` and ``TMPDIR``.
    """

    def __init__(self, environment: dict[str, str]) -> None:
        parent_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The server writes no file: each worker gets its own directory as it starts.
            self.process = subprocess.Popen(
                [sys.executable, "-c", SERVER_COMMAND, str(server_end.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                cwd="/",
                env=environment,
                pass_fds=(server_end.fileno(),),
                start_new_session=True,
            )
        finally:
            server_end.close()
        self.owner_pid = os.getpid()
        self._socket = parent_end
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._next_spawn = 0
        self._spawns: dict[int, _Waiter] = {}
        self._exits: dict[int, _Waiter] = {}
        self._reaps: dict[int, _Waiter] = {}
        self._ready = _Waiter()
        self._dead = False
        self.vm_size_bytes = 0
        self._reader = threading.Thread(target=self._read_messages, name="warden-forkserver-reader", daemon=True)
        self._reader.start()

        if not self._ready.event.wait(START_TIMEOUT_SECONDS) or self._ready.message is None:
            self.close()
            raise OSError(f"The extraction fork server did not start within {START_TIMEOUT_SECONDS:g} s")
        self.vm_size_bytes = int(self._ready.message["vm_size_kib"]) * 1024
        logger.info("extraction.fork_server_started pid=%d vm_size_bytes=%d", self.process.pid, self.vm_size_bytes)

    @property
    def alive(self) -> bool:
        return not self._dead and self.process.poll() is None

    def spawn(self, work_dir: str) -> ForkedWorker:
        """Fork one worker that works in ``work_dir``; raise OSError when the server cannot fork."""
        stdin_read, stdin_write = os.pipe()
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        worker_ends = (stdin_read, stdout_write, stderr_write)
        try:
            with self._state_lock:
                self._next_spawn += 1
                spawn_id = self._next_spawn
                waiter = self._spawns[spawn_id] = _Waiter()
            payload = json.dumps({"spawn": spawn_id, "work_dir": work_dir}).encode()
            with self._send_lock:
                socket.send_fds(self._socket, [payload], list(worker_ends))
        except OSError:
            for fd in (*worker_ends, stdin_write, stdout_read, stderr_read):
                os.close(fd)
            raise
        finally:
            # The server has its own copies now, or never will.
            for fd in worker_ends:
                with contextlib.suppress(OSError):
                    os.close(fd)

        answered = waiter.event.wait(SPAWN_TIMEOUT_SECONDS)
        message = waiter.message
        if not answered or message is None or "pid" not in message:
            for fd in (stdin_write, stdout_read, stderr_read):
                os.close(fd)
            error_number = (message or {}).get("errno")
            if error_number is not None:
                raise OSError(error_number, f"The extraction fork server could not fork: {os.strerror(error_number)}")
            raise OSError(f"The extraction fork server (pid {self.process.pid}) did not fork a worker")
        return ForkedWorker(self, int(message["pid"]), stdin_write, stdout_read, stderr_read)

    def close(self) -> None:
        """Close the connection; the server kills what still runs and exits."""
        self._dead = True
        # shutdown() wakes the reader thread's recv and sends the server its end of file; close() alone does neither.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._socket.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    # The reader thread and the waits of ForkedWorker.

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._socket.send(json.dumps(message).encode())

    def _waiter(self, table: dict[int, _Waiter], key: int) -> _Waiter:
        with self._state_lock:
            waiter = table.setdefault(key, _Waiter())
            if self._dead:
                # Nothing will arrive any more: a wait ends at once.
                waiter.event.set()
            return waiter

    def _wait_for_exit(self, pid: int, deadline: float) -> bool:
        waiter = self._waiter(self._exits, pid)
        while not waiter.event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            waiter.event.wait(min(remaining, 1.0))
        return True

    def _reap(self, pid: int) -> dict[str, Any]:
        waiter = self._waiter(self._reaps, pid)
        with contextlib.suppress(OSError):
            self._send({"reap": pid})
        waiter.event.wait(REAP_TIMEOUT_SECONDS)
        with self._state_lock:
            self._exits.pop(pid, None)
            self._reaps.pop(pid, None)
        if waiter.message is None:
            raise ForkServerDied(
                f"The extraction fork server (pid {self.process.pid}) exited before it reported worker {pid}'s "
                "exit status. The next extraction starts a new server."
            )
        return waiter.message

    def _read_messages(self) -> None:
        try:
            while True:
                data = self._socket.recv(MESSAGE_BYTES)
                if not data:
                    break
                self._dispatch(json.loads(data))
        except (OSError, ValueError) as exc:
            if not self._dead:
                logger.warning("extraction.fork_server_lost pid=%d error=%s", self.process.pid, exc)
        finally:
            with self._state_lock:
                self._dead = True
                waiters = [self._ready, *self._spawns.values(), *self._exits.values(), *self._reaps.values()]
            # Wake everyone: spawns fail, exits count as exited, reaps raise ForkServerDied.
            for waiter in waiters:
                waiter.event.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self._ready.message = message
            self._ready.event.set()
        elif "spawn" in message:
            with self._state_lock:
                waiter = self._spawns.pop(int(message["spawn"]), None)
            if waiter is not None:
                waiter.message = message
                waiter.event.set()
        elif "exited" in message:
            waiter = self._waiter(self._exits, int(message["exited"]))
            waiter.message = message
            waiter.event.set()
        elif "reaped" in message:
            waiter = self._waiter(self._reaps, int(message["reaped"]))
            waiter.message = message
            waiter.event.set()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_server(environment: Callable[[], dict[str, str]]) -> ForkServer:
    """Return this process's fork server, starting it (again) when there is none or it died.

    ``environment`` returns the server's environment; it is called only when a server starts.
    """
    global _server
    with _server_lock:
        if _server is not None and (_server.owner_pid != os.getpid() or not _server.alive):
            if _server.owner_pid == os.getpid():
                _server.close()
            _server = None
        if _server is None:
            _server = ForkServer(environment())
            atexit.register(_server.close)
        return _server


# -- the server's side ----------------------------------------------------------------


def _preload() -> None:
    for name in PRELOADED_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _vm_size_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1])
    return 0


def _become_worker(work_dir: str, fds: list[int]) -> None:
    """Turn this forked child into a worker on ``fds`` and run it; never returns."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        # The server's socket, its wake-up pipe and the descriptors it received.
        os.closerange(3, 65536)
        os.chdir(work_dir)
        os.environ["HOME"] = work_dir
        os.environ["TMPDIR"] = work_dir
        tempfile.tempdir = None
        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False))  # noqa: SIM115
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False))  # noqa: SIM115
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True)  # noqa: SIM115

        from warden.extraction.worker import main

        code = main()
    except BaseException:  # noqa: BLE001 - a worker reports every failure on its stderr and exit status
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class _Server:
    """The fork server's loop: fork on request, report exits, reap on request."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.running: set[int] = set()
        self.exited: set[int] = set()
        self.to_reap: set[int] = set()

    def send(self, message: dict[str, Any]) -> None:
        self.control.send(json.dumps(message).encode())

    def serve(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        # A Python handler makes the interpreter write to the wake-up descriptor on each SIGCHLD.
        signal.signal(signal.SIGCHLD, lambda number, frame: None)
        signal.set_wakeup_fd(wake_write)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ)
        selector.register(wake_read, selectors.EVENT_READ)
        self.send({"ready": True, "vm_size_kib": _vm_size_kib()})

        while True:
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is self.control:
                    if not self.handle_request():
                        self.kill_all()
                        return 0
                else:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_read, 512):
                            pass
            self.report_exits()
            self.reap_requested()

    def handle_request(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, MESSAGE_BYTES, 3)
        except InterruptedError:
            return True
        if not data:
            return False
        request = json.loads(data)
        if "reap" in request:
            self.to_reap.add(int(request["reap"]))
            return True

        try:
            if len(fds) != 3:
                raise OSError(0, f"expected 3 file descriptors, got {len(fds)}")
            pid = os.fork()
        except OSError as exc:
            self.send({"spawn": request.get("spawn"), "errno": exc.errno or 0})
        else:
            if pid == 0:
                _become_worker(str(request["work_dir"]), fds)
            self.running.add(pid)
            self.send({"spawn": request["spawn"], "pid": pid})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def report_exits(self) -> None:
        for pid in list(self.running):
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
            except ChildProcessError:
                info = True
            if info is not None:
                self.running.discard(pid)
                self.exited.add(pid)
                self.send({"exited": pid})

    def reap_requested(self) -> None:
        for pid in list(self.to_reap & self.exited):
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped == 0:
                continue
            self.exited.discard(pid)
            self.to_reap.discard(pid)
            self.send({"reaped": pid, "returncode": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss})

    def kill_all(self) -> None:
        for pid in self.running | self.exited:
            # Killing the group ends the tools a worker started. The worker is
            # killed by pid too, because it may not have made its own group yet.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    """Run the fork server on the socket whose descriptor is ``argv[1]``, until the parent closes it."""
    control = socket.socket(fileno=int(argv[1]))
    _preload()
    return _Server(control).serve()
