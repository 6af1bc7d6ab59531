"""Detect and strip personal data (PII) in extracted text before it leaves the machine.

The detector finds e-mail addresses, phone numbers, IBANs (mod-97 checked),
payment card numbers (Luhn checked) and personal names. Names come from a
pattern set, not from a language model: a capitalised name after a salutation
or title ("Dear Anna Berg", "Dr. Weiss"), the line after a closing phrase
("Kind regards," then "Anna Berg"), the display name in a From/To/Cc header,
and two to four capitalised words directly before an e-mail address in angle
brackets. Every further occurrence of a name found this way is found too.
Names written any other way are not found.

NOTE: Presidio was not used because its English spaCy model is published on
PyPI only as re-uploads by third parties, and the roster admits vetted
components only. Swap :class:`PatternDetector` for a Presidio-backed detector
with the same ``detect`` method once a vetted model package is available.

A finding contains the kind and character offsets, never the matched text, so a
finding can be logged or recorded without carrying the personal data.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "PatternDetector",
    "PiiDetector",
    "PiiFinding",
    "PiiKind",
    "StrippedText",
    "iban_is_valid",
    "luhn_is_valid",
    "strip_pii",
]


class PiiKind(StrEnum):
    """A kind of personal data the detector finds."""

    EMAIL = "email"
    IBAN = "iban"
    CARD = "card"
    PHONE = "phone"
    NAME = "name"


# When two findings overlap, the kind listed first wins: an IBAN's digits also look like a phone number.
_PRIORITY = {kind: index for index, kind in enumerate(PiiKind)}


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data: its kind and its span ``[start, end)`` in the text."""

    kind: PiiKind
    start: int
    end: int


class PiiDetector(Protocol):
    """Anything that finds personal data in a text; it may raise, and the router then sends nothing."""

    name: str

    def detect(self, text: str) -> list[PiiFinding]: ...


@dataclass(frozen=True)
class StrippedText:
    """Text with every finding replaced by a placeholder such as ``[EMAIL]``, and the counts per kind."""

    text: str
    counts: dict[PiiKind, int]


_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Country code, check digits, then 11 to 30 letters or digits, optionally in groups separated by single spaces.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![a-z0-9])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
# An international prefix (+ or 00) or a trunk prefix (0, possibly in brackets), then digits and separators.
_PHONE = re.compile(r"(?<![\w+])(?:\+|\(?0)\d[\d \-./()]{5,22}\d(?![\w])")
_PHONE_MIN_DIGITS = 8
_PHONE_MAX_DIGITS = 15

_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][\w'’-]+"
_NAME = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}}"
_TITLE = r"(?:Mr|Mrs|Ms|Mx|Dr|Prof|Herr|Frau)"
_SALUTATION = re.compile(
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Dear|Hi|Hello|Hallo|Liebe|Lieber|Sehr geehrte[rs]?)\.?[ \t]+"
    rf"(?:{_TITLE}\.?[ \t]+)?(?!{_TITLE}\b)(?P<name>{_NAME})"
)
_SIGNATURE = re.compile(
    r"^[ \t]*(?i:best regards|kind regards|regards|best wishes|best|thanks|thank you|sincerely|yours sincerely|"
    r"cheers|viele grüße|mit freundlichen grüßen|freundliche grüße|gruß|grüße)[,.!]?[ \t]*\r?\n"
    rf"[ \t]*(?P<name>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,3}})[ \t]*$",
    re.MULTILINE,
)
_HEADER_NAME = re.compile(
    r"^(?i:from|to|cc|bcc|reply-to|sender|von|an)[ \t]*:[ \t]*[\"']?(?P<name>[^\"'<>\r\n,@\[\]]+?)[\"']?[ \t]*<",
    re.MULTILINE,
)
_NAME_WORDS = re.compile(rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,3}}")
# Shorter names found once ("Al", "Sir") are not searched for elsewhere: they would match ordinary words.
_MIN_PROPAGATED_NAME_LENGTH = 4
_NAME_BEFORE_ADDRESS = re.compile(rf"(?P<name>{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{1,3}})[ \t]*<[^<>\s@]+@")


