"""The hand-off from container stages (archives, e-mails, compressed streams) to the pipeline.

A container stage walks its members and gives each one to a
:class:`ContainerOutput`, which runs the whole pipeline on it one level
deeper, records it as a :class:`MemberResult`, and adds its text under a
``--- path ---`` line. Rejected members (path traversal, symlinks, too deep)
are recorded with the reason and never extracted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from warden.extraction.budget import ExtractionBudget, LimitExceeded
from warden.extraction.results import (
    Extracted,
    ExtractionStatus,
    MemberResult,
    TableResult,
    container_status,
    summarize_member_errors,
)
from warden.extraction.settings import ExtractionSettings

__all__ = ["ContainerOutput", "ExtractionContext", "member_header"]

ExtractNode = Callable[[bytes, str | None, str | None, "ExtractionContext"], Extracted]


def member_header(path: str) -> str:
    """Return the line that introduces a nested file's text."""
    return f"--- {path} ---"


@dataclass(frozen=True)
class ExtractionContext:
    """Position of a stage in the nesting, with the settings and the shared budget."""

    settings: ExtractionSettings
    budget: ExtractionBudget
    extract_node: ExtractNode
    filename: str | None = None
    path: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()

    @property
    def depth(self) -> int:
        return len(self.path)

    @property
    def table_path(self) -> str:
        """Member path of this file, for the tables it holds: '' for the attachment itself."""
        return "/".join(self.path)

    @property
    def label(self) -> str:
        """Name of the file being extracted, for messages: its member path, or the file name."""
        return "/".join(self.path) or self.filename or "the attachment"

    def child(self, name: str) -> ExtractionContext:
        return ExtractionContext(
            settings=self.settings,
            budget=self.budget,
            extract_node=self.extract_node,
            filename=self.filename,
            path=(*self.path, name),
            passwords=self.passwords,
        )

    def member_path(self, name: str) -> str:
        return "/".join((*self.path, name))


class ContainerOutput:
    """Collector of the members and text of one container while its stage walks it."""

    def __init__(self, ctx: ExtractionContext, mime_type: str) -> None:
        self.ctx = ctx
        self.mime_type = mime_type
        self.members: list[MemberResult] = []
        self.tables: list[TableResult] = []
        self.text_blocks: list[str] = []
        self.stopped: LimitExceeded | None = None

    def add(self, data: bytes, name: str, declared_type: str | None = None) -> MemberResult:
        """Extract one member's bytes at the next nesting level and record the outcome."""
        budget = self.ctx.budget
        budget.charge_entry()

        path = self.ctx.member_path(name)
        if self.ctx.depth + 1 > self.ctx.settings.max_depth:
            return self.reject(
                name,
                f"nested {self.ctx.depth + 1} levels deep, more than "
                f"max_depth={self.ctx.settings.max_depth}; raise max_depth in the extraction "
                "settings to read it",
                status="too_large",
                count_entry=False,
            )

        node = self.ctx.extract_node(data, name, declared_type, self.ctx.child(name))
        member = node.to_member(path, declared_type)
        self.members.append(member)
        self.tables.extend(node.tables)
        if node.text:
            self.text_blocks.append(f"{member_header(path)}\n{node.text}")
        return member

    def reject(
        self,
        name: str,
        reason: str,
        *,
        status: ExtractionStatus = "malformed",
        mime_type: str | None = None,
        count_entry: bool = True,
    ) -> MemberResult:
        """Record a member that is not extracted, with the reason."""
        if count_entry:
            self.ctx.budget.charge_entry()
        member = MemberResult(path=self.ctx.member_path(name), mime_type=mime_type, status=status, error=reason)
        self.members.append(member)
        return member

    def stop(self, exc: LimitExceeded, *, current_name: str | None = None) -> None:
        """Record that a limit stopped the walk, and fail the member it stopped in, if any."""
        self.stopped = exc
        if current_name is not None:
            self.members.append(
                MemberResult(
                    path=self.ctx.member_path(current_name),
                    mime_type=None,
                    status=exc.status,
                    error=str(exc),
                )
            )

    def finish(
        self, *, own_text: str = "", failure: str | None = None, failure_status: ExtractionStatus = "malformed"
    ) -> Extracted:
        """Return the container's node: its own text, then each member's text under its path.

        ``failure`` is the reason the container could not be read to its end (a
        damaged archive, with ``failure_status``); a limit recorded with
        :meth:`stop` counts as one too, with the limit's status.
        """
        text = "\n\n".join(block for block in (own_text, *self.text_blocks) if block)
        # A budget exhausted in a member stops this container too: later members were skipped.
        stopped = self.stopped or self.ctx.budget.exhausted
        if failure is None and stopped is not None:
            failure = f"Extraction stopped early: {stopped}"
            failure_status = stopped.status

        if failure is not None:
            readable = bool(own_text) or any(m.status in ("ok", "partial") for m in self.members)
            status: ExtractionStatus = "partial" if readable else failure_status
            error: str | None = failure
        else:
            status = container_status(self.members, has_text=bool(own_text))
            error = summarize_member_errors(self.members)
        return Extracted(
            status=status,
            mime_type=self.mime_type,
            text=text,
            error=error,
            tables=self.tables,
            members=self.members,
        )
