"""Stages for zip and tar archives and for single compressed streams (gzip, bzip2, xz).

Members are never written to disk: each one is decompressed into memory
through :func:`read_limited`, which charges every chunk to the budget before
it reads the next, and is then extracted one nesting level deeper. Members
whose path is absolute or climbs out with ``..``, links, and members whose
path runs through a link are recorded as malformed, with the reason, and never read.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
import zipfile
import zlib
from typing import TYPE_CHECKING

from warden.extraction.budget import ContainerMeter, LimitExceeded, read_limited
from warden.extraction.nesting import ContainerOutput
from warden.extraction.results import Extracted
from warden.extraction.sniff import DocumentKind

if TYPE_CHECKING:
    from warden.extraction.nesting import ExtractionContext

__all__ = [
    "LinkGuard",
    "check_member_path",
    "compressed_stream_to_text",
    "tar_to_text",
    "zip_to_text",
]

WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
ZIP_ENCRYPTED_FLAG = 0x1
ZIP_AES_METHOD = 99
UNIX_SYMLINK_MODE = 0o120000
UNIX_FILE_TYPE_MASK = 0o170000
ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, lzma.LZMAError)


def check_member_path(name: str) -> tuple[str, str | None]:
    """Return a member's path with ``/`` separators, and why it is rejected (None if safe).

    Backslashes count as separators, because archives made on Windows use them
    and an extractor there would follow them.
    """
    normalized = name.replace("\\", "/")
    if "\x00" in normalized:
        return normalized, "the member name contains a NUL byte"
    if normalized.startswith("/") or WINDOWS_DRIVE.match(normalized):
        return (
            normalized,
            "absolute member path rejected: it would be written outside the archive root",
        )

    parts = [part for part in normalized.split("/") if part not in ("", ".")]
    if ".." in parts:
        return (
            normalized,
            "path traversal rejected: the member path climbs out of the archive root with '..'",
        )
    return "/".join(parts), None


class LinkGuard:
    """Remembers rejected link members, so that members stored "through" them are rejected too.

    An archive can hold a symlink ``up -> ..`` followed by ``up/pwned.txt``;
    an extractor that follows the link writes outside its target directory.
    """

    def __init__(self) -> None:
        self.links: list[str] = []

    def add(self, path: str) -> None:
        self.links.append(path.rstrip("/"))

    def blocking_link(self, path: str) -> str | None:
        for link in self.links:
            if path.startswith(link + "/"):
                return link
        return None


def link_rejection(kind: str, target: str | None) -> str:
    shown = f" to '{target}'" if target else ""
    return f"{kind}{shown} rejected: links could make an extractor write outside the archive root"


def through_link_rejection(link: str) -> str:
    return f"path runs through the rejected link '{link}'"


def zip_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Extract every regular member of a zip archive, trying the passwords passed in."""
    out = ContainerOutput(ctx, mime_type)
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))
    passwords = [password.encode("utf-8") for password in ctx.passwords]
    links = LinkGuard()
    current: str | None = None

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                ctx.budget.check()
                if info.is_dir():
                    continue

                path, reason = check_member_path(info.filename)
                if reason is not None:
                    out.reject(info.filename, reason)
                    continue
                if is_zip_symlink(info):
                    links.add(path)
                    out.reject(path, link_rejection("symbolic link", None))
                    continue
                link = links.blocking_link(path)
                if link is not None:
                    out.reject(path, through_link_rejection(link))
                    continue
                if info.file_size > ctx.budget.remaining_bytes:
                    out.reject(
                        path,
                        f"declares {info.file_size} bytes, more than the "
                        f"{ctx.budget.remaining_bytes} bytes left of max_total_bytes",
                        status="too_large",
                    )
                    continue

                current = path
                read_zip_member(archive, info, path, passwords, meter, out)
                current = None
    except LimitExceeded as exc:
        out.stop(exc, current_name=current)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        return out.finish(failure=f"Could not read the zip archive: {exc}")
    return out.finish()


def is_zip_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return (mode & UNIX_FILE_TYPE_MASK) == UNIX_SYMLINK_MODE


