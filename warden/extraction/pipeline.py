"""The extraction pipeline: ``sniff``, then the stage for that kind, recursively for members.

:func:`extract_bytes` runs it in the calling process with the budget limits
only; :func:`warden.extraction.extract_in_sandbox` runs the same function in a
worker process with memory, CPU and wall-clock limits on top.
"""

from __future__ import annotations

import logging
import time

from warden.extraction.archives import compressed_stream_to_text, tar_to_text, zip_to_text
from warden.extraction.budget import ExtractionBudget, LimitExceeded
from warden.extraction.email import email_to_text
from warden.extraction.images import image_to_text
from warden.extraction.nesting import ExtractionContext
from warden.extraction.office import docx_to_text, xlsx_to_text
from warden.extraction.pdf import pdf_to_text
from warden.extraction.rar import rar_to_text
from warden.extraction.results import Extracted, ExtractionResult
from warden.extraction.settings import ExtractionSettings
from warden.extraction.sevenzip import sevenzip_to_text
from warden.extraction.sniff import DocumentKind, Sniffed, hinted_type, sniff
from warden.extraction.text import html_file_to_text, text_file_to_text

__all__ = ["extract_bytes", "extract_node"]

logger = logging.getLogger(__name__)

KIND_LABELS = {
    DocumentKind.PDF: "a PDF",
    DocumentKind.IMAGE: "an image",
    DocumentKind.DOCX: "a DOCX document",
    DocumentKind.XLSX: "an XLSX workbook",
    DocumentKind.EMAIL: "an e-mail",
    DocumentKind.ZIP: "a zip archive",
    DocumentKind.SEVEN_ZIP: "a 7z archive",
    DocumentKind.TAR: "a tar archive",
    DocumentKind.RAR: "a RAR archive",
    DocumentKind.GZIP: "a gzip stream",
    DocumentKind.BZIP2: "a bzip2 stream",
    DocumentKind.XZ: "an xz stream",
    DocumentKind.TEXT: "text",
    DocumentKind.HTML: "HTML",
}
# Hints under which an empty top-level file is an error rather than an empty text.
BINARY_DOCUMENT_HINTS = ("application/pdf", "application/vnd.", "application/msword", "image/")


def extract_bytes(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
) -> ExtractionResult:
    """Extract the text of one attachment in this process.

    Only the budget limits apply (bytes, ratio, entries, depth, text, time
    checked between steps); a parser that hangs or crashes takes the caller
    with it. Use :func:`warden.extraction.extract_in_sandbox` for files from
    outside.
    """
    return run_pipeline(
        data,
        filename=filename,
        declared_type=declared_type,
        settings=settings,
        deadline_seconds=settings.timeout_seconds,
    )


def run_pipeline(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
    deadline_seconds: float,
) -> ExtractionResult:
    """Extract one attachment, stopping new work ``deadline_seconds`` after the start."""
    started = time.monotonic()
    budget = ExtractionBudget(settings, deadline_monotonic=started + deadline_seconds)
    ctx = ExtractionContext(settings=settings, budget=budget, extract_node=extract_node, filename=filename)

    node = extract_node(data, filename, declared_type, ctx)
    text, status, error = node.text, node.status, node.error
    if len(text) > settings.max_text_chars:
        text = text[: settings.max_text_chars]
        if status == "ok":
            status = "partial"
            error = (
                f"The text was cut at max_text_chars={settings.max_text_chars} characters. "
                "Raise max_text_chars in the extraction settings to keep all of it."
            )

    return ExtractionResult(
        status=status,
        mime_type=node.mime_type,
        declared_type=declared_type,
        filename=filename,
        text=text,
        error=error,
        pages=node.pages,
        members=node.members,
        elapsed_seconds=round(time.monotonic() - started, 3),
    )


