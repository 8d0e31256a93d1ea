"""Load a pipeline definition file: its YAML document -> typed Structs -> checked ``PipelineDefinition``, applying
nothing; the checks here say what types cannot (names, references between fields, stages, guards)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Rule, RuleSegment, RuleSource, Selector
from controlplane.definitions.cleanup import check_cleanup
from controlplane.definitions.dashboard import check_dashboard
from controlplane.definitions.document import Document, FieldPath, read_document
from controlplane.definitions.events import check_events
from controlplane.definitions.objectives import check_objectives
from controlplane.definitions.rules import check_rules
from controlplane.definitions.schemas import (
    PIPELINE_NAME_PATTERN,
    EnvironmentPlan,
    FlagDefinition,
    FlagSpec,
    InitialState,
    InitialStateSpec,
    PipelineDefinition,
    PipelineSpec,
    PlanEnvironmentSpec,
    PlanSpec,
    RolloutPlan,
    SegmentSpec,
)
from controlplane.flags.schemas import FlagDefinitionError, FlagType, check_flag_variants, check_variant_values
from controlplane.rollouts.segments import SEGMENT_VALUE, Segmentation, segment_rule_name
from controlplane.rollouts.stages import MAX_BAKE, Stage, duration_words, validate_stages

__all__ = [
    "load_definition",
    "parse_definition",
    "parse_duration",
    "to_stages",
]


def load_definition(path: Path, *, environments: Sequence[str]) -> PipelineDefinition:
    """Read and check the definition file at ``path`` against the configured ``environments``."""
    return parse_definition(path.read_text(encoding="utf-8"), source=str(path), environments=environments)


def parse_definition(text: str, *, source: str, environments: Sequence[str]) -> PipelineDefinition:
    """Parse and check definition text; ``source`` names it in errors."""
    document, data = read_document(text, source)
    spec = document.convert(data, PipelineSpec)
    return _check_pipeline(spec, document, environments)


_DURATION = re.compile(r"(?:(?P<days>\d+)d)?(?:(?P<hours>\d+)h)?(?:(?P<minutes>\d+)m)?(?:(?P<seconds>\d+)s)?")


def parse_duration(value: str | int) -> timedelta:
    """Turn a bake time, in seconds or d/h/m/s units (``45s``, ``30m``, ``2h30m``, ``1d``), into a timedelta."""
    if isinstance(value, bool):
        raise ValueError(f"bake must be a duration such as `30m` or a number of seconds, got {value}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bake must not be negative, got {value} seconds")
        parts = {"seconds": value}
    else:
        match = _DURATION.fullmatch(value)
        if not value or match is None:
            raise ValueError(
                f"bake `{value}` is not a duration: write seconds (90) or d/h/m/s units in that order "
                "(45s, 30m, 2h30m, 1d)"
            )
        parts = {unit: int(amount) for unit, amount in match.groupdict(default="0").items()}
    try:
        return timedelta(**parts)
    except OverflowError as exc:
        raise ValueError(f"bake `{value}` is too long") from exc


def to_stages(plan_env: PlanEnvironmentSpec) -> tuple[Stage, ...]:
    """Convert one plan environment's stages as written into rollout ``Stage`` values."""
    return tuple(
        Stage(
            percentage=stage.percentage,
            bake=parse_duration(stage.bake),
            min_samples=stage.min_samples,
            guards=tuple(stage.guards),
            auto_advance=stage.auto_advance,
            deadline=None if stage.progress_deadline is None else parse_duration(stage.progress_deadline),
        )
        for stage in plan_env.stages
    )


