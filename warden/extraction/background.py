"""Background extraction: the heavy work a sync leaves for when the machine is idle.

A sync extracts with ``defer_ocr=True``: text layers, documents and archives
are read at once, and an attachment with pages or images that need OCR is
stored with the status ``deferred`` (see :func:`stored_status`), its fast text
already searchable. The ``background-extraction`` deployment then calls
:func:`extract_deferred_batch` on a low-priority work queue. The batch:

* starts only while the machine is idle (:class:`IdlePolicy`: the 1-minute
  load average per CPU, and optionally a window of hours), and checks again
  before each attachment, so it stops soon after the user's programs get busy;
* extracts each attachment again in the sandbox with OCR, at nice 19 and in
  the idle I/O class (``background_priority``);
* shares one OCR allowance of pages and seconds across the batch
  (:class:`OcrRunBudget`); what is left over stays deferred for the next run.

Re-extraction after an upgrade uses the same path: rows whose
``extractor_version`` is older than :data:`EXTRACTOR_VERSION` can be set
back to ``deferred``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import SecretStr

from warden.extraction.results import ExtractionResult
from warden.extraction.run_budget import OcrRunBudget
from warden.extraction.sandbox import extract_in_sandbox
from warden.extraction.settings import ExtractionSettings

__all__ = [
    "DEFERRED_STATUS",
    "BatchReport",
    "DeferredStore",
    "IdlePolicy",
    "busy_reason",
    "extract_deferred_batch",
    "load_per_cpu",
    "stored_status",
]

logger = logging.getLogger(__name__)

# Status of a stored attachment whose fast text is saved and whose OCR waits for background extraction.
DEFERRED_STATUS = "deferred"
# A finished extraction keeps one process busy for a while; this much of the load average is ours.
OWN_LOAD_WINDOW_SECONDS = 60.0


class DeferredStore(Protocol):
    """The part of :class:`warden.store.DocumentStore` that background extraction uses."""

    def pending_counts(self, status: str = "pending") -> dict[str, int]: ...

    def pending_attachments(self, account: str, limit: int = 1000, status: str = "pending") -> Sequence[Any]: ...

    def record_extraction(
        self, attachment_id: int, *, status: str, mime_type: str | None, text: str, error: str | None, details: dict
    ) -> None: ...


@dataclass(frozen=True)
class IdlePolicy:
    """When the machine counts as idle enough for background extraction.

    ``max_load_per_cpu`` bounds the 1-minute load average divided by the
    number of CPUs (0.5 on 2 CPUs: about one busy process). ``idle_hours``,
    when set, is a ``(start, end)`` window of local hours, e.g. ``(22, 7)``
    for nights; outside it the machine never counts as idle.
    """

    max_load_per_cpu: float = 0.5
    idle_hours: tuple[int, int] | None = None


def load_per_cpu() -> float:
    """Return the 1-minute load average divided by the number of CPUs."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def busy_reason(policy: IdlePolicy, *, now: datetime, load: float, own_load: float = 0.0) -> str | None:
    """Return why the machine is not idle, or None when background work may start.

    ``own_load`` is the part of ``load`` that background extraction itself
    caused, which must not stop it.
    """
    if policy.idle_hours is not None:
        start, end = policy.idle_hours
        hour = now.hour
        inside = start <= hour < end if start <= end else (hour >= start or hour < end)
        if not inside:
            return f"the hour {hour:02d} is outside the idle hours {start:02d}-{end:02d}"

    others = max(0.0, load - own_load)
    if others > policy.max_load_per_cpu:
        return f"the load average per CPU is {others:.2f}, above max_load_per_cpu={policy.max_load_per_cpu:g}"
    return None


def stored_status(result: ExtractionResult) -> str:
    """Return the status to store for a result: ``deferred`` while OCR waits for background extraction."""
    return DEFERRED_STATUS if result.deferred else result.status


@dataclass
class BatchReport:
    """Counts and stop reason of one batch of background extraction."""

    extracted: int = 0
    left_deferred: int = 0
    stopped_reason: str | None = None
    by_status: dict[str, int] = field(default_factory=dict)
    ocr_pages: int = 0
    ocr_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "extracted": self.extracted,
            "left_deferred": self.left_deferred,
            "stopped_reason": self.stopped_reason,
            "by_status": dict(self.by_status),
            "ocr_pages": self.ocr_pages,
            "ocr_seconds": round(self.ocr_seconds, 3),
        }


Extract = Callable[..., ExtractionResult]


def extract_deferred_batch(
    store: DeferredStore,
    settings: ExtractionSettings,
    *,
    policy: IdlePolicy,
    batch_size: int,
    run_budget: OcrRunBudget,
    passwords: Sequence[SecretStr] = (),
    measure_load: Callable[[], float] = load_per_cpu,
    clock: Callable[[], datetime] = datetime.now,
    extract: Extract = extract_in_sandbox,
) -> BatchReport:
    """Extract up to ``batch_size`` deferred attachments with OCR while the machine stays idle."""
    report = BatchReport()
    settings = settings.model_copy(update={"defer_ocr": False, "background_priority": True})
    last_finished: float | None = None

    for item in deferred_items(store, batch_size):
        recent = last_finished is not None and time.monotonic() - last_finished < OWN_LOAD_WINDOW_SECONDS
        own_load = 1.0 / (os.cpu_count() or 1) if recent else 0.0
        reason = busy_reason(policy, now=clock(), load=measure_load(), own_load=own_load)
        if reason is not None:
            report.stopped_reason = f"The machine is busy: {reason}."
            break
        if run_budget.exhausted and settings.ocr_enabled:
            report.stopped_reason = (
                f"The batch used its OCR allowance ({run_budget.max_pages} pages, {run_budget.max_seconds:g} s)."
            )
            break

        result = extract(
            item.data,
            filename=item.filename,
            declared_type=item.declared_type,
            settings=run_budget.settings_for(settings),
            passwords=passwords,
        )
        last_finished = time.monotonic()
        run_budget.charge(result)
        record(store, item.id, result)

        status = stored_status(result)
        report.by_status[status] = report.by_status.get(status, 0) + 1
        report.ocr_pages += result.usage.ocr_pages
        report.ocr_seconds += result.usage.ocr_seconds
        if status == DEFERRED_STATUS:
            report.left_deferred += 1
        else:
            report.extracted += 1
        logger.info(
            "background.extracted attachment=%d status=%s ocr_pages=%d ocr_seconds=%.1f",
            item.id,
            status,
            result.usage.ocr_pages,
            result.usage.ocr_seconds,
        )

    return report


def deferred_items(store: DeferredStore, batch_size: int) -> list[Any]:
    """Return up to ``batch_size`` deferred attachments, account by account, oldest first in each."""
    items: list[Any] = []
    for account in sorted(store.pending_counts(status=DEFERRED_STATUS)):
        if len(items) >= batch_size:
            break
        items.extend(store.pending_attachments(account, limit=batch_size - len(items), status=DEFERRED_STATUS))
    return items


def record(store: DeferredStore, attachment_id: int, result: ExtractionResult) -> None:
    store.record_extraction(
        attachment_id,
        status=stored_status(result),
        mime_type=result.mime_type,
        text=result.text,
        error=result.error,
        details=result.model_dump(mode="json", exclude={"text"}),
    )
