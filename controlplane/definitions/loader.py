"""Load a pipeline definition file: YAML -> typed Structs -> checked ``PipelineDefinition``, applying nothing.

text --compose (pyyaml, on/off stay strings)--> node tree --construct--> plain data
     --msgspec.convert--> PipelineSpec --semantic checks--> PipelineDefinition
any problem --> DefinitionError(source, line, path, reason), the line found by walking the node tree
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgspec
import yaml

from controlplane.definitions.cleanup import check_cleanup
from controlplane.definitions.dashboard import check_dashboard
from controlplane.definitions.objectives import check_objectives
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
)
from controlplane.definitions.telemetry import check_events, check_rules
from controlplane.flags.schemas import FlagDefinitionError, FlagType, check_flag_variants, check_variant_values
from controlplane.rollouts.stages import MAX_BAKE, Stage, validate_stages

__all__ = [
    "DefinitionError",
    "load_definition",
    "parse_definition",
    "parse_duration",
    "render_path",
    "to_stages",
]

#: One step of a field path: a mapping key or a sequence index.
Segment = str | int
FieldPath = tuple[Segment, ...]


class DefinitionError(ValueError):
    """A definition that cannot be loaded: the file, the 1-based line, the field path and why."""

    def __init__(self, *, source: str, line: int, path: str, reason: str) -> None:
        self.source = source
        self.line = line
        self.path = path
        self.reason = reason
        where = f"{source}:{line}: {path}" if path else f"{source}:{line}"
        super().__init__(f"{where}: {reason}")


_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _DefinitionYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads only true/false as booleans."""


# Why: YAML 1.1 (pyyaml's default) reads bare on/off/yes/no as booleans, so `off_variant: off` or a variant
# named `on` would silently become False. Those are the natural variant names of a boolean flag, so this
# loader follows YAML 1.2 instead: only true/false are booleans, everything else in that family is a string.
_DefinitionYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_DefinitionYamlLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_definition(path: Path, *, environments: Sequence[str]) -> PipelineDefinition:
    """Read and check the definition file at ``path`` against the configured ``environments``."""
    return parse_definition(path.read_text(encoding="utf-8"), source=str(path), environments=environments)