def _check_pipeline(spec: PipelineSpec, document: Document, environments: Sequence[str]) -> PipelineDefinition:
    """Check what types cannot say, and build the definition."""
    if not re.fullmatch(PIPELINE_NAME_PATTERN, spec.pipeline):
        raise document.error(
            ("pipeline",),
            f"pipeline name `{spec.pipeline}` must be lowercase letters and digits in dash-separated words, "
            "e.g. `reference-images`",
        )
    first_index: dict[str, int] = {}
    for index, flag in enumerate(spec.flags):
        if flag.key in first_index:
            raise document.error(
                ("flags", index, "key"),
                f"flag key `{flag.key}` is already declared at flags[{first_index[flag.key]}]",
            )
        first_index[flag.key] = index
    flags = tuple(_check_flag(flag, ("flags", index), document, environments) for index, flag in enumerate(spec.flags))
    events = check_events(spec.pipeline, spec.events, spec.flags, document.error)
    rules = check_rules(spec.pipeline, spec.rules, events, spec.flags, environments, document.error, parse_duration)
    _check_guards(spec, {rule.name for rule in rules}, document)
    rules = (*rules, *_segment_guards(spec, rules, events, document))
    objectives = check_objectives(spec.pipeline, spec.slo, events, document.error, parse_duration)
    cleanup = check_cleanup(spec.pipeline, spec.cleanup, document.error, parse_duration)
    dashboard = check_dashboard(spec.dashboard, events, rules, document.error)
    return PipelineDefinition(
        name=spec.pipeline,
        description=spec.description,
        source=document.source,
        flags=flags,
        events=events,
        rules=rules,
        objectives=objectives,
        cleanup=cleanup,
        dashboard=dashboard,
    )


def _check_guards(spec: PipelineSpec, rules: Collection[str], document: Document) -> None:
    """Refuse a stage guard that names no rule of this definition: a guard that measures nothing never holds."""
    for flag_index, flag in enumerate(spec.flags):
        if flag.plan is None:
            continue
        for env_index, step in enumerate(flag.plan.environments):
            for stage_index, stage in enumerate(step.stages):
                for guard_index, guard in enumerate(stage.guards):
                    if guard not in rules:
                        declared = ", ".join(f"`{name}`" for name in sorted(rules)) or "none"
                        raise document.error(
                            _guard_path(flag_index, env_index, stage_index, guard_index),
                            f"guard `{guard}` names no rule of this definition; its rules are {declared}",
                        )


def _guard_path(flag_index: int, env_index: int, stage_index: int, guard_index: int) -> tuple[str | int, ...]:
    """Where a guard of a flag's plan stands in the definition document."""
    return ("flags", flag_index, "plan", "environments", env_index, "stages", stage_index, "guards", guard_index)


def _segment_guards(
    spec: PipelineSpec, rules: Sequence[Rule], events: Sequence[EventType], document: Document
) -> list[Rule]:
    """The guards of plans run per segment, each scoped to one segment's events: a rule per guard and segment value
    (named by ``segment_rule_name``), measured only in that environment. Refuses a guard whose events do not carry
    the segment's attribute with every segment value declared: it could not tell one segment from another."""
    by_name = {rule.name: rule for rule in rules}
    event_types = {event.name: event for event in events}
    derived: dict[str, Rule] = {}
    for flag_index, flag in enumerate(spec.flags):
        if flag.plan is None:
            continue
        for env_index, step in enumerate(flag.plan.environments):
            if step.per is None:
                continue
            attribute = step.per.attribute
            for stage_index, stage in enumerate(step.stages):
                for guard_index, guard in enumerate(stage.guards):
                    at = _guard_path(flag_index, env_index, stage_index, guard_index)
                    rule = by_name[guard]
                    if rule.source is not RuleSource.EVENTS:
                        raise document.error(
                            at,
                            f"guard `{guard}` is measured by {rule.source.value}: a plan run per `{attribute}` "
                            "needs guards measured from events, which can be scoped to one segment",
                        )
                    label = event_types[rule.event].labels.get(attribute) if rule.event in event_types else None
                    if label is None:
                        raise document.error(
                            at,
                            f"guard `{guard}` measures `{rule.event}` events, which do not carry the label "
                            f"`{attribute}` this plan runs per: declare it under the event's `labels`",
                        )
                    missing = [value for value in step.per.values if value not in label.values]
                    if missing:
                        raise document.error(
                            at,
                            f"guard `{guard}` measures `{rule.event}` events, whose label `{attribute}` does not "
                            f"declare the segment values {', '.join(f'`{value}`' for value in missing)}",
                        )
                    for value in step.per.values:
                        name = segment_rule_name(guard, attribute, value)
                        if name in by_name:
                            raise document.error(
                                at,
                                f"guard `{guard}` scoped to segment {attribute}={value} is named `{name}`, "
                                "which a rule of this definition already takes: rename that rule",
                            )
                        scope = RuleSegment(flag.key, step.environment, attribute, value, guard)
                        taken = derived.get(name)
                        if taken is not None and taken.segment != scope:
                            assert taken.segment is not None
                            raise document.error(
                                at,
                                f"guard `{guard}` scoped to segment {attribute}={value} would be named `{name}`, "
                                f"which the same guard of `{taken.segment.flag}` in {taken.segment.environment} "
                                "already takes: one rule guards one segment's rollout, so give this plan its own rule",
                            )
                        derived[name] = replace(
                            rule,
                            name=name,
                            where=Selector({**rule.where.matches, attribute: frozenset({value})}),
                            environments=(step.environment,),
                            description=f"{rule.description} Segment {attribute}={value} only.".strip(),
                            segment=scope,
                        )
    return list(derived.values())


