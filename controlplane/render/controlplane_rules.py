"""Alerts on the control plane itself (``alerts/controlplane.rules.yml``), from the gauges and counters it exports.

``RolloutRolledBack`` fires while a rollout is rolled back; the example Alertmanager configuration inhibits the
symptom alerts of the same flag and environment while it does, so on-call hears about the rollback, not about
every rule that caused it again.
"""

from __future__ import annotations

from typing import Any

from controlplane.render.yamlfile import generated_header, to_yaml

__all__ = ["ROLLED_BACK_ALERT", "controlplane_alerts", "render_controlplane_rules"]

ROLLED_BACK_ALERT = "RolloutRolledBack"
RUNBOOK = "https://runbooks.example.com/controlplane"


def controlplane_alerts() -> list[dict[str, Any]]:
    """The control plane's own alerting rules."""
    return [
        {
            "alert": ROLLED_BACK_ALERT,
            # Every replica exports the same state, read from the database: `max` drops the duplicates.
            "expr": 'max by (flag, environment) (controlplane_rollout_state{state="rolled_back"}) == 1',
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
    ]


def render_controlplane_rules() -> str:
    """The text of ``alerts/controlplane.rules.yml``."""
    header = generated_header("Alerts on the control plane itself; unit tests in tests/controlplane.test.yml.")
    return header + to_yaml({"groups": [{"name": "controlplane.rules", "rules": controlplane_alerts()}]})
