"""Demo attachments and e-mails, generated in code, byte-for-byte the same on every run.

Each :class:`DemoDocument` carries words that its extracted text must contain.
The words are unusual on purpose (made-up codes such as ``ZEPHYR-4471``), so
that finding them is no accident. :func:`build_demo_messages` wraps the
documents in e-mails with fixed ``Message-ID`` and ``Date`` headers, so that
seeding a mailbox twice stores the same messages.

Timestamps that the libraries would take from the clock (PDF creation dates,
zip entry times, Office core properties) are pinned to :data:`DEMO_EPOCH`.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import io
import re
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from fpdf import FPDF

__all__ = ["DEMO_EPOCH", "DemoDocument", "build_demo_documents", "build_demo_messages"]

DEMO_EPOCH = dt.datetime(2024, 3, 4, 9, 30, tzinfo=dt.UTC)
MESSAGE_ID_DOMAIN = "demo.connector-warden.invalid"
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SCAN_FONT_SIZE_PIXELS = 64

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True)
class DemoDocument:
    """One generated attachment and the words its extracted text must contain."""

    filename: str
    content_type: str
    data: bytes
    expected_words: tuple[str, ...]
    description: str


def build_demo_documents() -> list[DemoDocument]:
    """Return the demo attachments: text PDF, table PDF, DOCX, XLSX, scans, a zip and an e-mail."""
    return list(_demo_documents())


@cache
def _demo_documents() -> tuple[DemoDocument, ...]:
    text_pdf = DemoDocument(
        filename="quarterly-report.pdf",
        content_type="application/pdf",
        data=text_pdf_bytes(),
        expected_words=("Quarterly", "ZEPHYR-4471", "Lighthouse"),
        description="PDF with a text layer: a quarterly report (no OCR needed).",
    )
    table_pdf = DemoDocument(
        filename="invoice-table.pdf",
        content_type="application/pdf",
        data=table_pdf_bytes(),
        expected_words=("Invoice", "BLUEFIN-2208", "Gearbox", "1450.00"),
        description="PDF whose content is a ruled table: an invoice with line items.",
    )
    docx_document = DemoDocument(
        filename="project-plan.docx",
        content_type=DOCX_TYPE,
        data=docx_bytes(),
        expected_words=("MARIGOLD-1138", "Milestone", "Kickoff", "Confidential"),
        description="Word document with a header and a milestones table.",
    )
    xlsx_document = DemoDocument(
        filename="budget.xlsx",
        content_type=XLSX_TYPE,
        data=xlsx_bytes(),
        expected_words=("TANGERINE-5590", "Logistics", "Quarterly", "84250"),
        description="Excel workbook with a departmental budget sheet.",
    )
    scanned_png = DemoDocument(
        filename="scanned-receipt.png",
        content_type="image/png",
        data=png_bytes(scan_image(SCANNED_RECEIPT_LINES)),
        expected_words=("Receipt", "KESTREL-3391", "Harbour"),
        description="Scanned receipt as a PNG image: text only readable by OCR.",
    )
    scanned_pdf = DemoDocument(
        filename="scanned-delivery-note.pdf",
        content_type="application/pdf",
        data=scanned_pdf_bytes(),
        expected_words=("Delivery", "OSPREY-6620", "Warehouse"),
        description="PDF of a scanned page: one image, no text layer, so OCR is needed.",
    )
    bundle = DemoDocument(
        filename="document-bundle.zip",
        content_type="application/zip",
        data=zip_bytes(docx_document),
        expected_words=("MARIGOLD-1138", "Milestone", "Bundle", "PELICAN-7702"),
        description="Zip archive holding the project plan DOCX and a manifest text file.",
    )
    forwarded = DemoDocument(
        filename="forwarded-invoice.eml",
        content_type="message/rfc822",
        data=forwarded_message_bytes(table_pdf),
        expected_words=("Forwarded", "HERON-9154", "BLUEFIN-2208"),
        description="E-mail (message/rfc822) that carries the invoice PDF as an attachment.",
    )
    return (
        text_pdf,
        table_pdf,
        docx_document,
        xlsx_document,
        scanned_png,
        scanned_pdf,
        bundle,
        forwarded,
    )


def new_pdf() -> FPDF:
    """Return an A4 fpdf2 document whose creation date is pinned to :data:`DEMO_EPOCH`."""
    from fpdf import FPDF  # fpdf2 is installed with the "demo" extra only

    pdf = FPDF(format="A4")
    pdf.set_creation_date(DEMO_EPOCH)
    pdf.set_creator("Connector Warden demo")
    pdf.set_auto_page_break(auto=True, margin=15)
    return pdf


def text_pdf_bytes() -> bytes:
    pdf = new_pdf()
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=20)
    pdf.cell(text="Quarterly Report - Lighthouse Division", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", size=12)
    paragraphs = (
        "This quarterly report summarises the work of the Lighthouse division.",
        "Revenue grew by eleven percent against the previous quarter, driven by the "
        "renewal of the maintenance contract with reference ZEPHYR-4471.",
        "Headcount stayed flat; the next review is scheduled for the first week of April.",
    )
    for paragraph in paragraphs:
        pdf.multi_cell(w=0, text=paragraph, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
    return bytes(pdf.output())


INVOICE_ROWS = (
    ("Item", "Quantity", "Unit price", "Amount"),
    ("Gearbox", "2", "725.00", "1450.00"),
    ("Bearing set", "10", "12.50", "125.00"),
    ("Service visit", "1", "300.00", "300.00"),
)


def table_pdf_bytes() -> bytes:
    pdf = new_pdf()
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=18)
    pdf.cell(text="Invoice BLUEFIN-2208", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", size=12)
    with pdf.table(first_row_as_headings=True) as table:
        for values in INVOICE_ROWS:
            row = table.row()
            for value in values:
                row.cell(value)
    pdf.ln(4)
    pdf.cell(text="Total due: 1875.00 EUR within 30 days.", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    properties = document.core_properties
    properties.author = "Connector Warden demo"
    properties.created = DEMO_EPOCH.replace(tzinfo=None)
    properties.modified = DEMO_EPOCH.replace(tzinfo=None)
    properties.last_printed = DEMO_EPOCH.replace(tzinfo=None)
    properties.revision = 1

    document.sections[0].header.paragraphs[0].text = "Confidential - Project MARIGOLD-1138"
    document.add_heading("Project plan", level=1)
    document.add_paragraph("The plan below lists each milestone of the migration project.")
    table = document.add_table(rows=1, cols=3)
    table.style = "Table Grid"
    for cell, heading in zip(table.rows[0].cells, ("Milestone", "Owner", "Due"), strict=True):
        cell.text = heading
    for milestone in (("Kickoff", "Amira", "2024-03-11"), ("Cutover", "Jonas", "2024-05-20")):
        cells = table.add_row().cells
        for cell, value in zip(cells, milestone, strict=True):
            cell.text = value

    buffer = io.BytesIO()
    document.save(buffer)
    return pin_zip_timestamps(buffer.getvalue())


def xlsx_bytes() -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.properties.creator = "Connector Warden demo"
    workbook.properties.created = DEMO_EPOCH.replace(tzinfo=None)
    workbook.properties.modified = DEMO_EPOCH.replace(tzinfo=None)
    sheet = workbook.active
    sheet.title = "Quarterly budget"
    sheet.append(["Department", "Budget code", "Amount"])
    sheet.append(["Logistics", "TANGERINE-5590", 84250])
    sheet.append(["Research", "TANGERINE-5591", 61200])
    sheet.append(["Facilities", "TANGERINE-5592", 23975])

    buffer = io.BytesIO()
    workbook.save(buffer)
    return pin_zip_timestamps(buffer.getvalue())


SCANNED_RECEIPT_LINES = (
    "Harbour Supplies Ltd",
    "Receipt KESTREL-3391",
    "Total paid 42.80 EUR",
)
SCANNED_DELIVERY_LINES = (
    "Delivery note",
    "Order OSPREY-6620",
    "Warehouse gate 7",
)


def scan_image(lines: tuple[str, ...]) -> Image.Image:
    """Render lines of black text on a white page, large and clear enough for tesseract."""
    font = scan_font()
    line_height = SCAN_FONT_SIZE_PIXELS * 2
    image = Image.new("L", (1700, 120 + line_height * len(lines)), color=255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((80, 60 + number * line_height), line, fill=0, font=font)
    return image


def scan_font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if DEJAVU_SANS.exists():
        return ImageFont.truetype(str(DEJAVU_SANS), SCAN_FONT_SIZE_PIXELS)
    return ImageFont.load_default(size=SCAN_FONT_SIZE_PIXELS)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def scanned_pdf_bytes() -> bytes:
    """Return a one-page PDF that holds only a picture of text, as a scanner makes it."""
    image = scan_image(SCANNED_DELIVERY_LINES)
    pdf = new_pdf()
    pdf.add_page()
    width_mm = 180
    pdf.image(image, x=15, y=20, w=width_mm, h=width_mm * image.height / image.width)
    return bytes(pdf.output())


def fixed_zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=DEMO_EPOCH.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


CORE_MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")


def pin_zip_timestamps(data: bytes) -> bytes:
    """Rewrite an OOXML package with every entry and its modified date set to :data:`DEMO_EPOCH`.

    openpyxl stamps ``dcterms:modified`` with the current time on every save,
    whatever the workbook's properties contain.
    """
    epoch = DEMO_EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ").encode("ascii")
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "docProps/core.xml":
                content = CORE_MODIFIED.sub(rb"\g<1>" + epoch + rb"\g<2>", content)
            target.writestr(fixed_zip_info(info.filename), content)
    return buffer.getvalue()


def zip_bytes(docx_document: DemoDocument) -> bytes:
    manifest = f"Bundle manifest PELICAN-7702\n1. {docx_document.filename}: {docx_document.description}\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(fixed_zip_info("bundle/MANIFEST.txt"), manifest)
        archive.writestr(fixed_zip_info(f"bundle/{docx_document.filename}"), docx_document.data)
    return buffer.getvalue()


def forwarded_message_bytes(invoice: DemoDocument) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Accounts Payable <accounts@supplier.example>"
    message["To"] = "Purchasing <purchasing@customer.example>"
    message["Subject"] = "Forwarded invoice HERON-9154"
    message["Date"] = format_datetime(DEMO_EPOCH)
    message["Message-ID"] = f"<forwarded-invoice@{MESSAGE_ID_DOMAIN}>"
    message.set_content("Forwarded for approval: the invoice for purchase order HERON-9154 is attached.\n")
    maintype, subtype = invoice.content_type.split("/", 1)
    message.add_attachment(invoice.data, maintype=maintype, subtype=subtype, filename=invoice.filename)
    pin_boundaries(message, "forwarded-invoice")
    return message.as_bytes()


def pin_boundaries(message: EmailMessage, slug: str) -> None:
    """Give every multipart part a fixed boundary; the email package draws random ones."""
    for number, part in enumerate(message.walk()):
        if part.get_content_maintype() == "multipart":
            part.set_boundary(f"==demo-{slug}-{number}==")


@dataclass(frozen=True)
class DemoMessagePlan:
    """Subject, body and attached demo documents of one demo e-mail."""

    slug: str
    subject: str
    body: str
    attachments: tuple[str, ...] = ()
    html: bool = False


DEMO_MESSAGE_PLANS = (
    DemoMessagePlan(
        "welcome",
        "Welcome to the demo mailbox",
        "This mailbox holds generated messages for trying Connector Warden.",
    ),
    DemoMessagePlan(
        "quarterly-report",
        "Quarterly report for the Lighthouse division",
        "Please find the quarterly report attached.",
        ("quarterly-report.pdf",),
    ),
    DemoMessagePlan(
        "invoice",
        "Invoice BLUEFIN-2208",
        "Our invoice is attached; payment is due within 30 days.",
        ("invoice-table.pdf",),
    ),
    DemoMessagePlan(
        "project-plan",
        "Project plan, revision 1",
        "Here is the current project plan with its milestones.",
        ("project-plan.docx",),
    ),
    DemoMessagePlan(
        "budget",
        "Budget spreadsheet",
        "The departmental budget is in the attached workbook.",
        ("budget.xlsx",),
    ),
    DemoMessagePlan(
        "receipt-scan",
        "Scanned receipt",
        "Scan of the receipt from Harbour Supplies.",
        ("scanned-receipt.png",),
    ),
    DemoMessagePlan(
        "delivery-scan",
        "Scanned delivery note",
        "The warehouse scanned the delivery note.",
        ("scanned-delivery-note.pdf",),
    ),
    DemoMessagePlan(
        "bundle",
        "Document bundle",
        "All project documents in one archive.",
        ("document-bundle.zip",),
    ),
    DemoMessagePlan(
        "forwarded",
        "Fwd: Forwarded invoice HERON-9154",
        "See the message below, attached as it arrived.",
        ("forwarded-invoice.eml",),
    ),
    DemoMessagePlan(
        "several",
        "Documents for the quarterly review",
        "Report, budget and plan for Thursday's review.",
        ("quarterly-report.pdf", "budget.xlsx", "project-plan.docx"),
    ),
    DemoMessagePlan(
        "meeting-notes",
        "Meeting notes",
        "Notes: agreed to move the cutover to May; Jonas sends the updated plan.",
    ),
    DemoMessagePlan(
        "lunch",
        "Lunch on Friday?",
        "Shall we try the new place by the harbour on Friday at noon?",
        html=True,
    ),
)


def build_demo_messages(to_address: str, from_address: str) -> list[EmailMessage]:
    """Return twelve e-mails, some plain and some carrying the demo documents.

    Each message has a fixed ``Message-ID`` and ``Date``, so storing them
    twice is a no-op for any store that deduplicates on the Message-ID.
    """
    documents = {document.filename: document for document in build_demo_documents()}
    messages = []
    for number, plan in enumerate(DEMO_MESSAGE_PLANS, start=1):
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = from_address
        message["To"] = to_address
        message["Subject"] = plan.subject
        message["Date"] = format_datetime(DEMO_EPOCH + dt.timedelta(hours=number))
        message["Message-ID"] = f"<demo-{number:02d}-{plan.slug}@{MESSAGE_ID_DOMAIN}>"
        message.set_content(plan.body + "\n")
        if plan.html:
            message.add_alternative(f"<html><body><p>{plan.body}</p></body></html>\n", subtype="html")
        for filename in plan.attachments:
            attach_document(message, documents[filename])
        pin_boundaries(message, plan.slug)
        messages.append(message)
    return messages


def attach_document(message: EmailMessage, document: DemoDocument) -> None:
    if document.content_type == "message/rfc822":
        inner = email.message_from_bytes(document.data, policy=email.policy.SMTP)
        message.add_attachment(inner, filename=document.filename)
        return
    maintype, subtype = document.content_type.split("/", 1)
    message.add_attachment(document.data, maintype=maintype, subtype=subtype, filename=document.filename)
