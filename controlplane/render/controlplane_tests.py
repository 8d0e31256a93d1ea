"""promtool unit tests of the control plane's own alerts (``alerts/tests/controlplane.test.yml``), written by hand
against ``controlplane_rules``: rolled back rollouts, failing notifications, a cleanup policy past its deadline.
"""

from __future__ import annotations

from typing import Any

from controlplane.render.controlplane_rules import CLEANUP_ALERT, ROLLED_BACK_ALERT, controlplane_alerts
from controlplane.render.promtool import expand, series_name
from controlplane.render.scenarios import INSTANCES
from controlplane.render.yamlfile import generated_header, to_yaml

__all__ = ["render_controlplane_tests"]


def render_controlplane_tests() -> str:
    """The text of ``alerts/tests/controlplane.test.yml``."""
    rules = {rule["alert"]: rule for rule in controlplane_alerts()}

    def firing(alertname: str, labels: dict[str, str], value: float) -> dict[str, Any]:
        rule = rules[alertname]
        every = {**labels, **rule["labels"]}
        texts = {key: expand(text, every, value) for key, text in rule["annotations"].items()}
        return {"exp_labels": every, "exp_annotations": texts}

    rolled_back = {"flag": "enable-reference-images", "environment": "production"}
    replicas = [{"instance": instance, "job": "controlplane"} for instance in INSTANCES]
    state_series = [
        {
            "series": series_name("controlplane_rollout_state", {**rolled_back, "state": state, **replica}),
            "values": values,
        }
        for replica in replicas
        for state, values in (("running", "1x5 0x10"), ("rolled_back", "0x5 1x5 0x5"))
    ]
    # Another environment rolled back from 2m on: its own alert, never this one's.
    state_series += [
        {
            "series": series_name(
                "controlplane_rollout_state",
                {**rolled_back, "environment": "staging", "state": "rolled_back", **replica},
            ),
            "values": "0x1 1x13",
        }
        for replica in replicas
    ]
    staging = firing(ROLLED_BACK_ALERT, {**rolled_back, "environment": "staging"}, 1)
    failing = {"receiver": "pagerduty"}
    notification_series = [
        {
            "series": series_name("controlplane_notifications_total", {**failing, "result": result, **replica}),
            "values": values,
        }
        for replica in replicas
        for result, values in (("failed", "0x10 1x20"), ("sent", "0+5x30"))
    ]
    policy = {"policy": "expired-reference-images", "bucket": "reference-images"}
    # Deadline at 10m (600 s since promtool's epoch); a success at 20m moves it to 90m.
    deadline_series = [
        {
            "series": series_name("controlplane_cleanup_success_deadline_timestamp_seconds", {**policy, **replica}),
            "values": "600x19 5400x10",
        }
        for replica in replicas
    ]
    tests = [
        {
            "name": f"{ROLLED_BACK_ALERT} fires while the rollout's state is rolled_back, once for all replicas",
            "interval": "1m",
            "input_series": state_series,
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": ROLLED_BACK_ALERT, "exp_alerts": []},
                {"eval_time": "4m", "alertname": ROLLED_BACK_ALERT, "exp_alerts": [staging]},
                {
                    "eval_time": "6m",
                    "alertname": ROLLED_BACK_ALERT,
                    "exp_alerts": [firing(ROLLED_BACK_ALERT, rolled_back, 1), staging],
                },
                {"eval_time": "12m", "alertname": ROLLED_BACK_ALERT, "exp_alerts": [staging]},
            ],
        },
        {
            "name": "ControlPlaneNotificationsFailing fires while notifications failed in the last 15m",
            "interval": "1m",
            "input_series": notification_series,
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "ControlPlaneNotificationsFailing", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "ControlPlaneNotificationsFailing",
                    # Each replica failed one: two in all.
                    "exp_alerts": [firing("ControlPlaneNotificationsFailing", failing, 2)],
                },
                {"eval_time": "28m", "alertname": "ControlPlaneNotificationsFailing", "exp_alerts": []},
            ],
        },
        {
            "name": f"{CLEANUP_ALERT} fires once past the success deadline, once for all replicas, until a success",
            "interval": "1m",
            "input_series": deadline_series,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": CLEANUP_ALERT, "exp_alerts": []},
                {"eval_time": "15m", "alertname": CLEANUP_ALERT, "exp_alerts": [firing(CLEANUP_ALERT, policy, 300)]},
                {"eval_time": "21m", "alertname": CLEANUP_ALERT, "exp_alerts": []},
            ],
        },
    ]
    header = generated_header(
        "promtool unit tests of ../controlplane.rules.yml; run:",
        "    promtool test rules alerts/tests/controlplane.test.yml",
    )
    data = {"rule_files": ["../controlplane.rules.yml"], "evaluation_interval": "1m", "tests": tests}
    return header + to_yaml(data)
