"""The OCR allowance of one run: pages and seconds shared by all attachments a sync or batch extracts.

Each attachment has its own ``ocr_max_pages`` and ``ocr_max_seconds``; a run
caps their sum. Before each attachment, :meth:`OcrRunBudget.settings_for`
returns the settings to use, and after it, :meth:`OcrRunBudget.charge` counts
what the result reports it used. Once the run has no OCR left, later
attachments get ``defer_ocr``, so their scans wait for background extraction
instead of being skipped for good.
"""

from __future__ import annotations

from dataclasses import dataclass

from warden.extraction.results import ExtractionResult
from warden.extraction.settings import ExtractionSettings

__all__ = ["OcrRunBudget"]

# Below this many seconds, tesseract cannot finish a page, so the run counts as out of OCR time.
MIN_OCR_RUN_SECONDS = 1.0


@dataclass
class OcrRunBudget:
    """OCR pages and seconds left for one run.

    Example::

        run_budget = OcrRunBudget(max_pages=50, max_seconds=300)
        for item in pending:
            result = extract_in_sandbox(item.data, ..., settings=run_budget.settings_for(settings))
            run_budget.charge(result)

    NOTE: an attachment that starts while the run has OCR left gets its full
    per-attachment allowance, so that none of its pages is skipped for good.
    A run can therefore overshoot by one attachment's allowance, or by one
    per worker when attachments are extracted in parallel.
    """

    max_pages: int
    max_seconds: float
    pages_used: int = 0
    seconds_used: float = 0.0

    @property
    def exhausted(self) -> bool:
        return self.pages_used >= self.max_pages or self.max_seconds - self.seconds_used < MIN_OCR_RUN_SECONDS

    def settings_for(self, settings: ExtractionSettings) -> ExtractionSettings:
        """Return ``settings`` as they are while the run has OCR left, else with OCR deferred."""
        if self.exhausted and settings.ocr_enabled:
            return settings.model_copy(update={"defer_ocr": True})
        return settings

    def charge(self, result: ExtractionResult) -> None:
        """Count the OCR pages and seconds an attachment's result reports."""
        self.pages_used += result.usage.ocr_pages
        self.seconds_used += result.usage.ocr_seconds
