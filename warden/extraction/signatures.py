"""A pure-Python content sniffer: MIME types from the leading bytes of a file.

Used when python-magic or libmagic is not installed. It covers the formats
this package reads and the ones it reports as unsupported. It returns the
MIME types libmagic uses for them, so the rest of ``sniff`` works the same
either way. Anything else is ``application/octet-stream``, or
``text/plain`` when the bytes decode as text.
"""

from __future__ import annotations

import re

__all__ = ["content_type_from_signature"]

OLE2_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Stream names inside an OLE2 (Compound File) directory, stored in UTF-16LE.
OLE2_STREAM_TYPES = (
    ("EncryptionInfo".encode("utf-16-le"), "application/encrypted"),
    ("WordDocument".encode("utf-16-le"), "application/msword"),
    ("Workbook".encode("utf-16-le"), "application/vnd.ms-excel"),
    ("Book".encode("utf-16-le"), "application/vnd.ms-excel"),
    ("PowerPoint Document".encode("utf-16-le"), "application/vnd.ms-powerpoint"),
    ("__substg1.0_".encode("utf-16-le"), "application/vnd.ms-outlook"),
)
PREFIX_TYPES = (
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"PK\x05\x06", "application/zip"),
    (b"PK\x07\x08", "application/zip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/x-rar"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
    (b"ID3", "audio/mpeg"),
)
HEIF_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis")
EMAIL_START = re.compile(rb"^(From |Return-Path:|Received:|Delivered-To:|Message-ID:|MIME-Version:)", re.IGNORECASE)
HTML_START = re.compile(rb"^\s*(<!doctype html|<html|<head|<body)", re.IGNORECASE)
TEXT_SAMPLE_BYTES = 8192


def content_type_from_signature(prefix: bytes) -> str:
    """Return the MIME type that the first bytes of a file announce."""
    if not prefix:
        return "application/x-empty"
    if prefix.startswith(OLE2_SIGNATURE):
        return ole2_type(prefix)
    for signature, mime_type in PREFIX_TYPES:
        if prefix.startswith(signature):
            # "BM" also starts plenty of text; a BMP header says its own size right after it.
            if mime_type == "image/bmp" and len(prefix) >= 6 and int.from_bytes(prefix[2:6], "little") < 26:
                continue
            return mime_type
    if prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
        return "image/webp"
    if prefix[4:8] == b"ftyp" and prefix[8:12] in HEIF_BRANDS:
        return "image/heic"
    if prefix[257:262] == b"ustar":
        return "application/x-tar"
    if b"%PDF-" in prefix[:1024]:
        return "application/pdf"
    return text_type(prefix)


def ole2_type(prefix: bytes) -> str:
    """Tell the kinds of OLE2 file apart by the stream names in their directory."""
    for stream_name, mime_type in OLE2_STREAM_TYPES:
        if stream_name in prefix:
            return mime_type
    return "application/x-ole-storage"


def text_type(prefix: bytes) -> str:
    sample = prefix[:TEXT_SAMPLE_BYTES]
    if b"\x00" in sample:
        return "application/octet-stream"
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A character cut at the end of the sample is still text; other invalid bytes may be Latin-1.
        if exc.start < len(sample) - 3 and not looks_like_single_byte_text(sample):
            return "application/octet-stream"
    if HTML_START.match(sample):
        return "text/html"
    if EMAIL_START.match(sample):
        return "message/rfc822"
    return "text/plain"


def looks_like_single_byte_text(sample: bytes) -> bool:
    """Return True when nearly all bytes are printable in a single-byte charset such as Windows-1252."""
    control = sum(1 for byte in sample if byte < 0x20 and byte not in (0x09, 0x0A, 0x0C, 0x0D))
    return control <= len(sample) // 100
