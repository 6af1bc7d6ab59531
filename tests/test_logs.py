"""JSON log output: event names and fields parsed from messages, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from warden.credentials.redaction import forget_secret, register_secret
from warden.logs import JsonFormatter, configure_logging, log_format_from_env, parse_structured_message

SECRET = "hvs.secret-token-4471"


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with one JSON handler, so no other test's handlers are touched."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("warden.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_parse_event_and_fields() -> None:
    event, fields = parse_structured_message(
        "fetch.throttled account=alice stopped_at='INBOX 5' resume_after_seconds=30"
    )

    assert event == "fetch.throttled"
    assert fields == {"account": "alice", "stopped_at": "INBOX 5", "resume_after_seconds": "30"}


def test_parse_plain_sentence() -> None:
    assert parse_structured_message("pdfplumber is not installed, so no tables are read") == (None, {})


def test_json_line_per_record(json_logger) -> None:
    logger, stream = json_logger

    logger.info("vault.logout accessor=%s ttl_seconds=%d", "hmac-1234", 60)
    logger.warning("a plain sentence")

    first, second = lines_of(stream)
    assert first["event"] == "vault.logout"
    assert first["fields"] == {"accessor": "hmac-1234", "ttl_seconds": "60"}
    assert first["level"] == "INFO"
    assert first["logger"] == "warden.test_logs"
    assert first["time"].endswith("Z")
    assert second["event"] is None
    assert second["message"] == "a plain sentence"


def test_json_masks_secret_in_message_and_traceback(json_logger) -> None:
    logger, stream = json_logger
    register_secret(SECRET)
    configure_logging("text")  # installs the redacting filter on the new handler
    try:
        logger.info("vault.token_issued token=%s", SECRET)
        try:
            raise RuntimeError(f"upstream echoed {SECRET}")
        except RuntimeError:
            logger.exception("vault.revoke_failed account=alice")
    finally:
        forget_secret(SECRET)

    output = stream.getvalue()
    assert SECRET not in output
    issued, failed = lines_of(stream)
    assert issued["fields"]["token"] == "***"
    assert "upstream echoed ***" in failed["exception"]


def test_configure_json_sets_console_formatters(json_logger) -> None:
    logger, _ = json_logger
    plain = logging.StreamHandler(io.StringIO())
    logger.addHandler(plain)
    # configure_logging changes every console handler, pytest's too: put their formatters back afterwards.
    every_handler = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    previous = {handler: handler.formatter for owner in every_handler for handler in getattr(owner, "handlers", [])}
    try:
        changed = configure_logging("json")
        assert plain in changed
        assert isinstance(plain.formatter, JsonFormatter)
    finally:
        logger.removeHandler(plain)
        for handler, formatter in previous.items():
            handler.setFormatter(formatter)


def test_format_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_LOG_FORMAT", "JSON")
    assert log_format_from_env() == "json"

    monkeypatch.delenv("WARDEN_LOG_FORMAT")
    assert log_format_from_env() == "text"

    monkeypatch.setenv("WARDEN_LOG_FORMAT", "yaml")
    with pytest.raises(ValueError, match="WARDEN_LOG_FORMAT='yaml'"):
        log_format_from_env()