def luhn_is_valid(digits: str) -> bool:
    """Return True when a string of digits passes the Luhn check used by payment card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_is_valid(compact: str) -> bool:
    """Return True when an IBAN without spaces passes the ISO 13616 mod-97 check."""
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


class PatternDetector:
    """The regular-expression detector described in the module docstring."""

    name = "patterns"

    def detect(self, text: str) -> list[PiiFinding]:
        """Return the non-overlapping findings in ``text``, ordered by position."""
        candidates: list[PiiFinding] = []
        candidates += [PiiFinding(PiiKind.EMAIL, match.start(), match.end()) for match in _EMAIL.finditer(text)]
        candidates += self._ibans(text)
        candidates += self._cards(text)
        candidates += self._phones(text)
        candidates += self._names(text)
        return _without_overlaps(candidates)

    @staticmethod
    def _ibans(text: str) -> list[PiiFinding]:
        findings = []
        for match in _IBAN.finditer(text):
            # The pattern may run into a following word in capitals ("... 00 BIC"): try shorter spans too.
            span = match.group()
            for end in range(len(span), 14, -1):
                if not span[end - 1].isalnum():
                    continue
                if iban_is_valid(span[:end].replace(" ", "")):
                    findings.append(PiiFinding(PiiKind.IBAN, match.start(), match.start() + end))
                    break
        return findings

    @staticmethod
    def _cards(text: str) -> list[PiiFinding]:
        findings = []
        for match in _CARD.finditer(text):
            digits = re.sub(r"\D", "", match.group())
            if 13 <= len(digits) <= 19 and luhn_is_valid(digits):
                findings.append(PiiFinding(PiiKind.CARD, match.start(), match.end()))
        return findings

    @staticmethod
    def _phones(text: str) -> list[PiiFinding]:
        findings = []
        for match in _PHONE.finditer(text):
            digit_count = sum(char.isdigit() for char in match.group())
            if _PHONE_MIN_DIGITS <= digit_count <= _PHONE_MAX_DIGITS:
                findings.append(PiiFinding(PiiKind.PHONE, match.start(), match.end()))
        return findings

    @staticmethod
    def _names(text: str) -> list[PiiFinding]:
        findings = []
        known: set[str] = set()
        for pattern in (_SALUTATION, _SIGNATURE, _HEADER_NAME, _NAME_BEFORE_ADDRESS):
            for match in pattern.finditer(text):
                start, end = match.span("name")
                if text[start:end].strip():
                    findings.append(PiiFinding(PiiKind.NAME, start, end))
                    known.update(word_run.group() for word_run in _NAME_WORDS.finditer(text, start, end))

        # A name found in a header, salutation or signature is stripped wherever else it occurs.
        for name in sorted(known, key=len, reverse=True):
            if len(name) < _MIN_PROPAGATED_NAME_LENGTH:
                continue
            for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text):
                findings.append(PiiFinding(PiiKind.NAME, match.start(), match.end()))
        return findings


def _without_overlaps(candidates: list[PiiFinding]) -> list[PiiFinding]:
    # Higher-priority kinds first, longer spans first within a kind; a candidate overlapping a kept one is dropped.
    ordered = sorted(candidates, key=lambda finding: (_PRIORITY[finding.kind], finding.start - finding.end))
    kept: list[PiiFinding] = []
    for finding in ordered:
        if all(finding.end <= other.start or finding.start >= other.end for other in kept):
            kept.append(finding)
    return sorted(kept, key=lambda finding: finding.start)


def strip_pii(text: str, findings: list[PiiFinding]) -> StrippedText:
    """Replace each finding with ``[KIND]`` and count the findings per kind.

    ``findings`` must not overlap, as :meth:`PatternDetector.detect` returns them.
    """
    parts = []
    position = 0
    for finding in sorted(findings, key=lambda item: item.start):
        parts.append(text[position : finding.start])
        parts.append(f"[{finding.kind.value.upper()}]")
        position = finding.end
    parts.append(text[position:])
    return StrippedText(text="".join(parts), counts=dict(Counter(finding.kind for finding in findings)))
