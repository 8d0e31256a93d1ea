"""Every domain's tables, imported in one place for Alembic and the tests."""

from controlplane.audit.models import AuditRecord
from controlplane.auth.models import ApiToken
from controlplane.db import Base
from controlplane.flags.models import Flag, FlagEnvironment
from controlplane.rollouts.models import Rollout, RolloutPlan
from controlplane.scheduling.models import LeaderLease

__all__ = [
    "ApiToken",
    "AuditRecord",
    "Base",
    "Flag",
    "FlagEnvironment",
    "LeaderLease",
    "Rollout",
    "RolloutPlan",
]
