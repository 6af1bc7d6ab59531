"""The extraction pipeline: ``sniff``, then the stage for that kind, recursively for members.

:func:`extract_bytes` runs it in the calling process with the budget limits
only; :func:`warden.extraction.extract_in_sandbox` runs the same function in a
worker process with memory, CPU and wall-clock limits on top.

Each stage module is imported when the first file of its kind arrives, so a
missing optional package (see :mod:`warden.extraction.extras`) only makes
that kind ``unsupported``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import SecretStr

from warden.extraction.budget import ExtractionBudget, LimitExceeded
from warden.extraction.extras import MissingExtra, missing_extra
from warden.extraction.nesting import ExtractionContext
from warden.extraction.results import Extracted, ExtractionResult
from warden.extraction.settings import ExtractionSettings
from warden.extraction.sniff import DocumentKind, Sniffed, hinted_type, sniff
from warden.extraction.text import html_file_to_text, text_file_to_text

__all__ = ["EXTRACTOR_VERSION", "extract_bytes", "extract_node"]

logger = logging.getLogger(__name__)

# Raise when a change makes results of earlier versions worth extracting again
# (a new format, better OCR); stored results carry the version that made them.
EXTRACTOR_VERSION = 2

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
    DocumentKind.ENCRYPTED_OFFICE: "an encrypted Office document",
}
# Stage of each kind: (module, function). The function takes (data, mime_type, ctx).
STAGES = {
    DocumentKind.PDF: ("warden.extraction.pdf", "pdf_to_text"),
    DocumentKind.IMAGE: ("warden.extraction.images", "image_to_text"),
    DocumentKind.DOCX: ("warden.extraction.office", "docx_to_text"),
    DocumentKind.XLSX: ("warden.extraction.office", "xlsx_to_text"),
    DocumentKind.ENCRYPTED_OFFICE: ("warden.extraction.office", "encrypted_office_to_text"),
    DocumentKind.EMAIL: ("warden.extraction.email", "email_to_text"),
    DocumentKind.ZIP: ("warden.extraction.archives", "zip_to_text"),
    DocumentKind.TAR: ("warden.extraction.archives", "tar_to_text"),
    DocumentKind.SEVEN_ZIP: ("warden.extraction.sevenzip", "sevenzip_to_text"),
    DocumentKind.RAR: ("warden.extraction.rar", "rar_to_text"),
}
COMPRESSED_STREAMS = (DocumentKind.GZIP, DocumentKind.BZIP2, DocumentKind.XZ)
# Hints under which an empty top-level file is an error rather than an empty text.
BINARY_DOCUMENT_HINTS = ("application/pdf", "application/vnd.", "application/msword", "image/")


def extract_bytes(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
    passwords: Sequence[SecretStr] = (),
) -> ExtractionResult:
    """Extract the text of one attachment in this process.

    ``passwords`` are tried, in order, on encrypted PDFs, archives and Office
    documents; pass them from the vault, never from a Block.

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
        passwords=tuple(secret.get_secret_value() for secret in passwords),
        deadline_seconds=settings.timeout_seconds,
    )


def run_pipeline(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None,
    settings: ExtractionSettings,
    passwords: tuple[str, ...],
    deadline_seconds: float,
) -> ExtractionResult:
    """Extract one attachment, stopping new work ``deadline_seconds`` after the start."""
    started = time.monotonic()
    budget = ExtractionBudget(settings, deadline_monotonic=started + deadline_seconds)
    ctx = ExtractionContext(
        settings=settings, budget=budget, extract_node=extract_node, filename=filename, passwords=passwords
    )

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
        tables=node.tables,
        members=node.members,
        deferred=budget.deferred_pages > 0,
        usage=budget.usage(),
        extractor_version=EXTRACTOR_VERSION,
        elapsed_seconds=round(time.monotonic() - started, 3),
    )


def extract_node(data: bytes, filename: str | None, declared_type: str | None, ctx: ExtractionContext) -> Extracted:
    """Sniff one file and run its stage, turning every failure into a node with the reason."""
    ctx.budget.note_depth(ctx.depth)
    sniffed = sniff(data, filename=filename, declared_type=declared_type)
    kind_label = KIND_LABELS.get(sniffed.kind, sniffed.kind.value)
    try:
        ctx.budget.check()
        node = run_stage(data, sniffed, filename, declared_type, ctx)
    except LimitExceeded as exc:
        node = Extracted(status=exc.status, error=str(exc))
    except MissingExtra as exc:
        node = Extracted(status="unsupported", error=f"Cannot read '{ctx.label}' as {kind_label}: {exc}.")
    except MemoryError:
        node = Extracted(
            status="too_large",
            error=(
                f"Ran out of memory while extracting '{ctx.label}' as {kind_label} (the sandbox "
                f"allows max_memory_bytes={ctx.settings.max_memory_bytes}). If the file is "
                "legitimate, raise max_memory_bytes in the extraction settings."
            ),
        )
    except ImportError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        node = Extracted(status="unsupported", error=f"Cannot read '{ctx.label}' as {kind_label}: {extra}.")
    except Exception as exc:  # third-party parsers raise anything on hostile input
        logger.debug("Stage %s failed on '%s'", sniffed.kind.value, ctx.label, exc_info=True)
        detail = str(exc).rstrip(".")
        node = Extracted(
            status="malformed",
            error=(
                f"Could not read '{ctx.label}' as {kind_label}: {type(exc).__name__}: {detail}. "
                "The file is damaged, or not what its content suggests."
            ),
        )
    if node.mime_type is None:
        node.mime_type = sniffed.mime_type
    return node


def load_stage(kind: DocumentKind) -> Callable[..., Extracted]:
    """Import the stage for ``kind``; an ImportError here names a missing optional package."""
    module_name, function_name = STAGES[kind]
    module: Any = importlib.import_module(module_name)
    return getattr(module, function_name)


def run_stage(
    data: bytes,
    sniffed: Sniffed,
    filename: str | None,
    declared_type: str | None,
    ctx: ExtractionContext,
) -> Extracted:
    kind, mime_type = sniffed.kind, sniffed.mime_type
    if kind in STAGES:
        return load_stage(kind)(data, mime_type, ctx)
    if kind in COMPRESSED_STREAMS:
        from warden.extraction.archives import compressed_stream_to_text

        return compressed_stream_to_text(data, mime_type, kind, filename, ctx)

    match kind:
        case DocumentKind.TEXT:
            return fit_leaf_text(text_file_to_text(data, mime_type), ctx)
        case DocumentKind.HTML:
            return fit_leaf_text(html_file_to_text(data, mime_type), ctx)
        case DocumentKind.EMPTY:
            return empty_file(filename, declared_type, ctx)
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
        node.status = "partial" if node.text else cut.status
        node.error = str(cut)
    return node


def empty_file(filename: str | None, declared_type: str | None, ctx: ExtractionContext) -> Extracted:
    """Reject an empty top-level document; accept empty members (mail clients strip some parts)."""
    hint = hinted_type(filename, declared_type) or ""
    if ctx.depth == 0 and hint.startswith(BINARY_DOCUMENT_HINTS):
        return Extracted(
            status="malformed",
            mime_type="application/x-empty",
            error=f"'{ctx.label}' is empty (0 bytes), though it is named or declared as {hint}.",
        )
    return Extracted(status="ok", mime_type="application/x-empty")
