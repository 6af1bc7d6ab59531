"""``python -m bench.probe`` runs end to end and stops everything it started, also on Ctrl-C.

No timing is asserted: the figures depend on the machine, and bench/README.md records them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
EXPECTED_KEYS = {
    "probe_cpu_seconds",
    "probe_wall_seconds",
    "probes",
    "probe_new_client_cpu_seconds",
    "probe_step_cpu_seconds",
    "browser_cpu_seconds",
    "browser_wall_seconds",
    "browser_runs",
    "ratio",
    "machine",
}


@pytest.fixture()
def bench_tmpdir() -> Iterator[Path]:
    """A TMPDIR for the benchmark below /tmp with mode 0755, which the mail server's daemons can reach."""
    path = Path(tempfile.mkdtemp(prefix="warden-bench-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def bench_env(tmpdir: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmpdir)}


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(text in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def command_line(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


@pytest.mark.stack
@pytest.mark.browser
def test_bench_prints_json_keys(bench_tmpdir):
    result = subprocess.run(
        [sys.executable, "-m", "bench.probe", "--json", "--probes", "5", "--browser-runs", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=bench_env(bench_tmpdir),
    )
    assert result.returncode == 0, result.stderr[-3000:]

    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert EXPECTED_KEYS - output.keys() == set()
    assert output["probes"] == 5
    assert output["browser_runs"] == 1
    for key in ("probe_cpu_seconds", "probe_step_cpu_seconds", "browser_cpu_seconds", "ratio"):
        assert output[key] > 0, key
    assert output["browser_killed_pids"] == 0
    assert list(bench_tmpdir.iterdir()) == []
    assert processes_mentioning(str(bench_tmpdir)) == []


def test_bench_table_names_measures(capsys):
    from bench.probe import _print_table

    results = {key: 1 for key in EXPECTED_KEYS} | {
        "probe_new_client_wall_seconds": 1,
        "probe_step_wall_seconds": 1,
        "browser_python_cpu_seconds": 0.05,
        "browser_processes_cpu_seconds": 1.9,
        "machine": {"cpus": 2, "cpu_model": "Test CPU", "chromium": "Chromium 1.2.3.4"},
    }
    _print_table(results)
    printed = capsys.readouterr().out
    assert "HTTP probe, reused client" in printed
    assert "browser check (cold Chromium)" in printed
    assert "ratio (browser check / HTTP probe, CPU): 1" in printed
    assert "Test CPU" in printed


def chromium_below(process: psutil.Process) -> bool:
    try:
        return any("chromium" in " ".join(command_line(child)) for child in process.children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def browser_check_running(seen: dict[int, psutil.Process]) -> bool:
    children = [found for found in seen.values() if "--browser-child" in command_line(found)]
    return any(chromium_below(child) for child in children)


@pytest.mark.stack
@pytest.mark.browser
def test_bench_ctrl_c_stops_everything(bench_tmpdir):
    # Interrupted while the browser-check child runs Chromium, after the stack and the login. A terminal's
    # Ctrl-C sends SIGINT to the foreground process group; the benchmark leads its own group here.
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.probe", "--json", "--probes", "3", "--browser-runs", "1"],
        cwd=REPO,
        env=bench_env(bench_tmpdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: dict[int, psutil.Process] = {process.pid: psutil.Process(process.pid)}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
            seen.update({found.pid: found for found in processes_mentioning(str(bench_tmpdir))})
            if browser_check_running(seen):
                break
            time.sleep(0.05)
        assert process.poll() is None, "the benchmark ended before its browser check started Chromium"
        assert any(found.is_running() and "nginx" in found.name() for found in seen.values())

        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert process.returncode == 130, stderr[-3000:]
    assert "Interrupted" in stderr
    seen.pop(process.pid)
    survivors = [found for found in seen.values() if found.is_running() and found.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    assert processes_mentioning(str(bench_tmpdir)) == []
    assert list(bench_tmpdir.iterdir()) == []
