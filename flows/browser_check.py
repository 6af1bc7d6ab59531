"""The ``check-browser`` flow: compare the installed Chromium with the one Playwright was built for.

The project drives Debian's Chromium package with Playwright's driver instead
of the browser Playwright downloads, so the two are released separately. Each
Playwright release names the Chromium it was built and tested with in its
driver's ``browsers.json`` (for example Playwright 1.65.2 names Chromium
159.0.8154.6, revision 1255). Playwright tests only that build, but nearby
versions work: this project's tests pass with Playwright 1.65.2 driving
Debian's Chromium 156. So the flow warns, and does not fail, when the major
versions differ by more than ``max_major_drift``.

Run it ad hoc::

    import asyncio
    from flows.browser_check import check_browser

    versions = asyncio.run(check_browser())
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Annotated

import playwright
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from pydantic import BaseModel, Field

from warden.errors import ConfigError
from warden.settings import get_settings

__all__ = ["BrowserVersions", "check_browser", "chromium_version", "playwright_expected_chromium"]

logger = logging.getLogger("warden.flows")

# Three majors apart is the largest drift seen to pass the tests (Chromium 156 under Playwright 1.65.2, built for 159).
DEFAULT_MAX_MAJOR_DRIFT = 3
VERSION_TIMEOUT_SECONDS = 20.0
_VERSION_PATTERN = re.compile(r"\b(\d+)\.(\d+)\.(\d+)\.(\d+)\b")


class BrowserVersions(BaseModel):
    """The installed Chromium, the Chromium Playwright expects, and how far apart their major versions are."""

    chromium_path: str
    chromium_version: str
    expected_version: str
    expected_revision: str | None = Field(default=None, description="Playwright's Chromium build revision.")
    expected_source: str = Field(description="browsers.json that named the expected version, or 'parameter'.")
    playwright_version: str
    major_drift: int = Field(description="Absolute difference of the two major versions.")
    max_major_drift: int
    drifted: bool = Field(description="True when major_drift is above max_major_drift.")


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def browsers_json_path() -> Path:
    """Return the path of the ``browsers.json`` shipped in the installed Playwright's driver package."""
    return Path(playwright.__file__).resolve().parent / "driver" / "package" / "browsers.json"


def playwright_expected_chromium(path: Path | None = None) -> tuple[str, str | None]:
    """Return the Chromium version and revision the installed Playwright was built for, from its ``browsers.json``."""
    path = path or browsers_json_path()
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["browsers"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"Could not read the Chromium version Playwright expects from {path}: {exc}. "
            "Reinstall the playwright package in the project's virtual environment."
        ) from exc

    for entry in entries:
        if entry.get("name") == "chromium" and entry.get("browserVersion"):
            return str(entry["browserVersion"]), entry.get("revision")
    raise ConfigError(f"{path} has no 'chromium' entry with a browserVersion. Reinstall the playwright package.")


async def chromium_version(chromium_path: Path) -> str:
    """Run ``CHROMIUM --version`` and return the version it prints, e.g. ``156.0.8078.114``."""
    try:
        process = await asyncio.create_subprocess_exec(
            str(chromium_path),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ConfigError(
            f"Could not run {chromium_path} --version: {exc}. Install Debian's `chromium` package "
            "(stack/install.sh does) or set WARDEN_CHROMIUM_PATH."
        ) from exc

    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=VERSION_TIMEOUT_SECONDS)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise ConfigError(
            f"{chromium_path} --version did not exit within {VERSION_TIMEOUT_SECONDS:.0f} s. "
            "Check that the path points at a Chromium executable."
        ) from exc

    # Debian's wrapper script may print shell warnings on stderr before the version; they are not errors.
    if stderr.strip():
        logger.debug("browser_check.chromium_stderr text=%s", stderr.decode("utf-8", "replace").strip()[:300])
    match = _VERSION_PATTERN.search(stdout.decode("utf-8", "replace"))
    if process.returncode != 0 or match is None:
        raise ConfigError(
            f"{chromium_path} --version exited with status {process.returncode} and printed no version "
            "of the form 1.2.3.4. Check that the path points at a Chromium executable."
        )
    return match.group(0)


def _report_markdown(versions: BrowserVersions) -> str:
    lines = []
    if versions.drifted:
        lines += [
            "## Warning: Chromium and Playwright have drifted apart",
            "",
            f"The installed Chromium is {versions.major_drift} major versions away from the one Playwright "
            f"{versions.playwright_version} was built for (at most {versions.max_major_drift} expected). "
            "Logins and smoke tests may fail in ways the tests did not see. Update Debian's `chromium` package, "
            "or pin the playwright package to a release built for this Chromium, then run `make test`.",
            "",
        ]
    else:
        lines += ["## Chromium and Playwright match", ""]
    lines += [
        "| | version |",
        "| --- | --- |",
        f"| installed Chromium (`{versions.chromium_path}`) | {versions.chromium_version} |",
        f"| expected by Playwright {versions.playwright_version} | {versions.expected_version} "
        f"(revision {versions.expected_revision or 'unknown'}) |",
        f"| major drift | {versions.major_drift} (threshold {versions.max_major_drift}) |",
        "",
        f"Expected version read from: `{versions.expected_source}`.",
    ]
    return "\n".join(lines) + "\n"


@flow(name="check-browser", log_prints=False)
async def check_browser(
    max_major_drift: Annotated[int, Field(ge=0)] = DEFAULT_MAX_MAJOR_DRIFT,
    expected_version: str | None = None,
    chromium_path: str | None = None,
) -> BrowserVersions:
    """Report the installed Chromium's version against the one Playwright expects; warn when they drift apart.

    Args:
        max_major_drift: the largest difference of major versions that passes without a warning.
        expected_version: compare with this version instead of the one in Playwright's ``browsers.json``.
        chromium_path: the Chromium executable; ``WARDEN_CHROMIUM_PATH`` or ``/usr/bin/chromium`` when None.
    """
    run_logger = get_run_logger()
    path = Path(chromium_path) if chromium_path else get_settings().chromium_path

    installed = await chromium_version(path)
    if expected_version is not None:
        if not _VERSION_PATTERN.fullmatch(expected_version) and not expected_version.isdigit():
            raise ConfigError(
                f"expected_version must be a Chromium version such as 159.0.8154.6 or a major version "
                f"such as 159, got {expected_version!r}."
            )
        expected, revision, source = expected_version, None, "parameter"
    else:
        expected, revision = playwright_expected_chromium()
        source = str(browsers_json_path())

    drift = abs(_major(installed) - _major(expected))
    versions = BrowserVersions(
        chromium_path=str(path),
        chromium_version=installed,
        expected_version=expected,
        expected_revision=revision,
        expected_source=source,
        playwright_version=metadata.version("playwright"),
        major_drift=drift,
        max_major_drift=max_major_drift,
        drifted=drift > max_major_drift,
    )

    await acreate_markdown_artifact(
        key="browser-versions",
        markdown=_report_markdown(versions),
        description="Installed Chromium against the Chromium the installed Playwright was built for.",
    )
    if versions.drifted:
        run_logger.warning(
            "browser.version_drift chromium=%s expected=%s playwright=%s major_drift=%d max_major_drift=%d",
            installed,
            expected,
            versions.playwright_version,
            drift,
            max_major_drift,
        )
    else:
        run_logger.info("browser.version_ok chromium=%s expected=%s major_drift=%d", installed, expected, drift)
    return versions
