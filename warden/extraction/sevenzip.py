"""Stage for 7z archives, read with py7zr into memory through metered writers."""

from __future__ import annotations

import io
import lzma
import zlib
from typing import TYPE_CHECKING

import py7zr
from py7zr.exceptions import ArchiveError, DecompressionBombError, PasswordRequired
from py7zr.io import Py7zIO, WriterFactory

from warden.extraction.archives import (
    LinkGuard,
    check_member_path,
    encrypted_reason,
    link_rejection,
    through_link_rejection,
)
from warden.extraction.budget import ContainerMeter, LimitExceeded
from warden.extraction.nesting import ContainerOutput
from warden.extraction.results import Extracted

if TYPE_CHECKING:
    from warden.extraction.nesting import ExtractionContext

__all__ = ["sevenzip_to_text"]

# Errors py7zr raises for a wrong password, because the decrypted stream fails
# to decompress or fails its CRC check.
WRONG_PASSWORD_ERRORS = (PasswordRequired, ArchiveError, lzma.LZMAError, zlib.error, EOFError)


class MeteredWriter(Py7zIO):
    """In-memory buffer for one decompressed member that charges each write to the meter first."""

    def __init__(self, meter: ContainerMeter) -> None:
        self.meter = meter
        self.buffer = bytearray()

    def write(self, data: bytes | bytearray) -> int:
        self.meter.charge(len(data))
        self.buffer += data
        return len(data)

    def read(self, size: int | None = None) -> bytes:
        return bytes(self.buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return len(self.buffer)


class MeteredWriterFactory(WriterFactory):
    def __init__(self, meter: ContainerMeter) -> None:
        self.meter = meter
        self.writers: dict[str, MeteredWriter] = {}

    def create(self, filename: str) -> Py7zIO:
        writer = MeteredWriter(self.meter)
        self.writers[filename] = writer
        return writer


def sevenzip_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Extract a 7z archive, trying no password first and then each one passed in."""
    passwords: list[str | None] = [None, *ctx.passwords]
    tried_with_password = 0

    for password in passwords:
        out = ContainerOutput(ctx, mime_type)
        try:
            extract_with_password(data, password, out, ctx)
        except WRONG_PASSWORD_ERRORS as exc:
            if password is None and not is_encrypted(data, exc):
                return out.finish(failure=f"Could not read the 7z archive: {describe(exc)}")
            if password is not None:
                tried_with_password += 1
            continue
        return out.finish()

    return Extracted(
        status="encrypted",
        mime_type=mime_type,
        error=f"The 7z archive is {encrypted_reason(tried_with_password)}.",
    )


def is_encrypted(data: bytes, exc: Exception) -> bool:
    """Return True when a failure without a password is due to encryption."""
    if isinstance(exc, PasswordRequired):
        return True
    try:
        with py7zr.SevenZipFile(io.BytesIO(data)) as archive:
            return archive.needs_password()
    except (PasswordRequired, ArchiveError, OSError, EOFError, lzma.LZMAError):
        return False


def describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def extract_with_password(data: bytes, password: str | None, out: ContainerOutput, ctx: ExtractionContext) -> None:
    """Walk the archive with one password; raise one of WRONG_PASSWORD_ERRORS if it does not fit.

    Members are only handed to ``out`` after the whole archive decompressed,
    so a wrong password never leaves half-read members behind.
    """
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))
    links = LinkGuard()
    targets: list[str] = []
    rejections: list[tuple[str, str]] = []

    with py7zr.SevenZipFile(
        io.BytesIO(data), password=password, max_extract_size=ctx.budget.remaining_bytes
    ) as archive:
        if password is None and archive.needs_password():
            raise PasswordRequired("the archive's data is encrypted")

        for info in archive.list():
            if info.is_directory:
                continue
            path, reason = check_member_path(info.filename)
            if reason is None and info.is_symlink:
                links.add(path)
                reason = link_rejection("symbolic link", None)
            elif reason is None and (link := links.blocking_link(path)) is not None:
                reason = through_link_rejection(link)
            if reason is None:
                targets.append(info.filename)
            else:
                rejections.append((info.filename, reason))

        factory = MeteredWriterFactory(meter)
        try:
            if targets:
                ctx.budget.check()
                archive.extract(targets=targets, factory=factory)
        except LimitExceeded as exc:
            in_progress = next(reversed(factory.writers), None)
            record_rejections(out, rejections)
            out.stop(exc, current_name=in_progress)
            return
        except DecompressionBombError as exc:
            record_rejections(out, rejections)
            out.stop(
                LimitExceeded(
                    "max_total_bytes",
                    f"The attachment decompressed to more than max_total_bytes="
                    f"{ctx.settings.max_total_bytes} bytes across all nesting levels ({exc}). "
                    "This looks like a decompression bomb; if the file is legitimate, raise "
                    "max_total_bytes in the extraction settings.",
                )
            )
            return

    record_rejections(out, rejections)
    try:
        for name, writer in factory.writers.items():
            ctx.budget.check()
            out.add(bytes(writer.buffer), name)
    except LimitExceeded as exc:
        out.stop(exc)


def record_rejections(out: ContainerOutput, rejections: list[tuple[str, str]]) -> None:
    for name, reason in rejections:
        out.reject(name, reason)
