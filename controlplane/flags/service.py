"""Use cases of flags and their per-environment state. Takes a session, never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from controlplane.audit.service import append_audit_record
from controlplane.db import announce_on_commit
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.flags.models import CONFIGURATION_CHANNEL, Flag, FlagEnvironment
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
    "announce_configuration_change",
    "check_revision",
    "create_flag",
    "ensure_environments",
    "ensure_every_flag_has_environments",
    "get_environment_state",
    "get_flag",
    "list_flags",
    "record_environment_change",
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
) -> None:
    """Stamp a change the caller made to an environment state (raising its revision), announce and audit it."""
    state.updated_at = now
    announce_configuration_change(session)
    session.flush()
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="flag.environment.update",
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
