"""Route one document to at most one model: detect, classify, choose, strip, send once.

The router fails closed. A document is not sent when the detector raises,
when no route allows its sensitivity and task type, when personal data is
still found in the stripped text, or when no key source is configured for an
HTTP model. Text for an HTTP model is always stripped, whatever its
sensitivity; a local model receives the text as extracted, since it never
leaves the process. Each call returns a :class:`RoutingDecision` that contains
counts and names, never document text.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from warden.errors import WardenError
from warden.routing.classify import SensitivityRule, classify
from warden.routing.clients import ModelOutput, call_http_model, call_local_model
from warden.routing.keys import ModelKey
from warden.routing.pii import PiiDetector, PiiKind, strip_pii
from warden.routing.roster import ModelKind, Roster, RosterModel, Sensitivity, TaskType

__all__ = [
    "KeySource",
    "RouteStatus",
    "RoutedDocument",
    "Router",
    "RoutingDecision",
    "document_name",
    "route_rows",
    "summarize_decisions",
]

logger = logging.getLogger("warden.routing")


class RouteStatus(StrEnum):
    """The outcome of routing one document."""

    SENT = "sent"
    # Nothing left the process: no route, a detector failure, or PII left after stripping.
    NOT_SENT = "not-sent"
    # The one call was made and failed; an HTTP model may have received the stripped text.
    FAILED = "failed"


class KeySource(Protocol):
    """A source of an HTTP model's API key for one call, e.g. :class:`VaultModelKeys`."""

    def api_key(self, model: RosterModel) -> AbstractContextManager[ModelKey]: ...


