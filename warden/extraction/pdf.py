"""Stage for PDFs: pypdfium2 text per page, OCR for pages without text, pdfplumber for tables.

Per page, in order:

1. ``pages_to_text``: the text layer through PDFium. A page keeps it (method
   ``text``) when it has more than ``ocr_min_text_chars`` visible characters
   and less than ``ocr_max_unmapped_fraction`` of them lack a Unicode mapping.
   Such a page is never sent to OCR.
2. Otherwise, while OCR is enabled and ``ocr_max_pages`` and
   ``ocr_max_seconds`` allow, the page is rendered at ``ocr_dpi`` and read by
   tesseract (method ``ocr``). With ``defer_ocr`` it is left for background
   extraction (``deferred``). Past the allowance it keeps whatever little
   text it had (``text``), or none (``skipped``).
3. ``tables_to_text``: pages that kept their text layer and draw crossing
   rules or boxes are searched for ruled tables with pdfplumber. Each table is kept as rows, and
   each row is appended to the text as its cells joined by `` | ``.

Files embedded in the PDF (attachments, portfolio members) are extracted as
members, like the members of an archive.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_raw

from warden.extraction.budget import ContainerMeter, LimitExceeded
from warden.extraction.extras import MissingExtra, missing_extra
from warden.extraction.nesting import ContainerOutput
from warden.extraction.results import Extracted, ExtractionStatus, PageMethod, PageResult, TableResult

if TYPE_CHECKING:
    from collections.abc import Callable

    from PIL.Image import Image

    from warden.extraction.budget import ExtractionBudget
    from warden.extraction.nesting import ExtractionContext

    OcrFunction = Callable[[Image, ExtractionBudget], str]

__all__ = ["pdf_to_text"]

logger = logging.getLogger(__name__)

POINTS_PER_INCH = 72
# A path thinner than RULE_THICKNESS_POINTS and longer than MIN_RULE_POINTS is a rule (a table line).
RULE_THICKNESS_POINTS = 3.0
MIN_RULE_POINTS = 8.0
MIN_TABLE_RULES = 2
# Characters of a text layer checked for a missing Unicode mapping, spread evenly over the page.
UNMAPPED_SAMPLE_CHARS = 100


@dataclass
class PageText:
    number: int
    method: PageMethod
    text: str
    text_layer_chars: int = 0
    draws_lines: bool = False
    ocr_seconds: float = 0.0
    ocr_error: str | None = None
    tables: list[str] = field(default_factory=list)
    table_rows: list[TableResult] = field(default_factory=list)

    def full_text(self) -> str:
        return "\n\n".join(part for part in (self.text, *self.tables) if part)


def pdf_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Extract the text of every page, OCR-ing pages that have none, and the embedded files."""
    opened = open_pdf(data, ctx)
    if opened is None:
        count = len(ctx.passwords)
        return Extracted(
            status="encrypted",
            mime_type=mime_type,
            error=(
                "The PDF is encrypted, and "
                + ("no passwords were passed to try." if count == 0 else f"none of the {count} passwords opened it.")
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
    candidates: list[str | None] = [None, *ctx.passwords]
    for password in candidates:
        try:
            return pdfium.PdfDocument(data, password=password), password
        except pdfium.PdfiumError as exc:
            if exc.err_code != pdfium_raw.FPDF_ERR_PASSWORD:
                raise
    return None


def visible_chars(text: str) -> int:
    return sum(1 for char in text if not char.isspace())


def unmapped_fraction(textpage: pdfium.PdfTextPage) -> float:
    """Return the fraction of a sample of the page's characters whose glyph has no Unicode mapping.

    PDFium then guesses a character from the glyph's code, which gives
    readable-looking nonsense for fonts without a ToUnicode map.
    """
    count = pdfium_raw.FPDFText_CountChars(textpage)
    if count <= 0:
        return 0.0
    step = max(1, count // UNMAPPED_SAMPLE_CHARS)
    sampled = range(0, count, step)
    unmapped = sum(1 for index in sampled if pdfium_raw.FPDFText_HasUnicodeMapError(textpage, index) == 1)
    return unmapped / len(sampled)


def has_usable_text(text: str, textpage: pdfium.PdfTextPage, ctx: ExtractionContext) -> bool:
    """Apply the OCR rule: a page with enough visible, mostly mapped characters keeps its text layer."""
    if visible_chars(text) <= ctx.settings.ocr_min_text_chars:
        return False
    return unmapped_fraction(textpage) < ctx.settings.ocr_max_unmapped_fraction


def pages_to_text(document: pdfium.PdfDocument, ctx: ExtractionContext) -> tuple[list[PageText], LimitExceeded | None]:
    """Read each page's text layer, or OCR it when the layer has no usable text."""
    pages: list[PageText] = []
    try:
        for index in range(len(document)):
            ctx.budget.check()
            page = document[index]
            try:
                textpage = page.get_textpage()
                text = normalize_newlines(textpage.get_text_range())
                result = PageText(number=index + 1, method="text", text=text.strip())
                result.text_layer_chars = visible_chars(text)
                usable = has_usable_text(text, textpage, ctx)
                textpage.close()

                if usable:
                    result.draws_lines = draws_ruling(page)
                else:
                    result = page_without_text(page, result, ctx)
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


def draws_ruling(page: pdfium.PdfPage) -> bool:
    """Return True when the page draws what a ruled table needs: crossing rules, or boxes.

    Only such pages go to pdfplumber, whose layout analysis costs far more
    than PDFium's text (about 0.3 s per busy page). Pages that draw only
    horizontal rules, such as underlines and leader lines, are left out.
    """
    horizontal = vertical = boxes = 0
    for path in page.get_objects(filter=[pdfium_raw.FPDF_PAGEOBJ_PATH], max_depth=2):
        left, bottom, right, top = path.get_bounds()
        width, height = right - left, top - bottom
        if height < RULE_THICKNESS_POINTS and width > MIN_RULE_POINTS:
            horizontal += 1
        elif width < RULE_THICKNESS_POINTS and height > MIN_RULE_POINTS:
            vertical += 1
        elif width > MIN_RULE_POINTS and height > MIN_RULE_POINTS:
            boxes += 1
        if (horizontal >= MIN_TABLE_RULES and vertical >= MIN_TABLE_RULES) or boxes >= MIN_TABLE_RULES:
            return True
    return False


def page_without_text(page: pdfium.PdfPage, layer: PageText, ctx: ExtractionContext) -> PageText:
    """OCR a page without usable text, defer it, or keep its little text when OCR is off or used up."""
    settings = ctx.settings
    if settings.ocr_enabled and settings.defer_ocr:
        ctx.budget.deferred_pages += 1
        layer.method = "deferred"
        return layer
    if not settings.ocr_enabled or not ctx.budget.take_ocr_page():
        layer.method = "text" if layer.text else "skipped"
        return layer
    return ocr_page_or_skip(page, layer, ctx)


def ocr_page_or_skip(page: pdfium.PdfPage, layer: PageText, ctx: ExtractionContext) -> PageText:
    """OCR the page; when OCR fails or is not installed, keep the page's own text and record why."""
    started = time.monotonic()
    try:
        from warden.extraction.ocr import OCR_ERRORS, ocr_image
    except ImportError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        return without_ocr(layer, f"OCR of page {layer.number} is not possible: {extra}")

    try:
        text = ocr_page(page, ctx, ocr_image)
    except LimitExceeded as exc:
        if exc.setting != "ocr_max_seconds":
            raise
        return without_ocr(layer, f"OCR of page {layer.number} stopped: {exc}")
    except (MissingExtra, *OCR_ERRORS) as exc:
        return without_ocr(layer, f"OCR of page {layer.number} failed: {exc}")
    finally:
        elapsed_seconds = time.monotonic() - started
        ctx.budget.ocr_seconds += elapsed_seconds
    return PageText(
        number=layer.number,
        method="ocr",
        text=text,
        text_layer_chars=layer.text_layer_chars,
        ocr_seconds=round(elapsed_seconds, 3),
    )


def without_ocr(layer: PageText, reason: str) -> PageText:
    layer.method = "text" if layer.text else "skipped"
    layer.ocr_error = reason
    return layer


def ocr_page(page: pdfium.PdfPage, ctx: ExtractionContext, ocr_image: OcrFunction) -> str:
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

    try:
        import pdfplumber
    except ImportError:
        logger.warning("pdfplumber is not installed, so no tables are read from '%s'", ctx.label)
        return None

    try:
        with pdfplumber.open(io.BytesIO(data), password=password or "") as plumber:
            for page in candidates:
                ctx.budget.check()
                plumber_page = plumber.pages[page.number - 1]
                for table_number, rows in enumerate(plumber_page.extract_tables(), start=1):
                    cells = [[" ".join((cell or "").split()) for cell in row] for row in rows]
                    rendered = render_table(cells, table_number, page.number)
                    ctx.budget.charge_text(len(rendered))
                    page.tables.append(rendered)
                    page.table_rows.append(table_result(cells, page.number, ctx))
                plumber_page.close()
    except LimitExceeded as exc:
        return exc
    except Exception:
        # pdfminer.six raises many exception types on damaged files; the text
        # layer from PDFium is complete without the tables, so keep it.
        logger.warning("Table detection failed for '%s'; keeping the text layer only", ctx.label, exc_info=True)
    return None


def render_table(rows: list[list[str]], table_number: int, page_number: int) -> str:
    lines = [f"[table {table_number} on page {page_number}]"]
    lines.extend(" | ".join(row) for row in rows)
    return "\n".join(lines)


def table_result(rows: list[list[str]], page_number: int, ctx: ExtractionContext) -> TableResult:
    """Keep a table's rows in the result while ``max_table_cells`` allows."""
    cell_count = sum(len(row) for row in rows)
    if ctx.budget.take_table_cells(cell_count):
        return TableResult(path=ctx.table_path, page=page_number, rows=rows)
    return TableResult(path=ctx.table_path, page=page_number, truncated=True)


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
    page_results = [
        PageResult(
            number=page.number,
            method=page.method,
            chars=len(page.full_text()),
            text_layer_chars=page.text_layer_chars,
            ocr_seconds=page.ocr_seconds,
        )
        for page in pages
    ]
    page_text = "\n\n".join(page.full_text() for page in pages if page.full_text())
    embedded = attachments.finish(own_text=page_text)

    status: ExtractionStatus = embedded.status
    error = embedded.error
    skipped = [page.number for page in pages if page.method == "skipped"]
    deferred = [page.number for page in pages if page.method == "deferred"]
    ocr_errors = [page.ocr_error for page in pages if page.ocr_error]
    if stopped is not None:
        status = "partial" if page_text else stopped.status
        error = f"Extraction stopped after {len(pages)} of {page_count} pages: {stopped}"
    elif ocr_errors and status == "ok":
        status = "partial"
        error = ocr_errors[0]
    elif deferred and status == "ok":
        status = "partial"
        error = f"OCR of pages {page_list(deferred)} is left for background extraction (defer_ocr=True)."
    elif skipped and status == "ok":
        status = "partial"
        error = skipped_pages_reason(skipped, ctx)

    tables = [table for page in pages for table in page.table_rows] + embedded.tables
    return Extracted(
        status=status,
        mime_type=mime_type,
        text=embedded.text,
        error=error,
        pages=page_results,
        tables=tables,
        members=embedded.members,
    )


def page_list(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def skipped_pages_reason(skipped: list[int], ctx: ExtractionContext) -> str:
    settings = ctx.settings
    if not settings.ocr_enabled:
        return f"Pages {page_list(skipped)} have no usable text layer and OCR is disabled (ocr_enabled=False)."
    return (
        f"Pages {page_list(skipped)} have no usable text layer and were not OCR-ed: the attachment used up "
        f"ocr_max_pages={settings.ocr_max_pages} or ocr_max_seconds={settings.ocr_max_seconds:g}. "
        "Raise them to read those pages."
    )