def extract_node(data: bytes, filename: str | None, declared_type: str | None, ctx: ExtractionContext) -> Extracted:
    """Sniff one file and run its stage, turning every failure into a failed node."""
    sniffed = sniff(data, filename=filename, declared_type=declared_type)
    try:
        ctx.budget.check()
        node = run_stage(data, sniffed, filename, declared_type, ctx)
    except LimitExceeded as exc:
        node = Extracted(status="failed", error=str(exc))
    except MemoryError:
        node = Extracted(
            status="failed",
            error=(
                f"Ran out of memory while extracting '{ctx.label}' as "
                f"{KIND_LABELS.get(sniffed.kind, sniffed.kind.value)} (the sandbox allows "
                f"max_memory_bytes={ctx.settings.max_memory_bytes}). If the file is "
                "legitimate, raise max_memory_bytes in the extraction settings."
            ),
        )
    except Exception as exc:  # third-party parsers raise anything on hostile input
        logger.debug("Stage %s failed on '%s'", sniffed.kind.value, ctx.label, exc_info=True)
        detail = str(exc).rstrip(".")
        node = Extracted(
            status="failed",
            error=(
                f"Could not read '{ctx.label}' as "
                f"{KIND_LABELS.get(sniffed.kind, sniffed.kind.value)}: "
                f"{type(exc).__name__}: {detail}. The file is damaged, or not what its "
                "content suggests."
            ),
        )
    if node.mime_type is None:
        node.mime_type = sniffed.mime_type
    return node


def run_stage(
    data: bytes,
    sniffed: Sniffed,
    filename: str | None,
    declared_type: str | None,
    ctx: ExtractionContext,
) -> Extracted:
    kind, mime_type = sniffed.kind, sniffed.mime_type
    match kind:
        case DocumentKind.PDF:
            return pdf_to_text(data, mime_type, ctx)
        case DocumentKind.IMAGE:
            return image_to_text(data, mime_type, ctx)
        case DocumentKind.DOCX:
            return docx_to_text(data, mime_type, ctx)
        case DocumentKind.XLSX:
            return xlsx_to_text(data, mime_type, ctx)
        case DocumentKind.EMAIL:
            return email_to_text(data, mime_type, ctx)
        case DocumentKind.ZIP:
            return zip_to_text(data, mime_type, ctx)
        case DocumentKind.SEVEN_ZIP:
            return sevenzip_to_text(data, mime_type, ctx)
        case DocumentKind.TAR:
            return tar_to_text(data, mime_type, ctx)
        case DocumentKind.RAR:
            return rar_to_text(data, mime_type, ctx)
        case DocumentKind.GZIP | DocumentKind.BZIP2 | DocumentKind.XZ:
            return compressed_stream_to_text(data, mime_type, kind, filename, ctx)
        case DocumentKind.TEXT:
            return fit_leaf_text(text_file_to_text(data, mime_type), ctx)
        case DocumentKind.HTML:
            return fit_leaf_text(html_file_to_text(data, mime_type), ctx)
        case DocumentKind.EMPTY:
            return empty_file(filename, declared_type, ctx)
        case DocumentKind.ENCRYPTED_OFFICE:
            return Extracted(
                status="encrypted",
                mime_type=mime_type,
                error=(
                    f"'{ctx.label}' is a password-protected Office document; this extractor "
                    "cannot decrypt Office encryption."
                ),
            )
        case _:
            return Extracted(
                status="unsupported",
                mime_type=mime_type,
                error=f"'{ctx.label}' is {mime_type}; {sniffed.reason or 'this type'} cannot be extracted to text.",
            )


def fit_leaf_text(node: Extracted, ctx: ExtractionContext) -> Extracted:
    """Charge a finished node's text to the budget, keeping the part that fits."""
    node.text, cut = ctx.budget.fit_text(node.text)
    if cut is not None:
        node.status = "partial" if node.text else "failed"
        node.error = str(cut)
    return node


def empty_file(filename: str | None, declared_type: str | None, ctx: ExtractionContext) -> Extracted:
    """Fail an empty top-level document; accept empty members (mail clients strip some parts)."""
    hint = hinted_type(filename, declared_type) or ""
    if ctx.depth == 0 and hint.startswith(BINARY_DOCUMENT_HINTS):
        return Extracted(
            status="failed",
            mime_type="application/x-empty",
            error=f"'{ctx.label}' is empty (0 bytes), though it is named or declared as {hint}.",
        )
    return Extracted(status="ok", mime_type="application/x-empty")
