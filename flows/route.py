"""The ``route-documents`` flow: send each extracted attachment of an account to at most one vetted model.

Each attachment's text is checked for personal data, classified, and routed by
the model roster Block; see :mod:`warden.routing.router` for when nothing is
sent. Every decision is returned and published in two table artifacts: one row
per decision, and the counts of documents and PII findings per route.

Run it ad hoc::

    from flows.route import route_documents

    decisions = route_documents("demo", roster="default", task_type="embedding")
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.roster import ModelRoster
from blocks.vault import VaultConnection
from warden.accounts import check_account_name
from warden.credentials.redaction import install_redaction
from warden.credentials.vault import VaultClient
from warden.errors import ConfigError
from warden.routing import ModelKind, PatternDetector, Router, RoutingDecision, TaskType, VaultModelKeys
from warden.routing.router import document_name, summarize_decisions
from warden.store import default_document_store

__all__ = ["route_documents"]


# No retries: a retried task could send the same payload a second time.
@task(name="route-document", retries=0, cache_policy=NO_CACHE)
def route_document(router: Router, row: dict[str, Any], task_type: TaskType) -> RoutingDecision:
    """Route one attachment row and return the decision; the model's output is not kept."""
    return router.route(document_name(row), row.get("text") or "", task_type).decision


@flow(name="route-documents", log_prints=False)
def route_documents(account: str, roster: str = "default", task_type: TaskType = TaskType.EMBEDDING) -> list[dict]:
    """Route every attachment of ``account`` by the roster Block named ``roster``; return the decisions.

    Args:
        account: the account whose extracted attachments are routed.
        roster: name of the Warden Model Roster Block.
        task_type: what the chosen model does with each document: embedding or summary.
    """
    install_redaction()
    run_logger = get_run_logger()
    check_account_name(account)

    roster_block = _load_roster(roster)
    vault: VaultClient | None = None
    if any(model.kind is ModelKind.OPENAI_COMPATIBLE for model in roster_block.models):
        vault = VaultClient(_load_vault_block(roster_block).settings())

    router = Router(
        roster_block.to_roster(),
        PatternDetector(),
        rule=roster_block.sensitivity_rule,
        keys=None if vault is None else VaultModelKeys(vault, ttl_seconds=roster_block.key_token_ttl_seconds),
    )

    # NOTE: the store keeps no routing status yet, so each run routes every attachment of the account again.
    rows = default_document_store().attachments_for(account)
    try:
        decisions = [route_document(router, row, task_type) for row in rows]
    finally:
        if vault is not None:
            vault.logout()

    _publish_artifacts(account, decisions)
    run_logger.info(
        "routing.done account=%s documents=%d sent=%d",
        account,
        len(decisions),
        sum(1 for decision in decisions if decision.status == "sent"),
    )
    return [decision.as_dict() for decision in decisions]


def _load_roster(name: str) -> ModelRoster:
    try:
        return ModelRoster.load(name)
    except ValueError as exc:
        raise ConfigError(
            f"No model roster named '{name}' is registered (no Warden Model Roster Block of that name). "
            "Save one as described in docs/routing.md."
        ) from exc


def _load_vault_block(roster_block: ModelRoster) -> VaultConnection:
    try:
        return VaultConnection.load(roster_block.vault_block)
    except ValueError as exc:
        raise ConfigError(
            f"The model roster names the vault Block '{roster_block.vault_block}', which does not exist. "
            "Create it with `warden setup`."
        ) from exc


def _publish_artifacts(account: str, decisions: list[RoutingDecision]) -> None:
    key = f"routing-{account}".lower().replace("_", "-")
    create_table_artifact(
        key=key,
        table=summarize_decisions(decisions),
        description=f"Documents and PII findings per route and status for account '{account}'.",
    )

    rows = []
    for decision in decisions:
        record = decision.as_dict()
        counts = record.pop("pii_counts")
        rows.append({**record, **{f"pii_{kind}": count for kind, count in counts.items()}})
    create_table_artifact(
        key=f"{key}-decisions",
        table=rows,
        description=f"Every routing decision for account '{account}': model, status and reason.",
    )
