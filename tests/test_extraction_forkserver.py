"""The extraction fork server: what a forked worker inherits, concurrency, and a server that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from warden.errors import TransientError
from warden.extraction import ExtractionSettings, extract_in_sandbox, forkserver, sandbox
from warden.extraction.forkserver import ForkServer, ForkServerDied

MIB = 1024 * 1024
SECRET_NAME = "WARDEN_VAULT_SECRET_ID"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """A fork server of its own, started while this process has a secret in its environment."""
    monkeypatch.setenv(SECRET_NAME, "s.not-for-workers")
    started = ForkServer(sandbox.worker_environment(tempfile.gettempdir()))
    yield started
    started.close()


def proc_environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


def test_forked_worker_isolated(server: ForkServer, tmp_path: Path) -> None:
    worker = server.spawn(str(tmp_path))
    try:
        # The worker enters its directory after it made its session and closed the server's descriptors.
        deadline = time.monotonic() + 10
        cwd = Path(f"/proc/{worker.pid}/cwd")
        while cwd.resolve() != tmp_path.resolve() and time.monotonic() < deadline:
            time.sleep(0.01)

        assert os.getpgid(worker.pid) == worker.pid
        assert os.getsid(worker.pid) == worker.pid
        assert cwd.resolve() == tmp_path.resolve()
        assert SECRET_NAME not in proc_environment(worker.pid)
        assert len(os.listdir(f"/proc/{worker.pid}/fd")) == 3
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        for stream in (worker.stdin, worker.stdout, worker.stderr):
            stream.close()

    returncode, peak_rss_bytes = worker.reap()
    assert returncode == -signal.SIGKILL
    assert peak_rss_bytes > 0


def test_closed_server_kills_workers(server: ForkServer, tmp_path: Path) -> None:
    worker = server.spawn(str(tmp_path))

    server.close()

    assert not psutil.pid_exists(worker.pid) or psutil.Process(worker.pid).status() == psutil.STATUS_ZOMBIE
    for stream in (worker.stdin, worker.stdout, worker.stderr):
        stream.close()


def test_kill_all_ends_ungrouped_worker() -> None:
    # A worker forked a moment ago may still be in the server's process group.
    worker = subprocess.Popen(["sleep", "60"])
    server_loop = forkserver._Server(control=None)
    server_loop.running.add(worker.pid)

    server_loop.kill_all()

    assert not psutil.pid_exists(worker.pid)


def test_dead_server_reap_raises(server: ForkServer, tmp_path: Path) -> None:
    worker = server.spawn(str(tmp_path))
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    # The worker, an orphan now, may not have made its own process group yet.
    os.kill(worker.pid, signal.SIGKILL)
    for stream in (worker.stdin, worker.stdout, worker.stderr):
        stream.close()

    with pytest.raises(ForkServerDied, match="exited before it reported"):
        worker.reap()
    assert not server.alive


def test_dead_server_replaced() -> None:
    settings = ExtractionSettings()
    first = extract_in_sandbox(b"first", filename="a.txt", declared_type="text/plain", settings=settings)
    dead = forkserver.fork_server(lambda: {})
    os.kill(dead.process.pid, signal.SIGKILL)
    dead.process.wait()

    second = extract_in_sandbox(b"second", filename="b.txt", declared_type="text/plain", settings=settings)

    assert first.text == "first"
    assert second.text == "second"
    assert forkserver.fork_server(lambda: {}) is not dead


def test_lost_exit_status_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    def lose_status(self):
        raise ForkServerDied("The extraction fork server (pid 1) exited before it reported worker 2's exit status.")

    monkeypatch.setattr(forkserver.ForkedWorker, "reap", lose_status)

    with pytest.raises(TransientError, match="lost its worker's exit status"):
        extract_in_sandbox(b"text", filename="c.txt", declared_type="text/plain", settings=ExtractionSettings())


def test_concurrent_extractions_keep_results_apart() -> None:
    settings = ExtractionSettings()
    texts = [f"attachment number {index}" for index in range(24)]

    def extract(text: str) -> str:
        return extract_in_sandbox(text.encode(), filename="n.txt", declared_type="text/plain", settings=settings).text

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(extract, texts))

    assert results == texts


def test_small_memory_limit_uses_new_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    original = sandbox.PlainWorker.__init__

    def record(self, work_dir: str) -> None:
        started.append(work_dir)
        original(self, work_dir)

    monkeypatch.setattr(sandbox.PlainWorker, "__init__", record)
    small = ExtractionSettings(max_memory_bytes=128 * MIB)

    result = extract_in_sandbox(b"small", filename="d.txt", declared_type="text/plain", settings=small)

    assert result.status == "ok"
    assert len(started) == 1
