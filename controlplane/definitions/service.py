"""Applying a pipeline definition: create or update flags and plans, idempotently, like `kubectl apply`.

What apply owns: a flag's definition (variants, description, owner, kind, tags), its bucketing, and its plans.
What it never touches once a flag exists: the live state an operator controls (enabled, rules, the rollout's
percentage and progress). Initial per-environment state is applied only when the flag is created. Where a
rollout serves (running, paused or completed), its bucketing, rollout variant and plan are kept as they are and
the report says so ("*_kept"): apply never moves what a rollout is serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.catalog import service as catalog_service
from controlplane.cleanup import service as cleanup_service
from controlplane.definitions.schemas import FlagDefinition, PipelineDefinition
from controlplane.errors import InvalidInput
from controlplane.flags import service as flag_service
from controlplane.flags.models import Flag
from controlplane.flags.reads import flag_snapshot
from controlplane.flags.schemas import FlagCreate, FlagUpdate
from controlplane.rollouts.models import RolloutPlan
from controlplane.rollouts.stages import stages_to_json
from controlplane.rollouts.status import serving_environments, serving_state

__all__ = ["ApplyReport", "Change", "apply_definition"]

#: Actions that change the database; the "*_kept" and "unchanged" ones only report.
_CHANGING = frozenset(
    {
        "created",
        "updated",
        "bucketing_updated",
        "plan_created",
        "plan_updated",
        "plan_removed",
        "catalog_created",
        "catalog_updated",
        "cleanup_policy_created",
        "cleanup_policy_updated",
        "cleanup_policy_removed",
    }
)


class Change(msgspec.Struct):
    """One thing apply did (or, in a dry run, would do); ``flag`` is None for the pipeline's events and rules."""

    flag: str | None
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
    if definition.flags:
        flag_service.announce_configuration_change(session)
    for flag_definition in definition.flags:
        changes.extend(_apply_flag(session, definition, flag_definition, actor, environments, now))
    catalog = _apply_catalog(session, definition, actor, now)
    if catalog is not None:
        changes.append(catalog)
    changes.extend(
        Change(flag=None, action=change.action, fields=list(change.fields), note=f"cleanup policy `{change.name}`")
        for change in cleanup_service.store_policies(
            session,
            pipeline=definition.name,
            policies=definition.cleanup,
            actor=actor,
            source=definition.source,
            now=now,
        )
    )
    if savepoint is not None:
        savepoint.rollback()
    return ApplyReport(
        pipeline=definition.name,
        source=definition.source,
        dry_run=dry_run,
        changed=any(change.action in _CHANGING for change in changes),
        changes=changes,
    )


def _apply_catalog(session: Session, definition: PipelineDefinition, actor: str, now: datetime) -> Change | None:
    """Store the pipeline's event types and alert rules; audited and reported when they change."""
    stored = catalog_service.store_catalog(
        session,
        pipeline=definition.name,
        events=definition.events,
        rules=definition.rules,
        source=definition.source,
        now=now,
    )
    if stored.action == "catalog_unchanged":
        return None
    if stored.action:
        append_audit_record(
            session,
            now=now,
            actor=actor,
            action="catalog.apply",
            target_type="pipeline",
            target=definition.name,
            environment=None,
            reason=f"definitions apply {definition.source}",
            before=None,
            after={
                "events": [event.name for event in definition.events],
                "rules": [rule.name for rule in definition.rules],
            },
        )
    return Change(flag=None, action=stored.action, fields=stored.fields)


