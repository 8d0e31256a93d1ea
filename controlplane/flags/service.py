"""Use cases of flags and their per-environment state. Takes a session, never commits."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controlplane.audit.service import append_audit_record
from controlplane.db import announce_on_commit
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.flags.incidents import (
    EnvironmentRecord,
    UndoVerdict,
    incident_scope,
    overridden_state,
    paused_rollouts,
    undo_command,
    undo_verdicts,
)
from controlplane.flags.models import CONFIGURATION_CHANNEL, Flag, FlagEnvironment, FlagIncident
from controlplane.flags.reads import environment_snapshot, flag_snapshot
from controlplane.flags.schemas import (
    EnvironmentStateUpdate,
    FlagCreate,
    FlagDefinitionError,
    FlagType,
    FlagUpdate,
    PercentageRollout,
    check_flag_variants,
)

__all__ = [
    "active_incidents",
    "announce_configuration_change",
    "check_revision",
    "create_flag",
    "ensure_environments",
    "ensure_every_flag_has_environments",
    "get_environment_state",
    "get_flag",
    "get_incident",
    "list_flags",
    "list_incidents",
    "record_environment_change",
    "record_held_rollback",
    "set_variant_everywhere",
    "undo_incident",
    "update_environment_state",
    "update_flag",
]


def announce_configuration_change(session: Session) -> None:
    """Have every replica's configuration feed catch up once this transaction commits: call it on any change to a
    flag or its environment state."""
    announce_on_commit(session, CONFIGURATION_CHANNEL)


def check_revision(kind: str, name: str, *, expected: int, actual: int) -> None:
    """Refuse a change made against a revision that is no longer current."""
    if expected != actual:
        raise Conflict(
            "stale-revision",
            f"{kind} `{name}` is at revision {actual}, not {expected}: someone changed it since you read it; "
            "read it again and retry",
            expected_revision=expected,
            current_revision=actual,
        )


def get_flag(session: Session, key: str) -> Flag:
    """The flag with this key, or FlagNotFound."""
    query = select(Flag).where(Flag.key == key).options(selectinload(Flag.environments))
    flag = session.scalar(query)
    if flag is None:
        raise NotFound("flag-not-found", f"no flag with key `{key}`", flag=key)
    return flag


def list_flags(session: Session) -> list[Flag]:
    """Every flag, by key."""
    return list(session.scalars(select(Flag).options(selectinload(Flag.environments)).order_by(Flag.key)))


def get_environment_state(
    session: Session, *, key: str, environment: str, environments: Sequence[str]
) -> FlagEnvironment:
    """A flag's state in one known environment."""
    require_environment(environment, environments)
    flag = get_flag(session, key)
    for state in flag.environments:
        if state.environment == environment:
            return state
    # Environments added to the configuration after the flag was created get their row on first use.
    return _add_environment(session, flag, environment)


def require_environment(environment: str, environments: Sequence[str]) -> None:
    """Refuse an environment the configuration does not know."""
    if environment not in environments:
        raise NotFound(
            "environment-not-found",
            f"no environment `{environment}`; known environments are {', '.join(environments)}",
            environment=environment,
        )


def _add_environment(session: Session, flag: Flag, environment: str) -> FlagEnvironment:
    state = FlagEnvironment(
        flag=flag, environment=environment, enabled=False, default_variant=flag.off_variant, rules=[]
    )
    if flag.rollout_variant is not None:
        state.rollout = {
            "variant": flag.rollout_variant,
            "percentage": 0.0,
            "bucket_by": "targetingKey",
            "when": [],
        }
    session.add(state)
    session.flush()
    announce_configuration_change(session)
    return state


def ensure_environments(session: Session, flag: Flag, environments: Sequence[str]) -> None:
    """Give a flag a state row in every configured environment."""
    present = {state.environment for state in flag.environments}
    for environment in environments:
        if environment not in present:
            _add_environment(session, flag, environment)


def ensure_every_flag_has_environments(session: Session, environments: Sequence[str]) -> None:
    """Give every flag a state row in every configured environment."""
    for flag in list_flags(session):
        ensure_environments(session, flag, environments)


