"""Measure how a batch of account syncs scales from one worker process to two, on a Prefect server on PostgreSQL.

Usage (as root, because the mail server's daemons switch users)::

    python -m bench.scale                   # a readable table
    python -m bench.scale --json            # one JSON object
    python -m bench.scale --accounts 40 --concurrency-per-worker 2

It starts its own stack on free loopback ports in a temporary directory:
OpenBao (dev server), the OAuth 2.0 provider, Dovecot + Roundcube (Dovecot
accepting XOAUTH2), PostgreSQL, and a Prefect server on PostgreSQL. It creates
``--accounts`` mailbox users, each with the twelve demo e-mails, and registers
two accounts per user that read the mailbox over IMAP with OAuth (one account
per round, so the second round finds every message new again). The OAuth path
needs no browser, so the batch measures the orchestration, the vault, IMAP and
the document store, not Chromium.

Round 1 syncs every round-1 account with one worker process; round 2 syncs the
round-2 accounts with two worker processes, each given half of them. A worker
is a plain subprocess (``python -m bench.scale worker ...``) that runs the
``sync-all-accounts`` flow over its share, up to ``--concurrency-per-worker``
accounts at a time, against the PostgreSQL-backed Prefect server and document
store, like a process worker of a work pool. Each round writes to its own store
database, so the second round deduplicates no content against the first.

Workers record when each request passed the site's rate limit and when each
browser slot was taken and released. ``peak_requests_per_second_per_site`` is
the most requests in any one-second window, per site, and ``peak_browser_jobs``
the most browser slots held at once.

Before round 1, the benchmark creates the site's limits with ``--site-slots`` and
``--site-rate-per-second`` (defaults well above one machine's need), so the
site's limits are not the bottleneck unless asked for. Every process the
benchmark started is stopped before it exits, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.latency import LatencyProxy
from stack.mail import MailServer
from stack.oidc import OidcProvider
from stack.openbao import OpenBaoDevServer
from stack.ports import LOOPBACK
from stack.postgres import PostgresServer
from stack.prefect_server import PrefectServer

__all__ = ["main", "peak_concurrency", "peak_per_second"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ACCOUNTS = 20
DEFAULT_CONCURRENCY_PER_WORKER = 2
DEFAULT_SITE_SLOTS = 8
DEFAULT_SITE_RATE_PER_SECOND = 100.0
ROUND_TIMEOUT_SECONDS = 1800.0
MAIL_PASSWORD_BYTES = 18


@dataclass
class RoundResult:
    """The outcome of syncing one batch with a given number of workers."""

    workers: int
    accounts: int
    elapsed_seconds: float
    completed: int
    failed_accounts: list[str] = field(default_factory=list)
    # Accounts whose stored message count differs from the mailbox's: lost or duplicated messages.
    mismatched_accounts: list[str] = field(default_factory=list)
    # CPU seconds used during the round by the workers (with the extraction processes they
    # started) and by each server's process tree.
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def accounts_per_minute(self) -> float:
        return self.completed / self.elapsed_seconds * 60.0 if self.elapsed_seconds > 0 else 0.0


def peak_per_second(times: list[float]) -> int:
    """Return the most timestamps in any window of one second, ``[t, t + 1)``."""
    ordered = sorted(times)
    peak = 0
    start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


def peak_concurrency(changes: list[tuple[float, int]]) -> int:
    """Return the highest running sum of ``(time, +1 or -1)`` changes, releases first at equal times."""
    running = 0
    peak = 0
    for _, delta in sorted(changes, key=lambda change: (change[0], change[1])):
        running += delta
        peak = max(peak, running)
    return peak


# -- the worker subprocess ------------------------------------------------------


def _record_limit_use(events_path: Path) -> None:
    """Wrap the limiter so that every request admitted and every browser slot is appended to ``events_path``."""
    from flows import orchestration

    events = events_path.open("a", buffering=1, encoding="utf-8")

    def record(**fields: Any) -> None:
        # One short line per write in append mode, so lines of several workers do not interleave.
        events.write(json.dumps({"t": time.time(), "pid": os.getpid(), **fields}) + "\n")

    original_site_rate = orchestration.PrefectLimits.site_rate
    original_browser_slot = orchestration.PrefectLimits.browser_slot

    async def site_rate(self: Any, site: str, timeout_seconds: float | None = None) -> None:
        await original_site_rate(self, site, timeout_seconds)
        record(kind="request", site=site)

    @asynccontextmanager
    async def browser_slot(self: Any):
        async with original_browser_slot(self):
            record(kind="browser", delta=1)
            try:
                yield
            finally:
                record(kind="browser", delta=-1)

    orchestration.PrefectLimits.site_rate = site_rate
    orchestration.PrefectLimits.browser_slot = browser_slot


def run_worker(accounts: list[str], events_path: Path, concurrency: int) -> int:
    """Import everything, print ``ready``, wait for a line on stdin, sync ``accounts``, print the rows as JSON."""
    from flows.sync_all import sync_all_accounts

    _record_limit_use(events_path)
    print("ready", flush=True)
    sys.stdin.readline()
    rows = asyncio.run(sync_all_accounts(accounts=accounts, max_concurrent_accounts=concurrency))
    print(json.dumps(rows, default=str), flush=True)
    return 0


# -- the stack and the accounts ---------------------------------------------------


@dataclass
class BenchStack:
    """The components this benchmark started, and the settings its processes share."""

    run_dir: Path
    openbao: OpenBaoDevServer
    oidc: OidcProvider
    mail: MailServer
    postgres: PostgresServer
    prefect: PrefectServer
    # Where accounts reach IMAP: the mail server itself, or a proxy that adds network latency.
    imap_address: tuple[str, int] | None = None

    def imap_endpoint(self) -> tuple[str, int]:
        """Return the IMAP host and port that the accounts connect to."""
        return self.imap_address or (self.mail.imap_host, self.mail.imap_port)

    def server_pids(self) -> dict[str, list[int]]:
        """Return the top processes of each server, by component name."""
        return {
            "prefect": self.prefect.pids,
            "postgres": self.postgres.pids,
            "mail": self.mail.pids,
            "oidc": self.oidc.pids,
            "openbao": self.openbao.pids,
        }

    def environment(self, store_url: str, secret_id: SecretStr) -> dict[str, str]:
        """Return the environment of a worker: Prefect's API, the document store, the runner's vault login."""
        client_home = self.run_dir / "prefect-client"
        client_home.mkdir(exist_ok=True)
        return {
            **os.environ,
            "PREFECT_API_URL": self.prefect.api_url,
            "PREFECT_HOME": str(client_home),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "WARDEN_HOME": str(self.run_dir / "warden"),
            "WARDEN_STORE_URL": store_url,
            "WARDEN_VAULT_SECRET_ID": secret_id.get_secret_value(),
        }


def start_stack(run_dir: Path, stack: ExitStack) -> BenchStack:
    """Start every component below ``run_dir``; ``stack`` stops them in reverse order."""
    openbao = OpenBaoDevServer(run_dir / "openbao")
    openbao.start()
    stack.callback(openbao.stop)

    oidc = OidcProvider(run_dir / "oidc")
    oidc.start()
    stack.callback(oidc.stop)

    dovecot_client = oidc.clients()["dovecot"]
    mail = MailServer(
        run_dir / "mail",
        oauth2_introspection_url=oidc.introspection_endpoint,
        oauth2_client=(dovecot_client.client_id, dovecot_client.client_secret),
    )
    mail.start()
    stack.callback(mail.stop)

    postgres = PostgresServer(run_dir / "postgres")
    postgres.start()
    stack.callback(postgres.stop)

    prefect = PrefectServer(run_dir / "prefect-server", database_url=postgres.create_database("prefect"))
    prefect.start()
    stack.callback(prefect.stop)
    return BenchStack(run_dir, openbao, oidc, mail, postgres, prefect)


def _use_prefect_server(bench: BenchStack) -> None:
    """Point this process at the benchmark's Prefect server before anything reads Prefect's settings."""
    environment = bench.environment(store_url="", secret_id=SecretStr(""))
    for name in ("PREFECT_API_URL", "PREFECT_HOME", "DO_NOT_TRACK", "PREFECT_SERVER_ANALYTICS_ENABLED", "WARDEN_HOME"):
        os.environ[name] = environment[name]
    context_module = sys.modules.get("prefect.context")
    if context_module is not None:
        context_module.refresh_global_settings_context()


async def register_accounts(
    bench: BenchStack, users: int, *, rounds: int = 2, prefix: str = "scale"
) -> tuple[SecretStr, dict[int, list[str]], int, str]:
    """Create the mailbox users ``PREFIX-user-NNN`` and ``rounds`` OAuth accounts ``PREFIX-rR-NNN`` per user.

    Returns the runner's vault secret id, the accounts of each round, the number
    of messages in each mailbox, and the IMAP server's site name.
    """
    import hvac

    from flows.registration import register_account, set_up_vault
    from warden.credentials.authorize import finish_authorization, start_authorization
    from warden.credentials.oauth import OAuthSettings
    from warden.credentials.provision import store_oauth_grant
    from warden.demo.documents import build_demo_messages
    from warden.demo.seed import seed_mailbox

    admin = hvac.Client(url=bench.openbao.address, token=bench.openbao.root_token.get_secret_value())
    runner = await set_up_vault(admin)
    client_secret = bench.oidc.clients()["warden"].client_secret
    oauth = OAuthSettings(
        client_id="warden",
        token_url=bench.oidc.token_endpoint,
        authorization_url=bench.oidc.authorization_endpoint,
        revocation_url=bench.oidc.revocation_endpoint,
        introspection_url=bench.oidc.introspection_endpoint,
        scope="mail.read",
    ).model_dump(mode="json")
    imap_host, imap_port = bench.imap_endpoint()
    api_options = {"host": imap_host, "port": imap_port, "tls": False}

    accounts: dict[int, list[str]] = {round_number: [] for round_number in range(1, rounds + 1)}
    message_count = 0
    for index in range(users):
        user = f"{prefix}-user-{index:03d}"
        password = SecretStr(os.urandom(MAIL_PASSWORD_BYTES).hex())
        bench.mail.add_user(user, password.get_secret_value())
        bench.oidc.add_user(user, password.get_secret_value())
        messages = build_demo_messages(to_address=f"{user}@warden.test", from_address="sender@warden.test")
        await asyncio.to_thread(seed_mailbox, bench.mail.imap_host, bench.mail.imap_port, user, password, messages)
        message_count = len(messages)

        for round_number in accounts:
            name = f"{prefix}-r{round_number}-{index:03d}"
            block = await register_account(
                name,
                admin=admin,
                base_url=bench.mail.roundcube_url,
                username=user,
                password=password,
                session_lifetime_seconds=bench.mail.session_lifetime_minutes * 60,
                oauth_client_secret=client_secret,
                access_paths=["oauth"],
                oauth=oauth,
                api_connector="imap",
                api_options=api_options,
            )
            config = block.to_config(name)
            request = start_authorization(config.oauth, redirect_uri="http://127.0.0.1:9/callback", account=name)
            redirect_url = await asyncio.to_thread(
                bench.oidc.complete_login, request.url, user, password.get_secret_value()
            )
            tokens = await finish_authorization(config.oauth, client_secret, request, redirect_url, account=name)
            store_oauth_grant(admin, config.paths, refresh_token=tokens.refresh_token)
            accounts[round_number].append(name)

    site = f"{imap_host}:{imap_port}"
    return runner.secret_id, accounts, message_count, site


def site_rate_burst(rate_per_second: float) -> int:
    """Return the burst of the benchmark's rate limit: one second's worth of requests, at least 1.

    In any one-second window a site then sees at most the burst plus the rate.
    """
    return max(1, int(rate_per_second))


async def set_site_limits(site: str, slots: int, rate_per_second: float) -> None:
    """Create the site's concurrency and rate limits with the benchmark's values, replacing earlier ones."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.orchestration import ensure_limit, site_limit_name, site_rate_limit_name

    async with get_client() as client:
        for name in (site_limit_name(site), site_rate_limit_name(site)):
            with contextlib.suppress(ObjectNotFound):
                await client.delete_global_concurrency_limit_by_name(name)
    await ensure_limit(site_limit_name(site), slots)
    await ensure_limit(
        site_rate_limit_name(site), site_rate_burst(rate_per_second), slot_decay_per_second=rate_per_second
    )


