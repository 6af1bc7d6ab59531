"""Stage for images (PNG, JPEG, TIFF...): every frame through OCR.

Opening an image needs Pillow and reading it needs pytesseract, both in the
``ocr`` extra.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

from PIL import Image, ImageSequence

from warden.extraction.budget import LimitExceeded
from warden.extraction.results import Extracted, ExtractionStatus, PageResult

if TYPE_CHECKING:
    from warden.extraction.nesting import ExtractionContext

__all__ = ["image_to_text"]


def image_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Read the text of each frame of an image with OCR, within ``ocr_max_pages`` and ``ocr_max_seconds``."""
    settings = ctx.settings
    pages: list[PageResult] = []
    texts: list[str] = []
    stopped: LimitExceeded | None = None
    ocr_stopped: LimitExceeded | None = None
    ocr_failure: Exception | None = None

    with Image.open(io.BytesIO(data)) as image:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if settings.ocr_enabled and settings.defer_ocr:
                ctx.budget.deferred_pages += 1
                pages.append(PageResult(number=number, method="deferred", chars=0))
                continue
            if stopped or ocr_stopped or ocr_failure or not settings.ocr_enabled or not ctx.budget.take_ocr_page():
                pages.append(PageResult(number=number, method="skipped", chars=0))
                continue

            from warden.extraction.ocr import OCR_ERRORS, ocr_image

            started = time.monotonic()
            try:
                text = ocr_image(frame, ctx.budget)
            except LimitExceeded as exc:
                if exc.setting == "ocr_max_seconds":
                    ocr_stopped = exc
                else:
                    stopped = exc
                pages.append(PageResult(number=number, method="skipped", chars=0))
                continue
            except OCR_ERRORS as exc:
                ocr_failure = exc
                pages.append(PageResult(number=number, method="skipped", chars=0))
                continue
            finally:
                elapsed_seconds = time.monotonic() - started
                ctx.budget.ocr_seconds += elapsed_seconds

            text, cut = ctx.budget.fit_text(text)
            pages.append(
                PageResult(number=number, method="ocr", chars=len(text), ocr_seconds=round(elapsed_seconds, 3))
            )
            if text:
                texts.append(text)
            if cut is not None:
                stopped = cut

    if ocr_failure is not None and not texts:
        return ocr_failed(ocr_failure, mime_type, pages)
    status, error = image_status(pages, texts, stopped or ocr_stopped, ctx)
    return Extracted(status=status, mime_type=mime_type, text="\n\n".join(texts), error=error, pages=pages)


def ocr_failed(exc: Exception, mime_type: str, pages: list[PageResult]) -> Extracted:
    """Return the node of an image that tesseract could not read: missing tesseract, or a tesseract error."""
    import pytesseract

    if isinstance(exc, pytesseract.TesseractNotFoundError):
        return Extracted(
            status="unsupported",
            mime_type=mime_type,
            error="tesseract is not installed, so images cannot be read: install the tesseract-ocr package",
            pages=pages,
        )
    return Extracted(
        status="malformed", mime_type=mime_type, error=f"Could not decode or OCR the image: {exc}", pages=pages
    )


def image_status(
    pages: list[PageResult], texts: list[str], stopped: LimitExceeded | None, ctx: ExtractionContext
) -> tuple[ExtractionStatus, str | None]:
    settings = ctx.settings
    skipped = [page.number for page in pages if page.method == "skipped"]
    deferred = [page.number for page in pages if page.method == "deferred"]
    if stopped is not None:
        ocr_count = sum(1 for page in pages if page.method == "ocr")
        status: ExtractionStatus = "partial" if texts else stopped.status
        return status, f"OCR stopped after {ocr_count} of {len(pages)} frames: {stopped}"
    if deferred:
        return "partial", "OCR of the image is left for background extraction (defer_ocr=True)"
    if not skipped:
        return "ok", None
    if not settings.ocr_enabled:
        return "partial", "OCR is disabled (ocr_enabled=False), so no text was read from the image"
    return "partial", (
        f"frames {skipped[0]}-{skipped[-1]} were not read: the attachment used up "
        f"ocr_max_pages={settings.ocr_max_pages} or ocr_max_seconds={settings.ocr_max_seconds:g}; "
        "raise them to read those frames"
    )
