"""Stage ``sniff``: decide what a file is from its bytes, with its name and declared type as hints.

libmagic (python-magic, the ``magic`` extra) makes the first guess. Without
it, :mod:`warden.extraction.signatures` matches the leading bytes of the
formats this package reads. Two cases need a second look:

* zip packages: libmagic recognizes OOXML from the names and order of the
  first entries only, and reports other DOCX files as ``application/zip`` or
  ``application/octet-stream``. So the central directory is read to tell
  DOCX, XLSX, PPTX and ODF from a plain zip.
* e-mails: a message whose first header libmagic does not recognize comes back
  as ``text/plain`` or ``text/html``, so the header block is checked by hand.

The file name and declared type only decide between formats when the content
is inconclusive (``application/octet-stream``, or text that may be an e-mail).
"""

from __future__ import annotations

import io
import mimetypes
import re
import zipfile
from dataclasses import dataclass
from enum import StrEnum

from warden.extraction.signatures import content_type_from_signature

try:
    import magic
except ImportError:  # the `magic` extra is not installed, or libmagic itself is missing
    magic = None

__all__ = ["DocumentKind", "Sniffed", "content_type", "sniff"]

MAGIC_PREFIX_BYTES = 1024 * 1024
# Self-extracting RAR archives put the archive after a stub of at most a few megabytes.
RAR_SIGNATURE = b"Rar!\x1a\x07"
MAX_SFX_STUB_BYTES = 4 * 1024 * 1024


class DocumentKind(StrEnum):
    """Kind of document, which selects the extraction stage."""

    EMPTY = "empty"
    PDF = "pdf"
    IMAGE = "image"
    DOCX = "docx"
    XLSX = "xlsx"
    EMAIL = "email"
    ZIP = "zip"
    SEVEN_ZIP = "7z"
    TAR = "tar"
    RAR = "rar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    TEXT = "text"
    HTML = "html"
    ENCRYPTED_OFFICE = "encrypted-office"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Sniffed:
    """The outcome of sniffing: the content type and the stage that handles it."""

    mime_type: str
    kind: DocumentKind
    reason: str = ""


DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX_MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSB_MIME = "application/vnd.ms-excel.sheet.binary.macroEnabled.12"

IMAGE_MIMES = {
    "image/png",
    "image/jpeg",
    "image/tiff",
    "image/bmp",
    "image/x-ms-bmp",
    "image/gif",
    "image/webp",
    "image/x-portable-pixmap",
    "image/x-portable-greymap",
    "image/x-portable-bitmap",
}

KIND_BY_MIME = {
    "application/pdf": DocumentKind.PDF,
    "application/x-pdf": DocumentKind.PDF,
    "application/x-7z-compressed": DocumentKind.SEVEN_ZIP,
    "application/x-rar": DocumentKind.RAR,
    "application/vnd.rar": DocumentKind.RAR,
    "application/x-rar-compressed": DocumentKind.RAR,
    "application/x-tar": DocumentKind.TAR,
    "application/x-gtar": DocumentKind.TAR,
    "application/gzip": DocumentKind.GZIP,
    "application/x-gzip": DocumentKind.GZIP,
    "application/x-bzip2": DocumentKind.BZIP2,
    "application/x-xz": DocumentKind.XZ,
    "message/rfc822": DocumentKind.EMAIL,
    "message/news": DocumentKind.EMAIL,
    "application/xhtml+xml": DocumentKind.HTML,
    "application/json": DocumentKind.TEXT,
    "application/xml": DocumentKind.TEXT,
    "application/csv": DocumentKind.TEXT,
    "application/encrypted": DocumentKind.ENCRYPTED_OFFICE,
}

# Types libmagic reports for OLE2 (Compound File) documents: legacy Word,
# Excel, PowerPoint and Outlook files, none of which this package reads.
LEGACY_OFFICE_MIMES = {
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.ms-outlook",
    "application/x-ole-storage",
    "application/CDFV2",
    "application/x-msi",
}

ZIP_MIMES = {
    "application/zip",
    "application/x-zip-compressed",
    "application/java-archive",
    DOCX_MIME,
    XLSX_MIME,
    PPTX_MIME,
}

EMAIL_HEADER_NAMES = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "received",
    "return-path",
    "delivered-to",
    "content-type",
    "x-mailer",
}
HEADER_LINE = re.compile(rb"^([!-9;-~]+):[ \t]?")
EMAIL_HINT_TYPES = {"message/rfc822", "message/news"}

mimetypes.add_type("message/rfc822", ".eml")
mimetypes.add_type("application/vnd.ms-outlook", ".msg")


