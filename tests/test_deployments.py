"""prefect.yaml deployed with `prefect deploy --all` to a real server, and a run finished by a process worker.

The worker runs `prefect worker start` in a subprocess, as the header of
prefect.yaml describes, and is stopped with SIGINT (SIGTERM made Prefect 3.9.1
linger about 20 s). The run is the cheap check-browser deployment, which only
reads Chromium's version.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from bench.scale import stop_workers

pytestmark = pytest.mark.stack

REPO_DIR = Path(__file__).resolve().parent.parent
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "warden"
RUN_TIMEOUT_SECONDS = 60.0


def prefect_command(*args: str, timeout_seconds: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run the Prefect CLI from the repository root against the test server, without prompts."""
    env = {**os.environ, "WARDEN_REPO_DIR": str(REPO_DIR)}
    result = subprocess.run(
        [*PREFECT, "--no-prompt", *args],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
    )
    assert result.returncode == 0, (
        f"prefect {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def declared_deployments() -> list[dict]:
    return yaml.safe_load((REPO_DIR / "prefect.yaml").read_text())["deployments"]


@pytest.fixture(scope="module")
def deployed(prefect_server) -> Iterator[list[dict]]:
    prefect_command("work-pool", "create", POOL, "--type", "process", "--overwrite")
    prefect_command("work-queue", "create", "background", "--pool", POOL, "--priority", "100")
    prefect_command("deploy", "--all", timeout_seconds=120.0)
    yield declared_deployments()

    # Other modules share this server and expect, for example, no guided-login deployment.
    api_url = prefect_server.api_url.rstrip("/")
    with httpx.Client(trust_env=False, timeout=10.0) as client:
        response = client.post(f"{api_url}/deployments/filter", json={"work_pools": {"name": {"any_": [POOL]}}})
        response.raise_for_status()
        for deployment in response.json():
            client.delete(f"{api_url}/deployments/{deployment['id']}").raise_for_status()


@pytest.fixture
def worker(deployed, tmp_path: Path) -> Iterator[subprocess.Popen]:
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", POOL, "--work-queue", "default", "--prefetch-seconds", "5"],
            cwd=REPO_DIR,
            env={**os.environ, "WARDEN_REPO_DIR": str(REPO_DIR)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        # NOTE: On a loaded host a Prefect worker took over 15 s to exit after SIGINT, so it gets 20 s before SIGKILL.
        stop_workers([process])


async def test_deploy_all_creates_every_deployment(deployed: list[dict]) -> None:
    async with get_client() as client:
        for declared in deployed:
            flow_name = declared["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
            deployment = await client.read_deployment_by_name(f"{flow_name}/{declared['name']}")

            assert deployment.work_pool_name == POOL
            assert deployment.entrypoint == declared["entrypoint"]
            assert len(deployment.schedules) == len(declared.get("schedules", []))


async def test_worker_finishes_scheduled_run(deployed: list[dict], worker: subprocess.Popen) -> None:
    """A run scheduled for now on check-browser is picked up by the worker and completes."""
    async with get_client() as client:
        # Keep the other deployments' schedules from handing this worker their runs meanwhile.
        for declared in deployed:
            if declared["name"] == "check-browser":
                continue
            flow_name = declared["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
            other = await client.read_deployment_by_name(f"{flow_name}/{declared['name']}")
            await client.pause_deployment(other.id)

    started = time.monotonic()
    flow_run = await run_deployment("check-browser/check-browser", timeout=RUN_TIMEOUT_SECONDS, poll_interval=1)
    elapsed_seconds = time.monotonic() - started

    assert worker.poll() is None, "the worker exited early"
    assert flow_run.state is not None
    assert flow_run.state.is_completed(), (
        f"state {flow_run.state.name} after {elapsed_seconds:.0f} s: {flow_run.state.message}"
    )
    assert flow_run.work_pool_name == POOL
