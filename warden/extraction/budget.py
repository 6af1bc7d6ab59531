"""The work budget shared by all nesting levels of one top-level attachment.

Archive headers lie: a member may declare 1 KB and expand to 10 GB, or many
members may point at the same compressed bytes. So every byte that leaves a
decompressor is counted as it is produced, against three limits: the total
for the attachment (``max_total_bytes``), the ratio to the size of the
container it came from (``max_compression_ratio``), and the wall clock.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from warden.extraction.results import BudgetUsage, ExtractionStatus
from warden.extraction.settings import ExtractionSettings

__all__ = ["ContainerMeter", "ExtractionBudget", "LimitExceeded", "read_limited"]

READ_CHUNK_BYTES = 256 * 1024
# Settings whose limit means the work ran out of time; every other limit is a size.
TIME_SETTINGS = frozenset({"timeout_seconds", "max_cpu_seconds", "ocr_max_seconds"})


class LimitExceeded(Exception):
    """A limit of the extraction settings stopped the work.

    Internal to the extraction package: stages catch it and record it in the
    result, so it never reaches a caller of ``extract_bytes`` or
    ``extract_in_sandbox``.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting

    @property
    def status(self) -> ExtractionStatus:
        """Status of a file that this limit stopped before any text came out."""
        return "timeout" if self.setting in TIME_SETTINGS else "too_large"


class ExtractionBudget:
    """Counter of bytes, entries and text for one top-level attachment, with its deadline.

    Once the byte, entry, text or time limit is hit, the budget stays exhausted:
    every later ``check()`` raises the same error, so that every open container
    stops instead of starting on its next member.
    """

    def __init__(self, settings: ExtractionSettings, *, deadline_monotonic: float) -> None:
        self.settings = settings
        self.deadline_monotonic = deadline_monotonic
        self.bytes_written = 0
        self.entries = 0
        self.text_chars = 0
        self.ocr_pages = 0
        self.ocr_seconds = 0.0
        self.deferred_pages = 0
        self.table_cells = 0
        self.max_depth = 0
        self.exhausted: LimitExceeded | None = None

    def usage(self) -> BudgetUsage:
        return BudgetUsage(
            bytes_written=self.bytes_written,
            entries=self.entries,
            max_depth=self.max_depth,
            text_chars=min(self.text_chars, self.settings.max_text_chars),
            ocr_pages=self.ocr_pages,
            ocr_seconds=round(self.ocr_seconds, 3),
            deferred_pages=self.deferred_pages,
        )

    def note_depth(self, depth: int) -> None:
        self.max_depth = max(self.max_depth, depth)

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.settings.max_total_bytes - self.bytes_written)

    def remaining_seconds(self) -> float:
        return self.deadline_monotonic - time.monotonic()

    def check(self) -> None:
        """Raise the stored error if a global limit was hit, or if the deadline passed."""
        if self.exhausted is not None:
            raise self.exhausted
        if time.monotonic() > self.deadline_monotonic:
            self._exhaust(
                "timeout_seconds",
                f"Extraction ran out of time (timeout_seconds={self.settings.timeout_seconds:g}). "
                "If the file is legitimate, raise timeout_seconds in the extraction settings.",
            )

    def charge_bytes(self, count: int) -> None:
        """Add decompressed bytes; raise when the attachment's total goes over the limit."""
        self.bytes_written += count
        if self.bytes_written > self.settings.max_total_bytes:
            self._exhaust(
                "max_total_bytes",
                "The attachment decompressed to more than "
                f"max_total_bytes={self.settings.max_total_bytes} bytes across all nesting "
                "levels. This looks like a decompression bomb; if the file is legitimate, "
                "raise max_total_bytes in the extraction settings.",
            )
        self.check()

    def charge_entry(self) -> None:
        """Count one archive member or e-mail part; raise past ``max_entries``."""
        self.entries += 1
        if self.entries > self.settings.max_entries:
            self._exhaust(
                "max_entries",
                f"The attachment holds more than max_entries={self.settings.max_entries} "
                "archive members and e-mail parts across all nesting levels. If it is "
                "legitimate, raise max_entries in the extraction settings.",
            )
        self.check()

    def charge_text(self, count: int) -> None:
        """Add characters of output text; raise past ``max_text_chars``."""
        self.text_chars += count
        if self.text_chars > self.settings.max_text_chars:
            self._exhaust("max_text_chars", self._text_limit_message())

    def fit_text(self, text: str) -> tuple[str, LimitExceeded | None]:
        """Charge ``text`` and return the part within ``max_text_chars``, with the error if cut.

        Unlike :meth:`charge_text` this does not raise, so a stage that has
        already built its text keeps the part that fits. The budget is exhausted all
        the same when text was cut.
        """
        allowed = max(0, self.settings.max_text_chars - self.text_chars)
        if len(text) <= allowed:
            self.text_chars += len(text)
            return text, None
        self.text_chars = self.settings.max_text_chars + 1
        if self.exhausted is None:
            self.exhausted = LimitExceeded("max_text_chars", self._text_limit_message())
        return text[:allowed], self.exhausted

    def _text_limit_message(self) -> str:
        return (
            f"The attachment produced more than max_text_chars={self.settings.max_text_chars} "
            "characters of text and the rest was dropped. Raise max_text_chars in the "
            "extraction settings to keep it."
        )

    def take_ocr_page(self) -> bool:
        """Reserve one page of the attachment's OCR allowance; return False when no page or second is left."""
        if self.ocr_pages >= self.settings.ocr_max_pages or self.ocr_seconds_left() <= 0:
            return False
        self.ocr_pages += 1
        return True

    def ocr_seconds_left(self) -> float:
        return self.settings.ocr_max_seconds - self.ocr_seconds

    def take_table_cells(self, count: int) -> bool:
        """Reserve ``count`` cells of ``max_table_cells``; return False when they do not fit."""
        if self.table_cells + count > self.settings.max_table_cells:
            return False
        self.table_cells += count
        return True

    def _exhaust(self, setting: str, message: str) -> None:
        if self.exhausted is None:
            self.exhausted = LimitExceeded(setting, message)
        raise self.exhausted


