"""Per-site concurrency and rate limits held across worker processes by a Prefect server on PostgreSQL.

Each test starts a counting HTTP server on loopback and worker processes that
send requests to it, each request inside ``PrefectLimits.site_slot`` and after
``PrefectLimits.site_rate``. The server records when every request arrived and
how many were in flight, so the limits are checked where a real site would see
them.

Run as a script, this module is one worker::

    python tests/test_limits_across_workers.py URL REQUEST_COUNT WORKER_NAME

It imports Prefect, prints ``ready``, waits for a line on standard input, then
sends ``REQUEST_COUNT`` concurrent requests to ``URL``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from flows.orchestration import DEFAULT_SITE_RATE_BURST, DEFAULT_SITE_RATE_PER_SECOND
from stack.ports import LOOPBACK
from stack.prefect_server import PrefectServer

pytestmark = [pytest.mark.stack, pytest.mark.resilience, pytest.mark.timeout(120)]

REQUEST_SECONDS = 0.2
WORKER_TIMEOUT_SECONDS = 60.0
# A request arrives at the counting server later than its worker took the rate slot,
# by the HTTP round trip and scheduling delays. One request of slack covers that lag.
RATE_TOLERANCE_REQUESTS = 1
# Copies of flows.orchestration.DEFAULT_SITE_SLOTS, DEFAULT_SITE_RATE_PER_SECOND and
# DEFAULT_SITE_RATE_BURST, because importing that module here would import Prefect.
SITE_SLOTS = 2
DEFAULT_RATE_PER_SECOND = DEFAULT_SITE_RATE_PER_SECOND
DEFAULT_RATE_BURST = DEFAULT_SITE_RATE_BURST


@dataclass(frozen=True)
class Arrival:
    """One request as the counting server saw it."""

    worker: str
    arrived_at: float
    in_flight: int


class CountingSite:
    """An HTTP server on loopback that records each request's arrival time and the requests in flight.

    Each response takes ``REQUEST_SECONDS``, so overlapping requests show
    as an in-flight count above 1.
    """

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def site(self) -> str:
        """The host and port that name the site's limits, as ``Account.site`` has them."""
        return urlsplit(self.url).netloc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def peak_in_flight(self) -> int:
        return max((arrival.in_flight for arrival in self.arrivals), default=0)

    def arrival_times(self, worker: str | None = None) -> list[float]:
        return sorted(arrival.arrived_at for arrival in self.arrivals if worker in (None, arrival.worker))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                worker = self.path.rpartition("worker=")[2].partition("&")[0]
                with site._lock:
                    site._in_flight += 1
                    site.arrivals.append(Arrival(worker, time.monotonic(), site._in_flight))
                try:
                    time.sleep(REQUEST_SECONDS)
                finally:
                    with site._lock:
                        site._in_flight -= 1
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def counting_site() -> Iterator[CountingSite]:
    site = CountingSite()
    site.start()
    yield site
    site.stop()


