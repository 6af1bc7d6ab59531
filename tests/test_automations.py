"""The alert automations against a real Prefect server, notifying a webhook receiver on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from blocks.notification import save_alert_webhook
from flows.automations import ALERTS, ensure_alerts
from tests.sites.webhook_receiver import WebhookReceiver
from warden.events import EventName

pytestmark = pytest.mark.stack

# A count trigger fired about 2 s after its threshold on Prefect 3.9.1; the rest is margin for a busy machine.
ALERT_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as webhook:
        yield webhook


@pytest.fixture(scope="module")
async def alert_block(prefect_server, receiver: WebhookReceiver) -> str:
    name = "warden-test-alerts"
    await save_alert_webhook(name, receiver.url, timeout_seconds=5.0)
    await ensure_alerts(name)
    return name


def emit_account_event(name: EventName, account: str) -> None:
    # The same resource as flows.orchestration.PrefectEventSink gives the event.
    emit_event(
        event=name.value,
        resource={
            "prefect.resource.id": f"warden.account.{account}",
            "prefect.resource.name": account,
            "prefect.resource.role": "account",
        },
        payload={"reason": "test"},
    )


def mentions(account: str, subject_word: str):
    return lambda body: account in body.get("subject", "") and subject_word in body.get("subject", "")


async def test_setup_twice_keeps_one_automation(alert_block: str) -> None:
    """A second set-up updates the automations in place instead of adding copies."""
    first = await ensure_alerts(alert_block)
    second = await ensure_alerts(alert_block)

    assert first == second
    async with get_client() as client:
        for alert in ALERTS:
            found = await client.read_automations_by_name(alert.name)
            assert len(found) == 1, f"{alert.name}: {len(found)} automations"
            assert found[0].enabled


async def test_login_required_alerts_at_third(alert_block: str, receiver: WebhookReceiver) -> None:
    """Two login-required events of one account do not alert; the third does, for that account only."""
    account = f"alert-{uuid.uuid4().hex[:8]}"
    other = f"other-{uuid.uuid4().hex[:8]}"

    for _ in range(2):
        emit_account_event(EventName.LOGIN_REQUIRED, account)
    # Two for another account must not add up with the first account's two.
    for _ in range(2):
        emit_account_event(EventName.LOGIN_REQUIRED, other)
    await EventsWorker.drain_all()
    assert receiver.wait_for(mentions(account, "login"), timeout_seconds=5.0) == []

    emit_account_event(EventName.LOGIN_REQUIRED, account)
    await EventsWorker.drain_all()
    alerts = receiver.wait_for(mentions(account, "login"), timeout_seconds=ALERT_TIMEOUT_SECONDS)

    assert len(alerts) == 1
    assert f"warden login {account}" in alerts[0]["body"]
    assert alerts[0]["name"] == alert_block
    assert receiver.wait_for(mentions(other, "login"), timeout_seconds=0) == []


async def test_revocation_unproven_alerts_at_once(alert_block: str, receiver: WebhookReceiver) -> None:
    account = f"revoke-{uuid.uuid4().hex[:8]}"

    emit_account_event(EventName.REVOCATION_UNPROVEN, account)
    await EventsWorker.drain_all()
    alerts = receiver.wait_for(mentions(account, "revocation"), timeout_seconds=ALERT_TIMEOUT_SECONDS)

    assert len(alerts) == 1
    assert "Revoke it by accessor" in alerts[0]["body"]


async def test_browser_crashes_alert_at_third(alert_block: str, receiver: WebhookReceiver) -> None:
    """Crashes count across accounts: three of different accounts alert once."""

    def is_crash_alert(body) -> bool:
        return body.get("subject") == "Chromium crashed repeatedly"

    accounts = [f"crash-{index}-{uuid.uuid4().hex[:6]}" for index in range(3)]
    for account in accounts[:2]:
        emit_account_event(EventName.BROWSER_CRASHED, account)
    await EventsWorker.drain_all()
    assert receiver.wait_for(is_crash_alert, timeout_seconds=5.0) == []

    emit_account_event(EventName.BROWSER_CRASHED, accounts[2])
    await EventsWorker.drain_all()
    alerts = receiver.wait_for(is_crash_alert, timeout_seconds=ALERT_TIMEOUT_SECONDS)

    assert len(alerts) == 1
    assert accounts[2] in alerts[0]["body"]