def create_flag(
    session: Session,
    *,
    request: FlagCreate,
    actor: str,
    environments: Sequence[str],
    now: datetime,
    pipeline: str | None = None,
    reason: str | None = None,
) -> Flag:
    """Create a flag, disabled and serving its off variant in every environment."""
    if session.scalar(select(Flag.id).where(Flag.key == request.key)) is not None:
        raise Conflict("flag-exists", f"a flag with key `{request.key}` already exists", flag=request.key)
    flag = Flag(
        key=request.key,
        type=request.type.value,
        variants=request.variants,
        off_variant=request.off_variant,
        rollout_variant=request.rollout_variant,
        description=request.description,
        owner=request.owner,
        kind=request.kind.value,
        tags=list(request.tags),
        pipeline=pipeline,
        created_at=now,
        updated_at=now,
    )
    session.add(flag)
    session.flush()
    ensure_environments(session, flag, environments)
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="flag.create",
        target_type="flag",
        target=flag.key,
        reason=reason,
        after=flag_snapshot(flag),
    )
    return flag


def _referenced_variants(flag: Flag) -> dict[str, str]:
    """Every variant name the flag's environments refer to, with where."""
    used: dict[str, str] = {}
    for state in flag.environments:
        used.setdefault(state.default_variant, f"environments.{state.environment}.default_variant")
        for rule in state.rules:
            used.setdefault(rule["variant"], f"environments.{state.environment}.rules[{rule['name']}]")
    return used


def update_flag(
    session: Session,
    *,
    key: str,
    expected_revision: int,
    changes: FlagUpdate,
    actor: str,
    now: datetime,
    reason: str | None = None,
    rollouts_serving: Sequence[str] = (),
) -> Flag:
    """Change a flag's definition if it is still at ``expected_revision``.

    ``rollouts_serving`` names the environments where a rollout serves the rollout variant; while there are any,
    the rollout variant cannot change under them.
    """
    flag = get_flag(session, key)
    check_revision("flag", key, expected=expected_revision, actual=flag.revision)
    announce_configuration_change(session)
    before = flag_snapshot(flag)
    variants = changes.variants if changes.variants is not None else flag.variants
    off_variant = changes.off_variant or flag.off_variant
    rollout_variant = changes.rollout_variant or flag.rollout_variant
    try:
        check_flag_variants(FlagType(flag.type), variants, off_variant, rollout_variant)
    except FlagDefinitionError as error:
        raise InvalidInput("invalid-flag", str(error), field=error.field) from error
    if rollout_variant != flag.rollout_variant and rollouts_serving:
        raise Conflict(
            "rollout-in-progress",
            f"`{key}` is being rolled out with variant `{flag.rollout_variant}` in {', '.join(rollouts_serving)}; "
            "roll those rollouts back before changing the rollout variant",
        )
    for name, where in _referenced_variants(flag).items():
        if name not in variants:
            raise InvalidInput(
                "variant-in-use",
                f"variant `{name}` is still used by {where}; change that first",
                field="variants",
            )
    flag.variants = dict(variants)
    flag.off_variant = off_variant
    flag.rollout_variant = rollout_variant
    if changes.description is not None:
        flag.description = changes.description
    if changes.owner is not None:
        flag.owner = changes.owner
    if changes.kind is not None:
        flag.kind = changes.kind.value
    if changes.tags is not None:
        flag.tags = list(changes.tags)
    after = flag_snapshot(flag)
    if after == before:
        return flag
    flag.updated_at = now
    for state in flag.environments:
        if state.rollout is not None and flag.rollout_variant is not None:
            state.rollout = {**state.rollout, "variant": flag.rollout_variant}
    session.flush()
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="flag.update",
        target_type="flag",
        target=key,
        reason=reason,
        before=before,
        after=after,
    )
    return flag


def _same_rollout(sent: PercentageRollout, stored: dict[str, Any] | None) -> bool:
    """Whether ``sent`` is what is stored, compared as decoded (a field added since reads as its default)."""
    return stored is not None and msgspec.convert(stored, PercentageRollout) == sent


