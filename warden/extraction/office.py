"""Stages for Office Open XML documents: DOCX with python-docx, XLSX with openpyxl.

Both formats are zip packages, so before a library opens one, the sizes its
parts declare are charged to the budget. zipfile never returns more than a
part's declared size, so that charge bounds what the libraries can inflate.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from warden.extraction.budget import ContainerMeter, LimitExceeded
from warden.extraction.results import Extracted

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from docx.table import Table

    from warden.extraction.nesting import ExtractionContext

__all__ = ["docx_to_text", "xlsx_to_text"]

logger = logging.getLogger(__name__)

CELL_SEPARATOR = " | "
ROWS_PER_DEADLINE_CHECK = 1000
SHARED_STRINGS_PART = "xl/sharedStrings.xml"


def charge_package(data: bytes, ctx: ExtractionContext) -> None:
    """Charge the declared sizes of all parts of an OOXML package to the budget."""
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        declared_bytes = sum(info.file_size for info in package.infolist())
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))
    meter.charge(declared_bytes)


def docx_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Return headers, body (paragraphs and tables in document order), text boxes and footers."""
    import docx

    charge_package(data, ctx)
    document = docx.Document(io.BytesIO(data))

    headers, footers = header_footer_texts(document)
    body = list(body_texts(document))
    text = "\n".join(line for line in (*headers, *body, *footers) if line)
    text, cut = ctx.budget.fit_text(text)
    if cut is not None:
        return Extracted(status="partial", mime_type=mime_type, text=text, error=str(cut))
    return Extracted(status="ok", mime_type=mime_type, text=text)


def body_texts(document: DocxDocument) -> Iterator[str]:
    from docx.table import Table

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            yield from table_rows(block)
        else:
            yield block.text
    yield from text_box_texts(document)


def table_rows(table: Table) -> Iterator[str]:
    """Yield each row of a table as its cell texts joined by `` | ``.

    A merged cell repeats its text in every grid column it spans, as
    python-docx reports it.
    """
    for row in table.rows:
        cells = [" ".join(cell.text.split()) for cell in row.cells]
        if any(cells):
            yield CELL_SEPARATOR.join(cells)


def text_box_texts(document: DocxDocument) -> Iterator[str]:
    """Yield the paragraphs of text boxes, which python-docx leaves out of the body.

    Word stores each text box twice (DrawingML and a VML fallback); only the
    first copy is read.
    """
    from docx.oxml.ns import qn

    namespaces = {"mc": "http://schemas.openxmlformats.org/markup-compatibility/2006"}
    for box in document.element.body.iter(qn("w:txbxContent")):
        if box.xpath("ancestor::mc:Fallback", namespaces=namespaces):
            continue
        for paragraph in box.iter(qn("w:p")):
            text = "".join(node.text or "" for node in paragraph.iter(qn("w:t")))
            if text.strip():
                yield text


def header_footer_texts(document: DocxDocument) -> tuple[list[str], list[str]]:
    """Return the distinct header and footer lines of all sections, in section order."""
    from docx.table import Table

    def lines_of(parts: Iterable[Any]) -> list[str]:
        lines: list[str] = []
        for part in parts:
            if part.is_linked_to_previous:
                continue
            for block in part.iter_inner_content():
                if isinstance(block, Table):
                    lines.extend(table_rows(block))
                elif block.text.strip():
                    lines.append(block.text)
        return list(dict.fromkeys(lines))

    headers: list[Any] = []
    footers: list[Any] = []
    for section in document.sections:
        headers += [section.first_page_header, section.header, section.even_page_header]
        footers += [section.first_page_footer, section.footer, section.even_page_footer]
    return lines_of(headers), lines_of(footers)


def xlsx_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Return each worksheet as a ``[sheet NAME]`` line followed by its non-empty rows.

    Rows are streamed with openpyxl's read-only mode after discarding the
    sheet's declared dimension, so a sheet that claims ``A1:XFD1048576`` but
    stores four rows costs four rows of work.
    """
    import openpyxl

    charge_package(data, ctx)
    try:
        with warnings.catch_warnings():
            # openpyxl warns about every extension and defect it skips; the text does not need them.
            warnings.simplefilter("ignore", UserWarning)
            workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except LimitExceeded:
        raise
    except Exception as exc:  # openpyxl raises bare TypeError/KeyError on parts it does not model
        logger.debug("openpyxl could not open '%s'", ctx.label, exc_info=True)
        return shared_strings_fallback(data, mime_type, f"openpyxl could not open it ({exc!r})")

    lines: list[str] = []
    try:
        if not workbook.worksheets:
            return shared_strings_fallback(
                data, mime_type, "openpyxl found no worksheets (Strict OOXML is not supported)"
            )
        for sheet in workbook.worksheets:
            lines.append(f"[sheet {sheet.title}]")
            lines.extend(sheet_rows(sheet, ctx))
    except LimitExceeded as exc:
        text = "\n".join(lines)
        return Extracted(status="partial" if text else "failed", mime_type=mime_type, text=text, error=str(exc))
    finally:
        workbook.close()

    return Extracted(status="ok", mime_type=mime_type, text="\n".join(lines))


def sheet_rows(sheet: Any, ctx: ExtractionContext) -> Iterator[str]:
    sheet.reset_dimensions()
    for count, row in enumerate(sheet.iter_rows(values_only=True), start=1):
        if count % ROWS_PER_DEADLINE_CHECK == 0:
            ctx.budget.check()
        cells = [format_cell(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            line = CELL_SEPARATOR.join(cells)
            ctx.budget.charge_text(len(line))
            yield line


def format_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds").removesuffix(" 00:00:00")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).split())


def shared_strings_fallback(data: bytes, mime_type: str, reason: str) -> Extracted:
    """Return the workbook's shared strings, for packages openpyxl cannot read."""
    strings: list[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as package:
        if SHARED_STRINGS_PART in package.namelist():
            with package.open(SHARED_STRINGS_PART) as part:
                for _, element in ElementTree.iterparse(part):
                    if element.tag.endswith("}si"):
                        text = "".join(node.text or "" for node in element.iter() if node.tag.endswith("}t"))
                        if text.strip():
                            strings.append(text)
                        element.clear()

    error = f"{reason}; only the workbook's shared strings were read, without cell positions"
    return Extracted(
        status="partial" if strings else "failed",
        mime_type=mime_type,
        text="\n".join(strings),
        error=error,
    )
