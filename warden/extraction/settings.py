"""The one settings object that every extraction stage reads.

The settings hold limits and switches only, never a password: they are safe
to keep in an account Block or a deployment's parameters. Passwords for
encrypted files come from the vault and go to ``extract_bytes`` or
``extract_in_sandbox`` as their own argument.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExtractionSettings"]

MIB = 1024 * 1024


class ExtractionSettings(BaseModel):
    """Limits and options for turning one attachment into text.

    The defaults suit e-mail attachments of up to a few tens of megabytes. The
    resource limits apply to :func:`warden.extraction.extract_in_sandbox`; the
    budget limits (bytes, ratio, entries, depth, text) apply in-process too.

    Example::

        from warden.extraction import ExtractionSettings

        settings = ExtractionSettings(timeout_seconds=60, ocr_max_pages=5)
        # During a sync: read text layers now, leave OCR to the background flow.
        sync_settings = settings.model_copy(update={"defer_ocr": True})
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_memory_bytes: int = Field(
        default=1024 * MIB,
        ge=64 * MIB,
        description="Address-space limit (RLIMIT_AS) of the sandboxed worker process, in bytes.",
    )
    fork_server: bool = Field(
        default=True,
        description=(
            "Whether sandboxed workers are forked from a process that has the readers loaded, which saves "
            "0.2 to 0.4 s of CPU per attachment. A max_memory_bytes smaller than that process's address space "
            "plus 256 MiB starts a new interpreter per attachment instead, as does False."
        ),
    )
    max_cpu_seconds: int = Field(
        default=120,
        gt=0,
        description=(
            "CPU-time limit (RLIMIT_CPU) of the sandboxed worker and, separately, of each tool "
            "it starts (bsdtar, tesseract), in seconds."
        ),
    )
    timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Wall-clock limit for one attachment, in seconds. The sandbox kills the worker's "
            "whole process group when it runs out; the worker itself stops starting new work "
            "shortly before, so that it can still return what it has."
        ),
    )
    max_output_bytes: int = Field(
        default=64 * MIB,
        gt=0,
        description="Largest JSON result that the sandboxed worker may send back, in bytes.",
    )
    max_text_chars: int = Field(
        default=16_000_000,
        gt=0,
        description=(
            "Text kept for one attachment, nested files included, in characters. Extraction "
            "stops when it is reached and the result is marked partial."
        ),
    )
    max_total_bytes: int = Field(
        default=256 * MIB,
        gt=0,
        description=(
            "Bytes decompressed across all nesting levels for one top-level attachment "
            "(archive members, compressed streams, OOXML parts), in bytes."
        ),
    )
    max_compression_ratio: float = Field(
        default=100.0,
        gt=1,
        description=(
            "Largest ratio of bytes decompressed from one container (archive, compressed "
            "stream, OOXML package) to the container's own size."
        ),
    )
    compression_ratio_floor_bytes: int = Field(
        default=1 * MIB,
        ge=0,
        description=(
            "Bytes a container may decompress before max_compression_ratio is checked, so "
            "that small, highly compressible files pass, in bytes."
        ),
    )
    max_entries: int = Field(
        default=10_000,
        gt=0,
        description=("Archive members and e-mail parts counted across all nesting levels, in entries."),
    )
    max_depth: int = Field(
        default=8,
        ge=0,
        description=(
            "Nesting levels below the top-level attachment (an archive in an e-mail is "
            "level 1, its members level 2), in levels."
        ),
    )
    ocr_enabled: bool = Field(
        default=True,
        description="Whether images and PDF pages without a text layer are read with tesseract.",
    )
    ocr_max_pages: int = Field(
        default=20,
        ge=0,
        description="Pages or image frames sent to OCR for one attachment, in pages.",
    )
    ocr_max_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Wall-clock time tesseract may spend on one attachment, in seconds. Pages left "
            "when it runs out are skipped and the result is partial."
        ),
    )
    defer_ocr: bool = Field(
        default=False,
        description=(
            "Whether pages and images that need OCR are left for background extraction: they "
            "are recorded with the method 'deferred' and the result's 'deferred' flag is set."
        ),
    )
    ocr_language: str = Field(
        default="eng",
        pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract language codes joined with '+', e.g. 'eng' or 'eng+deu'.",
    )
    ocr_min_text_chars: int = Field(
        default=10,
        ge=0,
        description=(
            "A PDF page whose text layer has this many non-whitespace characters or fewer "
            "counts as having no text and is sent to OCR, in characters."
        ),
    )
    ocr_max_unmapped_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description=(
            "A PDF page on which at least this fraction of the characters sampled from its text "
            "layer have no Unicode mapping counts as having no text and is sent to OCR. PDFium "
            "flags the characters of fonts without a ToUnicode map even where its fallback text "
            "is right (88 % of a Polish invoice with an Identity CMap), so the default only "
            "sends pages on which every sampled character is flagged."
        ),
    )
    ocr_dpi: int = Field(
        default=300,
        ge=72,
        le=600,
        description="Resolution at which PDF pages are rendered for OCR, in dots per inch.",
    )
    ocr_max_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description=("Largest image handed to tesseract, in pixels; larger renders and images are scaled down to fit."),
    )
    pdf_table_max_pages: int = Field(
        default=50,
        ge=0,
        description="Pages of one PDF searched for tables with pdfplumber, in pages.",
    )
    max_table_cells: int = Field(
        default=200_000,
        ge=0,
        description=(
            "Table cells kept as rows in the result for one attachment, in cells. Tables past it "
            "are marked truncated; their text is kept all the same."
        ),
    )
    background_priority: bool = Field(
        default=False,
        description=(
            "Whether the sandboxed worker runs at the lowest CPU priority (nice 19) and in the "
            "idle I/O class, so that it only uses what other programs leave."
        ),
    )
