"""Rendering artefacts from the pipeline definitions: Grafana dashboards and Prometheus rule files.

    render_all(definitions) -> {relative path: text}
        alerts/<pipeline>.rules.yml        recording and alerting rules of each definition (alerts.py, slo.py)
        alerts/controlplane.rules.yml      alerts on the control plane itself (controlplane_rules.py)
        alerts/tests/<name>.test.yml       promtool unit tests of every alert (alert_tests.py, objective_tests.py,
                                           controlplane_tests.py)
        alerts/alertmanager.example.yml    routes, receivers and the rollback inhibition (alertmanager.py)
        dashboards/<name>.json             Grafana dashboards (dashboards.py: boards.py, pipeline_board.py)

Pure: the same definitions give the same bytes, so `controlplane render --check` can compare them with the
committed files.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.alert_tests import render_rule_tests
from controlplane.render.alertmanager import render_alertmanager_example
from controlplane.render.alerts import render_rules
from controlplane.render.controlplane_rules import render_controlplane_rules
from controlplane.render.controlplane_tests import render_controlplane_tests
from controlplane.render.dashboards import render_dashboards

__all__ = ["render_alerts", "render_all"]


def render_alerts(definitions: Sequence[PipelineDefinition]) -> dict[str, str]:
    """Every file of ``alerts/``: rule files, their promtool tests and the example Alertmanager configuration."""
    files: dict[str, str] = {}
    for definition in sorted(definitions, key=lambda item: item.name):
        files[f"alerts/{definition.name}.rules.yml"] = render_rules(definition)
        files[f"alerts/tests/{definition.name}.test.yml"] = render_rule_tests(definition)
    files["alerts/controlplane.rules.yml"] = render_controlplane_rules()
    files["alerts/tests/controlplane.test.yml"] = render_controlplane_tests()
    files["alerts/alertmanager.example.yml"] = render_alertmanager_example()
    return files


def render_all(definitions: Sequence[PipelineDefinition]) -> dict[str, str]:
    """Every rendered file, by path relative to the repository root."""
    return render_alerts(definitions) | render_dashboards(definitions)
