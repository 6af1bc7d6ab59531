"""Stages for files that are already text: charset decoding and HTML to plain text."""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser

from warden.extraction.results import Extracted

__all__ = ["decode_text", "html_to_text", "html_file_to_text", "text_file_to_text"]

BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
META_CHARSET = re.compile(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode_text(data: bytes, charset: str | None = None) -> str:
    """Decode bytes as text: a BOM first, then the given charset, UTF-8, and Windows-1252.

    Never raises: bytes that no candidate decodes end as U+FFFD in UTF-8 output.
    """
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")

    candidates = [charset] if charset else []
    candidates += ["utf-8", "cp1252"]
    for encoding in candidates:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("utf-8", errors="replace")


class _TextCollector(HTMLParser):
    BLOCK_TAGS = {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
    CELL_TAGS = {"td", "th"}
    SKIPPED_TAGS = {"script", "style", "head", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED_TAGS:
            self.skip_depth += 1
        elif tag in self.BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in self.CELL_TAGS:
            self.parts.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self.BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth == 0:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Return the visible text of an HTML document, one block element per line."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()

    lines = []
    for raw_line in "".join(collector.parts).splitlines():
        line = " ".join(raw_line.split())
        if line.startswith("| "):
            line = line[2:]
        if line:
            lines.append(line)
    return "\n".join(lines)


def text_file_to_text(data: bytes, mime_type: str) -> Extracted:
    """Decode a plain-text file (text, CSV, JSON, XML...)."""
    return Extracted(status="ok", mime_type=mime_type, text=decode_text(data))


def html_file_to_text(data: bytes, mime_type: str) -> Extracted:
    """Decode an HTML file, honouring its ``<meta charset>``, and strip the markup."""
    match = META_CHARSET.search(data[:4096])
    charset = match.group(1).decode("ascii") if match else None
    return Extracted(status="ok", mime_type=mime_type, text=html_to_text(decode_text(data, charset)))