def worker_environment(prefect_server: PrefectServer, prefect_home: Path) -> dict[str, str]:
    """Return this process's environment with every Prefect setting replaced by the PostgreSQL server's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    env["PREFECT_API_URL"] = prefect_server.api_url
    env["PREFECT_HOME"] = str(prefect_home)
    env["DO_NOT_TRACK"] = "1"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


def run_workers(
    prefect_server: PrefectServer, site: CountingSite, tmp_path: Path, requests_per_worker: int, worker_count: int
) -> float:
    """Start the workers, release them together once all imported Prefect, and return the sending time in seconds.

    Fails the test when a worker exits with a non-zero status or takes longer than
    ``WORKER_TIMEOUT_SECONDS``.
    """
    prefect_home = tmp_path / "prefect-client"
    prefect_home.mkdir()
    env = worker_environment(prefect_server, prefect_home)
    workers = {}
    for index in range(worker_count):
        name = f"w{index}"
        workers[name] = subprocess.Popen(
            [sys.executable, __file__, site.url, str(requests_per_worker), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
    try:
        for name, worker in workers.items():
            assert worker.stdout is not None
            assert worker.stderr is not None
            line = worker.stdout.readline()
            while line and line.strip() != "ready":
                line = worker.stdout.readline()
            assert line, f"worker {name} exited before it was ready: {worker.stderr.read()[-3000:]}"

        started_at = time.monotonic()
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for name, worker in workers.items():
            _, stderr = worker.communicate(timeout=WORKER_TIMEOUT_SECONDS)
            assert worker.returncode == 0, f"worker {name} exited with {worker.returncode}: {stderr[-3000:]}"
        return time.monotonic() - started_at
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def rate_excess(arrival_times: list[float], rate_per_second: float, burst: int) -> tuple[float, int, float]:
    """Return the largest excess of requests over ``burst + rate * window`` among all windows between two arrivals.

    Also returns that window's request count and length in seconds. A token bucket
    that starts full with ``burst`` slots and frees ``rate_per_second`` admits at
    most ``burst + rate * length`` requests in any window of that length.
    """
    worst = (float("-inf"), 0, 0.0)
    for first, last in itertools.combinations_with_replacement(range(len(arrival_times)), 2):
        length = arrival_times[last] - arrival_times[first]
        count = last - first + 1
        excess = count - (burst + rate_per_second * length)
        if excess > worst[0]:
            worst = (excess, count, length)
    return worst


def limit_name(prefix: str, site: CountingSite) -> str:
    return f"{prefix}-{site.site.replace(':', '-')}"


def read_limit(prefect_server: PrefectServer, name: str) -> dict:
    response = httpx.get(f"{prefect_server.api_url}/v2/concurrency_limits/{name}", trust_env=False, timeout=10)
    assert response.status_code == 200, f"limit {name}: HTTP {response.status_code}"
    return response.json()


def create_rate_limit(prefect_server: PrefectServer, name: str, rate_per_second: float, burst: int) -> None:
    """Create a rate limit as an operator would, before any worker runs."""
    response = httpx.post(
        f"{prefect_server.api_url}/v2/concurrency_limits/",
        json={"name": name, "limit": burst, "slot_decay_per_second": rate_per_second},
        trust_env=False,
        timeout=10,
    )
    assert response.status_code == 201, f"limit {name}: HTTP {response.status_code}"


def observed_rate(arrival_times: list[float]) -> float:
    return (len(arrival_times) - 1) / (arrival_times[-1] - arrival_times[0])


# Without site_rate(), the concurrency slots alone let 1.9 requests/s through with one
# worker and 2.9 with two (2-core machine), because a denied worker waits a random
# Retry-After before it retries. The rates below are lower, so these tests fail when
# site_rate() does not wait.


def test_two_workers_share_site_limits(prefect_server_pg: PrefectServer, counting_site: CountingSite, tmp_path: Path):
    # A burst of 6 lets 6 requests start at once as far as the rate goes, so the
    # in-flight peak shows the concurrency limit at work.
    rate_per_second, burst = 1.0, 6
    rate_name = limit_name("site-rate", counting_site)
    create_rate_limit(prefect_server_pg, rate_name, rate_per_second, burst)
    requests_per_worker = 8

    elapsed_seconds = run_workers(prefect_server_pg, counting_site, tmp_path, requests_per_worker, worker_count=2)

    arrivals = counting_site.arrival_times()
    assert len(arrivals) == 2 * requests_per_worker
    assert counting_site.peak_in_flight() <= SITE_SLOTS
    excess, count, length = rate_excess(arrivals, rate_per_second, burst)
    assert excess <= RATE_TOLERANCE_REQUESTS, f"{count} requests arrived within {length:.2f} s"
    first_worker, second_worker = counting_site.arrival_times("w0"), counting_site.arrival_times("w1")
    assert first_worker[0] < second_worker[-1], "the workers' requests did not overlap in time"
    assert second_worker[0] < first_worker[-1], "the workers' requests did not overlap in time"
    rate_limit = read_limit(prefect_server_pg, rate_name)
    assert rate_limit["limit"] == burst
    assert rate_limit["slot_decay_per_second"] == rate_per_second
    assert read_limit(prefect_server_pg, limit_name("site", counting_site))["limit"] == SITE_SLOTS
    print(
        f"\ntwo workers: {len(arrivals)} requests in {elapsed_seconds:.2f} s, "
        f"peak in flight {counting_site.peak_in_flight()}, observed rate {observed_rate(arrivals):.2f}/s"
    )


def test_one_worker_keeps_site_rate(prefect_server_pg: PrefectServer, counting_site: CountingSite, tmp_path: Path):
    rate_per_second, burst = 1.0, 2
    create_rate_limit(prefect_server_pg, limit_name("site-rate", counting_site), rate_per_second, burst)
    requests_per_worker = 8

    elapsed_seconds = run_workers(prefect_server_pg, counting_site, tmp_path, requests_per_worker, worker_count=1)

    arrivals = counting_site.arrival_times()
    assert len(arrivals) == requests_per_worker
    assert counting_site.peak_in_flight() <= SITE_SLOTS
    excess, count, length = rate_excess(arrivals, rate_per_second, burst)
    assert excess <= RATE_TOLERANCE_REQUESTS, f"{count} requests arrived within {length:.2f} s"
    print(
        f"\none worker: {len(arrivals)} requests in {elapsed_seconds:.2f} s, "
        f"peak in flight {counting_site.peak_in_flight()}, observed rate {observed_rate(arrivals):.2f}/s"
    )


def test_site_rate_creates_default_limit(prefect_server_pg: PrefectServer, counting_site: CountingSite, tmp_path: Path):
    requests_per_worker = 4

    run_workers(prefect_server_pg, counting_site, tmp_path, requests_per_worker, worker_count=1)

    arrivals = counting_site.arrival_times()
    assert len(arrivals) == requests_per_worker
    excess, count, length = rate_excess(arrivals, DEFAULT_RATE_PER_SECOND, DEFAULT_RATE_BURST)
    assert excess <= RATE_TOLERANCE_REQUESTS, f"{count} requests arrived within {length:.2f} s"
    rate_limit = read_limit(prefect_server_pg, limit_name("site-rate", counting_site))
    assert rate_limit["limit"] == DEFAULT_RATE_BURST
    assert rate_limit["slot_decay_per_second"] == DEFAULT_RATE_PER_SECOND
    assert read_limit(prefect_server_pg, limit_name("site", counting_site))["limit"] == SITE_SLOTS


async def send_requests(url: str, request_count: int, worker: str) -> None:
    """Send ``request_count`` concurrent GET requests to ``url``, each inside the site's slot and rate limits."""
    from flows.orchestration import PrefectLimits

    limits = PrefectLimits()
    site = urlsplit(url).netloc

    async def send(client: httpx.AsyncClient, index: int) -> None:
        async with limits.site_slot(site):
            await limits.site_rate(site, timeout_seconds=WORKER_TIMEOUT_SECONDS)
            response = await client.get(url, params={"worker": worker, "request": index})
            response.raise_for_status()

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        await asyncio.gather(*(send(client, index) for index in range(request_count)))


def main(argv: list[str]) -> int:
    url, request_count, worker = argv[1], int(argv[2]), argv[3]
    import flows.orchestration  # noqa: F401  Import Prefect before the start signal: it takes about 2 s.

    print("ready", flush=True)
    sys.stdin.readline()
    asyncio.run(send_requests(url, request_count, worker))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
