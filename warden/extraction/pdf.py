"""Stage for PDFs: pypdfium2 text per page, OCR for pages without text, pdfplumber for tables.

Per page, in order:

1. ``pages_to_text``: the text layer through PDFium. A page with more than
   ``ocr_min_text_chars`` visible characters keeps it (method ``text``).
2. Otherwise, while OCR is enabled and ``ocr_max_pages`` allows, the page is
   rendered at ``ocr_dpi`` and read by tesseract (method ``ocr``). Past that
   it keeps whatever little text it had (``text``), or none (``skipped``).
3. ``tables_to_text``: pages that kept their text layer and draw lines are
   searched for ruled tables with pdfplumber. Each table row is appended as
   its cells joined by `` | ``.

Files embedded in the PDF (attachments, portfolio members) are extracted as
members, like the members of an archive.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw
import pytesseract

from warden.extraction.budget import ContainerMeter, LimitExceeded
from warden.extraction.nesting import ContainerOutput
from warden.extraction.ocr import ocr_image
from warden.extraction.results import Extracted, ExtractionStatus, PageResult

if TYPE_CHECKING:
    from warden.extraction.nesting import ExtractionContext

__all__ = ["pdf_to_text"]

logger = logging.getLogger(__name__)

POINTS_PER_INCH = 72
MIN_TABLE_PATH_OBJECTS = 2


@dataclass
class PageText:
    number: int
    method: str
    text: str
    draws_lines: bool = False
    ocr_error: str | None = None
    tables: list[str] = field(default_factory=list)

    def full_text(self) -> str:
        return "\n\n".join(part for part in (self.text, *self.tables) if part)


def pdf_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Extract the text of every page, OCR-ing pages that have none, and the embedded files."""
    opened = open_pdf(data, ctx)
    if opened is None:
        count = len(ctx.settings.passwords)
        return Extracted(
            status="encrypted",
            mime_type=mime_type,
            error=(
                "The PDF is encrypted, and "
                + (
                    "the extraction settings hold no passwords to try."
                    if count == 0
                    else f"none of the {count} passwords in the extraction settings opened it."
                )
            ),
        )

    document, password = opened
    page_count = len(document)
    try:
        pages, stopped = pages_to_text(document, ctx)
        if stopped is None:
            stopped = tables_to_text(data, password, pages, ctx)
        attachments = ContainerOutput(ctx, mime_type)
        if stopped is None:
            stopped = attachments_to_members(document, data, attachments, ctx)
    finally:
        document.close()

    return assemble(pages, attachments, stopped, mime_type, page_count, ctx)


def open_pdf(data: bytes, ctx: ExtractionContext) -> tuple[pdfium.PdfDocument, str | None] | None:
    """Open the PDF with no password (or the empty one), then with each configured password.

    Returns None when the PDF is encrypted and no password fits; raises
    :class:`pdfium.PdfiumError` when the file cannot be read at all.
    """
    candidates: list[str | None] = [None]
    candidates += [secret.get_secret_value() for secret in ctx.settings.passwords]
    for password in candidates:
        try:
            return pdfium.PdfDocument(data, password=password), password
        except pdfium.PdfiumError as exc:
            if exc.err_code != pdfium_raw.FPDF_ERR_PASSWORD:
                raise
    return None


def visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def pages_to_text(document: pdfium.PdfDocument, ctx: ExtractionContext) -> tuple[list[PageText], LimitExceeded | None]:
    """Read each page's text layer, or OCR it when the layer is (nearly) empty."""
    settings = ctx.settings
    pages: list[PageText] = []
    try:
        for index in range(len(document)):
            ctx.budget.check()
            page = document[index]
            try:
                textpage = page.get_textpage()
                text = normalize_newlines(textpage.get_text_range())
                textpage.close()
                result = PageText(number=index + 1, method="text", text=text.strip())

                if visible_chars(text) <= settings.ocr_min_text_chars:
                    if settings.ocr_enabled and ctx.budget.take_ocr_page():
                        result = ocr_page_or_skip(page, result, ctx)
                    elif not result.text:
                        result.method = "skipped"
                else:
                    result.draws_lines = count_path_objects(page) >= MIN_TABLE_PATH_OBJECTS
            finally:
                page.close()

            result.text, cut = ctx.budget.fit_text(result.text)
            pages.append(result)
            if cut is not None:
                return pages, cut
    except LimitExceeded as exc:
        return pages, exc
    return pages, None


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def count_path_objects(page: pdfium.PdfPage) -> int:
    count = 0
    for _ in page.get_objects(filter=[pdfium_raw.FPDF_PAGEOBJ_PATH], max_depth=2):
        count += 1
        if count >= MIN_TABLE_PATH_OBJECTS:
            break
    return count