def read_zip_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    path: str,
    passwords: list[bytes],
    meter: ContainerMeter,
    out: ContainerOutput,
) -> None:
    """Decompress one zip member, decrypting it if needed, and hand it to ``out``.

    NOTE: for bzip2 and LZMA members, zipfile decompresses each 4 KiB of input
    in one call without an output bound, so one call can allocate far more
    than a chunk. Deflate and stored members (nearly all zips) stay bounded;
    in the sandbox the others are bounded by max_memory_bytes.
    """
    if info.flag_bits & ZIP_ENCRYPTED_FLAG and info.compress_type == ZIP_AES_METHOD:
        out.reject(
            path,
            "encrypted with WinZip AES, which this extractor cannot decrypt",
            status="encrypted",
        )
        return

    if not info.flag_bits & ZIP_ENCRYPTED_FLAG:
        try:
            with archive.open(info) as stream:
                member_data = read_limited(stream, meter)
        except NotImplementedError as exc:
            out.reject(path, f"uses an unsupported compression method: {exc}", status="unsupported")
            return
        except ZIP_MEMBER_ERRORS as exc:
            out.reject(path, f"could not be decompressed: {exc}")
            return
        out.add(member_data, path)
        return

    for password in passwords:
        try:
            with archive.open(info, pwd=password) as stream:
                member_data = read_limited(stream, meter)
        except RuntimeError:
            continue  # zipfile's "Bad password for file"
        except ZIP_MEMBER_ERRORS:
            continue  # a wrong password that passed the 1-in-256 header check
        out.add(member_data, path)
        return

    out.reject(path, encrypted_reason(len(passwords)), status="encrypted")


def encrypted_reason(password_count: int) -> str:
    if password_count == 0:
        return "encrypted, and no passwords were passed to try"
    return f"encrypted, and none of the {password_count} passwords opened it"


def tar_to_text(data: bytes, mime_type: str, ctx: ExtractionContext) -> Extracted:
    """Extract every regular file of an (uncompressed) tar archive."""
    out = ContainerOutput(ctx, mime_type)
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))
    links = LinkGuard()
    current: str | None = None

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive:
                ctx.budget.check()
                if member.isdir():
                    continue

                path, reason = check_member_path(member.name)
                if reason is not None:
                    out.reject(member.name, reason)
                    continue
                if member.issym() or member.islnk():
                    links.add(path)
                    kind = "symbolic link" if member.issym() else "hard link"
                    out.reject(path, link_rejection(kind, member.linkname))
                    continue
                if not member.isfile():
                    out.reject(path, "not a regular file (device, FIFO or other special entry)")
                    continue
                link = links.blocking_link(path)
                if link is not None:
                    out.reject(path, through_link_rejection(link))
                    continue

                current = path
                stream = archive.extractfile(member)
                member_data = read_limited(stream, meter) if stream is not None else b""
                out.add(member_data, path)
                current = None
    except LimitExceeded as exc:
        out.stop(exc, current_name=current)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return out.finish(failure=f"Could not read the tar archive: {exc}")
    return out.finish()


STREAM_SUFFIXES = {
    DocumentKind.GZIP: {".gz": "", ".tgz": ".tar", ".gzip": ""},
    DocumentKind.BZIP2: {".bz2": "", ".tbz2": ".tar", ".tbz": ".tar", ".bzip2": ""},
    DocumentKind.XZ: {".xz": "", ".txz": ".tar"},
}
STREAM_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError)


def open_stream(kind: DocumentKind, raw: io.BytesIO) -> gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile:
    """Return a reader that decompresses ``raw`` in bounded chunks, for ``read_limited``."""
    if kind is DocumentKind.GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind is DocumentKind.BZIP2:
        return bz2.BZ2File(raw, mode="rb")
    return lzma.LZMAFile(raw, mode="rb")


def decompressed_name(filename: str | None, kind: DocumentKind) -> str:
    """Return the name of the file inside a compressed stream, e.g. ``a.tar`` for ``a.tar.gz``."""
    if not filename:
        return "decompressed"
    base = filename.rsplit("/", 1)[-1]
    lowered = base.lower()
    for suffix, replacement in STREAM_SUFFIXES[kind].items():
        if lowered.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + replacement
    return base + ".decompressed"


def compressed_stream_to_text(
    data: bytes, mime_type: str, kind: DocumentKind, filename: str | None, ctx: ExtractionContext
) -> Extracted:
    """Decompress a gzip, bzip2 or xz stream and extract its content as one member."""
    out = ContainerOutput(ctx, mime_type)
    name = decompressed_name(filename, kind)
    meter = ContainerMeter(ctx.budget, name=ctx.label, container_bytes=len(data))

    try:
        with open_stream(kind, io.BytesIO(data)) as stream:
            inner = read_limited(stream, meter)
    except LimitExceeded as exc:
        out.stop(exc, current_name=name)
        return out.finish()
    except STREAM_ERRORS as exc:
        return out.finish(failure=f"Could not decompress the {kind.value} stream: {exc}")

    out.add(inner, name)
    return out.finish()
