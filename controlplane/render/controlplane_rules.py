"""Alerts on the control plane itself (``alerts/controlplane.rules.yml``), from the gauges and counters it exports.

``RolloutRolledBack`` fires while a rollout is rolled back; the example Alertmanager configuration inhibits the
symptom alerts of the same flag and environment while it does, so on-call hears about the rollback, not about
every rule that caused it again.
"""

from __future__ import annotations

from typing import Any

from controlplane.render.yamlfile import generated_header, to_yaml

__all__ = ["CLEANUP_ALERT", "ROLLED_BACK_ALERT", "controlplane_alerts", "render_controlplane_rules"]

ROLLED_BACK_ALERT = "RolloutRolledBack"
CLEANUP_ALERT = "CleanupNotSucceeding"
RUNBOOK = "https://runbooks.example.com/controlplane"


def controlplane_alerts() -> list[dict[str, Any]]:
    """The control plane's own alerting rules."""
    return [
        {
            "alert": ROLLED_BACK_ALERT,
            # Every replica exports the same state, read from the database: `max` drops the duplicates.
            # By segment too: a segment of a plan run per segment rolled back is its own alert ("" for a whole one).
            "expr": 'max by (flag, environment, segment) (controlplane_rollout_state{state="rolled_back"}) == 1',
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "{{ $labels.flag }} is rolled back in {{ $labels.environment }}",
                "description": (
                    "The rollout of {{ $labels.flag }} in {{ $labels.environment }} was rolled back (by an operator, "
                    "a guard or Alertmanager) and serves its rollback variant. Tickets on the same flag and "
                    "environment are inhibited meanwhile (pages and SLO burns still go out). Find why with "
                    "`controlplane audit list --flag "
                    "{{ $labels.flag }} --env {{ $labels.environment }}`, then start the rollout again or leave it."
                ),
                "runbook_url": f"{RUNBOOK}#rollout-rolled-back",
            },
        },
        {
            "alert": "ControlPlaneNotificationsFailing",
            "expr": 'sum by (receiver) (increase(controlplane_notifications_total{result="failed"}[15m])) > 0',
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Notifications to {{ $labels.receiver }} are failing",
                "description": (
                    "{{ $value | humanize }} notifications to {{ $labels.receiver }} failed for good in the last "
                    "15m: on-call may not hear about alerts. See `controlplane notifications list --status failed`."
                ),
                "runbook_url": f"{RUNBOOK}#notifications-failing",
            },
        },
        {
            "alert": CLEANUP_ALERT,
            # The deadline is the policy's allowance (alert_after, or twice its schedule's longest gap) after its
            # last success; read from the database, so every replica exports the same value.
            "expr": "max by (policy, bucket) (time() - controlplane_cleanup_success_deadline_timestamp_seconds) > 0",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Cleanup {{ $labels.policy }} of bucket {{ $labels.bucket }} has not succeeded in time",
                "description": (
                    "Cleanup policy {{ $labels.policy }} has gone longer than its schedule allows without a "
                    "successful run ({{ $value | humanizeDuration }} past its deadline): expired reference images "
                    "pile up in {{ $labels.bucket }}. See `controlplane cleanup runs --policy {{ $labels.policy }}` "
                    "for the failing runs and their errors, then `controlplane cleanup run {{ $labels.policy }}`."
                ),
                "runbook_url": f"{RUNBOOK}#cleanup-not-succeeding",
            },
        },
    ]


def render_controlplane_rules() -> str:
    """The text of ``alerts/controlplane.rules.yml``."""
    header = generated_header("Alerts on the control plane itself; unit tests in tests/controlplane.test.yml.")
    return header + to_yaml({"groups": [{"name": "controlplane.rules", "rules": controlplane_alerts()}]})
