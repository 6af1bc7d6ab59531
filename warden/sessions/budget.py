"""CPU seconds and memory of a browser job, measured over Chromium's processes, and the budget check.

Chromium runs as many processes (browser, zygotes, GPU, network and storage
services, one renderer per site), and some of them are re-parented, so
``getrusage(RUSAGE_CHILDREN)`` misses much of their CPU. :class:`UsageMeter`
instead samples a process set that the caller lists again on every sample
(see :class:`warden.sessions.browser.BrowserProcesses`) and reads each
process with psutil:

- CPU: user plus system seconds of each process, minus what it had used when
  the meter started. A process that exits keeps the figure of its last sample,
  so at most one sampling interval of its CPU is lost. A process that starts
  and exits between two samples is not counted at all.
- Memory: the sum of USS (unique set size: pages no other process shares)
  of the live processes. Shared pages such as the Chromium binary's code are
  not counted. USS comes from ``/proc/PID/smaps_rollup``, which costs about
  5 ms per Chromium process (measured on a 2-core machine with Chromium 156),
  so an exact read of a dozen processes four times a second would cost a
  quarter of a core. Between exact reads, each process's figure is estimated
  as its last USS plus its RSS growth since then (RSS, from ``statm``, is
  cheap). A process is read again once its RSS has grown by
  ``USS_REFRESH_GROWTH_BYTES`` or its last read is ``USS_REFRESH_SECONDS``
  old, and ``sample(exact_memory=True)`` reads every process.

:func:`budget_overrun` compares a sample with an account's
:class:`~warden.accounts.BrowserBudget` and builds the error to raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from warden.accounts import BrowserBudget
from warden.errors import BrowserBudgetExceeded

__all__ = ["UsageMeter", "UsageSample", "budget_overrun"]

MEBIBYTE = 1024 * 1024
USS_REFRESH_GROWTH_BYTES = 8 * MEBIBYTE
USS_REFRESH_SECONDS = 1.0

# A process is identified by its pid and start time, so a reused pid is a new process.
ProcessKey = tuple[int, float]


@dataclass(frozen=True)
class UsageSample:
    """Usage of a process set: CPU seconds since the meter started, and unique memory now."""

    cpu_seconds: float
    memory_bytes: int
    process_count: int
    # False when memory_bytes includes estimates between exact USS reads.
    memory_exact: bool


@dataclass
class _UniqueMemory:
    uss_bytes: int
    rss_bytes_then: int
    read_at: float


class UsageMeter:
    """Sum the CPU seconds and unique memory of a process set that changes while it is measured."""

    def __init__(self, list_processes: Callable[[], Iterable[psutil.Process]]) -> None:
        self._list_processes = list_processes
        self._cpu_at_start: dict[ProcessKey, float] = {}
        self._cpu_used: dict[ProcessKey, float] = {}
        self._unique_memory: dict[ProcessKey, _UniqueMemory] = {}
        self.peak_memory_bytes = 0

    def start(self) -> None:
        """Record the CPU seconds each process has already used, so later samples count only new use."""
        self._cpu_at_start.clear()
        self._cpu_used.clear()
        for process in self._list_processes():
            try:
                self._cpu_at_start[_key(process)] = _cpu_seconds(process)
            except psutil.Error:
                continue

    def sample(self, *, exact_memory: bool = False) -> UsageSample:
        """Read every process of the set once. The call blocks, so run it in a worker thread."""
        memory_bytes = 0
        process_count = 0
        all_exact = True
        live: set[ProcessKey] = set()
        for process in self._list_processes():
            try:
                with process.oneshot():
                    key = _key(process)
                    cpu_seconds = _cpu_seconds(process)
                    unique_bytes, exact = self._unique_bytes(process, key, exact=exact_memory)
            except psutil.Error:
                # It exited between the listing and the read. Its last sampled CPU still counts.
                continue
            self._cpu_used[key] = max(0.0, cpu_seconds - self._cpu_at_start.get(key, 0.0))
            live.add(key)
            memory_bytes += unique_bytes
            all_exact = all_exact and exact
            process_count += 1

        self._unique_memory = {key: memory for key, memory in self._unique_memory.items() if key in live}
        self.peak_memory_bytes = max(self.peak_memory_bytes, memory_bytes)
        return UsageSample(
            cpu_seconds=sum(self._cpu_used.values()),
            memory_bytes=memory_bytes,
            process_count=process_count,
            memory_exact=all_exact,
        )

    def _unique_bytes(self, process: psutil.Process, key: ProcessKey, *, exact: bool) -> tuple[int, bool]:
        """Return the process's USS, read now or estimated from its RSS growth, and whether it was read now."""
        rss_bytes = process.memory_info().rss
        now = time.monotonic()
        last = self._unique_memory.get(key)
        if (
            not exact
            and last is not None
            and rss_bytes - last.rss_bytes_then < USS_REFRESH_GROWTH_BYTES
            and now - last.read_at < USS_REFRESH_SECONDS
        ):
            return last.uss_bytes + max(0, rss_bytes - last.rss_bytes_then), False

        uss_bytes = process.memory_full_info().uss
        self._unique_memory[key] = _UniqueMemory(uss_bytes=uss_bytes, rss_bytes_then=rss_bytes, read_at=now)
        return uss_bytes, True


def budget_overrun(sample: UsageSample, budget: BrowserBudget, *, account: str) -> BrowserBudgetExceeded | None:
    """Return the error to raise when ``sample`` is over ``budget``, or None when it is within it.

    Callers confirm a memory overrun with an exact sample first (see :meth:`UsageMeter.sample`).
    """
    if sample.cpu_seconds > budget.max_cpu_seconds:
        return BrowserBudgetExceeded(
            f"The browser job of account '{account}' used {sample.cpu_seconds:.2f} CPU seconds in Chromium, "
            f"over its limit of {budget.max_cpu_seconds:.2f}, and was stopped. If the site needs more, "
            "raise browser_max_cpu_seconds in the account's Block."
        )
    if sample.memory_bytes > budget.max_memory_bytes:
        return BrowserBudgetExceeded(
            f"The browser job of account '{account}' used {sample.memory_bytes / MEBIBYTE:.0f} MiB of unique "
            f"memory in Chromium ({sample.memory_bytes} bytes), over its limit of "
            f"{budget.max_memory_bytes / MEBIBYTE:.0f} MiB ({budget.max_memory_bytes} bytes), and was stopped. "
            "If the site needs more, raise browser_max_memory_bytes in the account's Block."
        )
    return None


def _key(process: psutil.Process) -> ProcessKey:
    return process.pid, process.create_time()


def _cpu_seconds(process: psutil.Process) -> float:
    # Children's times are left out: a helper reaped by a zygote is counted through its own samples.
    times = process.cpu_times()
    return times.user + times.system
