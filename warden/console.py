"""Terminal output of the ``warden`` command: short errors, no tracebacks for expected failures.

An expected failure (any :class:`~warden.errors.WardenError` except a bug)
already states what failed and what to do, so its traceback on the terminal
only buries that sentence. :class:`ExpectedErrorFilter` drops the traceback from
records that console handlers write; the Prefect API handler, which runs
first for flow and task run loggers, still sends it to the UI.
"""

from __future__ import annotations

import logging

from warden.errors import ErrorKind, WardenError

__all__ = ["ExpectedErrorFilter", "quiet_expected_tracebacks"]


class ExpectedErrorFilter(logging.Filter):
    """Keep a record's message but drop its traceback when the exception is an expected failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, WardenError) and error.kind != ErrorKind.BUG:
            record.exc_info = None
            record.exc_text = None
        return True


_filter = ExpectedErrorFilter()


def quiet_expected_tracebacks() -> None:
    """Put the filter on every handler that writes to a terminal stream."""
    loggers = [logging.getLogger()]
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            loggers.append(logger)
    for logger in loggers:
        for handler in logger.handlers:
            is_console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            if is_console and _filter not in handler.filters:
                handler.addFilter(_filter)
