"""Every domain's tables, imported in one place for Alembic and the tests."""

from controlplane.alerting.models import AlertStateRow, AlertTransition
from controlplane.audit.models import AuditRecord
from controlplane.auth.models import ApiToken
from controlplane.catalog.models import PipelineCatalog
from controlplane.cleanup.models import CleanupPolicyRow, CleanupRun
from controlplane.db import Base
from controlplane.flags.models import Flag, FlagEnvironment, FlagIncident
from controlplane.notifications.models import Notification, Silence
from controlplane.rollouts.models import Rollout, RolloutPlan
from controlplane.scheduling.models import LeaderLease
from controlplane.telemetry.models import EventTail, IngestedBatch, TelemetryWindow

__all__ = [
    "AlertStateRow",
    "AlertTransition",
    "ApiToken",
    "AuditRecord",
    "Base",
    "CleanupPolicyRow",
    "CleanupRun",
    "EventTail",
    "Flag",
    "FlagEnvironment",
    "FlagIncident",
    "IngestedBatch",
    "LeaderLease",
    "Notification",
    "PipelineCatalog",
    "Rollout",
    "RolloutPlan",
    "Silence",
    "TelemetryWindow",
]
