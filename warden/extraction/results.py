"""Extraction results: the public result models and the per-file node that stages build.

Status values, from best to worst for the caller:

``ok``
    All content of the file was turned into text (members of an
    unsupported type are listed but do not count against it).
``partial``
    Some text came out, but part of the file did not: a member failed, a limit
    stopped the work, or pages were left without OCR (``deferred`` tells
    whether background extraction will come back for them).
``encrypted``
    The content is encrypted and none of the passwords passed in opened it.
``unsupported``
    The format is known but not extracted (legacy Office, HEIC, audio...), or
    the optional package that reads it is not installed.
``too_large``
    A size limit stopped the work before any text: bytes decompressed,
    compression ratio, entries, depth, text, memory or output size.
``malformed``
    The file is damaged, hostile, or not what its content suggests, so no
    parser could read it; or a parser crashed on it.
``timeout``
    The wall-clock or CPU-time limit stopped the work before any text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "FAILURE_STATUSES",
    "BudgetUsage",
    "ExtractionResult",
    "ExtractionStatus",
    "MemberResult",
    "PageMethod",
    "PageResult",
    "TableResult",
]

ExtractionStatus = Literal["ok", "partial", "encrypted", "unsupported", "too_large", "malformed", "timeout"]
PageMethod = Literal["text", "ocr", "skipped", "deferred"]

# Statuses of a file from which nothing usable came out.
FAILURE_STATUSES: frozenset[str] = frozenset({"too_large", "malformed", "timeout"})
# Statuses that lower the status of the archive or e-mail that contains the file.
INCOMPLETE_STATUSES: frozenset[str] = FAILURE_STATUSES | {"partial", "encrypted"}


class PageResult(BaseModel):
    """One page of a PDF, or one frame of an image."""

    number: int = Field(description="Page number, starting at 1.")
    method: PageMethod = Field(
        description=(
            "How the page became text: its text layer, OCR, not at all (skipped), or not yet "
            "because OCR was left to background extraction (deferred)."
        )
    )
    chars: int = Field(description="Characters of text taken from the page, its tables included.")
    text_layer_chars: int = Field(
        default=0, description="Non-whitespace characters in the page's text layer; 0 for images."
    )
    ocr_seconds: float = Field(default=0.0, description="Wall-clock seconds tesseract spent on the page.")


class TableResult(BaseModel):
    """One table, as rows of cell texts."""

    path: str = Field(default="", description="Member path of the file that holds the table; '' for the attachment.")
    page: int | None = Field(default=None, description="PDF page number, starting at 1.")
    sheet: str | None = Field(default=None, description="Worksheet name, for spreadsheets.")
    rows: list[list[str]] = Field(default_factory=list)
    truncated: bool = Field(default=False, description="True when max_table_cells cut the rows short.")


class BudgetUsage(BaseModel):
    """Budget use of one attachment, across all nesting levels."""

    bytes_written: int = Field(default=0, description="Bytes decompressed from archives, streams and packages.")
    entries: int = Field(default=0, description="Archive members and e-mail parts counted.")
    max_depth: int = Field(default=0, description="Deepest nesting level reached; the attachment is level 0.")
    text_chars: int = Field(default=0, description="Characters of text kept.")
    ocr_pages: int = Field(default=0, description="Pages and image frames sent to tesseract.")
    ocr_seconds: float = Field(default=0.0, description="Wall-clock seconds spent in tesseract.")
    deferred_pages: int = Field(default=0, description="Pages and frames whose OCR was left to background extraction.")


class MemberResult(BaseModel):
    """One file found inside an archive or e-mail, with the files found inside it."""

    path: str = Field(description="Path from the top-level attachment, levels joined with '/'.")
    mime_type: str | None = Field(description="Type sniffed from the member's content; None when it was never read.")
    declared_type: str | None = Field(default=None, description="Type the container declared, e.g. a MIME part's.")
    status: ExtractionStatus
    error: str | None = None
    chars: int = Field(default=0, description="Characters of text taken from the member.")
    pages: list[PageResult] = Field(default_factory=list)
    members: list[MemberResult] = Field(default_factory=list)


class ExtractionResult(BaseModel):
    """The text of one attachment and how it was obtained."""

    status: ExtractionStatus
    mime_type: str | None = Field(
        description="Type sniffed from the content (libmagic or the built-in signatures, refined by looking inside)."
    )
    declared_type: str | None = Field(description="Type the sender declared, e.g. the MIME part's Content-Type.")
    filename: str | None
    text: str = Field(
        default="",
        description="All text, nested files included, each after a '--- path ---' line.",
    )
    error: str | None = None
    pages: list[PageResult] = Field(default_factory=list)
    tables: list[TableResult] = Field(default_factory=list, description="Tables of the attachment and its members.")
    members: list[MemberResult] = Field(default_factory=list)
    deferred: bool = Field(
        default=False,
        description="True when OCR was left for background extraction (defer_ocr); extract again without it.",
    )
    usage: BudgetUsage = Field(default_factory=BudgetUsage)
    extractor_version: int = Field(default=0, description="EXTRACTOR_VERSION of the code that made the result.")
    worker_peak_rss_bytes: int | None = Field(
        default=None,
        description="Peak resident memory of the sandboxed worker and the tools it ran; None when run in-process.",
    )
    elapsed_seconds: float = 0.0

    def walk_members(self) -> Iterator[MemberResult]:
        """Yield every member at every nesting level, parents before their children."""
        stack = list(reversed(self.members))
        while stack:
            member = stack.pop()
            yield member
            stack.extend(reversed(member.members))


@dataclass
class Extracted:
    """Output of one stage for one file, before it becomes a public result."""

    status: ExtractionStatus
    mime_type: str | None = None
    text: str = ""
    error: str | None = None
    pages: list[PageResult] = field(default_factory=list)
    tables: list[TableResult] = field(default_factory=list)
    members: list[MemberResult] = field(default_factory=list)

    def to_member(self, path: str, declared_type: str | None = None) -> MemberResult:
        return MemberResult(
            path=path,
            mime_type=self.mime_type,
            declared_type=declared_type,
            status=self.status,
            error=self.error,
            chars=len(self.text),
            pages=self.pages,
            members=self.members,
        )


def container_status(members: list[MemberResult], *, has_text: bool) -> ExtractionStatus:
    """Return the status of an archive or e-mail from the statuses of its direct members.

    Unsupported members are listed but do not lower the status; the others do.
    With nothing readable, a limit status (``too_large``, then ``timeout``)
    of any member explains the container best; else it is ``malformed``, or
    ``encrypted`` when all incomplete members are.
    """
    incomplete = [m for m in members if m.status in INCOMPLETE_STATUSES]
    if not incomplete:
        return "ok"

    readable = [m for m in members if m.status in ("ok", "partial")]
    if readable or has_text:
        return "partial"
    statuses = {m.status for m in incomplete}
    for status in ("too_large", "timeout", "malformed"):
        if status in statuses:
            return status
    return "encrypted"


def summarize_member_errors(members: list[MemberResult]) -> str | None:
    """Return one sentence naming the first incomplete member and how many there are."""
    incomplete = [m for m in members if m.status in INCOMPLETE_STATUSES]
    if not incomplete:
        return None

    first = incomplete[0]
    reason = first.error or "no reason recorded"
    if len(incomplete) == 1:
        return f"Member '{first.path}' ({first.status}): {reason}"
    return f"{len(incomplete)} members are not fully extracted; the first, '{first.path}' ({first.status}): {reason}"
