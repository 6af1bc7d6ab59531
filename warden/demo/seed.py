"""Put the demo messages into a mailbox over IMAP, once.

Seeding is idempotent: a message whose Message-ID is already in the mailbox
is not appended again, so ``make demo`` can run any number of times.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Sequence
from email.message import EmailMessage

from pydantic import SecretStr

from warden.errors import UnexpectedResponse

__all__ = ["seed_mailbox"]

logger = logging.getLogger("warden.demo")


def seed_mailbox(
    host: str,
    port: int,
    username: str,
    password: SecretStr,
    messages: Sequence[EmailMessage],
    *,
    mailbox: str = "INBOX",
) -> int:
    """Append each message not yet in ``mailbox`` (matched by Message-ID); return how many were added."""
    added = 0
    with imaplib.IMAP4(host, port, timeout=30) as imap:
        imap.login(username, password.get_secret_value())
        imap.select(mailbox)

        for message in messages:
            message_id = message["Message-ID"]
            status, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"{message_id}"')
            if status == "OK" and data and data[0].strip():
                continue

            status, _ = imap.append(mailbox, "", None, message.as_bytes())
            if status != "OK":
                raise UnexpectedResponse(
                    f"Could not append demo message {message_id} to {mailbox} of user '{username}' "
                    f"at {host}:{port}: the server answered {status}."
                )
            added += 1

    logger.info("demo.seeded mailbox=%s added=%d total=%d", mailbox, added, len(messages))
    return added
