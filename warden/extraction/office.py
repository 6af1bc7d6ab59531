"""Stages for Office Open XML documents: DOCX with python-docx, XLSX with openpyxl.

Both formats are zip packages, so before a library opens one, the sizes its
parts declare are charged to the budget. zipfile never returns more than a
part's declared size, so that charge bounds what the libraries can inflate.

A password-protected OOXML file is an OLE2 container around the encrypted
package. msoffcrypto-tool decrypts it with the passwords passed in, and the
decrypted package goes through the pipeline again at the same level.
All three libraries come with the ``office`` extra.
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
from warden.extraction.results import Extracted, TableResult

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from docx.table import Table

    from warden.extraction.nesting import ExtractionContext

__all__ = ["docx_to_text", "encrypted_office_to_text", "xlsx_to_text"]

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

    tables = DocxTables(ctx)
    headers, footers = header_footer_texts(document, tables)
    body = list(body_texts(document, tables))
    text = "\n".join(line for line in (*headers, *body, *footers) if line)
    text, cut = ctx.budget.fit_text(text)
    if cut is not None:
        return Extracted(status="partial", mime_type=mime_type, text=text, error=str(cut), tables=tables.results)
    return Extracted(status="ok", mime_type=mime_type, text=text, tables=tables.results)


class DocxTables:
    """Collector of a document's tables as rows, within ``max_table_cells``."""

    def __init__(self, ctx: ExtractionContext) -> None:
        self.ctx = ctx
        self.results: list[TableResult] = []

    def lines(self, table: Table) -> list[str]:
        """Record the table's rows and return each row as its cell texts joined by `` | ``.

        A merged cell repeats its text in every grid column it spans, as
        python-docx reports it.
        """
        rows = [[" ".join(cell.text.split()) for cell in row.cells] for row in table.rows]
        rows = [row for row in rows if any(row)]
        if self.ctx.budget.take_table_cells(sum(len(row) for row in rows)):
            self.results.append(TableResult(path=self.ctx.table_path, rows=rows))
        else:
            self.results.append(TableResult(path=self.ctx.table_path, truncated=True))
        return [CELL_SEPARATOR.join(row) for row in rows]


def body_texts(document: DocxDocument, tables: DocxTables) -> Iterator[str]:
    from docx.table import Table

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            yield from tables.lines(block)
        else:
            yield block.text
    yield from text_box_texts(document)


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


def header_footer_texts(document: DocxDocument, tables: DocxTables) -> tuple[list[str], list[str]]:
    """Return the distinct header and footer lines of all sections, in section order."""
    from docx.table import Table

    def lines_of(parts: Iterable[Any]) -> list[str]:
        lines: list[str] = []
        for part in parts:
            if part.is_linked_to_previous:
                continue
            for block in part.iter_inner_content():
                if isinstance(block, Table):
                    lines.extend(tables.lines(block))
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
    tables: list[TableResult] = []
    try:
        if not workbook.worksheets:
            return shared_strings_fallback(
                data, mime_type, "openpyxl found no worksheets (Strict OOXML is not supported)"
            )
        for sheet in workbook.worksheets:
            table = TableResult(path=ctx.table_path, sheet=sheet.title)
            tables.append(table)
            lines.append(f"[sheet {sheet.title}]")
            lines.extend(sheet_rows(sheet, table, ctx))
    except LimitExceeded as exc:
        text = "\n".join(lines)
        status = "partial" if text else exc.status
        return Extracted(status=status, mime_type=mime_type, text=text, error=str(exc), tables=tables)
    finally:
        workbook.close()

    return Extracted(status="ok", mime_type=mime_type, text="\n".join(lines), tables=tables)


def sheet_rows(sheet: Any, table: TableResult, ctx: ExtractionContext) -> Iterator[str]:
    """Yield the sheet's non-empty rows as text lines, and keep them as the table's rows.

    The sheet's declared dimension is discarded first: openpyxl would
    otherwise pad every row to the claimed width and stream the claimed
    height, however few rows the sheet stores.
    """
    sheet.reset_dimensions()
    for count, row in enumerate(sheet.iter_rows(values_only=True), start=1):
        if count % ROWS_PER_DEADLINE_CHECK == 0:
            ctx.budget.check()
        cells = [format_cell(value) for value in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue

        line = CELL_SEPARATOR.join(cells)
        ctx.budget.charge_text(len(line))
        if not table.truncated and ctx.budget.take_table_cells(len(cells)):
            table.rows.append(cells)
        else:
            table.truncated = True
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
        status="partial" if strings else "malformed",
        mime_type=mime_type,
        text="\n".join(strings),
        error=error,
    )


def encrypted_office_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Decrypt a password-protected Office file with the first password that fits, then extract it."""
    if not ctx.passwords:
        return Extracted(
            status="encrypted",
            mime_type=mime_type,
            error=f"'{ctx.label}' is a password-protected Office document, and no passwords were passed to try.",
        )

    import msoffcrypto
    from msoffcrypto.exceptions import DecryptionError, FileFormatError, InvalidKeyError

    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))
    for password in ctx.passwords:
        decrypted = io.BytesIO()
        try:
            office_file = msoffcrypto.OfficeFile(io.BytesIO(data))
            office_file.load_key(password=password)
            office_file.decrypt(decrypted)
        except (InvalidKeyError, DecryptionError):
            continue
        except FileFormatError as exc:
            return Extracted(
                status="malformed",
                mime_type=mime_type,
                error=f"Could not read the encryption of '{ctx.label}': {exc}",
            )
        meter.charge(decrypted.tell())
        name = ctx.path[-1] if ctx.path else ctx.filename
        return ctx.extract_node(decrypted.getvalue(), name, None, ctx)

    return Extracted(
        status="encrypted",
        mime_type=mime_type,
        error=(
            f"'{ctx.label}' is a password-protected Office document, and none of the "
            f"{len(ctx.passwords)} passwords opened it."
        ),
    )
