"""Unit tests for rendering a sequential rule (``confidence:``) for Prometheus: the plain threshold as for any
rule, and one sentence saying the control plane decides it sequentially while Prometheus compares the plain value."""

from __future__ import annotations

from pathlib import Path

from controlplane.definitions.loader import load_definition, parse_definition
from controlplane.render.alerts import definition_alerts

DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"
ENVIRONMENTS = ("dev", "qa", "staging", "production")
RULE = "upload-error-rate"


def test_a_sequential_rule_renders_its_plain_threshold_and_says_how_the_control_plane_decides() -> None:
    text = (DEFINITIONS / "reference-images.yaml").read_text()
    # upload-error-rate is plain as shipped: decided at 99% confidence here (its runbook line is its own).
    anchor = "    runbook_url: https://runbooks.example.com/reference-images#upload-error-rate\n"
    assert text.count(anchor) == 1
    confident = text.replace(anchor, anchor + "    confidence: 0.99\n")
    plain = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    sequential = parse_definition(confident, source="reference-images.yaml", environments=ENVIRONMENTS)

    before = [alert for alert in definition_alerts(plain) if alert.rule.name == RULE]
    after = [alert for alert in definition_alerts(sequential) if alert.rule.name == RULE]

    assert [alert.query for alert in after] == [alert.query for alert in before]  # the same PromQL, plain threshold
    for was, now in zip(before, after, strict=True):
        written, expected = now.to_rule(), was.to_rule()
        assert written["expr"] == expected["expr"]
        assert now.annotations["summary"] == was.annotations["summary"]
        sentence = (
            " The control plane decides it at 99% confidence (sequential: CUSUM against 0.06); Prometheus compares "
            "the plain value."
        )
        described = now.annotations["description"]
        assert described.count(sentence) == 1 and described.replace(sentence, "") == was.annotations["description"]
        assert (
            "Fires on ratio of http_request (status_class in {4xx, 5xx}) where route in {upload_reference_image}"
            " > 0.03 over 5m, with at least 50 events." + sentence in described
        )
