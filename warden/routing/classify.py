"""Decide a document's sensitivity from the personal data found in it."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from warden.routing.pii import PiiFinding, PiiKind
from warden.routing.roster import Sensitivity

__all__ = ["SensitivityRule", "classify"]


class SensitivityRule(BaseModel):
    """When a document counts as sensitive: at least ``min_findings`` findings of the listed kinds."""

    model_config = ConfigDict(frozen=True)

    sensitive_kinds: frozenset[PiiKind] = Field(
        default=frozenset(PiiKind), description="Kinds of personal data that make a document sensitive."
    )
    min_findings: int = Field(
        default=1, ge=1, description="How many findings of those kinds, together, make a document sensitive."
    )


def classify(findings: list[PiiFinding], rule: SensitivityRule) -> Sensitivity:
    """Return SENSITIVE when the findings meet the rule, else NORMAL."""
    counts = Counter(finding.kind for finding in findings)
    relevant = sum(count for kind, count in counts.items() if kind in rule.sensitive_kinds)
    return Sensitivity.SENSITIVE if relevant >= rule.min_findings else Sensitivity.NORMAL
