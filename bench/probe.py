"""Measure the CPU of one session probe over HTTP against the same check in a browser.

Usage::

    python -m bench.probe                 # a readable table
    python -m bench.probe --json          # one JSON object
    python -m bench.probe --probes 200 --browser-runs 5

It starts its own OpenBao dev server and Dovecot + Roundcube on free loopback
ports in a temporary directory (the mail server needs root). It creates a
mailbox user with a few unread messages and logs in once with Chromium through
the sync's refresh step. Then it measures, as medians:

- ``probe_cpu_seconds``: CPU of this process per HTTP probe (Roundcube's
  keep-alive request) on one reused connector session and HTTP client;
- ``probe_new_client_cpu_seconds``: the same with a new HTTP client per probe,
  as ``connector.probe(state)`` does;
- ``probe_step_cpu_seconds``: the probe as a sync runs it without Prefect:
  AppRole login, scoped token issue and unwrap, decrypt, HTTP probe, encrypt,
  store, then revoke and prove;
- ``browser_cpu_seconds``: one cold browser check of the same session, as the
  smoke-test flow runs it: launch Chromium, open a context from the saved
  state, open the inbox, check it is logged in, close everything. It counts
  every process the check started (see :func:`measure_browser_check`).

``ratio`` is ``browser_cpu_seconds / probe_cpu_seconds``. Every process the
benchmark started is stopped before it exits, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from importlib import metadata
from pathlib import Path
from typing import Any

import hvac
import psutil
from pydantic import SecretStr

from stack.mail import MailServer
from stack.openbao import OpenBaoDevServer
from stack.process import stop_process_tree
from warden import steps
from warden.accounts import AccountConfig
from warden.connectors.base import ProbeState
from warden.credentials.policies import Action
from warden.credentials.provision import provision_account, provision_runner
from warden.credentials.tokens import WrappedToken
from warden.credentials.vault import VaultClient, VaultSettings
from warden.run import SyncRun
from warden.sessions.browser import BrowserPool
from warden.sessions.forecast import forecast_expiry
from warden.sessions.state import SessionState
from warden.settings import get_settings
from warden.store import DocumentStore

__all__ = ["main", "measure_browser_check", "run_benchmark"]

BENCH_ACCOUNT = "bench"
BENCH_USER = "bench-user"
BENCH_MESSAGES = 20
WARMUP_PROBES = 3
DEFAULT_PROBES = 50
DEFAULT_BROWSER_RUNS = 3
BROWSER_CHECK_TIMEOUT_SECONDS = 120.0
# Chromium's helpers may outlive the main process by a moment; they are killed after this. It is shorter
# than the parent's wait for the child (stop_process_tree's default of 10 s), so the child reaps them first.
ORPHAN_EXIT_TIMEOUT_SECONDS = 5.0
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


class BenchmarkFailed(RuntimeError):
    """A step of the benchmark did not produce the state it needs, e.g. a probe found no valid session."""


# -- the browser check, in a child process -----------------------------------------


def _become_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(errno)}")


def _reap_children(timeout_seconds: float) -> list[int]:
    """Wait for every child of this process to exit and reap it; kill those still alive after the timeout.

    Returns the pids that had to be killed.
    """
    deadline = time.monotonic() + timeout_seconds
    killed: list[int] = []
    while True:
        children = psutil.Process().children()
        if not children:
            return killed
        for child in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, os.WNOHANG)
        if time.monotonic() >= deadline:
            for child in psutil.Process().children():
                try:
                    child.kill()
                    killed.append(child.pid)
                    os.waitpid(child.pid, 0)
                except (psutil.NoSuchProcess, ChildProcessError):
                    pass
            return killed
        time.sleep(0.02)


def _cpu_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _browser_child_main() -> int:
    """Run one browser check from the request on stdin and print its measurements as JSON on stdout."""
    # Chromium's zygotes, renderers and crash handlers outlive or escape the processes that started them
    # and are re-parented. As a child subreaper this process inherits every one of them, reaps them, and
    # getrusage(RUSAGE_CHILDREN) then counts all of them, the Playwright driver and Chromium included.
    # Summing psutil samples of a process group instead misses the crash handlers (they start their own
    # sessions) and whatever a helper used between the last sample and its exit.
    _become_child_subreaper()
    interrupted = False

    def interrupt(number: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        result = _run_browser_check(json.loads(sys.stdin.read()))
    except KeyboardInterrupt:
        return 130
    except Exception:
        # Ctrl-C also stops Playwright's driver, and Playwright then raises its own error instead.
        if interrupted:
            return 130
        raise
    finally:
        # After a failure, helpers may still run; they are this process's children now and must not outlive
        # it. A second Ctrl-C (the parent forwards one) must not cut this short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _reap_children(ORPHAN_EXIT_TIMEOUT_SECONDS)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


def _run_browser_check(request: dict[str, Any]) -> dict[str, Any]:
    from flows.smoke import SMOKE_PAGES, visit_with_session

    state = SessionState.model_validate(request["state"])
    page_spec = SMOKE_PAGES[request["connector"]]
    pool = BrowserPool(Path(request["chromium_path"]))

    self_before = resource.getrusage(resource.RUSAGE_SELF)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    visit = asyncio.run(
        visit_with_session(
            pool,
            page_spec,
            request["base_url"],
            state,
            account=BENCH_ACCOUNT,
            timeout_seconds=BROWSER_CHECK_TIMEOUT_SECONDS,
        )
    )
    wall_seconds = time.perf_counter() - started
    killed = _reap_children(ORPHAN_EXIT_TIMEOUT_SECONDS)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)

    return {
        "logged_in": visit.logged_in,
        "status": visit.status,
        "wall_seconds": wall_seconds,
        "python_cpu_seconds": _cpu_seconds(self_after) - _cpu_seconds(self_before),
        "child_processes_cpu_seconds": _cpu_seconds(children_after) - _cpu_seconds(children_before),
        "killed_pids": killed,
        "state": json.loads(visit.state.to_bytes()),
    }


async def measure_browser_check(state: SessionState, base_url: str, chromium_path: Path) -> dict[str, Any]:
    """Run one cold browser check of ``state`` in a child process and return its CPU and wall times.

    ``cpu_seconds`` is the Python client's CPU plus every process the check
    started: Playwright's Node.js driver, Chromium and all its helpers. The
    child runs as a child subreaper, so it inherits and reaps re-parented
    helpers. The decrypted state goes to the child through a pipe, never a file.
    """
    request = {
        "connector": "roundcube",
        "base_url": base_url,
        "chromium_path": str(chromium_path),
        "state": json.loads(state.to_bytes()),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.probe",
        "--browser-child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.wait_for(
            process.communicate(json.dumps(request).encode()), timeout=BROWSER_CHECK_TIMEOUT_SECONDS
        )
    except BaseException:
        # Cancelled by Ctrl-C or timed out: SIGINT lets the child close its browser, SIGKILL follows.
        await asyncio.to_thread(stop_process_tree, "browser check", process.pid, stop_signal=signal.SIGINT)
        raise

    if process.returncode in (130, -signal.SIGINT):
        # The child saw Ctrl-C before this process did.
        raise KeyboardInterrupt
    if process.returncode != 0:
        raise BenchmarkFailed(
            f"The browser check exited with status {process.returncode}. Its errors are on stderr above."
        )
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    if not result["logged_in"]:
        raise BenchmarkFailed(
            f"The browser check opened the login form (HTTP {result['status']}) instead of the inbox."
        )
    result["cpu_seconds"] = result["python_cpu_seconds"] + result["child_processes_cpu_seconds"]
    return result


# -- the HTTP probes ------------------------------------------------------------------


async def _with_token(run: SyncRun, action: Action, work: Callable[[WrappedToken], Awaitable[Any]]) -> Any:
    wrapped = steps.issue_token(run, action)
    try:
        return await work(wrapped)
    finally:
        steps.wipe(run)


def _check_valid(state: ProbeState, probe_name: str) -> None:
    if state != ProbeState.VALID:
        raise BenchmarkFailed(
            f"{probe_name} returned {state.value} instead of valid, although the session was just captured."
        )


async def _timed(samples_cpu: list[float], samples_wall: list[float], work: Callable[[], Awaitable[Any]]) -> Any:
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    result = await work()
    samples_cpu.append(time.process_time() - cpu_started)
    samples_wall.append(time.perf_counter() - wall_started)
    return result


async def _measure_reused_session(run: SyncRun, state: SessionState, probes: int) -> tuple[dict, SessionState]:
    cpu: list[float] = []
    wall: list[float] = []
    async with run.connector.open(state) as session:
        for _ in range(WARMUP_PROBES):
            await session.probe()
        for _ in range(probes):
            result = await _timed(cpu, wall, session.probe)
            _check_valid(result.state, "An HTTP probe on the reused session")
        rotated = session.current_state()
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}, rotated


async def _measure_new_clients(run: SyncRun, state: SessionState, probes: int) -> tuple[dict, SessionState]:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(WARMUP_PROBES):
        _, state = await run.connector.probe(state)
    for _ in range(probes):
        result, state = await _timed(cpu, wall, lambda current=state: run.connector.probe(current))
        _check_valid(result.state, "An HTTP probe with a new client")
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}, state


async def _measure_probe_steps(run: SyncRun, probes: int) -> dict:
    cpu: list[float] = []
    wall: list[float] = []

    async def probe_step() -> None:
        result = await _with_token(run, Action.PROBE, lambda wrapped: steps.probe(run, wrapped))
        _check_valid(result.state, "The probe step")

    for _ in range(WARMUP_PROBES):
        await probe_step()
    for _ in range(probes):
        await _timed(cpu, wall, probe_step)
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall)}


# -- set-up and the whole run ------------------------------------------------------------


def _bench_message(number: int) -> bytes:
    message = EmailMessage()
    message["From"] = "sender@warden.test"
    message["To"] = f"{BENCH_USER}@warden.test"
    message["Subject"] = f"Benchmark message {number}"
    message["Message-ID"] = f"<bench-{number}@warden.test>"
    message.set_content(f"Body of benchmark message {number}.\n")
    return message.as_bytes()


async def _save_state(run: SyncRun, wrapped: WrappedToken, state: SessionState) -> int:
    last_valid_at = datetime.now(UTC)
    forecast = forecast_expiry(
        state,
        last_valid_at=last_valid_at,
        sliding_lifetime_seconds=run.account.session_lifetime_seconds,
        auth_cookie_names=run.connector.auth_cookie_names,
    )
    token = run.token_for(wrapped)
    return run.sessions.save(token, state, last_valid_at=last_valid_at, forecast=forecast, source="bench")


async def _load_state(run: SyncRun, wrapped: WrappedToken) -> SessionState:
    loaded = run.sessions.load(run.token_for(wrapped))
    if loaded is None:
        raise BenchmarkFailed("No session was stored after the login.")
    return loaded.state


async def _measure(openbao: OpenBaoDevServer, mail: MailServer, run_dir: Path, probes: int, browser_runs: int) -> dict:
    admin = hvac.Client(url=openbao.address, token=openbao.root_token.get_secret_value())
    runner = provision_runner(admin)
    password = secrets.token_urlsafe(18)
    mail.add_user(BENCH_USER, password)
    for number in range(1, BENCH_MESSAGES + 1):
        mail.append_message(BENCH_USER, password, _bench_message(number))

    config = AccountConfig(
        name=BENCH_ACCOUNT,
        base_url=mail.roundcube_url,
        username=BENCH_USER,
        login_secret_path=f"connectors/{BENCH_ACCOUNT}",
        session_key=f"session-{BENCH_ACCOUNT}",
        session_lifetime_seconds=mail.session_lifetime_minutes * 60,
    )
    provision_account(admin, config.paths, {"password": SecretStr(password)})
    chromium_path = get_settings().chromium_path
    run = SyncRun(
        config,
        vault=VaultClient(VaultSettings(address=openbao.address, role_id=runner.role_id, secret_id=runner.secret_id)),
        documents=DocumentStore(f"sqlite:///{run_dir / 'warden.db'}"),
        browser_pool=BrowserPool(chromium_path),
    )

    login_started = time.perf_counter()
    await _with_token(run, Action.REFRESH, lambda wrapped: steps.refresh(run, wrapped, source="bench"))
    login_wall_seconds = time.perf_counter() - login_started

    state = await _with_token(run, Action.PROBE, lambda wrapped: _load_state(run, wrapped))
    reused, state = await _measure_reused_session(run, state, probes)
    new_clients, state = await _measure_new_clients(run, state, probes)
    await _with_token(run, Action.PROBE, lambda wrapped: _save_state(run, wrapped, state))
    step = await _measure_probe_steps(run, probes)

    state = await _with_token(run, Action.PROBE, lambda wrapped: _load_state(run, wrapped))
    browser_checks = []
    for _ in range(browser_runs):
        check = await measure_browser_check(state, mail.roundcube_url, chromium_path)
        # The visit may rotate cookies; the next check starts from the state it left.
        state = SessionState.model_validate(check.pop("state"))
        browser_checks.append(check)

    browser_cpu = statistics.median(check["cpu_seconds"] for check in browser_checks)
    return {
        "probe_cpu_seconds": round(reused["cpu"], 6),
        "probe_wall_seconds": round(reused["wall"], 6),
        "probes": probes,
        "probe_new_client_cpu_seconds": round(new_clients["cpu"], 6),
        "probe_new_client_wall_seconds": round(new_clients["wall"], 6),
        "probe_step_cpu_seconds": round(step["cpu"], 6),
        "probe_step_wall_seconds": round(step["wall"], 6),
        "browser_cpu_seconds": round(browser_cpu, 3),
        "browser_wall_seconds": round(statistics.median(check["wall_seconds"] for check in browser_checks), 3),
        "browser_runs": browser_runs,
        "browser_python_cpu_seconds": round(statistics.median(c["python_cpu_seconds"] for c in browser_checks), 3),
        "browser_processes_cpu_seconds": round(
            statistics.median(c["child_processes_cpu_seconds"] for c in browser_checks), 3
        ),
        "browser_killed_pids": sum(len(check["killed_pids"]) for check in browser_checks),
        "ratio": round(browser_cpu / reused["cpu"], 1),
        "login_wall_seconds": round(login_wall_seconds, 3),
        "machine": _machine(chromium_path),
    }


def _machine(chromium_path: Path) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        version = subprocess.run(
            [str(chromium_path), "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        version = "unknown"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "chromium": version,
        "playwright": metadata.version("playwright"),
    }


def run_benchmark(probes: int = DEFAULT_PROBES, browser_runs: int = DEFAULT_BROWSER_RUNS) -> dict[str, Any]:
    """Start the stack in a temporary directory, measure, stop every process and delete the directory."""
    # The mail server's daemons run as other users, so every parent of its directory must be searchable.
    run_dir = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    run_dir.chmod(0o755)
    # Chromium and Playwright's driver keep profiles and shared memory files in TMPDIR. A browser killed
    # by Ctrl-C leaves them behind, so they go below the run directory, which is deleted at the end.
    previous_tmpdir = os.environ.get("TMPDIR")
    (run_dir / "tmp").mkdir(mode=0o700)
    os.environ["TMPDIR"] = str(run_dir / "tmp")
    openbao = OpenBaoDevServer(run_dir / "openbao")
    mail = MailServer(run_dir / "mail")
    try:
        openbao.start()
        mail.start()
        return asyncio.run(_measure(openbao, mail, run_dir, probes, browser_runs))
    finally:
        try:
            mail.stop()
        finally:
            openbao.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            if previous_tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = previous_tmpdir


# -- command line -------------------------------------------------------------------------


def _print_table(results: dict[str, Any]) -> None:
    machine = results["machine"]
    rows = [
        ("HTTP probe, reused client", results["probe_cpu_seconds"], results["probe_wall_seconds"], results["probes"]),
        (
            "HTTP probe, new client",
            results["probe_new_client_cpu_seconds"],
            results["probe_new_client_wall_seconds"],
            results["probes"],
        ),
        (
            "probe step of a sync (vault + HTTP)",
            results["probe_step_cpu_seconds"],
            results["probe_step_wall_seconds"],
            results["probes"],
        ),
        (
            "browser check (cold Chromium)",
            results["browser_cpu_seconds"],
            results["browser_wall_seconds"],
            results["browser_runs"],
        ),
    ]
    print(f"Probe benchmark on {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['chromium']}")
    print(f"{'measure':<38}{'median CPU s':>14}{'median wall s':>15}{'runs':>7}")
    for name, cpu, wall, runs in rows:
        print(f"{name:<38}{cpu:>14.6f}{wall:>15.6f}{runs:>7}")
    print(
        f"browser check CPU: {results['browser_processes_cpu_seconds']:.3f} s in Chromium and the Playwright "
        f"driver, {results['browser_python_cpu_seconds']:.3f} s in the Python client"
    )
    print(f"ratio (browser check / HTTP probe, CPU): {results['ratio']:.0f}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--probes", type=int, default=DEFAULT_PROBES, help=f"HTTP probes per measure (default {DEFAULT_PROBES})"
    )
    parser.add_argument(
        "--browser-runs",
        type=int,
        default=DEFAULT_BROWSER_RUNS,
        help=f"cold browser checks (default {DEFAULT_BROWSER_RUNS})",
    )
    parser.add_argument("--browser-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probes < 1 or args.browser_runs < 1:
        parser.error("--probes and --browser-runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.browser_child:
        return _browser_child_main()

    # SIGTERM raises KeyboardInterrupt like Ctrl-C, so the same clean-up stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = run_benchmark(args.probes, args.browser_runs)
    except KeyboardInterrupt:
        print("Interrupted; every process the benchmark started is stopped.", file=sys.stderr)
        return 130

    if args.json:
        print(json.dumps(results))
    else:
        _print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
