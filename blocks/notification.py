"""The notification Block that Connector Warden's alerts send to: a webhook.

Alerts use Prefect's built-in ``CustomWebhookNotificationBlock``, because the
Prefect server sends the notification itself and can load only Block types it
ships with. :func:`save_alert_webhook` saves one that POSTs each alert as JSON::

    await save_alert_webhook("warden-alerts", "https://chat.example/hooks/warden")
    block = await CustomWebhookNotificationBlock.aload("warden-alerts")

The request body is ``{"subject": ..., "body": ..., "name": <block name>}``.
"""

from __future__ import annotations

from prefect.blocks.notifications import CustomWebhookNotificationBlock

__all__ = ["ALERT_WEBHOOK_JSON", "save_alert_webhook"]

# Placeholders the block fills in from each notification.
ALERT_WEBHOOK_JSON = {"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"}


async def save_alert_webhook(
    block_name: str,
    url: str,
    *,
    timeout_seconds: float = 10.0,
    overwrite: bool = True,
) -> CustomWebhookNotificationBlock:
    """Save a webhook notification Block under ``block_name`` that POSTs alerts as JSON to ``url``.

    Keep credentials out of ``url``: Prefect returns the Block's fields to anyone
    who can reach its API.
    """
    block = CustomWebhookNotificationBlock(
        name=block_name,
        url=url,
        method="POST",
        json_data=ALERT_WEBHOOK_JSON,
        timeout=timeout_seconds,
    )
    await block.asave(block_name, overwrite=overwrite)
    return block
