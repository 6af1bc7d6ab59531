"""The redacting filter masks registered secrets in every part of a log record."""

import logging

from warden.credentials.redaction import MASK, RedactingFilter, redact, register_secret


def test_message_and_args_masked():
    register_secret("hunter2-secret-token")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "token=%s done", ("hunter2-secret-token",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"token={MASK} done"


def test_traceback_masked():
    register_secret("password-in-traceback")
    try:
        raise ValueError("bad password-in-traceback")
    except ValueError:
        import sys

        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactingFilter().filter(record)
    assert "password-in-traceback" not in record.exc_text
    assert MASK in record.exc_text


def test_short_values_not_registered():
    register_secret("abc")
    assert redact("abc") == "abc"


def test_longer_secret_masked_whole():
    register_secret("prefix-secret")
    register_secret("prefix-secret-and-more")
    assert redact("x prefix-secret-and-more y") == f"x {MASK} y"
