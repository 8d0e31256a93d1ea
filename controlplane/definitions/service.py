"""Applying a pipeline definition: create or update flags and plans, idempotently, like `kubectl apply`.

What apply owns: a flag's definition (variants, description, owner, kind, tags), its bucketing, and its plans.
What it never touches once a flag exists: the live state an operator controls (enabled, rules, the rollout's
percentage and progress). Initial per-environment state is applied only when the flag is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.definitions.schemas import FlagDefinition, PipelineDefinition
from controlplane.errors import InvalidInput
from controlplane.flags import service as flag_service
from controlplane.flags.models import Flag
from controlplane.flags.schemas import FlagCreate, FlagUpdate
from controlplane.rollouts import service as rollout_service
from controlplane.rollouts.models import Rollout as RolloutRow
from controlplane.rollouts.models import RolloutPlan
from controlplane.rollouts.stages import RolloutState

__all__ = ["ApplyReport", "Change", "apply_definition"]

_ACTIVE = (RolloutState.RUNNING.value, RolloutState.PAUSED.value)


class Change(msgspec.Struct):
    """One thing apply did (or, in a dry run, would do)."""

    flag: str
    action: str
    environment: str | None = None
    fields: list[str] = msgspec.field(default_factory=list)
    note: str | None = None


class ApplyReport(msgspec.Struct):
    """What an apply changed; ``changed`` is false when the database already matched the file."""

    pipeline: str
    source: str
    dry_run: bool
    changed: bool
    changes: list[Change]


def apply_definition(
    session: Session,
    *,
    definition: PipelineDefinition,
    actor: str,
    environments: Sequence[str],
    now: datetime,
    dry_run: bool = False,
) -> ApplyReport:
    """Make the database match ``definition``; in a dry run, report without keeping anything."""
    savepoint = session.begin_nested() if dry_run else None
    changes: list[Change] = []
    for flag_definition in definition.flags:
        changes.extend(_apply_flag(session, definition, flag_definition, actor, environments, now))
    if savepoint is not None:
        savepoint.rollback()
    return ApplyReport(
        pipeline=definition.name,
        source=definition.source,
        dry_run=dry_run,
        changed=any(change.action != "unchanged" for change in changes),
        changes=changes,
    )


def _rollout_config(definition: FlagDefinition, percentage: float) -> dict[str, Any] | None:
    if definition.rollout_variant is None:
        return None
    return {
        "variant": definition.rollout_variant,
        "percentage": percentage,
        "bucket_by": definition.bucket_by,
        "when": [msgspec.to_builtins(condition) for condition in definition.rollout_when],
    }


def _apply_flag(
    session: Session,
    pipeline: PipelineDefinition,
    definition: FlagDefinition,
    actor: str,
    environments: Sequence[str],
    now: datetime,
) -> list[Change]:
    reason = f"definitions apply {pipeline.source}"
    existing = session.scalar(select(Flag).where(Flag.key == definition.key))
    if existing is None:
        flag = flag_service.create_flag(
            session,
            request=FlagCreate(
                key=definition.key,
                type=definition.type,
                variants=dict(definition.variants),
                off_variant=definition.off_variant,
                rollout_variant=definition.rollout_variant,
                description=definition.description,
                owner=definition.owner,
                kind=definition.kind,
                tags=list(definition.tags),
            ),
            actor=actor,
            environments=environments,
            now=now,
            pipeline=pipeline.name,
            reason=reason,
        )
        _apply_initial_states(flag, definition)
        session.flush()
        changes = [Change(flag=definition.key, action="created")]
    else:
        flag = existing
        changes = [_update_flag(session, flag, definition, actor, now, reason)]
        changes.extend(_update_bucketing(flag, definition))
        session.flush()
    changes.extend(_apply_plans(session, flag, definition, actor, now, reason))
    return changes


def _apply_initial_states(flag: Flag, definition: FlagDefinition) -> None:
    initial = {state.environment: state for state in definition.initial_states}
    for state in flag.environments:
        state.rollout = _rollout_config(definition, 0.0)
        wanted = initial.get(state.environment)
        if wanted is not None:
            state.enabled = wanted.enabled
            state.default_variant = wanted.default_variant
            state.rules = [msgspec.to_builtins(rule) for rule in wanted.rules]


def _update_flag(
    session: Session, flag: Flag, definition: FlagDefinition, actor: str, now: datetime, reason: str
) -> Change:
    if flag.type != definition.type.value:
        raise InvalidInput(
            "flag-type-change",
            f"flag `{flag.key}` is a {flag.type} flag in the database and a {definition.type.value} flag in the "
            "file; a flag's type never changes: create a flag with a new key",
            flag=flag.key,
        )
    wanted: dict[str, Any] = {
        "variants": dict(definition.variants),
        "off_variant": definition.off_variant,
        "rollout_variant": definition.rollout_variant,
        "description": definition.description,
        "owner": definition.owner,
        "kind": definition.kind.value,
        "tags": list(definition.tags),
    }
    current = flag_service.flag_snapshot(flag)
    differing = sorted(name for name, value in wanted.items() if current[name] != value)
    if not differing:
        return Change(flag=flag.key, action="unchanged")
    update = msgspec.convert({name: wanted[name] for name in differing}, FlagUpdate)
    flag_service.update_flag(
        session, key=flag.key, expected_revision=flag.revision, changes=update, actor=actor, now=now, reason=reason
    )
    return Change(flag=flag.key, action="updated", fields=differing)


def _update_bucketing(flag: Flag, definition: FlagDefinition) -> list[Change]:
    changes = []
    for state in flag.environments:
        current = state.rollout
        percentage = float(current["percentage"]) if current else 0.0
        wanted = _rollout_config(definition, percentage)
        if current != wanted:
            # Only how cohorts are drawn moves here; the percentage stays whatever the rollout made it.
            state.rollout = wanted
            changes.append(
                Change(flag=flag.key, action="bucketing_updated", environment=state.environment, fields=["rollout"])
            )
    return changes


def _apply_plans(
    session: Session, flag: Flag, definition: FlagDefinition, actor: str, now: datetime, reason: str
) -> list[Change]:
    existing = {
        plan.environment: plan for plan in session.scalars(select(RolloutPlan).where(RolloutPlan.flag_id == flag.id))
    }
    changes: list[Change] = []
    wanted_environments = []
    if definition.plan is not None:
        for position, step in enumerate(definition.plan.environments):
            wanted_environments.append(step.environment)
            stages = rollout_service.stages_to_json(step.stages)
            policy = definition.plan.rollback_policy.value
            plan = existing.get(step.environment)
            if plan is None:
                session.add(
                    RolloutPlan(
                        flag_id=flag.id,
                        environment=step.environment,
                        position=position,
                        stages=stages,
                        rollback_policy=policy,
                        updated_at=now,
                    )
                )
                changes.append(Change(flag=flag.key, action="plan_created", environment=step.environment))
                _audit_plan(session, flag, step.environment, None, stages, actor, now, reason)
                continue
            before = {"position": plan.position, "stages": plan.stages, "rollback_policy": plan.rollback_policy}
            after = {"position": position, "stages": stages, "rollback_policy": policy}
            if before == after:
                continue
            plan.position, plan.stages, plan.rollback_policy, plan.updated_at = position, stages, policy, now
            changes.append(
                Change(
                    flag=flag.key,
                    action="plan_updated",
                    environment=step.environment,
                    fields=sorted(name for name in after if before[name] != after[name]),
                    note=_active_note(session, flag, step.environment),
                )
            )
            _audit_plan(session, flag, step.environment, before, after, actor, now, reason)
    for environment, plan in existing.items():
        if environment in wanted_environments:
            continue
        note = _active_note(session, flag, environment)
        if note is not None:
            changes.append(Change(flag=flag.key, action="plan_kept", environment=environment, note=note))
            continue
        session.delete(plan)
        changes.append(Change(flag=flag.key, action="plan_removed", environment=environment))
        _audit_plan(session, flag, environment, {"stages": plan.stages}, None, actor, now, reason)
    session.flush()
    return changes


def _active_note(session: Session, flag: Flag, environment: str) -> str | None:
    current = session.scalar(
        select(RolloutRow.state)
        .where(RolloutRow.flag_id == flag.id, RolloutRow.environment == environment)
        .order_by(RolloutRow.id.desc())
        .limit(1)
    )
    if current in _ACTIVE:
        return f"a rollout is {current} in {environment}: it keeps the stages it started with"
    return None


def _audit_plan(
    session: Session,
    flag: Flag,
    environment: str,
    before: Any,
    after: Any,
    actor: str,
    now: datetime,
    reason: str,
) -> None:
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="plan.apply",
        target_type="flag",
        target=flag.key,
        environment=environment,
        reason=reason,
        before=before,
        after=after,
    )