def update_environment_state(
    session: Session,
    *,
    key: str,
    environment: str,
    environments: Sequence[str],
    expected_revision: int,
    changes: EnvironmentStateUpdate,
    actor: str,
    now: datetime,
    reason: str | None = None,
    rollout_serving: bool = False,
) -> FlagEnvironment:
    """Change a flag's state in one environment if it is still at ``expected_revision``.

    While a rollout serves in the environment (``rollout_serving``), its percentage, variant and cohort belong to
    the rollout: they change through rollout operations only. The kill switch, rules and default stay editable.
    """
    state = get_environment_state(session, key=key, environment=environment, environments=environments)
    flag = state.flag
    check_revision(f"flag `{key}` in", environment, expected=expected_revision, actual=state.revision)
    if changes.rollout is not None and rollout_serving and not _same_rollout(changes.rollout, state.rollout):
        raise Conflict(
            "rollout-in-progress",
            f"a rollout of `{key}` serves {environment}; its percentage, variant and bucketing change only through "
            "rollout operations (advance, pause, rollback)",
        )
    _check_variants_exist(flag, changes)
    before = environment_snapshot(state)
    if changes.enabled is not None:
        state.enabled = changes.enabled
    if changes.default_variant is not None:
        state.default_variant = changes.default_variant
    if changes.rules is not None:
        state.rules = [msgspec.to_builtins(rule) for rule in changes.rules]
    if changes.rollout is not None:
        state.rollout = msgspec.to_builtins(changes.rollout)
    after = environment_snapshot(state)
    if after == before:
        return state
    record_environment_change(session, state, before=before, after=after, actor=actor, now=now, reason=reason)
    return state


def record_environment_change(
    session: Session,
    state: FlagEnvironment,
    *,
    before: Any,
    after: Any,
    actor: str,
    now: datetime,
    reason: str | None,
    action: str = "flag.environment.update",
) -> None:
    """Stamp a change the caller made to an environment state (raising its revision), announce and audit it."""
    state.updated_at = now
    announce_configuration_change(session)
    session.flush()
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action=action,
        target_type="flag",
        target=state.flag.key,
        environment=state.environment,
        reason=reason,
        before=before,
        after=after,
    )


def _check_variants_exist(flag: Flag, changes: EnvironmentStateUpdate) -> None:
    named: list[tuple[str, str]] = []
    if changes.default_variant is not None:
        named.append(("default_variant", changes.default_variant))
    for index, rule in enumerate(changes.rules or []):
        named.append((f"rules[{index}].variant", rule.variant))
    if changes.rollout is not None:
        named.append(("rollout.variant", changes.rollout.variant))
    for field, name in named:
        if name not in flag.variants:
            raise InvalidInput(
                "unknown-variant",
                f"`{field}` names variant `{name}`, which flag `{flag.key}` does not have; "
                f"its variants are {', '.join(f'`{name}`' for name in sorted(flag.variants))}",
                field=field,
            )


# --- incident actions -------------------------------------------------------------------------------------------

#: Asked, before an incident action changes an environment, to pause the running rollouts of the flag there (so
#: the scheduler does not advance them under the override): the rollouts it paused, each by its segment
#: (``attribute=value``; None for a plan run once). Handed in by the workflow above.
PauseRollout = Callable[[FlagIncident, str], Sequence[str | None]]
#: Asked, once an undo restored an environment whose rollouts the action paused, to resume those its record names:
#: what it did, in words.
ResumeRollout = Callable[[FlagIncident, EnvironmentRecord], str]


def _require_reason(reason: str | None, what: str) -> str:
    if reason is None or not reason.strip():
        raise InvalidInput("reason-required", f"{what} needs a reason: say why, for the audit log", field="reason")
    return reason.strip()


def _check_variant(flag: Flag, variant: str) -> None:
    if variant not in flag.variants:
        raise InvalidInput(
            "unknown-variant",
            f"flag `{flag.key}` has no variant `{variant}`; "
            f"its variants are {', '.join(f'`{name}`' for name in sorted(flag.variants))}",
            field="variant",
        )