def ocr_page_or_skip(page: pdfium.PdfPage, layer: PageText, ctx: ExtractionContext) -> PageText:
    """OCR the page; on a tesseract failure keep the page's own text and record the error."""
    try:
        return PageText(number=layer.number, method="ocr", text=ocr_page(page, ctx))
    except (pytesseract.TesseractError, pytesseract.TesseractNotFoundError, OSError) as exc:
        layer.method = "text" if layer.text else "skipped"
        layer.ocr_error = f"OCR of page {layer.number} failed: {exc}"
        return layer


def ocr_page(page: pdfium.PdfPage, ctx: ExtractionContext) -> str:
    """Render the page at ``ocr_dpi`` (less when that exceeds ``ocr_max_pixels``) and OCR it."""
    settings = ctx.settings
    width_points, height_points = page.get_size()
    scale = settings.ocr_dpi / POINTS_PER_INCH
    area_points = max(1.0, width_points * height_points)
    if area_points * scale * scale > settings.ocr_max_pixels:
        scale = (settings.ocr_max_pixels / area_points) ** 0.5

    bitmap = page.render(scale=scale, grayscale=True)
    try:
        image = bitmap.to_pil()
        return ocr_image(image, ctx.budget)
    finally:
        bitmap.close()


def tables_to_text(
    data: bytes, password: str | None, pages: list[PageText], ctx: ExtractionContext
) -> LimitExceeded | None:
    """Append the ruled tables that pdfplumber finds on pages that draw lines."""
    candidates = [page for page in pages if page.method == "text" and page.draws_lines]
    candidates = candidates[: ctx.settings.pdf_table_max_pages]
    if not candidates:
        return None

    import pdfplumber

    try:
        with pdfplumber.open(io.BytesIO(data), password=password or "") as plumber:
            for page in candidates:
                ctx.budget.check()
                plumber_page = plumber.pages[page.number - 1]
                for table_number, rows in enumerate(plumber_page.extract_tables(), start=1):
                    rendered = render_table(rows, table_number, page.number)
                    ctx.budget.charge_text(len(rendered))
                    page.tables.append(rendered)
                plumber_page.close()
    except LimitExceeded as exc:
        return exc
    except Exception:
        # pdfminer.six raises many exception types on damaged files; the text
        # layer from PDFium is complete without the tables, so keep it.
        logger.warning("Table detection failed for '%s'; keeping the text layer only", ctx.label, exc_info=True)
    return None


def render_table(rows: list[list[str | None]], table_number: int, page_number: int) -> str:
    lines = [f"[table {table_number} on page {page_number}]"]
    for row in rows:
        cells = [" ".join((cell or "").split()) for cell in row]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def attachments_to_members(
    document: pdfium.PdfDocument, data: bytes, out: ContainerOutput, ctx: ExtractionContext
) -> LimitExceeded | None:
    """Extract files embedded in the PDF as members."""
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))
    name: str | None = None
    try:
        for index in range(document.count_attachments()):
            ctx.budget.check()
            attachment = document.get_attachment(index)
            name = attachment.get_name() or f"attachment-{index + 1}"
            try:
                payload = bytes(attachment.get_data())
            except pdfium.PdfiumError as exc:
                out.reject(name, f"PDFium could not read the embedded file: {exc}")
                continue
            meter.charge(len(payload))
            out.add(payload, name)
            name = None
    except LimitExceeded as exc:
        out.stop(exc, current_name=name)
        return exc
    return None


def assemble(
    pages: list[PageText],
    attachments: ContainerOutput,
    stopped: LimitExceeded | None,
    mime_type: str,
    page_count: int,
    ctx: ExtractionContext,
) -> Extracted:
    page_results = [PageResult(number=page.number, method=page.method, chars=len(page.full_text())) for page in pages]
    page_text = "\n\n".join(page.full_text() for page in pages if page.full_text())
    embedded = attachments.finish(own_text=page_text)

    status: ExtractionStatus = embedded.status
    error = embedded.error
    skipped = [page.number for page in pages if page.method == "skipped"]
    ocr_errors = [page.ocr_error for page in pages if page.ocr_error]
    if stopped is not None:
        status = "partial" if page_text else "failed"
        error = f"Extraction stopped after {len(pages)} of {page_count} pages: {stopped}"
    elif ocr_errors and status == "ok":
        status = "partial"
        error = ocr_errors[0]
    elif skipped and status == "ok":
        status = "partial"
        error = skipped_pages_reason(skipped, ctx)

    return Extracted(
        status=status,
        mime_type=mime_type,
        text=embedded.text,
        error=error,
        pages=page_results,
        members=embedded.members,
    )


def skipped_pages_reason(skipped: list[int], ctx: ExtractionContext) -> str:
    shown = ", ".join(str(number) for number in skipped[:10])
    more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    if not ctx.settings.ocr_enabled:
        return f"Pages {shown}{more} have no text layer and OCR is disabled (ocr_enabled=False)."
    return (
        f"Pages {shown}{more} have no text layer and were not OCR-ed: the attachment used up "
        f"ocr_max_pages={ctx.settings.ocr_max_pages}. Raise ocr_max_pages to read them."
    )
