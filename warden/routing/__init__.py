"""Model routing: a vetted roster, a policy by sensitivity and task type, and PII stripping."""

from warden.routing.classify import SensitivityRule, classify
from warden.routing.clients import ModelOutput
from warden.routing.keys import VaultModelKeys, model_call_policy_name, render_model_call_policy
from warden.routing.pii import PatternDetector, PiiFinding, PiiKind, strip_pii
from warden.routing.roster import ModelKind, Roster, RosterModel, Route, Sensitivity, TaskType
from warden.routing.router import Router, RouteStatus, RoutingDecision, route_rows, summarize_decisions

__all__ = [
    "ModelKind",
    "ModelOutput",
    "PatternDetector",
    "PiiFinding",
    "PiiKind",
    "Roster",
    "RosterModel",
    "Route",
    "RouteStatus",
    "Router",
    "RoutingDecision",
    "Sensitivity",
    "SensitivityRule",
    "TaskType",
    "VaultModelKeys",
    "classify",
    "model_call_policy_name",
    "render_model_call_policy",
    "route_rows",
    "strip_pii",
    "summarize_decisions",
]