def set_variant_everywhere(
    session: Session,
    *,
    key: str,
    variant: str,
    named: Sequence[str],
    all_environments: bool,
    environments: Sequence[str],
    actor: str,
    reason: str | None,
    now: datetime,
    pause_rollout: PauseRollout,
) -> tuple[FlagIncident, dict[str, str]]:
    """Serve ``variant`` to everyone in the named environments, or in every environment where the flag is switched
    on (``flags.incidents``), recording the incident with each environment's state before and after, auditing each
    environment; the incident and the environments left alone with why."""
    text = _require_reason(reason, "an incident action")
    if all_environments == bool(named):
        raise InvalidInput(
            "invalid-field",
            "name the environments (`environments`) or ask for all of them (`all_environments`), not both or neither",
            field="environments",
        )
    for environment in named:
        require_environment(environment, environments)
    flag = get_flag(session, key)
    _check_variant(flag, variant)
    ensure_environments(session, flag, environments)
    states = {state.environment: state for state in flag.environments if state.environment in environments}
    scope = incident_scope(
        {name: environment_snapshot(state) for name, state in states.items()},
        variant,
        off_variant=flag.off_variant,
        named=named,
        all_environments=all_environments,
    )
    if not scope.targets:
        why = "; ".join(f"{name}: {said}" for name, said in scope.skipped.items()) or "no environment"
        raise Conflict("nothing-to-change", f"`{key}` serves `{variant}` nowhere it could change: {why}")
    incident = FlagIncident(flag=flag, variant=variant, actor=actor, reason=text, created_at=now, environments=[])
    session.add(incident)
    session.flush()
    records: list[EnvironmentRecord] = []
    for environment in scope.targets:
        state = states[environment]
        before = environment_snapshot(state)
        # Paused first: a pause makes the environment serve its rollout's stage again, which the override replaces.
        paused = pause_rollout(incident, environment)
        after = overridden_state(before, variant)
        state.enabled = after["enabled"]
        state.default_variant = after["default_variant"]
        state.rules = after["rules"]
        state.rollout = after["rollout"]
        segments = tuple(segment for segment in paused if segment is not None)
        words = paused_rollouts(bool(paused), segments)
        said = f"incident {incident.id}: `{variant}` to everyone" + (f", {words} paused" if words else "")
        record_environment_change(
            session,
            state,
            before=before,
            after=after,
            actor=actor,
            now=now,
            reason=f"{said}: {text}",
            action="flag.incident.set_variant",
        )
        records.append(EnvironmentRecord(environment, before, after, state.revision, bool(paused), segments))
    incident.environments = [record.to_json() for record in records]
    session.flush()
    return incident, dict(scope.skipped)


def _refuse_superseded(session: Session, incident: FlagIncident, environments: Sequence[str]) -> None:
    """Refuse, even forced, the undo of an incident that a later one still in force overrides somewhere: restoring
    the state before it would end the later override while that incident still says it is in force."""
    key = incident.flag.key
    in_force = active_incidents(session, key=key)
    newer = {
        environment: found
        for environment in environments
        if (found := in_force.get((key, environment))) is not None and found.id > incident.id
    }
    if not newer:
        return
    latest = max(newer.values(), key=lambda found: found.id)
    shared = [environment for environment, found in newer.items() if found is latest]
    raise Conflict(
        "incident-superseded",
        f"incident {latest.id} (`{latest.variant}` to everyone, by {latest.actor}: {latest.reason}) overrides "
        f"`{key}` in {', '.join(shared)} since incident {incident.id}: undo incident {latest.id} "
        f"first ({undo_command(latest.id)}), which brings back incident {incident.id}'s override there",
        incident=incident.id,
        superseded_by=latest.id,
        environments=shared,
    )


def get_incident(session: Session, incident_id: int) -> FlagIncident:
    """The incident with this id, or IncidentNotFound."""
    incident = session.get(FlagIncident, incident_id)
    if incident is None:
        raise NotFound("incident-not-found", f"no incident {incident_id}", incident=incident_id)
    return incident


def active_incidents(session: Session, *, key: str | None = None) -> dict[tuple[str, str], FlagIncident]:
    """The incidents in force (not undone), by the (flag, environment) each overrides; of one flag when ``key`` is
    given. Where two are in force in one environment (a second variant set over the first), the newest."""
    query = (
        select(Flag.key, FlagIncident)
        .join(Flag, Flag.id == FlagIncident.flag_id)
        .where(FlagIncident.undone_at.is_(None))
        .order_by(FlagIncident.id)
    )
    if key is not None:
        query = query.where(Flag.key == key)
    found: dict[tuple[str, str], FlagIncident] = {}
    for flag_key, incident in session.execute(query):
        for item in incident.environments:
            found[(flag_key, item["environment"])] = incident
    return found


def record_held_rollback(
    session: Session,
    incident: FlagIncident,
    environment: str,
    *,
    rule: str,
    trigger: str,
    why: str,
    actor: str,
    now: datetime,
) -> bool:
    """Record on ``incident`` that it held back an automatic rollback of its flag in ``environment`` asked by
    ``rule`` (``trigger``: guard or alertmanager), and audit it; once per incident, environment and rule (a guard keeps
    breaching every tick): True when recorded now, False when it was already."""
    records = [dict(item) for item in incident.environments]
    record = next(item for item in records if item["environment"] == environment)
    held = list(record.get("held", []))
    if any(item["rule"] == rule for item in held):
        return False
    held.append({"rule": rule, "trigger": trigger, "at": now.isoformat(), "why": why})
    record["held"] = held
    # A new list: the JSON column is saved when assigned, not when a nested value changes.
    incident.environments = records
    state = get_environment_state(session, key=incident.flag.key, environment=environment, environments=[environment])
    served = environment_snapshot(state)
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="flag.incident.rollback_held",
        target_type="flag",
        target=incident.flag.key,
        environment=environment,
        reason=f"automatic rollback held by incident {incident.id} (`{incident.variant}` to everyone, by "
        f"{incident.actor}: {incident.reason}; undo: {undo_command(incident.id)}): {why}",
        before=served,
        after=served,
    )
    session.flush()
    return True