# -- one round ------------------------------------------------------------------


def worker_log_path(log_dir: Path, label: str, number: int) -> Path:
    """Return where worker ``number`` of the group ``label`` writes its standard error."""
    return log_dir / f"worker-{label}-{number}.log"


def start_workers(
    shares: list[list[str]],
    environment: dict[str, str],
    events_path: Path,
    concurrency: int,
    log_dir: Path,
    label: str,
) -> list[subprocess.Popen]:
    """Start one worker process per share of accounts, each in a session of its own.

    Each worker leads its own process group, so a test can kill a worker with
    every process it started, like a host that goes down.
    """
    workers = []
    for number, share in enumerate(shares, start=1):
        command = [
            sys.executable,
            "-m",
            "bench.scale",
            "worker",
            "--events",
            str(events_path),
            "--concurrency-per-worker",
            str(concurrency),
            *share,
        ]
        workers.append(
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=worker_log_path(log_dir, label, number).open("w", encoding="utf-8"),
                text=True,
                start_new_session=True,
            )
        )
    return workers


def wait_until_ready(workers: list[subprocess.Popen], log_dir: Path, label: str) -> None:
    """Wait for every worker's ``ready`` line; raise with the worker's log when one exits first."""
    for number, worker in enumerate(workers, start=1):
        line = worker.stdout.readline()
        while line and line.strip() != "ready":
            line = worker.stdout.readline()
        if not line:
            log = worker_log_path(log_dir, label, number).read_text(encoding="utf-8")
            raise RuntimeError(f"Benchmark worker {label}-{number} exited before it was ready:\n{log[-3000:]}")