def _rollout_config(definition: FlagDefinition, variant: str | None, percentage: float) -> dict[str, Any] | None:
    if variant is None:
        return None
    return {
        "variant": variant,
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
        serving = serving_environments(session, flag.id, environments)
        changes = [_update_flag(session, flag, definition, actor, now, reason, serving)]
        changes.extend(_update_bucketing(session, flag, definition, serving, actor, now, reason))
        session.flush()
    changes.extend(_apply_plans(session, flag, definition, actor, now, reason))
    return changes


def _apply_initial_states(flag: Flag, definition: FlagDefinition) -> None:
    initial = {state.environment: state for state in definition.initial_states}
    for state in flag.environments:
        state.rollout = _rollout_config(definition, definition.rollout_variant, 0.0)
        wanted = initial.get(state.environment)
        if wanted is not None:
            state.enabled = wanted.enabled
            state.default_variant = wanted.default_variant
            state.rules = [msgspec.to_builtins(rule) for rule in wanted.rules]


def _update_flag(
    session: Session,
    flag: Flag,
    definition: FlagDefinition,
    actor: str,
    now: datetime,
    reason: str,
    serving: Sequence[str],
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
    note = None
    if definition.rollout_variant is None and flag.rollout_variant is not None:
        # A file without `rollout_variant` leaves the flag's as it is: removing it would orphan its rollouts.
        del wanted["rollout_variant"]
        note = f"the file declares no rollout_variant; the flag keeps `{flag.rollout_variant}`"
    elif serving and wanted["rollout_variant"] != flag.rollout_variant:
        del wanted["rollout_variant"]
        note = f"rollout_variant kept: rollouts serve `{flag.rollout_variant}` in {', '.join(serving)}"
    current = flag_snapshot(flag)
    differing = sorted(name for name, value in wanted.items() if current[name] != value)
    if not differing:
        return Change(flag=flag.key, action="unchanged", note=note)
    update = msgspec.convert({name: wanted[name] for name in differing}, FlagUpdate)
    flag_service.update_flag(
        session,
        key=flag.key,
        expected_revision=flag.revision,
        changes=update,
        actor=actor,
        now=now,
        reason=reason,
        rollouts_serving=serving,
    )
    return Change(flag=flag.key, action="updated", fields=differing, note=note)


def _update_bucketing(
    session: Session,
    flag: Flag,
    definition: FlagDefinition,
    serving: Sequence[str],
    actor: str,
    now: datetime,
    reason: str,
) -> list[Change]:
    changes = []
    for state in flag.environments:
        current = state.rollout
        percentage = float(current["percentage"]) if current else 0.0
        # The flag's variant after _update_flag: the file's, or the one kept because a rollout serves it.
        wanted = _rollout_config(definition, flag.rollout_variant, percentage)
        if wanted is None or current == wanted:
            continue
        if state.environment in serving:
            # Re-drawing cohorts or changing the variant under a serving rollout would move real users.
            note = "a rollout serves here: its bucketing changes only after it is rolled back"
            changes.append(Change(flag=flag.key, action="bucketing_kept", environment=state.environment, note=note))
            continue
        state.rollout = wanted
        flag_service.record_environment_change(
            session, state, before={"rollout": current}, after={"rollout": wanted}, actor=actor, now=now, reason=reason
        )
        changes.append(
            Change(flag=flag.key, action="bucketing_updated", environment=state.environment, fields=["rollout"])
        )
    return changes


def _apply_plans(
    session: Session,
    flag: Flag,
    definition: FlagDefinition,
    actor: str,
    now: datetime,
    reason: str,
) -> list[Change]:
    existing = {
        plan.environment: plan for plan in session.scalars(select(RolloutPlan).where(RolloutPlan.flag_id == flag.id))
    }
    changes: list[Change] = []
    wanted_environments = []
    if definition.plan is not None:
        for position, step in enumerate(definition.plan.environments):
            wanted_environments.append(step.environment)
            stages = stages_to_json(step.stages)
            policy = definition.plan.rollback_policy.value
            auto = definition.plan.auto_rollback
            per = None if step.per is None else {"attribute": step.per.attribute, "values": list(step.per.values)}
            plan = existing.get(step.environment)
            if plan is None:
                session.add(
                    RolloutPlan(
                        flag_id=flag.id,
                        environment=step.environment,
                        position=position,
                        stages=stages,
                        rollback_policy=policy,
                        auto_rollback=auto,
                        segment_attribute=step.per.attribute if step.per else None,
                        segment_values=list(step.per.values) if step.per else None,
                        updated_at=now,
                    )
                )
                changes.append(Change(flag=flag.key, action="plan_created", environment=step.environment))
                _audit_plan(session, flag, step.environment, None, stages, actor, now, reason)
                continue
            stored_per = (
                None
                if plan.segment_attribute is None
                else {"attribute": plan.segment_attribute, "values": list(plan.segment_values or [])}
            )
            note = _active_note(session, flag, step.environment)
            if per != stored_per and note is not None:
                # Serving rollouts are rows per segment (or one without): re-cutting the segments under them would
                # leave rollouts no operation could reach.
                changes.append(
                    Change(flag=flag.key, action="plan_kept", environment=step.environment, fields=["per"], note=note)
                )
                continue
            before = {
                "position": plan.position,
                "stages": plan.stages,
                "rollback_policy": plan.rollback_policy,
                "auto_rollback": plan.auto_rollback,
            }
            after = {"position": position, "stages": stages, "rollback_policy": policy, "auto_rollback": auto}
            if stored_per is not None or per is not None:
                # Only a plan run per segment records `per`, so plans without one audit as before.
                before["per"], after["per"] = stored_per, per
            if before == after:
                continue
            plan.position, plan.stages, plan.rollback_policy, plan.updated_at = position, stages, policy, now
            plan.auto_rollback = auto
            plan.segment_attribute = step.per.attribute if step.per else None
            plan.segment_values = list(step.per.values) if step.per else None
            changes.append(
                Change(
                    flag=flag.key,
                    action="plan_updated",
                    environment=step.environment,
                    fields=sorted(name for name in after if before[name] != after[name]),
                    note=note,
                )
            )
            _audit_plan(session, flag, step.environment, before, after, actor, now, reason)
    for environment, plan in existing.items():
        if environment in wanted_environments:
            continue
        note = _active_note(session, flag, environment)
        if note is not None:
            # Removing it would leave a serving rollout that nobody could roll back.
            changes.append(Change(flag=flag.key, action="plan_kept", environment=environment, note=note))
            continue
        session.delete(plan)
        changes.append(Change(flag=flag.key, action="plan_removed", environment=environment))
        _audit_plan(session, flag, environment, {"stages": plan.stages}, None, actor, now, reason)
    session.flush()
    return changes


def _active_note(session: Session, flag: Flag, environment: str) -> str | None:
    state = serving_state(session, flag.id, environment)
    if state is not None:
        return f"a rollout is {state.value} in {environment}: it keeps the stages it started with"
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
