"""Pipeline definition files: the Structs a YAML file decodes into, and the typed result the apply step reads.

The ``*Spec`` Structs mirror the file one-to-one (unknown fields refused); ``PipelineDefinition`` and the
dataclasses under it are what ``loader.load_definition`` returns once every check has passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from controlplane.catalog.events import EventType
from controlplane.catalog.objectives import Objective
from controlplane.catalog.rules import Rule
from controlplane.cleanup.policies import CleanupPolicyDefinition
from controlplane.flags.schemas import (
    Condition,
    FlagKey,
    FlagKind,
    FlagType,
    Name,
    Percentage,
    TargetingRule,
)
from controlplane.rollouts.segments import Segmentation
from controlplane.rollouts.stages import RollbackPolicy, Stage

__all__ = [
    "PIPELINE_NAME_PATTERN",
    "CleanupSelectSpec",
    "CleanupSpec",
    "DashboardRowSpec",
    "DashboardSpec",
    "DashboardVariableSpec",
    "EnvironmentPlan",
    "EventSpec",
    "FlagDefinition",
    "FlagSpec",
    "InitialState",
    "InitialStateSpec",
    "Measure",
    "PanelSpec",
    "PipelineDefinition",
    "PipelineSpec",
    "PlanEnvironmentSpec",
    "PlanSpec",
    "RolloutPlan",
    "RuleSpec",
    "SegmentSpec",
    "SloSpec",
    "StageSpec",
    "TargetSpec",
    "promotion_order",
]

PIPELINE_NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

#: Seconds, or a duration string such as ``45s``, ``30m``, ``2h30m``, ``1d``; parsed by the loader.
Bake = str | Annotated[int, msgspec.Meta(ge=0)]
Attribute = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class StageSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One stage of a plan as written: the share served the rollout variant and what must hold to leave it."""

    percentage: Percentage
    bake: Bake = 0
    min_samples: Annotated[int, msgspec.Meta(ge=0)] = 0
    guards: list[Name] = msgspec.field(default_factory=list)
    auto_advance: bool = False
    #: How long the stage may run without moving on before someone is told (default: bake + max(10m, bake / 4)).
    progress_deadline: Bake | None = None


class SegmentSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A plan's ``per``: run the stages once per value of a bounded attribute of the flag's evaluation context."""

    attribute: Attribute
    # No min_length: the loader says what is wrong with an empty list in words.
    values: list[Name]


class PlanEnvironmentSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The stages a flag goes through in one environment, once per segment when ``per`` names one."""

    environment: Name
    # No min_length: rollouts.stages.validate_stages refuses an empty plan, as the one home of plan rules.
    stages: list[StageSpec]
    per: SegmentSpec | None = None


class PlanSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A flag's staged rollout: environments in promotion order, and where a rollback takes it."""

    rollback_policy: RollbackPolicy = RollbackPolicy.OFF
    # Off unless asked for: a guard that fires then only holds the rollout and tells on-call.
    auto_rollback: bool = False
    environments: Annotated[list[PlanEnvironmentSpec], msgspec.Meta(min_length=1)]


class InitialStateSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A flag's state in one environment when it is created; ``default_variant`` defaults to the off variant."""

    enabled: bool = False
    default_variant: Name | None = None
    rules: list[TargetingRule] = msgspec.field(default_factory=list)


class FlagSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One flag as written in a definition file."""

    key: FlagKey
    type: FlagType
    description: str = ""
    owner: str = ""
    kind: FlagKind = FlagKind.RELEASE
    tags: list[Name] = msgspec.field(default_factory=list)
    variants: Annotated[dict[str, Any], msgspec.Meta(min_length=1)]
    off_variant: Name
    rollout_variant: Name | None = None
    bucket_by: Attribute = "targetingKey"
    rollout_when: list[Condition] = msgspec.field(default_factory=list)
    environments: dict[str, InitialStateSpec] = msgspec.field(default_factory=dict)
    plan: PlanSpec | None = None


class LabelSpecSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A label an event may carry: the allowed values (bounded), and what other values become (else refused)."""

    values: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=100)]
    otherwise: Name | None = None


class ValueSpecSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """An event's numeric value: its name, base unit and histogram buckets (defaults per unit)."""

    name: Name
    unit: str
    buckets: list[float] | None = None
    minimum: float | None = 0.0


class EventSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One event type as written in a definition file."""

    name: Name
    description: str = ""
    # The flag whose served variant each event carries; the definition's first flag when left out.
    flag: Name | None = None
    outcomes: list[Name] = msgspec.field(default_factory=list)
    labels: dict[str, LabelSpecSpec] = msgspec.field(default_factory=dict)
    value: ValueSpecSpec | None = None
    totals: list[Name] = msgspec.field(default_factory=list)


#: Seconds, or a duration string (``5m``); parsed by the loader like a bake time.
Duration = str | Annotated[int, msgspec.Meta(ge=0)]


class SloSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A service-level objective as written: the share of an event's selected events that must not be `bad`."""

    name: Name
    description: str = ""
    event: Name
    where: dict[str, list[str]] = msgspec.field(default_factory=dict)
    bad: dict[str, list[str]]
    objective: float  # 99.5% is written 0.995
    period: Duration = "30d"
    runbook_url: str = ""


class DeleteAfterSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Objects without a readable expiry are deleted once older than this many days."""

    delete_after_days: Annotated[int, msgspec.Meta(ge=0)]


class ExpiredSignedUrlsSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Select objects whose `signed_url_expires_at` is past by more than ``grace``."""

    grace: Duration = "1h"
    # Required: every policy says what becomes of objects whose expiry it cannot read.
    missing_metadata: Literal["keep"] | DeleteAfterSpec


class OlderThanSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Select objects uploaded more than ``days`` ago."""

    days: Annotated[int, msgspec.Meta(ge=1)]


class CleanupSelectSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which objects a policy deletes: exactly one of the selections (checked by the loader)."""

    expired_signed_urls: ExpiredSignedUrlsSpec | None = None
    older_than: OlderThanSpec | None = None


class CleanupSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A bucket cleanup policy as written; see ``controlplane.cleanup``."""

    name: Name
    description: str = ""
    bucket: str
    prefix: str = ""
    select: CleanupSelectSpec
    schedule: str | None = None  # five-field cron, UTC; none: run by hand only
    alert_after: Duration | None = None  # default: twice the schedule's longest gap


#: What a dashboard target shows of its panel's event or rule (see ``definitions.dashboard``).
Measure = Literal["per_second", "per_minute", "share", "rule", "quantile"]


class TargetSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One query of a dashboard panel: a measure of the panel's event (or rule), per ``by``, with its legend."""

    measure: Measure
    legend: Annotated[str, msgspec.Meta(min_length=1)]
    by: list[Name] = msgspec.field(default_factory=list)
    where: dict[str, list[str]] = msgspec.field(default_factory=dict)
    part: dict[str, list[str]] = msgspec.field(default_factory=dict)  # share: the events in `where` that count
    total: Name | None = None  # per_second, per_minute: one of the event's totals instead of its events
    q: float | None = None  # quantile
    times: list[int | float | str] = msgspec.field(default_factory=list)  # factors: numbers or $variables


class PanelSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One curated dashboard panel: a guard's panel (``guard`` and ``what``), or a time series of ``targets``."""

    title: Annotated[str, msgspec.Meta(min_length=1)]
    guard: Name | None = None
    what: str = ""
    description: str = ""
    unit: str = ""
    event: Name | None = None
    rule: Name | None = None
    threshold_line: bool = False
    width: Annotated[int, msgspec.Meta(ge=1, le=24)] = 12
    maximum: int | float | None = None
    targets: list[TargetSpec] = msgspec.field(default_factory=list)


class DashboardRowSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A row of curated panels."""

    title: Annotated[str, msgspec.Meta(min_length=1)]
    panels: Annotated[list[PanelSpec], msgspec.Meta(min_length=1)]


class DashboardVariableSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A free-text dashboard variable a target's ``times`` may use (a price, say)."""

    name: Name
    label: Annotated[str, msgspec.Meta(min_length=1)]
    description: str = ""
    default: Annotated[str, msgspec.Meta(min_length=1)]


class DashboardSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The curated part of a pipeline's Grafana dashboard: its title, variables and rows of panels."""

    title: Annotated[str, msgspec.Meta(min_length=1)]
    variables: list[DashboardVariableSpec] = msgspec.field(default_factory=list)
    rows: Annotated[list[DashboardRowSpec], msgspec.Meta(min_length=1)]


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One alert rule as written in a definition file; see ``alerting.rules`` for what each kind measures.

    ``source: events`` (the default) rules need ``kind`` and ``event``; ``source: prometheus`` rules need ``query``
    instead (see ``alerting.prometheus``). Which fields go with which source is checked by the loader.
    """

    name: Name
    source: str = "events"
    kind: str | None = None
    event: Name | None = None
    query: str | None = None
    samples_query: str | None = None
    op: str
    threshold: float
    description: str = ""
    window: Duration | None = None  # 5m for event rules; a Prometheus rule's range is in its query
    hold: Duration = msgspec.field(default=0, name="for")
    keep_firing_for: Duration = 0
    min_samples: Annotated[int, msgspec.Meta(ge=0)] = 0
    severity: str = "page"
    where: dict[str, list[str]] = msgspec.field(default_factory=dict)
    numerator: dict[str, list[str]] = msgspec.field(default_factory=dict)
    per: Duration | None = None  # 1m for rate rules
    outcome: str = ""
    flag: Name | None = None
    canary_variant: Name | None = None
    baseline_variant: Name | None = None
    environments: list[Name] = msgspec.field(default_factory=list)
    runbook_url: str = ""
    confidence: float | None = None  # decide sequentially at this confidence (ratio and rate rules)
    alternative: float | None = None  # the breach a sequential rule tests for (default: twice the threshold)
    mode: str = "enforce"  # or `shadow`: watched only, never holds a stage nor rolls back (checked by the loader)
    per_subject_cap: int | None = None  # each subject's events counted at most this often (ratio, rate, cohort)


class PipelineSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A whole definition file."""

    # The name pattern is checked by the loader, to say it in a sentence rather than as a regex.
    pipeline: Name
    description: str = ""
    flags: Annotated[list[FlagSpec], msgspec.Meta(min_length=1)]
    events: list[EventSpec] = msgspec.field(default_factory=list)
    rules: list[RuleSpec] = msgspec.field(default_factory=list)
    # Rendered as Prometheus burn-rate alerts only (see catalog.objectives).
    slo: list[SloSpec] = msgspec.field(default_factory=list)
    cleanup: list[CleanupSpec] = msgspec.field(default_factory=list)
    # Curated rows of the pipeline's dashboard (controlplane.render); checked by definitions.dashboard.
    dashboard: DashboardSpec | None = None


@dataclass(frozen=True, slots=True)
class InitialState:
    """A flag's state in one environment, applied only when the flag is created."""

    environment: str
    enabled: bool
    default_variant: str
    rules: tuple[TargetingRule, ...]


@dataclass(frozen=True, slots=True)
class EnvironmentPlan:
    """The validated stages of one environment of a plan; ``per`` when they run once per segment."""

    environment: str
    stages: tuple[Stage, ...]
    per: Segmentation | None = None


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """A validated plan: environments in promotion order, each to complete before the next starts."""

    rollback_policy: RollbackPolicy
    environments: tuple[EnvironmentPlan, ...]
    auto_rollback: bool = False


@dataclass(frozen=True, slots=True)
class FlagDefinition:
    """A validated flag: its definition, initial per-environment state and rollout plan."""

    key: str
    type: FlagType
    kind: FlagKind
    description: str
    owner: str
    tags: tuple[str, ...]
    variants: Mapping[str, Any]
    off_variant: str
    rollout_variant: str | None
    bucket_by: str
    rollout_when: tuple[Condition, ...]
    initial_states: tuple[InitialState, ...]
    plan: RolloutPlan | None


@dataclass(frozen=True, slots=True)
class PipelineDefinition:
    """A validated definition file, ready for the apply step."""

    name: str
    description: str
    source: str
    flags: tuple[FlagDefinition, ...]
    events: tuple[EventType, ...] = ()
    rules: tuple[Rule, ...] = ()
    objectives: tuple[Objective, ...] = ()
    cleanup: tuple[CleanupPolicyDefinition, ...] = ()
    dashboard: DashboardSpec | None = None


def promotion_order(flag: FlagDefinition) -> list[str]:
    """List the environments a flag's plan goes through, in order; empty when it has no plan."""
    if flag.plan is None:
        return []
    return [step.environment for step in flag.plan.environments]
