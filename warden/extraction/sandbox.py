"""Run the extraction pipeline in a separate, limited process.

Each call runs one worker process, forked from this process's fork server
(:mod:`warden.extraction.forkserver`, which has the readers loaded) or, with
``fork_server=False`` or a memory limit too small for the server's address
space, started as ``python -m warden.extraction.worker``. Either way the worker
runs in a new session (so it leads its own process group) with:

* ``RLIMIT_AS`` = ``max_memory_bytes`` and ``RLIMIT_CPU`` = ``max_cpu_seconds``,
  set by this process before any attachment byte is sent, and inherited by the
  tools the worker starts (bsdtar, tesseract);
* a wall clock of ``timeout_seconds``, after which the whole process group is
  killed, so tools die with the worker;
* a cap of ``max_output_bytes`` on what it may send back;
* a minimal environment (no credentials of this process) and a private
  working and temporary directory that is removed afterwards, whatever
  happened;
* with ``background_priority``, nice 19 and the idle I/O class, so the
  worker only gets CPU and disk time that other programs leave.

Every outcome of the file, a crash or a limit included, comes back as an
:class:`ExtractionResult`. Only a worker that cannot be started raises.

Linux only: the limits use ``prlimit`` and the reaping uses ``waitid``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from pydantic import SecretStr, ValidationError

import warden
from warden.errors import ConfigError, TransientError
from warden.extraction.forkserver import ForkedWorker, ForkServerDied, fork_server
from warden.extraction.results import ExtractionResult, ExtractionStatus
from warden.extraction.settings import ExtractionSettings
from warden.extraction.worker import apply_resource_limits

__all__ = ["extract_in_sandbox"]

logger = logging.getLogger(__name__)

PIPE_WRITE_BYTES = 64 * 1024
PIPE_READ_BYTES = 64 * 1024
STDERR_TAIL_BYTES = 16 * 1024
PROJECT_ROOT = Path(warden.__file__).resolve().parent.parent
PASSED_ENVIRONMENT = ("PATH", "TESSDATA_PREFIX")
LOWEST_PRIORITY_NICE = 19
# Start failures that may pass on their own: too many processes, or no memory for a new one.
TRANSIENT_START_ERRNOS = (errno.EAGAIN, errno.ENOMEM)
# A forked worker starts with the fork server's address space. With less room than this on
# top of it, a plain worker is used instead, because it loads only the readers it needs.
FORK_HEADROOM_BYTES = 256 * 1024 * 1024


def worker_deadline_margin_seconds(timeout_seconds: float) -> float:
    """Return how long before the hard kill the worker stops starting new work."""
    return min(5.0, max(0.2, timeout_seconds * 0.1))


@dataclass
class WorkerRun:
    """Output and exit state of one worker process."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr_tail: bytes = b""
    returncode: int | None = None
    peak_rss_bytes: int | None = None
    timed_out: bool = False
    output_exceeded: bool = False


def extract_in_sandbox(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
    passwords: Sequence[SecretStr] = (),
) -> ExtractionResult:
    """Extract the text of one attachment in a worker process with resource limits.

    ``passwords`` (from the vault) are tried on encrypted files; they reach the
    worker over its stdin pipe and never appear in the result or the log.

    Never raises for a bad file: crashes, limits and timeouts come back as a
    result with status ``too_large``, ``malformed`` or ``timeout`` and an
    error that names the limit to raise. Raises :class:`TransientError` when
    the worker cannot be started for lack of processes or memory, and
    :class:`ConfigError` when it cannot be started at all.

    Example::

        result = extract_in_sandbox(
            payload, filename="invoice.pdf", declared_type="application/pdf",
            settings=ExtractionSettings(), passwords=[SecretStr(password_from_vault)],
        )
        if result.status in ("ok", "partial"):
            index(result.text)
    """
    started = time.monotonic()
    name = filename or "the attachment"
    try:
        run = run_worker(data, filename, declared_type, settings, [p.get_secret_value() for p in passwords], started)
    except ForkServerDied as exc:
        raise TransientError(f"Extraction of '{name}' lost its worker's exit status: {exc}") from exc
    except OSError as exc:
        message = (
            f"Could not start the extraction worker for '{name}': {exc}. Check that "
            f"{sys.executable} can run `-m warden.extraction.worker`."
        )
        if exc.errno in TRANSIENT_START_ERRNOS:
            raise TransientError(message) from exc
        raise ConfigError(message) from exc

    result = interpret(run, filename, declared_type, settings, started)
    logger.info(
        "Extracted %r in the sandbox: status=%s, %d characters, %.2f s",
        name,
        result.status,
        len(result.text),
        result.elapsed_seconds,
    )
    return result


