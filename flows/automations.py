"""Prefect automations that alert an operator, created or updated by name so set-up can run again.

Three alerts, each a count trigger on the events of :mod:`warden.events`:

- ``warden-login-required``: one account raised ``warden.login.required`` 3 or
  more times within an hour (counted per account, ``for_each`` resource id);
- ``warden-revocation-unproven``: any ``warden.revocation.unproven``, because a
  token may still be live;
- ``warden-browser-crashes``: ``warden.browser.crashed`` 3 or more times within
  30 minutes, from any account.

One more automation keeps the runs of a dead worker from showing as running
forever: ``warden-unresponsive-runs`` marks a flow run Crashed when it sent a
heartbeat and then, for ``UNRESPONSIVE_AFTER_SECONDS``, neither another
heartbeat nor a final state. Workers send heartbeats when
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set (``HEARTBEAT_SECONDS``).
:func:`ensure_unresponsive_run_detection` creates it; ``warden setup`` does so
always.

Each alert sends a notification through a notification Block, for example the
webhook that :func:`blocks.notification.save_alert_webhook` saves::

    await save_alert_webhook("warden-alerts", "https://chat.example/hooks/warden")
    await ensure_alerts("warden-alerts")

The Prefect server evaluates the triggers and sends the notifications. A count
trigger fired about 2 s after the threshold event on Prefect 3.9.1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from warden.errors import ConfigError
from warden.events import EventName

__all__ = [
    "ALERTS",
    "Alert",
    "HEARTBEAT_SECONDS",
    "UNRESPONSIVE_RUNS",
    "alert_automation",
    "ensure_alerts",
    "ensure_unresponsive_run_detection",
    "unresponsive_run_automation",
]

logger = logging.getLogger("warden.automations")

# Matches the resource id that flows.orchestration.PrefectEventSink gives every event.
ACCOUNT_RESOURCE_PATTERN = "warden.account.*"
# The slug of blocks.notification's webhook, Prefect's CustomWebhookNotificationBlock.
DEFAULT_NOTIFICATION_BLOCK_TYPE = "custom-webhook"

UNRESPONSIVE_RUNS = "warden-unresponsive-runs"
# The value of PREFECT_FLOWS_HEARTBEAT_FREQUENCY on workers. Prefect sends at most one heartbeat per 30 s.
HEARTBEAT_SECONDS = 30
# Three missed heartbeats: long enough that a worker busy with CPU-bound extraction is not taken for dead.
UNRESPONSIVE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
FLOW_RUN_FINAL_EVENTS = (
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)


@dataclass(frozen=True)
class Alert:
    """One alert: the event it counts, how many within what window, and the notification text."""

    name: str
    description: str
    event: EventName
    threshold: int
    within_seconds: int
    per_account: bool
    subject: str
    body: str


ALERTS = (
    Alert(
        name="warden-login-required",
        description="One account needed a new login 3 or more times within an hour.",
        event=EventName.LOGIN_REQUIRED,
        threshold=3,
        within_seconds=3600,
        per_account=True,
        subject="Account {{ event.resource.name }} keeps asking for a login",
        body=(
            "Account {{ event.resource.name }} raised warden.login.required 3 or more times within an hour "
            "(last at {{ event.occurred }}). Its automatic login is failing: run `warden login "
            "{{ event.resource.name }}` or start the guided-login deployment."
        ),
    ),
    Alert(
        name="warden-revocation-unproven",
        description="A vault token could not be proven revoked after a sync.",
        event=EventName.REVOCATION_UNPROVEN,
        threshold=1,
        within_seconds=0,
        per_account=False,
        subject="Token revocation unproven for account {{ event.resource.name }}",
        body=(
            "A vault token issued for account {{ event.resource.name }} could not be proven revoked "
            "(at {{ event.occurred }}), so it may still be usable. Revoke it by accessor in the vault and "
            "check the run's failure artifact."
        ),
    ),
    Alert(
        name="warden-browser-crashes",
        description="Chromium crashed 3 or more times within 30 minutes.",
        event=EventName.BROWSER_CRASHED,
        threshold=3,
        within_seconds=1800,
        per_account=False,
        subject="Chromium crashed repeatedly",
        body=(
            "warden.browser.crashed was raised 3 or more times within 30 minutes, the last for account "
            "{{ event.resource.name }} at {{ event.occurred }}. Check the worker's memory and run the "
            "check-browser deployment."
        ),
    ),
)


def alert_automation(alert: Alert, notification_block_id: UUID) -> AutomationCore:
    """Build the automation of one alert, sending to the notification Block with ``notification_block_id``."""
    trigger = EventTrigger(
        expect={alert.event.value},
        match={"prefect.resource.id": ACCOUNT_RESOURCE_PATTERN},
        for_each={"prefect.resource.id"} if alert.per_account else set(),
        posture=Posture.Reactive,
        threshold=alert.threshold,
        within=timedelta(seconds=alert.within_seconds),
    )
    action = SendNotification(block_document_id=notification_block_id, subject=alert.subject, body=alert.body)
    return AutomationCore(
        name=alert.name,
        description=alert.description,
        enabled=True,
        trigger=trigger,
        actions=[action],
    )


async def ensure_alerts(
    notification_block_name: str,
    *,
    block_type_slug: str = DEFAULT_NOTIFICATION_BLOCK_TYPE,
) -> dict[str, UUID]:
    """Create or update the automation of every alert in :data:`ALERTS`; return their ids by name.

    The notification Block must be saved first under ``notification_block_name``,
    for example with :func:`blocks.notification.save_alert_webhook`. Pass
    ``block_type_slug`` for another notification Block type (``slack-webhook``). An existing
    automation of the same name is updated in place, and any duplicates of it are
    deleted, so running set-up again leaves one automation per alert.
    """
    ids: dict[str, UUID] = {}
    async with get_client() as client:
        try:
            block = await client.read_block_document_by_name(notification_block_name, block_type_slug)
        except ObjectNotFound as exc:
            raise ConfigError(
                f"No notification Block '{notification_block_name}' of type '{block_type_slug}' was found, so the "
                "alerts have nowhere to send. Save it first, for example with blocks.notification.save_alert_webhook."
            ) from exc

        for alert in ALERTS:
            ids[alert.name] = await _create_or_update(client, alert_automation(alert, block.id))
    return ids


def unresponsive_run_automation(within_seconds: int = UNRESPONSIVE_AFTER_SECONDS) -> AutomationCore:
    """Build the automation that marks a flow run Crashed when its heartbeats stop for ``within_seconds``."""
    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *FLOW_RUN_FINAL_EVENTS},
        match={"prefect.resource.id": "prefect.flow-run.*"},
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=within_seconds),
    )
    action = ChangeFlowRunState(
        state=StateType.CRASHED,
        message=(
            f"No heartbeat for {within_seconds} s: the worker running this flow run stopped (killed, or its host "
            "went down). Its accounts sync again on the next run; its concurrency slots free when their lease ends."
        ),
    )
    return AutomationCore(
        name=UNRESPONSIVE_RUNS,
        description="Marks a flow run Crashed when its worker stops sending heartbeats.",
        enabled=True,
        trigger=trigger,
        actions=[action],
    )


async def ensure_unresponsive_run_detection(within_seconds: int = UNRESPONSIVE_AFTER_SECONDS) -> UUID:
    """Create or update the ``warden-unresponsive-runs`` automation; return its id."""
    async with get_client() as client:
        return await _create_or_update(client, unresponsive_run_automation(within_seconds))


async def _create_or_update(client: PrefectClient, automation: AutomationCore) -> UUID:
    """Create the automation, or update the one of the same name in place and delete its duplicates."""
    existing = await client.read_automations_by_name(automation.name)
    if not existing:
        automation_id = await client.create_automation(automation)
        logger.info("setup.automation_created name=%s", automation.name)
        return automation_id

    # The client's Automation model has no creation time, so the lowest id is kept.
    kept, *duplicates = sorted(existing, key=lambda found: str(found.id))
    await client.update_automation(kept.id, automation)
    for duplicate in duplicates:
        await client.delete_automation(duplicate.id)
    logger.info("setup.automation_updated name=%s duplicates_deleted=%d", automation.name, len(duplicates))
    return kept.id
