"""Extraction results: the public result models and the per-file node that stages build.

Status values, from best to worst for the caller:

``ok``
    All content of the file was turned into text (members of an
    unsupported type are listed but do not count against it).
``partial``
    Some text came out, but part of the file did not: a member failed, a limit
    stopped the work, or pages were left without OCR.
``encrypted``
    The content is encrypted and none of ``ExtractionSettings.passwords`` opened it.
``unsupported``
    The format is known but not extracted (legacy Office, HEIC, audio...).
``failed``
    Nothing usable came out: the file is corrupt, hostile, or a limit or crash
    stopped it before any text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "ExtractionResult",
    "ExtractionStatus",
    "MemberResult",
    "PageMethod",
    "PageResult",
]

ExtractionStatus = Literal["ok", "partial", "failed", "encrypted", "unsupported"]
PageMethod = Literal["text", "ocr", "skipped"]


class PageResult(BaseModel):
    """One page of a PDF, or one frame of an image."""

    number: int = Field(description="Page number, starting at 1.")
    method: PageMethod = Field(description="How the page became text: its text layer, OCR, or not at all.")
    chars: int = Field(description="Characters of text taken from the page.")


class MemberResult(BaseModel):
    """One file found inside an archive or e-mail, with the files found inside it."""

    path: str = Field(description="Path from the top-level attachment, levels joined with '/'.")
    mime_type: str | None = Field(description="Type sniffed from the member's content; None when it was never read.")
    status: ExtractionStatus
    error: str | None = None
    chars: int = Field(default=0, description="Characters of text taken from the member.")
    pages: list[PageResult] = Field(default_factory=list)
    members: list[MemberResult] = Field(default_factory=list)


class ExtractionResult(BaseModel):
    """The text of one attachment and how it was obtained."""

    status: ExtractionStatus
    mime_type: str | None = Field(
        description="Type sniffed from the content (libmagic, refined by looking inside zips)."
    )
    declared_type: str | None = Field(description="Type the sender declared, e.g. the MIME part's Content-Type.")
    filename: str | None
    text: str = Field(
        default="",
        description="All text, nested files included, each after a '--- path ---' line.",
    )
    error: str | None = None
    pages: list[PageResult] = Field(default_factory=list)
    members: list[MemberResult] = Field(default_factory=list)
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
    members: list[MemberResult] = field(default_factory=list)

    def to_member(self, path: str) -> MemberResult:
        return MemberResult(
            path=path,
            mime_type=self.mime_type,
            status=self.status,
            error=self.error,
            chars=len(self.text),
            pages=self.pages,
            members=self.members,
        )


def container_status(members: list[MemberResult], *, has_text: bool) -> ExtractionStatus:
    """Return the status of an archive or e-mail from the statuses of its direct members.

    Unsupported members are listed but do not lower the status; failed,
    partial and encrypted ones do.
    """
    incomplete = [m for m in members if m.status in ("failed", "partial", "encrypted")]
    if not incomplete:
        return "ok"

    readable = [m for m in members if m.status in ("ok", "partial")]
    if all(m.status == "encrypted" for m in incomplete) and not readable and not has_text:
        return "encrypted"
    if readable or has_text:
        return "partial"
    return "failed"


def summarize_member_errors(members: list[MemberResult]) -> str | None:
    """Return one sentence naming the first incomplete member and how many there are."""
    incomplete = [m for m in members if m.status in ("failed", "partial", "encrypted")]
    if not incomplete:
        return None

    first = incomplete[0]
    reason = first.error or "no reason recorded"
    if len(incomplete) == 1:
        return f"Member '{first.path}' ({first.status}): {reason}"
    return f"{len(incomplete)} members are not fully extracted; the first, '{first.path}' ({first.status}): {reason}"