def release(workers: list[subprocess.Popen]) -> None:
    """Tell every ready worker to start syncing."""
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()


def collect_rows(worker: subprocess.Popen, log_path: Path, timeout_seconds: float) -> list[dict[str, Any]]:
    """Wait for a worker to finish and return its summary rows; raise with its log when it failed."""
    stdout, _ = worker.communicate(timeout=timeout_seconds)
    if worker.returncode != 0:
        log = log_path.read_text(encoding="utf-8")
        raise RuntimeError(f"Benchmark worker exited with status {worker.returncode}:\n{log[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """Stop the workers that still run, with SIGINT first and SIGKILL after 20 s."""
    for worker in workers:
        if worker.poll() is None:
            # A Prefect client stops promptly on SIGINT and lingers on SIGTERM.
            worker.send_signal(signal.SIGINT)
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run_round(
    accounts: list[str],
    worker_count: int,
    environment: dict[str, str],
    events_path: Path,
    concurrency: int,
    expected_messages: int,
    *,
    log_dir: Path,
    servers: dict[str, list[int]],
) -> RoundResult:
    """Sync ``accounts`` split over ``worker_count`` worker processes; time it from the start signal to the end."""
    from warden.store import DocumentStore

    shares = [accounts[index::worker_count] for index in range(worker_count)]
    label = str(worker_count)
    workers = start_workers(shares, environment, events_path, concurrency, log_dir, label)
    try:
        wait_until_ready(workers, log_dir, label)

        cpu_before = {name: tree_cpu_seconds(pids) for name, pids in servers.items()}
        workers_before = reaped_children_cpu_seconds()
        started = time.monotonic()
        release(workers)
        rows: list[dict[str, Any]] = []
        for number, worker in enumerate(workers, start=1):
            rows.extend(collect_rows(worker, worker_log_path(log_dir, label, number), ROUND_TIMEOUT_SECONDS))
        elapsed = time.monotonic() - started
        cpu_used = {name: tree_cpu_seconds(pids) - cpu_before[name] for name, pids in servers.items()}
        # The workers were reaped by now, and each had reaped the processes it started.
        cpu_used["workers"] = reaped_children_cpu_seconds() - workers_before
    finally:
        stop_workers(workers)

    store = DocumentStore(environment["WARDEN_STORE_URL"])
    try:
        mismatched = [account for account in accounts if store.message_count(account) != expected_messages]
    finally:
        store.close()
    return RoundResult(
        workers=worker_count,
        accounts=len(accounts),
        elapsed_seconds=elapsed,
        completed=sum(1 for row in rows if row["completed"]),
        failed_accounts=sorted(row["account"] for row in rows if not row["completed"]),
        mismatched_accounts=mismatched,
        cpu_seconds=cpu_used,
    )


def tree_cpu_seconds(pids: list[int]) -> float:
    """Return the user plus system CPU seconds used so far by the processes ``pids`` and their descendants.

    Descendants that exited count too, through their parents' children times
    (PostgreSQL's backends, for example, come and go during a round). Processes
    that exited together with their parents count 0.
    """
    import psutil

    processes: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process = psutil.Process(pid)
            processes[pid] = process
            for child in process.children(recursive=True):
                processes[child.pid] = child
    total = 0.0
    for process in processes.values():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            # A live child is not yet in its parent's children times, so nothing counts twice.
            total += times.user + times.system + times.children_user + times.children_system
    return total


def reaped_children_cpu_seconds() -> float:
    """Return the CPU seconds of every child this process reaped so far, with their reaped descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _limit_use(events_path: Path) -> tuple[int, dict[str, int], int]:
    requests: dict[str, list[float]] = {}
    browser: list[tuple[float, int]] = []
    if events_path.exists():
        for line in events_path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event["kind"] == "request":
                requests.setdefault(event["site"], []).append(event["t"])
            elif event["kind"] == "browser":
                browser.append((event["t"], event["delta"]))
    peaks = {site: peak_per_second(times) for site, times in requests.items()}
    return peak_concurrency(browser), peaks, sum(len(times) for times in requests.values())


# -- the benchmark ----------------------------------------------------------------


def measure(
    users: int, concurrency: int, site_slots: int, site_rate_per_second: float, latency_ms: float = 0.0
) -> dict[str, Any]:
    """Start the stack, register the accounts, run both rounds, stop everything; return the figures.

    With ``latency_ms``, the accounts reach IMAP through a proxy that adds that round-trip time.
    """
    run_dir = Path(tempfile.mkdtemp(prefix="warden-bench-scale-"))
    # The mail server's daemons run as other users and must enter their run directories.
    run_dir.chmod(0o755)
    setup_started = time.monotonic()
    try:
        with ExitStack() as stack:
            bench = start_stack(run_dir, stack)
            if latency_ms > 0:
                proxy = LatencyProxy(bench.mail.imap_host, bench.mail.imap_port, latency_ms / 2000.0)
                proxy.start()
                stack.callback(proxy.stop)
                bench.imap_address = (LOOPBACK, proxy.port)
            _use_prefect_server(bench)
            secret_id, rounds, message_count, site = asyncio.run(register_accounts(bench, users))
            asyncio.run(set_site_limits(site, site_slots, site_rate_per_second))
            setup_seconds = time.monotonic() - setup_started

            results = {}
            events_path = run_dir / "limit-events.jsonl"
            for round_number, worker_count in ((1, 1), (2, 2)):
                bench.postgres.create_database(f"store_round_{round_number}")
                store_url = bench.postgres.sync_database_url(f"store_round_{round_number}")
                environment = bench.environment(store_url, secret_id)
                results[worker_count] = run_round(
                    rounds[round_number],
                    worker_count,
                    environment,
                    events_path,
                    concurrency,
                    message_count,
                    log_dir=run_dir,
                    servers=bench.server_pids(),
                )
            peak_browser_jobs, peak_requests, requests_total = _limit_use(events_path)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    one, two = results[1], results[2]
    return {
        "accounts": users,
        "latency_ms": latency_ms,
        "messages_per_account": message_count,
        "concurrency_per_worker": concurrency,
        "site_slots": site_slots,
        "site_rate_per_second": site_rate_per_second,
        "site_rate_burst": site_rate_burst(site_rate_per_second),
        "setup_seconds": round(setup_seconds, 1),
        "elapsed_seconds_1": round(one.elapsed_seconds, 2),
        "elapsed_seconds_2": round(two.elapsed_seconds, 2),
        "accounts_per_minute_1": round(one.accounts_per_minute, 1),
        "accounts_per_minute_2": round(two.accounts_per_minute, 1),
        "ratio": round(two.accounts_per_minute / one.accounts_per_minute, 2) if one.accounts_per_minute else None,
        "failed_accounts": one.failed_accounts + two.failed_accounts,
        "mismatched_accounts": one.mismatched_accounts + two.mismatched_accounts,
        "peak_browser_jobs": peak_browser_jobs,
        "peak_requests_per_second_per_site": peak_requests,
        "requests_per_account": round(requests_total / (one.accounts + two.accounts), 1),
        "cpu_seconds_per_account": {
            name: round((one.cpu_seconds[name] + two.cpu_seconds[name]) / (one.accounts + two.accounts), 3)
            for name in one.cpu_seconds
        },
        "cpu_count": os.cpu_count(),
    }


def _at_least(minimum: int):
    # argparse names the type by the function's name: "invalid integer value: 'abc'".
    def integer(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return integer


def number(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return value


def milliseconds(text: str) -> float:
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of 0 or more")
    return value


def _parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--accounts",
        type=_at_least(2),
        default=DEFAULT_ACCOUNTS,
        help=f"accounts per round, at least 2 so that each of two workers gets one (default {DEFAULT_ACCOUNTS})",
    )
    parser.add_argument(
        "--concurrency-per-worker",
        type=_at_least(1),
        default=DEFAULT_CONCURRENCY_PER_WORKER,
        help=f"accounts one worker syncs at once (default {DEFAULT_CONCURRENCY_PER_WORKER})",
    )
    parser.add_argument(
        "--site-slots",
        type=_at_least(1),
        default=DEFAULT_SITE_SLOTS,
        help=f"concurrent connections to the IMAP server across workers (default {DEFAULT_SITE_SLOTS})",
    )
    parser.add_argument(
        "--site-rate-per-second",
        type=number,
        default=DEFAULT_SITE_RATE_PER_SECOND,
        help=f"requests per second to the IMAP server across workers (default {DEFAULT_SITE_RATE_PER_SECOND:g})",
    )
    parser.add_argument(
        "--latency-ms",
        type=milliseconds,
        default=0.0,
        help="round-trip time added to every IMAP exchange by a proxy, like a mail server across a network "
        "(default 0: loopback)",
    )
    subcommands = parser.add_subparsers(dest="command")
    worker = subcommands.add_parser("worker", help="internal: one worker process of a round")
    worker.add_argument("--events", type=Path, required=True, help="file to append limit use to")
    worker.add_argument("--concurrency-per-worker", type=int, default=DEFAULT_CONCURRENCY_PER_WORKER)
    worker.add_argument("account_names", nargs="+", metavar="ACCOUNT")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = _parse_arguments(argv)
    if arguments.command == "worker":
        return run_worker(arguments.account_names, arguments.events, arguments.concurrency_per_worker)

    # SIGTERM raises KeyboardInterrupt like Ctrl-C, so the same clean-up stops every process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    figures = measure(
        arguments.accounts,
        arguments.concurrency_per_worker,
        arguments.site_slots,
        arguments.site_rate_per_second,
        arguments.latency_ms,
    )
    if arguments.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
