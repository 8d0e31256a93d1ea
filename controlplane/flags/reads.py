"""What a flag and its environment states read as: the wire forms (``FlagRead``, ``EnvironmentStateRead``) and
the snapshots the audit log records. Pure mappings of the stored rows, no session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from controlplane.flags.incidents import undo_command
from controlplane.flags.models import Flag, FlagEnvironment, FlagIncident
from controlplane.flags.schemas import (
    ActiveIncidentRead,
    EnvironmentStateRead,
    FlagRead,
    FlagType,
    IncidentEnvironmentRead,
    IncidentRead,
    IncidentUndoRead,
    PercentageRollout,
    TargetingRule,
)

__all__ = [
    "ActiveIncidents",
    "environment_snapshot",
    "flag_snapshot",
    "to_active_incident_read",
    "to_environment_read",
    "to_flag_read",
    "to_incident_read",
]


def flag_snapshot(flag: Flag) -> dict[str, Any]:
    """The definition fields of a flag, as the audit log records them."""
    return {
        "type": flag.type,
        "variants": flag.variants,
        "off_variant": flag.off_variant,
        "rollout_variant": flag.rollout_variant,
        "description": flag.description,
        "owner": flag.owner,
        "kind": flag.kind,
        "tags": flag.tags,
    }


def environment_snapshot(state: FlagEnvironment) -> dict[str, Any]:
    """The serving fields of an environment state, as the audit log records them."""
    return {
        "enabled": state.enabled,
        "default_variant": state.default_variant,
        "rules": state.rules,
        "rollout": state.rollout,
    }


def to_active_incident_read(incident: FlagIncident) -> ActiveIncidentRead:
    """The marker of an incident action in force, as an environment state shows it."""
    return ActiveIncidentRead(
        id=incident.id,
        variant=incident.variant,
        since=incident.created_at,
        actor=incident.actor,
        reason=incident.reason,
        undo=undo_command(incident.id),
    )


#: The incidents in force by (flag, environment), as ``flags.service.active_incidents`` reads them.
ActiveIncidents = Mapping[tuple[str, str], FlagIncident]


def to_environment_read(state: FlagEnvironment, incidents: ActiveIncidents | None = None) -> EnvironmentStateRead:
    """The wire form of an environment state, marked with the incident in force there (from ``incidents``)."""
    incident = incidents.get((state.flag.key, state.environment)) if incidents else None
    return EnvironmentStateRead(
        environment=state.environment,
        enabled=state.enabled,
        default_variant=state.default_variant,
        rules=[msgspec.convert(rule, TargetingRule) for rule in state.rules],
        rollout=msgspec.convert(state.rollout, PercentageRollout) if state.rollout else None,
        revision=state.revision,
        updated_at=state.updated_at,
        incident=to_active_incident_read(incident) if incident is not None else None,
    )


def to_flag_read(flag: Flag, incidents: ActiveIncidents | None = None) -> FlagRead:
    """The wire form of a flag with every environment, each marked with the incident in force there."""
    return FlagRead(
        key=flag.key,
        type=FlagType(flag.type),
        variants=flag.variants,
        off_variant=flag.off_variant,
        rollout_variant=flag.rollout_variant,
        description=flag.description,
        owner=flag.owner,
        kind=flag.kind,  # type: ignore[arg-type]
        tags=flag.tags,
        revision=flag.revision,
        created_at=flag.created_at,
        updated_at=flag.updated_at,
        environments=[to_environment_read(state, incidents) for state in flag.environments],
    )


def to_incident_read(incident: FlagIncident, skipped: dict[str, str] | None = None) -> IncidentRead:
    """The wire form of an incident action and its undo."""
    return IncidentRead(
        id=incident.id,
        flag=incident.flag.key,
        variant=incident.variant,
        actor=incident.actor,
        reason=incident.reason,
        created_at=incident.created_at,
        environments=[msgspec.convert(item, IncidentEnvironmentRead) for item in incident.environments],
        undone_at=incident.undone_at,
        undone_by=incident.undone_by,
        undo_reason=incident.undo_reason,
        undo=[msgspec.convert(item, IncidentUndoRead) for item in incident.undo] if incident.undo is not None else None,
        skipped=skipped or {},
    )
