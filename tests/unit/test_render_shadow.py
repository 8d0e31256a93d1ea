"""Unit tests for rendering a shadow rule (`mode: shadow`) for Prometheus: its alerts carry severity `info`, what its
notifications carry, whatever it declares, and a shadow guard's description does not say it rolls back."""

from __future__ import annotations

from pathlib import Path

from controlplane.definitions.loader import load_definition, parse_definition
from controlplane.render.alerts import GUARD_LABEL, definition_alerts

DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"
ENVIRONMENTS = ("dev", "qa", "staging", "production")


def shadowed(rule: str) -> str:
    """reference-images.yaml with ``rule`` in shadow mode (after its runbook line, its own)."""
    text = (DEFINITIONS / "reference-images.yaml").read_text()
    anchor = f"    runbook_url: https://runbooks.example.com/reference-images#{rule}\n"
    assert text.count(anchor) == 1
    return text.replace(anchor, anchor + "    mode: shadow\n")


def test_a_shadow_guard_renders_severity_info_and_says_it_never_rolls_back() -> None:
    # upload-latency guards stages (severity ticket); vision-error-streak guards qa and staging and pages elsewhere.
    for name, declared in (("upload-latency", "ticket"), ("vision-error-streak", "page")):
        shipped = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
        shadow = parse_definition(shadowed(name), source="reference-images.yaml", environments=ENVIRONMENTS)
        before = [alert for alert in definition_alerts(shipped) if alert.rule.name == name]
        after = [alert for alert in definition_alerts(shadow) if alert.rule.name == name]

        assert [alert.labels.get(GUARD_LABEL) for alert in after] == ["true", None]  # a guard, then elsewhere
        assert [alert.query for alert in after] == [alert.query for alert in before]
        for was, now in zip(before, after, strict=True):
            assert was.labels["severity"] == declared
            assert now.labels == was.labels | {"severity": "info"}
            assert now.to_rule()["expr"] == was.to_rule()["expr"]
        guard, elsewhere = (alert.annotations["description"] for alert in after)
        assert "A shadow guard of enable-reference-images: firing never rolls it back." in guard
        assert "firing rolls it back" not in guard
        for described in (guard, elsewhere):
            assert "(shadow: watched only, never holds a stage or rolls back)" in described  # its condition


def test_an_enforced_guard_keeps_its_severity_and_its_rollback_sentence() -> None:
    shipped = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    (guard, elsewhere) = [alert for alert in definition_alerts(shipped) if alert.rule.name == "vision-error-streak"]
    assert guard.labels["severity"] == elsewhere.labels["severity"] == "page"
    assert "A guard of enable-reference-images: firing rolls it back in" in guard.annotations["description"]


def test_a_sequential_guard_says_the_control_plane_rolls_back_not_this_alert() -> None:
    shipped = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    (guard, elsewhere) = [alert for alert in definition_alerts(shipped) if alert.rule.name == "upload-failure-rate"]
    assert guard.labels["severity"] == elsewhere.labels["severity"] == "page"
    described = guard.annotations["description"]
    assert "Prometheus compares the plain value" in described
    assert "the control plane rolls it back in {{ $labels.environment }} when its test shows the breach" in described
    assert "this alert does not" in described and "firing rolls it back" not in described