def list_incidents(session: Session, *, key: str | None = None, limit: int = 50) -> list[FlagIncident]:
    """Incidents, newest first; of one flag when ``key`` is given."""
    query = select(FlagIncident).order_by(FlagIncident.id.desc()).limit(limit)
    if key is not None:
        query = query.where(FlagIncident.flag_id == get_flag(session, key).id)
    return list(session.scalars(query))


def undo_incident(
    session: Session,
    *,
    incident_id: int,
    environments: Sequence[str],
    actor: str,
    reason: str | None,
    force: bool,
    now: datetime,
    resume_rollout: ResumeRollout,
) -> tuple[FlagIncident, list[UndoVerdict]]:
    """Put every environment of an incident back in the state recorded before it, all or none: refused with
    ``409 changed-since`` when someone changed one since, unless ``force``; rollouts the action paused are resumed."""
    text = _require_reason(reason, "an undo")
    incident = get_incident(session, incident_id)
    if incident.undone_at is not None:
        raise Conflict(
            "incident-undone",
            f"incident {incident_id} was undone at {incident.undone_at.isoformat()} by {incident.undone_by}",
            incident=incident_id,
        )
    records = [EnvironmentRecord.from_json(item) for item in incident.environments]
    _refuse_superseded(session, incident, [record.environment for record in records])
    states = {
        record.environment: get_environment_state(
            session, key=incident.flag.key, environment=record.environment, environments=environments
        )
        for record in records
    }
    verdicts = undo_verdicts(records, {name: state.revision for name, state in states.items()}, force=force)
    changed = [verdict for verdict in verdicts if verdict.changed_since]
    if changed and not force:
        raise Conflict(
            "changed-since",
            f"`{incident.flag.key}` was changed since incident {incident_id} in "
            f"{', '.join(verdict.environment for verdict in changed)}: undoing would overwrite that change; "
            "look at the audit log, then undo with force to restore the recorded states anyway",
            environments=[verdict.environment for verdict in changed],
            overridable_with="force",
        )
    done: list[dict[str, Any]] = []
    for record, verdict in zip(records, verdicts, strict=True):
        state = states[record.environment]
        before = environment_snapshot(state)
        state.enabled = record.before["enabled"]
        state.default_variant = record.before["default_variant"]
        state.rules = list(record.before["rules"])
        state.rollout = record.before["rollout"]
        overrode = (
            f", overriding changes since (revision {verdict.recorded_revision} -> {verdict.current_revision})"
            if verdict.changed_since
            else ""
        )
        record_environment_change(
            session,
            state,
            before=before,
            after=environment_snapshot(state),
            actor=actor,
            now=now,
            reason=f"undo of incident {incident_id}{overrode}: {text}",
            action="flag.incident.undo",
        )
        rollout = resume_rollout(incident, record) if record.rollout_paused else ""
        done.append(
            {
                "environment": record.environment,
                "restored": record.before,
                "changed_since": verdict.changed_since,
                "rollout": rollout,
            }
        )
    incident.undone_at = now
    incident.undone_by = actor
    incident.undo_reason = text
    incident.undo = done
    session.flush()
    _rearm_earlier(session, incident, states)
    return incident, verdicts


def _rearm_earlier(session: Session, incident: FlagIncident, states: Mapping[str, FlagEnvironment]) -> None:
    """Where the undo brought back an earlier incident's override exactly (``incident``, now undone, was set over
    it), that incident's recorded revision becomes the environment's revision now, so its own undo is not refused as
    if someone had changed the environment since."""
    key = incident.flag.key
    for (_, environment), earlier in active_incidents(session, key=key).items():
        state = states.get(environment)
        if state is None:
            continue
        records = [dict(item) for item in earlier.environments]
        record = next(item for item in records if item["environment"] == environment)
        if environment_snapshot(state) == record["after"]:
            record["revision"] = state.revision
            # A new list: the JSON column is saved when assigned, not when a nested value changes.
            earlier.environments = records
    session.flush()