def parse_definition(text: str, *, source: str, environments: Sequence[str]) -> PipelineDefinition:
    """Parse and check definition text; ``source`` names it in errors."""
    root, data = _compose(text, source)
    document = _Document(source, root)
    try:
        spec = msgspec.convert(data, PipelineSpec)
    except msgspec.ValidationError as exc:
        raise _explain_validation_error(str(exc), data, document) from exc
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
        )
        for stage in plan_env.stages
    )


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def render_path(path: FieldPath) -> str:
    """Write a field path the way errors show it: ``flags[0].plan.environments[2].stages[1].percentage``."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        elif _PLAIN_KEY.fullmatch(segment):
            text += f".{segment}" if text else segment
        else:
            text += f"[{json.dumps(segment)}]"
    return text


@dataclass(frozen=True, slots=True)
class _Document:
    """The file being loaded: its name, and its node tree to find the line of a field path."""

    source: str
    root: yaml.Node

    def error(self, path: FieldPath, reason: str) -> DefinitionError:
        """Build the error for ``path``, on the line of the deepest part of it present in the file."""
        return DefinitionError(
            source=self.source, line=_line_of(self.root, path), path=render_path(path), reason=reason
        )


def _compose(text: str, source: str) -> tuple[yaml.Node, Any]:
    """Parse YAML text into its node tree (kept for line numbers) and plain data."""
    try:
        # Constructing the loader already reads the text, refusing non-printable characters.
        loader = _DefinitionYamlLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise DefinitionError(source=source, line=line, path="", reason=f"invalid YAML: {exc.reason}") from exc
    try:
        root = loader.get_single_node()
        if root is None:
            raise DefinitionError(
                source=source, line=1, path="", reason="the file is empty: expected `pipeline` and `flags`"
            )
        # Before construction: merge keys (`<<`) rewrite mappings in place while being constructed.
        _refuse_duplicate_keys(_Document(source, root), root, (), set())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        line = mark.line + 1 if mark is not None else 1
        raise DefinitionError(source=source, line=line, path="", reason=f"invalid YAML: {reason}") from exc
    finally:
        loader.dispose()
    return root, data


def _refuse_duplicate_keys(document: _Document, node: yaml.Node, path: FieldPath, seen: set[int]) -> None:
    """Refuse a mapping that repeats a key, which YAML loaders otherwise resolve by keeping the last."""
    if id(node) in seen:  # an alias: its anchor was already checked (and may even contain itself)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            here = (*path, key.value)
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first_lines:
                raise DefinitionError(
                    source=document.source,
                    line=line,
                    path=render_path(here),
                    reason=f"`{key.value}` is given twice in the same mapping "
                    f"(first on line {first_lines[(key.tag, key.value)]})",
                )
            first_lines[(key.tag, key.value)] = line
            _refuse_duplicate_keys(document, value, here, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(document, item, (*path, index), seen)


def _child(node: yaml.Node, segment: Segment) -> tuple[yaml.Node, yaml.Node] | None:
    """Find one step of a path below ``node``: the node that marks its line, and the node to go on from."""
    if isinstance(node, yaml.MappingNode) and isinstance(segment, str):
        # The last occurrence wins, as in construction (merged keys come first, the mapping's own after).
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == segment:
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(segment, int) and 0 <= segment < len(node.value):
        item: yaml.Node = node.value[segment]
        return item, item
    return None


def _line_of(root: yaml.Node, path: FieldPath) -> int:
    """Find the 1-based line of a field path: of its key, or of the deepest part of it in the file."""
    node, line = root, root.start_mark.line + 1
    for segment in path:
        found = _child(node, segment)
        if found is None:  # e.g. a missing field: point at the mapping that lacks it
            break
        marker, node = found
        line = marker.start_mark.line + 1
    return line


def _node_at(root: yaml.Node, path: FieldPath) -> yaml.Node | None:
    """Find the node a whole field path leads to, if the file has it."""
    node = root
    for segment in path:
        found = _child(node, segment)
        if found is None:
            return None
        node = found[1]
    return node


# msgspec ends a message with "- at `$.flags[0].type`", or "- at `key` in `$.flags[0].variants`" for a key.
_MSGSPEC_ERROR = re.compile(r"(?P<reason>.*?)(?: - at (?P<on_key>`key` in )?`(?P<path>\$[^`]*)`)?", re.DOTALL)
_MSGSPEC_STEP = re.compile(r"\.(?P<field>[A-Za-z_][A-Za-z0-9_]*)|\[(?P<index>\d+)\]|(?P<any_key>\[\.\.\.\])")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _explain_validation_error(message: str, data: Any, document: _Document) -> DefinitionError:
    """Turn a msgspec validation message into a DefinitionError on the right field and line."""
    match = _MSGSPEC_ERROR.fullmatch(message)
    assert match is not None  # every part of the pattern is optional
    reason = match["reason"]
    path = _msgspec_path(match["path"] or "$", data, message)
    if missing := _MISSING_FIELD.fullmatch(reason):
        return document.error((*path, missing["field"]), f"required field `{missing['field']}` is missing")
    if unknown := _UNKNOWN_FIELD.fullmatch(reason):
        return document.error((*path, unknown["field"]), f"unknown field `{unknown['field']}`")
    if reason.startswith("Expected `str`") and reason.endswith("got `bool`"):
        reason += "; YAML reads bare true/false as booleans: quote it"
    if match["on_key"]:
        path = _with_bad_key(document.root, path)
        reason = f"this key must be a string: {reason}"
    return document.error(path, reason)


def _msgspec_path(text: str, data: Any, message: str) -> FieldPath:
    """Parse msgspec's ``$.a[0].b`` path, naming the dict key wherever msgspec wrote ``[...]``."""
    path: FieldPath = ()
    for step in _MSGSPEC_STEP.finditer(text):
        if step["field"] is not None:
            path = (*path, step["field"])
        elif step["index"] is not None:
            path = (*path, int(step["index"]))
        else:
            key = _failing_key(data, path, message)
            if key is None:
                break
            path = (*path, key)
    return path


