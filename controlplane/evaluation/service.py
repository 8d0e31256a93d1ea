"""Reading an environment's configuration out of the database: its revision and its snapshot."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload

from controlplane.flags.models import Flag, FlagEnvironment
from controlplane.flags.reads import to_environment_read
from controlplane_client.provider.snapshot import FlagConfig, Snapshot

__all__ = ["configuration_revisions", "load_snapshot"]


def configuration_revisions(session: Session) -> dict[str, int]:
    """The configuration revision of every environment that has flags.

    Every change raises some row's revision by one and no row is ever deleted, so the sum of the environment's
    state revisions plus the flags' own revisions strictly increases with each change: a cheap, exact version.
    """
    flags_total = session.scalar(select(func.coalesce(func.sum(Flag.revision), 0))) or 0
    rows = session.execute(
        select(FlagEnvironment.environment, func.sum(FlagEnvironment.revision)).group_by(FlagEnvironment.environment)
    ).all()
    return {environment: int(total) + int(flags_total) for environment, total in rows}


def load_snapshot(session: Session, environment: str) -> Snapshot:
    """Every flag as ``environment`` serves it, with the environment's revision."""
    # The revision is read first: the states read after it can only be as new or newer, so a client holding
    # this snapshot refetches on the next notice rather than keep stale flags under a current-looking ETag.
    revision = configuration_revisions(session).get(environment, 0)
    states = session.scalars(
        select(FlagEnvironment)
        .where(FlagEnvironment.environment == environment)
        .options(joinedload(FlagEnvironment.flag))
        .order_by(FlagEnvironment.flag_id)
    ).all()
    flags = []
    for state in states:
        read = to_environment_read(state)
        flags.append(
            FlagConfig(
                key=state.flag.key,
                type=state.flag.type,
                variants=state.flag.variants,
                off_variant=state.flag.off_variant,
                default_variant=state.default_variant,
                enabled=state.enabled,
                rules=read.rules,
                rollout=read.rollout,
                revision=state.revision + state.flag.revision,
            )
        )
    return Snapshot(environment=environment, revision=revision, flags=flags)
