"""Mask registered secrets in every log record before any handler writes it.

Secrets are registered the moment they enter the process (a vault token after
unwrapping, a password read from KV, the cookie values of a decrypted session).
:func:`install_redaction` puts one :class:`RedactingFilter` on every handler
that exists at that time (the root logger's, Prefect's including the handler
that ships logs to the Prefect API, httpx's, Playwright's), and is idempotent,
so callers run it again after they add handlers.

Filters on handlers, not on loggers: a logger's filter does not run for records
that propagate from its children, but a handler's filter runs for every
record the handler writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

__all__ = [
    "MASK",
    "RedactingFilter",
    "forget_secret",
    "install_redaction",
    "redact",
    "register_secret",
    "registered_secret_count",
]

MASK = "***"

# Values shorter than this would mask ordinary words and numbers in every log line.
MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str | bytes | None) -> None:
    """Add a secret to the set masked in every log record."""
    if value is None:
        return

    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="ignore")

    if len(value) < MIN_SECRET_LENGTH:
        return

    with _lock:
        _secrets.add(value)


def forget_secret(value: str) -> None:
    """Stop masking a value, for example a token proven revoked."""
    with _lock:
        _secrets.discard(value)


def registered_secret_count() -> int:
    """Return how many secrets are masked, for tests and diagnostics."""
    with _lock:
        return len(_secrets)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with the mask."""
    with _lock:
        # Longest first, so a secret that contains another is masked whole.
        current = sorted(_secrets, key=len, reverse=True)

    for secret in current:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrite a record's message, arguments and traceback with secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must still be masked, not dropped
            message = str(record.msg)

        record.msg = redact(message)
        record.args = None

        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_filter = RedactingFilter()


def _all_handlers() -> Iterable[logging.Handler]:
    yield from logging.getLogger().handlers

    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            yield from logger.handlers


def install_redaction() -> int:
    """Attach the redacting filter to every handler not yet filtered; return how many were new."""
    added = 0
    for handler in _all_handlers():
        if _filter not in handler.filters:
            handler.addFilter(_filter)
            added += 1
    return added
