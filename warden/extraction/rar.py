"""Stage for RAR archives: rarfile reads the headers, bsdtar decompresses each member.

rarfile parses headers in Python (names, links, encryption flags, header
decryption with a password) but needs an external tool for the data. In
Debian's main archive that tool is libarchive's bsdtar (unrar-free 0.1.3 is
built on libarchive too). It reads RAR 4 and RAR 5 but cannot decrypt, so
members with encrypted data are reported as encrypted even when the right
password is configured.

NOTE: rarfile 4.5's own bsdtar backend passes ``-f -- archive`` and bsdtar
then looks for an archive named ``--``, so every compressed member fails.
This module runs bsdtar itself, which also lets it meter and kill the tool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import rarfile

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

__all__ = ["rar_to_text"]

RAR_SIGNATURE = b"Rar!\x1a\x07"
MAX_SFX_STUB_BYTES = 4 * 1024 * 1024
PIPE_CHUNK_BYTES = 256 * 1024
BSDTAR_PATTERN_SPECIALS = re.compile(r"([*?\[\]\\])")
RAR_HEADER_ERRORS = (rarfile.Error, OSError, EOFError, ValueError)


def rar_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Extract the members of a RAR archive (plain or behind a self-extractor stub)."""
    offset = data.find(RAR_SIGNATURE, 0, MAX_SFX_STUB_BYTES)
    if offset < 0:
        return Extracted(
            status="malformed",
            mime_type=mime_type,
            error=f"Could not read '{ctx.label}' as RAR: no RAR 4 or RAR 5 signature found.",
        )

    bsdtar = shutil.which("bsdtar")
    with tempfile.TemporaryDirectory(prefix="warden-rar-") as work_dir:
        # bsdtar and rarfile need a file; the private directory is removed on return.
        archive_path = Path(work_dir) / "archive.rar"
        archive_path.write_bytes(data[offset:])
        try:
            archive = open_rar(archive_path, ctx)
        except RAR_HEADER_ERRORS as exc:
            return Extracted(
                status="malformed",
                mime_type=mime_type,
                error=f"Could not read the RAR headers of '{ctx.label}': {exc}",
            )
        if archive is None:
            return Extracted(
                status="encrypted",
                mime_type=mime_type,
                error=(f"The RAR archive's headers are {encrypted_reason(len(ctx.passwords))}."),
            )
        return walk_rar(archive, archive_path, bsdtar, mime_type, len(data), ctx)


def open_rar(archive_path: Path, ctx: ExtractionContext) -> rarfile.RarFile | None:
    """Open the archive, decrypting encrypted headers with the first password that fits.

    Returns None when the headers are encrypted and no password fits.
    """
    # part_only: read this volume alone; the other volumes of a set are not here.
    archive = rarfile.RarFile(str(archive_path), part_only=True)
    if not (archive.needs_password() and not archive.infolist()):
        return archive

    for password in ctx.passwords:
        candidate = rarfile.RarFile(str(archive_path), part_only=True)
        try:
            candidate.setpassword(password)
            if candidate.infolist():
                return candidate
        except (rarfile.BadRarFile, rarfile.RarWrongPassword):
            continue
    return None


def walk_rar(
    archive: rarfile.RarFile,
    archive_path: Path,
    bsdtar: str | None,
    mime_type: str,
    container_bytes: int,
    ctx: ExtractionContext,
) -> Extracted:
    out = ContainerOutput(ctx, mime_type)
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=container_bytes)
    links = LinkGuard()
    current: str | None = None
    tool_gaps: list[str] = []

    try:
        for info in archive.infolist():
            ctx.budget.check()
            if info.is_dir():
                continue

            path, reason = check_member_path(info.filename)
            if reason is not None:
                out.reject(info.filename, reason)
                continue
            if info.is_symlink() or info.file_redir is not None:
                links.add(path)
                target = info.file_redir[2] if info.file_redir else None
                out.reject(path, link_rejection("link", target))
                continue
            link = links.blocking_link(path)
            if link is not None:
                out.reject(path, through_link_rejection(link))
                continue
            if info.needs_password():
                out.reject(
                    path,
                    "the member's data is encrypted, and bsdtar (the RAR tool available here) cannot decrypt RAR data",
                    status="encrypted",
                )
                continue
            if info.file_size > ctx.budget.remaining_bytes:
                out.reject(
                    path,
                    f"declares {info.file_size} bytes, more than the "
                    f"{ctx.budget.remaining_bytes} bytes left of max_total_bytes",
                    status="too_large",
                )
                continue
            if bsdtar is None:
                out.reject(
                    path,
                    "bsdtar is not installed, so RAR data cannot be decompressed: install libarchive-tools",
                    status="unsupported",
                )
                tool_gaps.append(path)
                continue

            current = path
            member_data, failure = read_rar_member(bsdtar, archive_path, info, meter, ctx)
            current = None
            if failure is None:
                out.add(member_data, path)
            elif "support unavailable" in failure:
                # libarchive names the RAR features it lacks, e.g. "RAR solid archive support unavailable".
                out.reject(path, failure, status="unsupported")
                tool_gaps.append(path)
            else:
                out.reject(path, failure)
    except LimitExceeded as exc:
        out.stop(exc, current_name=current)
        return out.finish()
    if tool_gaps:
        # The members are fine, but this reader cannot decompress them, so the archive is not complete.
        return out.finish(
            failure=f"bsdtar cannot decompress {len(tool_gaps)} of the members, the first '{tool_gaps[0]}'",
            failure_status="unsupported",
        )
    return out.finish()


def read_rar_member(
    bsdtar: str,
    archive_path: Path,
    info: rarfile.RarInfo,
    meter: ContainerMeter,
    ctx: ExtractionContext,
) -> tuple[bytes, str | None]:
    """Stream one member out of bsdtar, charging each chunk; return its bytes or why it failed."""
    pattern = BSDTAR_PATTERN_SPECIALS.sub(r"\\\1", info.filename)
    # --fast-read stops at the first match, before later (possibly unreadable) members.
    command = [bsdtar, "-x", "--fast-read", "--to-stdout", "-f", str(archive_path), "--", pattern]
    stderr_path = archive_path.with_suffix(".stderr")
    buffer = bytearray()

    with open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file)
        watchdog = threading.Timer(max(0.1, ctx.budget.remaining_seconds()), process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            while chunk := process.stdout.read(PIPE_CHUNK_BYTES):
                meter.charge(len(chunk))
                buffer += chunk
        except BaseException:
            process.kill()
            raise
        finally:
            watchdog.cancel()
            process.wait()
            process.stdout.close()

    ctx.budget.check()
    if process.returncode != 0 or len(buffer) != info.file_size:
        message = stderr_path.read_text(errors="replace").strip().splitlines()
        detail = message[0] if message else f"exit status {process.returncode}"
        return b"", (
            f"bsdtar returned {len(buffer)} of {info.file_size} bytes ({detail}); the member "
            "may be split across volumes, damaged, or in a RAR variant libarchive cannot read"
        )
    if info.CRC and zlib.crc32(buffer) != info.CRC:
        return b"", "the decompressed data does not match the CRC stored in the archive"
    return bytes(buffer), None
