"""The processes of one launched Chromium, found and killed as a set.

Playwright starts Chromium detached, as the leader of a new session and
process group, and Chromium's helpers either stay in that session or leave it:
the crash reporter (``chrome_crashpad_handler``) starts its own session and is
re-parented to init. :class:`BrowserProcesses` therefore finds a browser's
processes by session id, plus by an environment variable set at launch, which
the crash reporter inherits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import suppress

import psutil

__all__ = ["KILL_TIMEOUT_SECONDS", "LAUNCH_TAG_VARIABLE", "BrowserProcesses"]

logger = logging.getLogger("warden.browser")

# Set in the environment of each launch. The main process and the crash reporter inherit it. Chromium starts
# its other helpers with a reduced environment, but they stay in the main process's session.
LAUNCH_TAG_VARIABLE = "WARDEN_BROWSER_LAUNCH"

KILL_TIMEOUT_SECONDS = 5.0


class BrowserProcesses:
    """Every process of one launched Chromium: its session, plus processes that carry the launch's tag.

    Listing reads every process on the machine with psutil (its session id,
    and its environment the first time it is seen): 5 to 8 ms for 130
    processes on a loaded 2-core machine. Zombies are left out: they use no
    CPU or memory, and only their parent can remove them.
    """

    def __init__(self, *, leader_pid: int | None, tag: str) -> None:
        self.leader_pid = leader_pid
        self.tag = tag
        self._tagged: dict[tuple[int, float], bool] = {}
        # The budget watch and a crash clean-up can list from two worker threads at once.
        self._lock = threading.Lock()
        # Once no process is left, none can join: only members fork new members.
        self._ended = False

    @classmethod
    def discover(cls, tag: str) -> BrowserProcesses | None:
        """Find the browser that was launched with ``tag``: the session leader among this process's descendants."""
        for process in psutil.Process().children(recursive=True):
            try:
                if os.getsid(process.pid) == process.pid and process.environ().get(LAUNCH_TAG_VARIABLE) == tag:
                    return cls(leader_pid=process.pid, tag=tag)
            except (OSError, psutil.Error):
                continue
        return None

    def members(self) -> list[psutil.Process]:
        """Return the live processes of this browser."""
        with self._lock:
            return self._list_members()

    def _list_members(self) -> list[psutil.Process]:
        if self._ended:
            return []

        found: list[psutil.Process] = []
        seen: set[tuple[int, float]] = set()
        for process in psutil.process_iter():
            try:
                in_session = self.leader_pid is not None and os.getsid(process.pid) == self.leader_pid
                if not in_session:
                    key = (process.pid, process.create_time())
                    seen.add(key)
                    if key not in self._tagged:
                        self._tagged[key] = _carries_tag(process, self.tag)
                    if not self._tagged[key]:
                        continue
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (OSError, psutil.Error):
                continue

        self._tagged = {key: tagged for key, tagged in self._tagged.items() if key in seen}
        if not found:
            self._ended = True
        return found

    @property
    def ended(self) -> bool:
        """True once a listing found no process left."""
        return self._ended

    def leader_running(self) -> bool:
        if self.leader_pid is None:
            return False
        try:
            return psutil.Process(self.leader_pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def kill(self, *, grace_seconds: float = 0.0, timeout_seconds: float = KILL_TIMEOUT_SECONDS) -> int:
        """Wait up to ``grace_seconds`` for the processes to exit, then SIGKILL the rest; return how many.

        psutil checks a process's start time before it sends a signal, so a
        reused pid is never signalled. The call blocks, so run it in a worker thread.
        """
        deadline = time.monotonic() + grace_seconds
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.05)

        killed: set[int] = set()
        deadline = time.monotonic() + timeout_seconds
        while True:
            survivors = self.members()
            if not survivors:
                return len(killed)
            if time.monotonic() > deadline:
                pids = ", ".join(str(process.pid) for process in survivors)
                logger.error("browser.kill_failed tag=%s pids=%s", self.tag, pids)
                return len(killed)

            for process in survivors:
                with suppress(psutil.Error):
                    process.kill()
                    killed.add(process.pid)
            psutil.wait_procs(survivors, timeout=0.5)


def _carries_tag(process: psutil.Process, tag: str) -> bool:
    try:
        return process.environ().get(LAUNCH_TAG_VARIABLE) == tag
    except psutil.Error:
        # Another user's process, or one that just exited: not ours either way.
        return False
