"""Stage for images (PNG, JPEG, TIFF...): every frame through OCR."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image, ImageSequence

from warden.extraction.budget import LimitExceeded
from warden.extraction.ocr import ocr_image
from warden.extraction.results import Extracted, PageResult

if TYPE_CHECKING:
    from warden.extraction.nesting import ExtractionContext

__all__ = ["image_to_text"]


def image_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Read the text of each frame of an image with OCR, up to ``ocr_max_pages`` frames."""
    settings = ctx.settings
    pages: list[PageResult] = []
    texts: list[str] = []
    stopped: LimitExceeded | None = None

    with Image.open(io.BytesIO(data)) as image:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if stopped is not None or not settings.ocr_enabled or not ctx.budget.take_ocr_page():
                pages.append(PageResult(number=number, method="skipped", chars=0))
                continue
            try:
                text = ocr_image(frame, ctx.budget)
            except LimitExceeded as exc:
                stopped = exc
                pages.append(PageResult(number=number, method="skipped", chars=0))
                continue
            text, cut = ctx.budget.fit_text(text)
            pages.append(PageResult(number=number, method="ocr", chars=len(text)))
            if text:
                texts.append(text)
            if cut is not None:
                stopped = cut

    skipped = [page.number for page in pages if page.method == "skipped"]
    if stopped is not None:
        status = "partial" if texts else "failed"
        error = f"OCR stopped after {len(texts)} of {len(pages)} frames: {stopped}"
    elif not skipped:
        status, error = "ok", None
    elif not settings.ocr_enabled:
        status = "partial"
        error = "OCR is disabled (ocr_enabled=False), so no text was read from the image"
    else:
        status = "partial"
        error = (
            f"frames {skipped[0]}-{skipped[-1]} were not read: the attachment used up "
            f"ocr_max_pages={settings.ocr_max_pages}; raise ocr_max_pages to read them"
        )
    return Extracted(status=status, mime_type=mime_type, text="\n\n".join(texts), error=error, pages=pages)
