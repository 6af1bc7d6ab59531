"""The ``background-extraction`` flow: OCR and other heavy extraction while the machine is idle.

Syncs extract with ``defer_ocr`` and store attachments that need OCR with the
status ``deferred``. This flow, scheduled on the low-priority ``background``
work queue, takes a batch of them when the load average is low (and, if
given, inside the idle hours) and extracts them again with OCR at the lowest
CPU and I/O priority. It checks the load again before each attachment, and
stops at the batch's OCR allowance; whatever is left waits for the next run.

Run it ad hoc::

    import asyncio
    from flows.background import background_extraction

    report = asyncio.run(background_extraction(batch_size=5, max_load_per_cpu=1.0))
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from warden.extraction import ExtractionSettings, OcrRunBudget
from warden.extraction.background import IdlePolicy, busy_reason, extract_deferred_batch, load_per_cpu
from warden.store import default_document_store

__all__ = ["background_extraction"]


@flow(name="background-extraction", log_prints=False)
async def background_extraction(
    batch_size: Annotated[int, Field(ge=1)] = 20,
    max_load_per_cpu: Annotated[float, Field(ge=0)] = 0.5,
    idle_hours: tuple[int, int] | None = None,
    ocr_max_pages: Annotated[int, Field(ge=0)] = 200,
    ocr_max_seconds: Annotated[float, Field(gt=0)] = 900.0,
) -> dict[str, Any]:
    """Extract up to ``batch_size`` deferred attachments with OCR, only while the machine is idle.

    Args:
        batch_size: the maximum number of attachments this run extracts.
        max_load_per_cpu: the 1-minute load average per CPU above which the run does not start, or stops.
        idle_hours: a ``(start, end)`` window of local hours, e.g. ``(22, 7)``; outside it the run does nothing.
        ocr_max_pages: pages and image frames this run may send to OCR, across all attachments.
        ocr_max_seconds: seconds this run may spend in OCR, across all attachments.
    """
    logger = get_run_logger()
    policy = IdlePolicy(max_load_per_cpu=max_load_per_cpu, idle_hours=idle_hours)

    reason = busy_reason(policy, now=datetime.now(), load=load_per_cpu())
    if reason is not None:
        logger.info("background.skipped reason=%r", reason)
        return {"extracted": 0, "left_deferred": 0, "stopped_reason": f"The machine is busy: {reason}."}

    # NOTE: each account's extraction_options are not applied here yet; the batch uses the defaults.
    report = await asyncio.to_thread(
        extract_deferred_batch,
        default_document_store(),
        ExtractionSettings(),
        policy=policy,
        batch_size=batch_size,
        run_budget=OcrRunBudget(max_pages=ocr_max_pages, max_seconds=ocr_max_seconds),
    )
    logger.info(
        "background.done extracted=%d left_deferred=%d ocr_pages=%d ocr_seconds=%.1f stopped=%r",
        report.extracted,
        report.left_deferred,
        report.ocr_pages,
        report.ocr_seconds,
        report.stopped_reason,
    )
    return report.as_dict()