def _check_flag(flag: FlagSpec, at: FieldPath, document: Document, environments: Sequence[str]) -> FlagDefinition:
    """Check one flag's variants, initial states and plan, and build its definition."""
    for name, value in flag.variants.items():
        try:
            check_variant_values(flag.type, {name: value})
        except ValueError as exc:
            raise document.error((*at, "variants", name), f"{exc}{_type_hint(flag.type, value)}") from exc
    try:
        check_flag_variants(flag.type, flag.variants, flag.off_variant, flag.rollout_variant)
    except FlagDefinitionError as exc:
        raise document.error((*at, *exc.field.split(".")), str(exc)) from exc
    if flag.plan is not None and flag.rollout_variant is None:
        raise document.error(
            (*at, "rollout_variant"),
            "a flag with a `plan` needs a `rollout_variant`: the variant the plan serves",
        )
    initial_states = tuple(
        _check_initial_state(flag, environment, state, (*at, "environments", environment), document, environments)
        for environment, state in flag.environments.items()
    )
    plan = None if flag.plan is None else _check_plan(flag, flag.plan, (*at, "plan"), document, environments)
    return FlagDefinition(
        key=flag.key,
        type=flag.type,
        kind=flag.kind,
        description=flag.description,
        owner=flag.owner,
        tags=tuple(flag.tags),
        variants=MappingProxyType(dict(flag.variants)),
        off_variant=flag.off_variant,
        rollout_variant=flag.rollout_variant,
        bucket_by=flag.bucket_by,
        rollout_when=tuple(flag.rollout_when),
        initial_states=initial_states,
        plan=plan,
    )


def _type_hint(flag_type: FlagType, value: Any) -> str:
    """Say how to fix the usual YAML slip behind a variant of the wrong type."""
    if isinstance(value, bool):
        return "; YAML reads bare true/false as booleans: quote it"
    if flag_type is FlagType.BOOLEAN and isinstance(value, str):
        return "; write true or false unquoted (only those two are booleans in definition files)"
    return ""


def _require_variant(flag: FlagSpec, name: str, at: FieldPath, document: Document) -> None:
    """Refuse a variant name the flag does not declare."""
    if name not in flag.variants:
        declared = ", ".join(f"`{variant}`" for variant in flag.variants)
        raise document.error(at, f"unknown variant `{name}`; this flag declares {declared}")


def _require_environment(name: str, at: FieldPath, document: Document, environments: Collection[str]) -> None:
    """Refuse an environment that is not configured."""
    if name not in environments:
        configured = ", ".join(f"`{environment}`" for environment in environments)
        raise document.error(at, f"unknown environment `{name}`; the configured environments are {configured}")


def _check_initial_state(
    flag: FlagSpec,
    environment: str,
    state: InitialStateSpec,
    at: FieldPath,
    document: Document,
    environments: Sequence[str],
) -> InitialState:
    """Check one environment's initial state and resolve its default variant."""
    _require_environment(environment, at, document, environments)
    if state.default_variant is not None:
        _require_variant(flag, state.default_variant, (*at, "default_variant"), document)
    for index, rule in enumerate(state.rules):
        _require_variant(flag, rule.variant, (*at, "rules", index, "variant"), document)
    return InitialState(
        environment=environment,
        enabled=state.enabled,
        # Left out, the environment serves what a new flag serves everywhere: the off variant.
        default_variant=state.default_variant or flag.off_variant,
        rules=tuple(state.rules),
    )


