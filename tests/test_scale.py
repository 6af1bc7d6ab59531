"""The scaling benchmark end to end with a small batch, and its window arithmetic."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.latency import LatencyProxy
from bench.scale import peak_concurrency, peak_per_second, stop_workers

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPECTED_KEYS = {
    "accounts_per_minute_1",
    "accounts_per_minute_2",
    "ratio",
    "peak_browser_jobs",
    "peak_requests_per_second_per_site",
    "failed_accounts",
    "mismatched_accounts",
}


async def wait_for_deployment(name: str, timeout_seconds: float) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_seconds
    async with get_client() as client:
        while True:
            try:
                await client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


def test_peak_per_second_counts_one_window():
    assert peak_per_second([]) == 0
    assert peak_per_second([0.0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert peak_per_second([0.0, 2.0, 4.0]) == 1


def test_peak_concurrency_releases_first():
    assert peak_concurrency([]) == 0
    assert peak_concurrency([(0.0, 1), (1.0, -1), (1.0, 1), (2.0, -1)]) == 1
    assert peak_concurrency([(0.0, 1), (0.5, 1), (1.0, -1), (1.5, -1)]) == 2


def test_latency_proxy_delays_both_ways():
    server = socket.create_server(("127.0.0.1", 0))

    def echo_until_end() -> None:
        connection, _ = server.accept()
        with connection:
            while data := connection.recv(1024):
                connection.sendall(data)

    threading.Thread(target=echo_until_end, daemon=True).start()
    with LatencyProxy("127.0.0.1", server.getsockname()[1], one_way_delay_seconds=0.05) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        started = time.monotonic()
        client.sendall(b"a001 NOOP\r\n")
        reply = client.recv(1024)
        round_trip = time.monotonic() - started
        client.shutdown(socket.SHUT_WR)
        end = client.recv(1024)
        client.close()
    server.close()

    assert reply == b"a001 NOOP\r\n"
    # A lower bound only: the proxy must add its delay in each direction.
    assert round_trip >= 0.1
    assert end == b""


@pytest.mark.stack
@pytest.mark.scale
@pytest.mark.timeout(900)
def test_small_batch_prints_figures():
    completed = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--json", "--accounts", "4"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])

    assert figures.keys() >= EXPECTED_KEYS
    assert figures["accounts"] == 4
    assert figures["failed_accounts"] == []
    assert figures["mismatched_accounts"] == []
    assert figures["accounts_per_minute_1"] > 0
    assert figures["accounts_per_minute_2"] > 0
    assert figures["ratio"] > 0
    # Every account reads over IMAP with OAuth, so no browser runs.
    assert figures["peak_browser_jobs"] == 0
    assert len(figures["peak_requests_per_second_per_site"]) == 1
    # The rate limit admits its burst at once, then its rate, so one second contains at most both.
    ceiling = figures["site_rate_burst"] + figures["site_rate_per_second"]
    for peak in figures["peak_requests_per_second_per_site"].values():
        assert 0 < peak <= ceiling


@pytest.mark.stack
@pytest.mark.timeout(300)
async def test_fan_out_continues_past_failed_account(prefect_server, tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path))
    monkeypatch.delenv("WARDEN_STORE_URL", raising=False)
    from warden.settings import get_settings

    get_settings.cache_clear()
    from flows.sync_all import sync_all_accounts

    try:
        rows = await sync_all_accounts(accounts=["scale-missing-b", "scale-missing-a"], max_concurrent_accounts=2)
    finally:
        get_settings.cache_clear()

    assert [row["account"] for row in rows] == ["scale-missing-a", "scale-missing-b"]
    for row in rows:
        assert row["completed"] is False
        assert "No account named" in row["error"]


@pytest.mark.stack
@pytest.mark.timeout(300)
async def test_fan_out_through_deployment(prefect_server, tmp_path, monkeypatch):
    """Each account becomes a run of a served ``connector_sync`` deployment; its summary comes from the store."""
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path))
    monkeypatch.delenv("WARDEN_STORE_URL", raising=False)
    from warden.settings import get_settings

    get_settings.cache_clear()
    from flows.sync_all import sync_all_accounts

    server = subprocess.Popen(
        [sys.executable, "-c", "from flows.sync import connector_sync; connector_sync.serve(name='fan-out-test')"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_deployment("connector-sync/fan-out-test", timeout_seconds=60)
        rows = await sync_all_accounts(
            accounts=["scale-missing-c"], deployment="connector-sync/fan-out-test", account_timeout_seconds=120
        )
    finally:
        stop_workers([server])
        get_settings.cache_clear()

    assert len(rows) == 1
    assert rows[0]["account"] == "scale-missing-c"
    assert rows[0]["completed"] is False
    assert "No account named" in rows[0]["error"]