def _failing_key(data: Any, path: FieldPath, message: str) -> str | None:
    """Find which key of the mapping at ``path`` fails, by converting ever longer prefixes of that mapping."""
    mapping = _data_at(data, path)
    if not isinstance(mapping, dict):
        return None
    keys = list(mapping)
    for count, key in enumerate(keys, start=1):
        probe = copy.deepcopy(data)
        trimmed = _data_at(probe, path)
        for later in keys[count:]:
            del trimmed[later]
        try:
            msgspec.convert(probe, PipelineSpec)
        except msgspec.ValidationError as exc:
            # msgspec stops at the first bad value, in order: the first prefix failing the same way holds it.
            if str(exc) == message:
                return str(key)
    return None


def _data_at(data: Any, path: FieldPath) -> Any:
    """Follow a field path through plain data; None where it leads nowhere."""
    for segment in path:
        if isinstance(data, list):
            if not (isinstance(segment, int) and 0 <= segment < len(data)):
                return None
            data = data[segment]
        elif isinstance(data, dict) and segment in data:
            data = data[segment]
        else:
            return None
    return data


def _with_bad_key(root: yaml.Node, path: FieldPath) -> FieldPath:
    """Extend ``path`` with the first key of its mapping that is not a string, when there is one."""
    node = _node_at(root, path)
    if isinstance(node, yaml.MappingNode):
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag not in (_STR_TAG, _MERGE_TAG):
                return (*path, key.value)
    return path


def _check_pipeline(spec: PipelineSpec, document: _Document, environments: Sequence[str]) -> PipelineDefinition:
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


def _check_guards(spec: PipelineSpec, rules: Collection[str], document: _Document) -> None:
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
                            (
                                "flags",
                                flag_index,
                                "plan",
                                "environments",
                                env_index,
                                "stages",
                                stage_index,
                                "guards",
                                guard_index,
                            ),
                            f"guard `{guard}` names no rule of this definition; its rules are {declared}",
                        )


def _check_flag(flag: FlagSpec, at: FieldPath, document: _Document, environments: Sequence[str]) -> FlagDefinition:
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
    plan = None if flag.plan is None else _check_plan(flag.plan, (*at, "plan"), document, environments)
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


def _require_variant(flag: FlagSpec, name: str, at: FieldPath, document: _Document) -> None:
    """Refuse a variant name the flag does not declare."""
    if name not in flag.variants:
        declared = ", ".join(f"`{variant}`" for variant in flag.variants)
        raise document.error(at, f"unknown variant `{name}`; this flag declares {declared}")


def _require_environment(name: str, at: FieldPath, document: _Document, environments: Collection[str]) -> None:
    """Refuse an environment that is not configured."""
    if name not in environments:
        configured = ", ".join(f"`{environment}`" for environment in environments)
        raise document.error(at, f"unknown environment `{name}`; the configured environments are {configured}")


def _check_initial_state(
    flag: FlagSpec,
    environment: str,
    state: InitialStateSpec,
    at: FieldPath,
    document: _Document,
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


def _check_plan(plan: PlanSpec, at: FieldPath, document: _Document, environments: Sequence[str]) -> RolloutPlan:
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
        steps.append(EnvironmentPlan(environment=step.environment, stages=_check_stages(step, here, document)))
    return RolloutPlan(
        rollback_policy=plan.rollback_policy, environments=tuple(steps), auto_rollback=plan.auto_rollback
    )


def _check_stages(step: PlanEnvironmentSpec, at: FieldPath, document: _Document) -> tuple[Stage, ...]:
    """Check one environment's stages with the rollout's own rules, and convert them."""
    for index, stage in enumerate(step.stages):
        try:
            bake = parse_duration(stage.bake)
            if bake > MAX_BAKE:
                raise ValueError(f"bake must be at most {MAX_BAKE.days} days, got {bake.days} days")
        except ValueError as exc:
            raise document.error((*at, "stages", index, "bake"), str(exc)) from exc
    try:
        stages = to_stages(step)
        validate_stages(stages)
    except ValueError as exc:
        raise document.error((*at, *_stage_at_fault(step)), str(exc)) from exc
    return stages


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