@dataclass(frozen=True)
class RoutingDecision:
    """The record of one document's routing: where it went, why, and how much personal data it held."""

    document: str
    task_type: TaskType
    status: RouteStatus
    reason: str
    sensitivity: Sensitivity | None = None
    model: str | None = None
    model_kind: ModelKind | None = None
    pii_counts: dict[PiiKind, int] = field(default_factory=dict)
    stripped: bool = False
    key_token_revoked: bool | None = None
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the decision with plain strings for enums, for artifacts and flow results."""
        record = asdict(self)
        record["pii_counts"] = {kind.value: count for kind, count in self.pii_counts.items()}
        for key in ("task_type", "status", "sensitivity", "model_kind"):
            if record[key] is not None:
                record[key] = str(record[key])
        return record


@dataclass(frozen=True)
class RoutedDocument:
    """A decision and, when the document was sent, what the model returned."""

    decision: RoutingDecision
    output: ModelOutput | None = None


class Router:
    """Routes documents by the roster's policy; see the module docstring for when it sends nothing."""

    def __init__(
        self,
        roster: Roster,
        detector: PiiDetector,
        *,
        rule: SensitivityRule | None = None,
        keys: KeySource | None = None,
    ) -> None:
        self._roster = roster
        self._detector = detector
        self._rule = rule or SensitivityRule()
        self._keys = keys

    def route(self, document: str, text: str, task_type: TaskType) -> RoutedDocument:
        """Route ``text`` (named ``document`` in the record) for one task, sending it to at most one model."""
        started = time.monotonic()
        routed = self._route(document, text, task_type)
        decision = routed.decision
        decision = RoutingDecision(**{**decision.__dict__, "elapsed_seconds": round(time.monotonic() - started, 3)})
        logger.info(
            "routing.decided document=%s task=%s sensitivity=%s model=%s status=%s pii=%s",
            document,
            task_type.value,
            decision.sensitivity,
            decision.model,
            decision.status.value,
            {kind.value: count for kind, count in decision.pii_counts.items()},
        )
        return RoutedDocument(decision=decision, output=routed.output)

    def _route(self, document: str, text: str, task_type: TaskType) -> RoutedDocument:
        def not_sent(reason: str, **fields: Any) -> RoutedDocument:
            return RoutedDocument(RoutingDecision(document, task_type, RouteStatus.NOT_SENT, reason, **fields))

        if not text.strip():
            return not_sent("The document has no extracted text, so there is nothing to send.")

        try:
            findings = self._detector.detect(text)
        except Exception as exc:  # noqa: BLE001 - any detector failure must stop the document, never pass it
            logger.error(
                "routing.detector_failed document=%s detector=%s error=%s",
                document,
                self._detector.name,
                type(exc).__name__,
            )
            return not_sent(
                f"PII detection with '{self._detector.name}' failed ({type(exc).__name__}), so nothing was sent. "
                "Fix the detector and route the document again."
            )

        counts = dict(Counter(finding.kind for finding in findings))
        sensitivity = classify(findings, self._rule)
        choice = self._roster.choose(sensitivity, task_type)
        if choice.model is None:
            return not_sent(choice.reason, sensitivity=sensitivity, pii_counts=counts)

        model = choice.model
        fields: dict[str, Any] = dict(
            sensitivity=sensitivity, model=model.name, model_kind=model.kind, pii_counts=counts
        )
        if model.kind is ModelKind.LOCAL:
            return self._call(document, task_type, fields, lambda: call_local_model(model, task_type, text))

        payload = strip_pii(text, findings).text
        leftover = self._leftover_kinds(payload)
        if leftover:
            return not_sent(
                f"Personal data ({', '.join(leftover)}) was still found after stripping, so nothing was sent to "
                f"'{model.name}'.",
                **fields,
            )
        if self._keys is None:
            return not_sent(
                f"No key source is configured for HTTP model '{model.name}', so nothing was sent.", **fields
            )

        fields["stripped"] = True
        return self._call_http(document, task_type, fields, model, payload)

    def _leftover_kinds(self, payload: str) -> list[str]:
        try:
            return sorted({finding.kind.value for finding in self._detector.detect(payload)})
        except Exception as exc:  # noqa: BLE001 - a failing second pass also stops the document
            return [f"unknown: the second detector pass failed with {type(exc).__name__}"]

    def _call_http(
        self, document: str, task_type: TaskType, fields: dict[str, Any], model: RosterModel, payload: str
    ) -> RoutedDocument:
        assert self._keys is not None
        key: ModelKey | None = None
        try:
            with self._keys.api_key(model) as key:
                routed = self._call(
                    document, task_type, fields, lambda: call_http_model(model, task_type, payload, key.secret)
                )
        except WardenError as exc:
            # The key could not be fetched: the request was never made.
            return RoutedDocument(RoutingDecision(document, task_type, RouteStatus.NOT_SENT, str(exc), **fields))

        revoked = key.proof.proven if key is not None and key.proof is not None else None
        return RoutedDocument(
            RoutingDecision(**{**routed.decision.__dict__, "key_token_revoked": revoked}), routed.output
        )

    @staticmethod
    def _call(document: str, task_type: TaskType, fields: dict[str, Any], call: Any) -> RoutedDocument:
        try:
            output = call()
        except WardenError as exc:
            logger.error("routing.call_failed document=%s model=%s kind=%s", document, fields["model"], exc.kind.value)
            return RoutedDocument(RoutingDecision(document, task_type, RouteStatus.FAILED, str(exc), **fields))
        reason = f"sent to '{fields['model']}'" + (" after stripping PII" if fields.get("stripped") else "")
        return RoutedDocument(RoutingDecision(document, task_type, RouteStatus.SENT, reason, **fields), output)


def summarize_decisions(decisions: Iterable[RoutingDecision]) -> list[dict[str, Any]]:
    """Count documents and PII findings per route and status, one row each, for a table artifact."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for decision in decisions:
        route = decision.model or "none"
        row = rows.setdefault(
            (route, decision.status.value),
            {"route": route, "status": decision.status.value, "documents": 0, **{kind.value: 0 for kind in PiiKind}},
        )
        row["documents"] += 1
        for kind, count in decision.pii_counts.items():
            row[kind.value] += count
    return [rows[key] for key in sorted(rows)]


def document_name(row: dict[str, Any]) -> str:
    """Name an attachment row of the document store in decisions and logs, without its file name or text."""
    return f"attachment {row['id']} of message {row['uid']}"


def route_rows(router: Router, rows: Iterable[dict[str, Any]], task_type: TaskType) -> list[RoutingDecision]:
    """Route each attachment row of :meth:`DocumentStore.attachments_for` once; return every decision."""
    return [router.route(document_name(row), row.get("text") or "", task_type).decision for row in rows]
