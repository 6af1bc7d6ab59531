"""Log output in the project's structured form, as text or as one JSON object per line.

Every log message of the project starts with a stable event name, followed by
``key=value`` fields: ``vault.logout accessor=hmac-1234 ttl_seconds=60``. With
``WARDEN_LOG_FORMAT=json`` (or ``configure_logging("json")``) console handlers
write each record as one JSON object instead::

    {"time": "2026-12-04T23:27:24.120Z", "level": "INFO", "logger": "warden.credentials.vault",
     "event": "vault.logout", "fields": {"accessor": "hmac-1234", "ttl_seconds": "60"},
     "message": "vault.logout accessor=hmac-1234 ttl_seconds=60"}

Field values stay strings, as they were written in the message; a value written
with ``%r`` loses its quotes. A message that does not start with an event name
(third-party libraries, plain sentences) gets ``"event": null`` and no fields.

The redaction filter of :mod:`warden.credentials.redaction` masks secrets in the
message and traceback before any formatter runs, so the JSON carries only masked
text. :func:`configure_logging` installs that filter on every handler it sets up.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from warden.credentials.redaction import install_redaction

__all__ = [
    "LOG_FORMAT_ENV",
    "LOG_FORMATS",
    "JsonFormatter",
    "configure_logging",
    "log_format_from_env",
    "parse_structured_message",
]

LOG_FORMAT_ENV = "WARDEN_LOG_FORMAT"
LOG_FORMATS = ("text", "json")

# An event name is dotted lower-case words, e.g. "vault.logout" or "fetch.throttled".
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)+")
# A field is key=value; the value is a quoted Python literal (from %r) or runs to the next space.
_FIELD = re.compile(r"""([A-Za-z_][A-Za-z0-9_.]*)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S*)""")


def parse_structured_message(message: str) -> tuple[str | None, dict[str, str]]:
    """Split ``"event.name key=value ..."`` into the event name and its fields.

    Returns ``(None, {})`` when the message does not start with an event name.
    """
    head, _, rest = message.partition(" ")
    if not _EVENT_NAME.fullmatch(head):
        return None, {}

    fields: dict[str, str] = {}
    for match in _FIELD.finditer(rest):
        key, value = match.group(1), match.group(2)
        if value[:1] in ("'", '"'):
            # A value cut short by a space inside unbalanced quotes stays as written.
            with contextlib.suppress(SyntaxError, ValueError):
                value = str(ast.literal_eval(value))
        fields[key] = value
    return head, fields


class JsonFormatter(logging.Formatter):
    """Format a record as one line of JSON: time, level, logger, event, fields, message and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, fields = parse_structured_message(message)
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
            "fields": fields,
            "message": message,
        }

        # The redaction filter leaves a masked exc_text; formatting exc_info again would unmask it.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        return json.dumps(document, ensure_ascii=False, default=str)


def log_format_from_env() -> str:
    """Return the log format named by ``WARDEN_LOG_FORMAT``: ``text`` (the default) or ``json``.

    Raises:
        ValueError: the variable names another format.
    """
    value = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_ENV}={value!r} is not a log format. Set it to one of: {', '.join(LOG_FORMATS)}.")
    return value


def _console_handlers() -> list[logging.StreamHandler]:
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]

    handlers: list[logging.StreamHandler] = []
    for logger in loggers:
        for handler in logger.handlers:
            # FileHandler subclasses StreamHandler; files keep their own format.
            is_console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            if is_console and handler not in handlers:
                handlers.append(handler)
    return handlers


def configure_logging(
    log_format: str | None = None,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
    add_root_handler: bool = True,
) -> list[logging.Handler]:
    """Set the format of console log output and install redaction on every handler; return the handlers changed.

    ``log_format`` is ``text`` or ``json``; None reads ``WARDEN_LOG_FORMAT``. For
    ``json`` every console handler that exists (Prefect's included) gets a
    :class:`JsonFormatter`. When the root logger has no handler and
    ``add_root_handler`` is true, one that writes to ``stream`` (stderr by
    default) at ``level`` is added first. Inside a Prefect flow pass
    ``add_root_handler=False``, because Prefect's handlers already write the
    ``warden`` loggers and a root handler would print each line twice. ``text`` keeps
    the existing formatters. Call it again after a library adds handlers.
    """
    log_format = log_format_from_env() if log_format is None else log_format
    if log_format not in LOG_FORMATS:
        raise ValueError(f"{log_format!r} is not a log format. Use one of: {', '.join(LOG_FORMATS)}.")

    root = logging.getLogger()
    if add_root_handler and not root.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setLevel(level)
        root.addHandler(handler)
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)

    changed: list[logging.Handler] = []
    if log_format == "json":
        for handler in _console_handlers():
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
                changed.append(handler)

    install_redaction()
    return changed