def _check_plan(
    flag: FlagSpec, plan: PlanSpec, at: FieldPath, document: Document, environments: Sequence[str]
) -> RolloutPlan:
    """Check a plan's environments and stages, and build it in promotion order."""
    first_index: dict[str, int] = {}
    steps: list[EnvironmentPlan] = []
    for index, step in enumerate(plan.environments):
        here = (*at, "environments", index)
        _require_environment(step.environment, (*here, "environment"), document, environments)
        if step.environment in first_index:
            raise document.error(
                (*here, "environment"),
                f"environment `{step.environment}` is already in this plan at "
                f"environments[{first_index[step.environment]}]: each environment is promoted through once",
            )
        first_index[step.environment] = index
        steps.append(
            EnvironmentPlan(
                environment=step.environment,
                stages=_check_stages(step, here, document),
                per=None if step.per is None else _check_segments(flag, step.per, (*here, "per"), document),
            )
        )
    return RolloutPlan(
        rollback_policy=plan.rollback_policy, environments=tuple(steps), auto_rollback=plan.auto_rollback
    )


def _check_segments(flag: FlagSpec, per: SegmentSpec, at: FieldPath, document: Document) -> Segmentation:
    """Check a plan's ``per``: a context attribute other than the bucketing one, and distinct segment values that can
    name a guard scoped to them."""
    if per.attribute == flag.bucket_by:
        raise document.error(
            (*at, "attribute"),
            f"`{per.attribute}` is the flag's `bucket_by`: a segment holds many units to bucket, so run the plan per "
            "another attribute (e.g. queue)",
        )
    if not per.values:
        raise document.error((*at, "values"), f"declare the values of `{per.attribute}` the plan runs per")
    first_index: dict[str, int] = {}
    for index, value in enumerate(per.values):
        if not SEGMENT_VALUE.match(value):
            raise document.error(
                (*at, "values", index), f"segment value `{value}` must be lowercase words joined by dashes"
            )
        if value in first_index:
            raise document.error(
                (*at, "values", index), f"segment value `{value}` is already declared at values[{first_index[value]}]"
            )
        first_index[value] = index
    return Segmentation(per.attribute, tuple(per.values))


def _check_stages(step: PlanEnvironmentSpec, at: FieldPath, document: Document) -> tuple[Stage, ...]:
    """Check one environment's stages with the rollout's own rules, and convert them."""
    for index, stage in enumerate(step.stages):
        try:
            bake = parse_duration(stage.bake)
            if bake > MAX_BAKE:
                raise ValueError(f"bake must be at most {MAX_BAKE.days} days, got {bake.days} days")
        except ValueError as exc:
            raise document.error((*at, "stages", index, "bake"), str(exc)) from exc
        if stage.progress_deadline is not None:
            _check_progress_deadline(stage.progress_deadline, bake, (*at, "stages", index), document)
    try:
        stages = to_stages(step)
        validate_stages(stages)
    except ValueError as exc:
        raise document.error((*at, *_stage_at_fault(step)), str(exc)) from exc
    return stages


def _check_progress_deadline(value: str | int, bake: timedelta, at: FieldPath, document: Document) -> None:
    """Refuse a progress deadline that is not a duration, or that passes before the stage's bake can be over."""
    where = (*at, "progress_deadline")
    try:
        deadline = parse_duration(value)
    except ValueError as exc:
        raise document.error(where, str(exc).replace("bake", "progress_deadline")) from exc
    if deadline <= bake:
        raise document.error(
            where,
            f"progress_deadline ({value}) must be longer than the stage's bake ({duration_words(bake)}): "
            "the stage cannot advance before its bake is over, so a deadline within it would always pass",
        )
    if deadline > 2 * MAX_BAKE:
        raise document.error(where, f"progress_deadline must be at most {2 * MAX_BAKE.days} days")


def _stage_at_fault(step: PlanEnvironmentSpec) -> FieldPath:
    """Point at the stage a validate_stages refusal is about: the first not above the one before, or the last."""
    # validate_stages owns the rules and says what is wrong; this only says where.
    percentages = [stage.percentage for stage in step.stages]
    if not percentages:
        return ("stages",)
    for index in range(1, len(percentages)):
        if percentages[index] <= percentages[index - 1]:
            return ("stages", index, "percentage")
    return ("stages", len(percentages) - 1, "percentage")
