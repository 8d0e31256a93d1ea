"""An example Alertmanager configuration for the rendered alerts (``alerts/alertmanager.example.yml``).

severity="page"    -> PagerDuty
severity="ticket"  -> Slack
guard="true"       -> the control plane's webhook, which rolls the alert's flag back in its environment
                      (``continue: true``: a guard alert still pages or opens a ticket)
RolloutRolledBack  -> inhibits the non-paging, non-SLO alerts of the same flag and environment while it fires
"""

from __future__ import annotations

from typing import Any

from controlplane.render.alerts import GUARD_LABEL
from controlplane.render.controlplane_rules import ROLLED_BACK_ALERT
from controlplane.render.yamlfile import generated_header, to_yaml

__all__ = ["WEBHOOK_PATH", "render_alertmanager_example"]

WEBHOOK_PATH = "/api/v1/alertmanager/webhook"


def _config() -> dict[str, Any]:
    return {
        "route": {
            "receiver": "slack-tickets",
            "group_by": ["alertname", "pipeline", "flag", "environment"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "receiver": "controlplane-rollback",
                    "matchers": [f'{GUARD_LABEL}="true"'],
                    # One rollback per flag and environment, sent at once; the webhook is idempotent.
                    "group_by": ["alertname", "flag", "environment"],
                    "group_wait": "1s",
                    "group_interval": "1m",
                    # A rollout restarted while its guard still fires must hear of it again soon, not in an hour
                    # (Alertmanager re-sends an unchanged group only this often).
                    "repeat_interval": "2m",
                    "continue": True,
                },
                {"receiver": "pagerduty", "matchers": ['severity="page"']},
                {"receiver": "slack-tickets", "matchers": ['severity="ticket"']},
            ],
        },
        "inhibit_rules": [
            {
                # While a rollout is rolled back, what caused it is known: mute the tickets of that rollout. Pages
                # still go out (the guard's page would otherwise be muted by the rollback it caused, before its
                # group_wait), and so do SLO burns, which go on meaning users are failing whatever the flag.
                "source_matchers": [f'alertname="{ROLLED_BACK_ALERT}"'],
                "target_matchers": ['pipeline=~".+"', 'severity!="page"', 'slo=""'],
                "equal": ["flag", "environment"],
            }
        ],
        "receivers": [
            {
                "name": "controlplane-rollback",
                "webhook_configs": [
                    {
                        "url": f"http://controlplane.example.internal:8080{WEBHOOK_PATH}",
                        # The control plane acts on firing alerts only.
                        "send_resolved": False,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": "REPLACE_WITH_AN_OPERATOR_TOKEN"}
                        },
                    }
                ],
            },
            {
                "name": "pagerduty",
                "pagerduty_configs": [
                    {
                        "routing_key": "REPLACE_WITH_THE_PAGERDUTY_INTEGRATION_KEY",
                        "severity": "critical",
                        "description": "{{ .CommonAnnotations.summary }}",
                        "details": {
                            "description": "{{ .CommonAnnotations.description }}",
                            "runbook_url": "{{ .CommonAnnotations.runbook_url }}",
                            "firing": '{{ template "pagerduty.default.instances" .Alerts.Firing }}',
                        },
                    }
                ],
            },
            {
                "name": "slack-tickets",
                "slack_configs": [
                    {
                        "api_url": "https://hooks.slack.com/services/REPLACE/WITH/YOUR-WEBHOOK",
                        "channel": "#rollouts",
                        "send_resolved": True,
                        "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                        "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n"
                        "{{ .Annotations.runbook_url }}\n{{ end }}",
                    }
                ],
            },
        ],
    }


def render_alertmanager_example() -> str:
    """The text of ``alerts/alertmanager.example.yml``."""
    header = generated_header(
        "Example Alertmanager (0.25) configuration for the rules in this folder: pages to PagerDuty, tickets to",
        "Slack, guard alerts also to the control plane, which rolls the flag back. Replace the REPLACE_* values",
        "(better: `credentials_file`, `routing_key_file`, `api_url_file`) and the control plane's URL.",
    )
    return header + to_yaml(_config())