def sniff(data: bytes, *, filename: str | None, declared_type: str | None) -> Sniffed:
    """Return the content type of ``data`` and the stage that extracts it."""
    hint = hinted_type(filename, declared_type)
    if not data:
        return Sniffed("application/x-empty", DocumentKind.EMPTY)

    prefix = data[:MAGIC_PREFIX_BYTES]
    mime_type = content_type(prefix)

    if mime_type in ZIP_MIMES or prefix.startswith(b"PK\x03\x04"):
        return sniff_zip_package(data, mime_type)
    if mime_type.startswith("image/"):
        if mime_type in IMAGE_MIMES:
            return Sniffed(mime_type, DocumentKind.IMAGE)
        return Sniffed(mime_type, DocumentKind.UNSUPPORTED, f"images of type {mime_type}")
    if mime_type in KIND_BY_MIME:
        return Sniffed(mime_type, KIND_BY_MIME[mime_type])
    if mime_type.startswith("text/"):
        return sniff_text(prefix, mime_type, hint)
    if mime_type in LEGACY_OFFICE_MIMES:
        return Sniffed(mime_type, DocumentKind.UNSUPPORTED, "legacy Office (OLE2) documents")
    if b"%PDF-" in prefix[:1024]:
        return Sniffed("application/pdf", DocumentKind.PDF)
    if mime_type in ("application/octet-stream", "application/x-dosexec"):
        return sniff_opaque(data, mime_type, hint)
    return Sniffed(mime_type, DocumentKind.UNSUPPORTED, f"files of type {mime_type}")


def content_type(prefix: bytes) -> str:
    """Return the MIME type of a file from its first bytes: from libmagic, or from the built-in signatures."""
    if magic is None:
        return content_type_from_signature(prefix)
    try:
        return magic.from_buffer(prefix, mime=True) or "application/octet-stream"
    except magic.MagicException:
        return "application/octet-stream"


def hinted_type(filename: str | None, declared_type: str | None) -> str | None:
    """Return the declared type, or else the type that the file name's extension suggests."""
    if declared_type:
        base = declared_type.split(";", 1)[0].strip().lower()
        if base and base != "application/octet-stream":
            return base
    if filename:
        guessed, _ = mimetypes.guess_type(filename, strict=False)
        return guessed
    return None


def sniff_zip_package(data: bytes, mime_type: str) -> Sniffed:
    """Tell OOXML and ODF packages from plain zips by the parts they contain."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        # Not readable as a zip: a split-archive segment, or damaged. The zip
        # stage reports why.
        return Sniffed(mime_type, DocumentKind.ZIP)

    if "[Content_Types].xml" in names:
        if "word/document.xml" in names:
            return Sniffed(DOCX_MIME, DocumentKind.DOCX)
        if "xl/workbook.xml" in names:
            return Sniffed(XLSX_MIME, DocumentKind.XLSX)
        if "xl/workbook.bin" in names:
            return Sniffed(XLSB_MIME, DocumentKind.UNSUPPORTED, "binary Excel workbooks (XLSB)")
        if "ppt/presentation.xml" in names:
            return Sniffed(PPTX_MIME, DocumentKind.UNSUPPORTED, "PowerPoint presentations")
    if "mimetype" in names and "content.xml" in names:
        odf_type = (
            mime_type if mime_type.startswith("application/vnd.oasis") else ("application/vnd.oasis.opendocument")
        )
        return Sniffed(odf_type, DocumentKind.UNSUPPORTED, "OpenDocument files")
    return Sniffed("application/zip", DocumentKind.ZIP)


def sniff_text(prefix: bytes, mime_type: str, hint: str | None) -> Sniffed:
    """Classify text as an e-mail, HTML, or plain text."""
    if looks_like_email(prefix, hint_is_email=hint in EMAIL_HINT_TYPES):
        return Sniffed("message/rfc822", DocumentKind.EMAIL)
    if mime_type == "text/html":
        return Sniffed(mime_type, DocumentKind.HTML)
    return Sniffed(mime_type, DocumentKind.TEXT)


def looks_like_email(prefix: bytes, *, hint_is_email: bool) -> bool:
    """Return True when ``prefix`` starts with an RFC 5322 header block.

    The block must end in a blank line and name at least two well-known
    headers, or one when the name or declared type already indicates e-mail. An
    mbox ``From `` separator line before the headers is allowed.
    """
    lines = prefix[: 64 * 1024].splitlines()
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]

    known = 0
    header_lines = 0
    for line in lines:
        if not line.strip():
            break
        if line[:1] in (b" ", b"\t"):
            if header_lines == 0:
                return False
            continue
        match = HEADER_LINE.match(line)
        if match is None:
            return False
        header_lines += 1
        if match.group(1).decode("ascii").lower() in EMAIL_HEADER_NAMES:
            known += 1
    else:
        return False

    return known >= (1 if hint_is_email else 2)


def sniff_opaque(data: bytes, mime_type: str, hint: str | None) -> Sniffed:
    """Look for a RAR archive behind an executable stub, then fall back to the hints."""
    if RAR_SIGNATURE in data[:MAX_SFX_STUB_BYTES]:
        return Sniffed("application/x-rar", DocumentKind.RAR, "RAR after an executable stub")

    if hint == "application/pdf":
        return Sniffed(mime_type, DocumentKind.PDF, "named or declared as PDF")
    if hint is not None and hint.startswith("text/") and looks_like_text(data):
        # libmagic returns octet-stream for text too short to judge (a few bytes).
        return Sniffed(hint, DocumentKind.TEXT, "named or declared as text")
    return Sniffed(mime_type, DocumentKind.UNSUPPORTED, "files of unknown binary type")


def looks_like_text(data: bytes) -> bool:
    sample = data[:8192]
    if b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 3  # a character cut at the end of the sample
    return True