class ContainerMeter:
    """Counter of the bytes decompressed from one container, held to ``max_compression_ratio``."""

    def __init__(self, budget: ExtractionBudget, *, name: str, container_bytes: int) -> None:
        self.budget = budget
        self.name = name
        self.container_bytes = max(1, container_bytes)
        self.bytes_out = 0

    def charge(self, count: int) -> None:
        """Count ``count`` decompressed bytes here and in the attachment's budget."""
        self.bytes_out += count
        settings = self.budget.settings
        ratio = self.bytes_out / self.container_bytes
        if self.bytes_out > settings.compression_ratio_floor_bytes and ratio > settings.max_compression_ratio:
            raise LimitExceeded(
                "max_compression_ratio",
                f"'{self.name}' expanded from {self.container_bytes} bytes to more than "
                f"{self.bytes_out} bytes, a ratio above "
                f"max_compression_ratio={settings.max_compression_ratio:g}. This looks like a "
                "decompression bomb; if the file is legitimate, raise max_compression_ratio "
                "in the extraction settings.",
            )
        self.budget.charge_bytes(count)


def read_limited(stream: BinaryIO, meter: ContainerMeter) -> bytes:
    """Read a decompressing stream to its end, charging every chunk before reading the next.

    The stream's ``read(n)`` must return at most ``n`` bytes per call (zipfile,
    tarfile, gzip, bz2 and lzma file objects do), so memory grows by one chunk
    past the limit at most.
    """
    buffer = bytearray()
    while True:
        chunk = stream.read(READ_CHUNK_BYTES)
        if not chunk:
            return bytes(buffer)
        meter.charge(len(chunk))
        buffer += chunk