def worker_environment(work_dir: str) -> dict[str, str]:
    """Return the worker's environment: no inherited secrets, temp files in ``work_dir``."""
    env = {key: os.environ[key] for key in PASSED_ENVIRONMENT if key in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(
        {
            "HOME": work_dir,
            "TMPDIR": work_dir,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            # One thread per tesseract and two malloc arenas keep the address
            # space, which RLIMIT_AS counts, close to what is really used.
            "OMP_THREAD_LIMIT": "1",
            "MALLOC_ARENA_MAX": "2",
        }
    )
    return env


def run_worker(
    data: bytes,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
    passwords: list[str],
    started: float,
) -> WorkerRun:
    deadline = started + settings.timeout_seconds
    header = {
        "filename": filename,
        "declared_type": declared_type,
        "settings": settings.model_dump(mode="json"),
        "passwords": passwords,
        "deadline_monotonic": deadline - worker_deadline_margin_seconds(settings.timeout_seconds),
        "size": len(data),
    }
    request = [json.dumps(header).encode("utf-8") + b"\n", data]

    # The worker could leave entries it made unremovable; that must not raise here.
    with tempfile.TemporaryDirectory(prefix="warden-extract-", ignore_cleanup_errors=True) as work_dir:
        process = start_worker(work_dir, settings)
        run = WorkerRun()
        try:
            apply_resource_limits(process.pid, settings)
            if settings.background_priority:
                lower_priority(process.pid)
            run = exchange(process, request, deadline, settings.max_output_bytes)
            if not run.timed_out and not run.output_exceeded:
                run.timed_out = not process.wait_until_exit(deadline)
        except ProcessLookupError:
            pass  # the worker died before its limits were set; its exit status is reported below
        finally:
            # Kill the group before reaping the leader, so that its process group
            # id cannot have been reused: this ends tools the worker left behind.
            # The leader itself too, in case it had not yet made its group.
            kill_process_group(process.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signal.SIGKILL)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None and not stream.closed:
                    stream.close()
            run.returncode, run.peak_rss_bytes = process.reap()
    return run


class PlainWorker:
    """A worker started as ``python -m warden.extraction.worker``, a child of this process."""

    def __init__(self, work_dir: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "warden.extraction.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work_dir,
            env=worker_environment(work_dir),
            start_new_session=True,
        )
        self.pid = self.process.pid
        self.stdin = self.process.stdin
        self.stdout = self.process.stdout
        self.stderr = self.process.stderr

    def wait_until_exit(self, deadline: float) -> bool:
        return wait_without_reaping(self.pid, deadline)

    def reap(self) -> tuple[int, int]:
        return reap(self.process)


def start_worker(work_dir: str, settings: ExtractionSettings) -> PlainWorker | ForkedWorker:
    """Start the worker of one attachment: forked from the fork server when the settings allow it."""
    if settings.fork_server:
        server = fork_server(lambda: worker_environment(tempfile.gettempdir()))
        if settings.max_memory_bytes >= server.vm_size_bytes + FORK_HEADROOM_BYTES:
            return server.spawn(work_dir)
    return PlainWorker(work_dir)


def lower_priority(pid: int) -> None:
    """Give the worker, and the tools it will start, the lowest CPU and I/O priority."""
    os.setpriority(os.PRIO_PROCESS, pid, LOWEST_PRIORITY_NICE)
    with contextlib.suppress(AttributeError, psutil.Error, OSError):
        psutil.Process(pid).ionice(psutil.IOPRIO_CLASS_IDLE)


def reap(process: subprocess.Popen[bytes]) -> tuple[int, int]:
    """Wait for the worker; return its exit code and peak resident memory in bytes.

    On Linux, ``ru_maxrss`` of a reaped process (in KiB) covers the
    descendants it waited for, such as tesseract and bsdtar.
    """
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024


def exchange(
    process: PlainWorker | ForkedWorker, request: list[bytes], deadline: float, max_output_bytes: int
) -> WorkerRun:
    """Write the request and read stdout and stderr until both close, the deadline, or the cap."""
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    run = WorkerRun()
    pending = [memoryview(chunk) for chunk in request if chunk]
    stderr_buffer = bytearray()

    selector = selectors.DefaultSelector()
    os.set_blocking(process.stdin.fileno(), False)
    selector.register(process.stdin, selectors.EVENT_WRITE)
    selector.register(process.stdout, selectors.EVENT_READ)
    selector.register(process.stderr, selectors.EVENT_READ)

    try:
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                run.timed_out = True
                break
            for key, _ in selector.select(remaining):
                stream = key.fileobj
                if stream is process.stdin:
                    if write_some(process.stdin.fileno(), pending):
                        selector.unregister(stream)
                        process.stdin.close()
                    continue

                chunk = os.read(key.fd, PIPE_READ_BYTES)
                if not chunk:
                    selector.unregister(stream)
                    continue
                if stream is process.stdout:
                    run.stdout += chunk
                    if len(run.stdout) > max_output_bytes:
                        run.output_exceeded = True
                        return run
                else:
                    stderr_buffer += chunk
                    del stderr_buffer[:-STDERR_TAIL_BYTES]
    finally:
        selector.close()
        run.stderr_tail = bytes(stderr_buffer)
        for stream in (process.stdin, process.stdout, process.stderr):
            if not stream.closed:
                stream.close()
    return run


def write_some(fd: int, pending: list[memoryview]) -> bool:
    """Write what the pipe takes now; return True when everything is written or the reader left."""
    while pending:
        try:
            written = os.write(fd, pending[0][:PIPE_WRITE_BYTES])
        except BlockingIOError:
            return False
        except BrokenPipeError:
            pending.clear()
            return True
        pending[0] = pending[0][written:]
        if not len(pending[0]):
            pending.pop(0)
    return True


def wait_without_reaping(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exits, leaving it a zombie; return False if the deadline came first."""
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def interpret(
    run: WorkerRun,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
    started: float,
) -> ExtractionResult:
    """Turn what the worker did into a result, explaining limits and crashes."""
    name = filename or "the attachment"
    if run.stderr_tail:
        logger.debug(
            "Extraction worker log for %r:\n%s",
            name,
            run.stderr_tail.decode("utf-8", errors="replace"),
        )

    if run.timed_out:
        return failed_result(
            "timeout",
            filename,
            declared_type,
            started,
            f"Extraction of '{name}' timed out after {settings.timeout_seconds:g} s "
            "(timeout_seconds); the worker and the tools it started were killed. If the file "
            "is legitimate, raise timeout_seconds in the extraction settings.",
        )
    if run.output_exceeded:
        return failed_result(
            "too_large",
            filename,
            declared_type,
            started,
            f"The extraction worker for '{name}' sent more than {settings.max_output_bytes} "
            "bytes (max_output_bytes) and was killed. Raise max_output_bytes, or lower "
            "max_text_chars, in the extraction settings.",
        )
    if run.returncode != 0:
        status, message = crash_outcome(run, name, settings)
        return failed_result(status, filename, declared_type, started, message, run.peak_rss_bytes)

    try:
        result = ExtractionResult.model_validate_json(bytes(run.stdout))
    except ValidationError as exc:
        logger.warning("The extraction worker for %r returned an invalid result: %s", name, exc)
        return failed_result(
            "malformed",
            filename,
            declared_type,
            started,
            f"The extraction worker for '{name}' exited normally but returned an invalid "
            "result; this is a bug in warden.extraction, please report it.",
        )
    return result.model_copy(
        update={
            "filename": filename,
            "declared_type": declared_type,
            "worker_peak_rss_bytes": run.peak_rss_bytes,
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
    )


def crash_outcome(run: WorkerRun, name: str, settings: ExtractionSettings) -> tuple[ExtractionStatus, str]:
    """Return the status and the explanation of a worker that exited without a result."""
    returncode = run.returncode or 0
    if returncode < 0:
        signal_name = signal_label(-returncode)
        if -returncode in (signal.SIGXCPU, signal.SIGKILL):
            return "timeout", (
                f"The extraction worker for '{name}' used up its CPU time "
                f"(max_cpu_seconds={settings.max_cpu_seconds}) and was stopped with "
                f"{signal_name}. If the file is legitimate, raise max_cpu_seconds in the "
                "extraction settings."
            )
        return "malformed", (
            f"The extraction worker for '{name}' crashed with {signal_name}. Under a memory "
            f"limit of max_memory_bytes={settings.max_memory_bytes}, this is most often an "
            "allocation that failed inside a parser on a damaged or hostile file. If the "
            "file is legitimate, raise max_memory_bytes in the extraction settings."
        )

    if b"MemoryError" in run.stderr_tail:
        return "too_large", (
            f"The extraction worker for '{name}' ran out of memory "
            f"(max_memory_bytes={settings.max_memory_bytes}) and exited with status "
            f"{returncode}. If the file is legitimate, raise max_memory_bytes in the "
            "extraction settings."
        )
    return "malformed", (
        f"The extraction worker for '{name}' exited with status {returncode} without a "
        "result; its log is at DEBUG level of the warden.extraction.sandbox logger."
    )


def signal_label(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def failed_result(
    status: ExtractionStatus,
    filename: str | None,
    declared_type: str | None,
    started: float,
    error: str,
    peak_rss_bytes: int | None = None,
) -> ExtractionResult:
    return ExtractionResult(
        status=status,
        mime_type=None,
        declared_type=declared_type,
        filename=filename,
        error=error,
        worker_peak_rss_bytes=peak_rss_bytes,
        elapsed_seconds=round(time.monotonic() - started, 3),
    )
