"""The notifications file: receivers, routes, ${ENV} expansion and every refusal naming the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.notifications.config import (
    PAGERDUTY_EVENTS_URL,
    NotificationConfig,
    NotificationConfigError,
    PagerDutyReceiver,
    SlackReceiver,
    WebhookReceiver,
    load_notification_config,
    parse_notification_config,
)

ENVIRON = {"PD_KEY": "0123456789abcdef0123456789abcdef", "SLACK_URL": "https://hooks.slack.test/T/B/x", "TOK": "s3"}

EXAMPLE = """
receivers:
  oncall:
    type: pagerduty
    routing_key: ${PD_KEY}
  chat:
    type: slack
    url: ${SLACK_URL}
  hooks:
    type: webhook
    url: https://hooks.example/alerts
    headers:
      Authorization: Bearer ${TOK}
routes:
  - severity: [page]
    receivers: [oncall, chat]
    continue: true
  - severity: [page, ticket]
    receivers: [hooks]
  - receivers: [chat]
"""


def parse(text: str, environ: dict[str, str] | None = None) -> NotificationConfig:
    return parse_notification_config(text, source="notifications.yaml", environ=ENVIRON if environ is None else environ)


def names(config: NotificationConfig, severity: str) -> list[str]:
    return [receiver.name for receiver in config.receivers_for(severity)]


def test_receivers_of_each_type_with_environment_variables_expanded() -> None:
    config = parse(EXAMPLE)

    assert config.receivers["oncall"] == PagerDutyReceiver(
        "oncall", routing_key=ENVIRON["PD_KEY"], url=PAGERDUTY_EVENTS_URL
    )
    assert config.receivers["chat"] == SlackReceiver("chat", url=ENVIRON["SLACK_URL"])
    hooks = config.receivers["hooks"]
    assert isinstance(hooks, WebhookReceiver)
    assert hooks.url == "https://hooks.example/alerts"
    assert dict(hooks.headers) == {"Authorization": "Bearer s3"}


def test_first_matching_route_wins_unless_it_says_continue() -> None:
    config = parse(EXAMPLE)

    assert names(config, "page") == ["oncall", "chat", "hooks"]
    assert names(config, "ticket") == ["hooks"]
    assert names(config, "info") == ["chat"]
    # A route without severities takes any, even one this file does not name (from Alertmanager's labels).
    assert names(config, "critical") == ["chat"]


def test_secrets_stay_out_of_repr() -> None:
    config = parse(EXAMPLE)
    shown = repr(config)
    assert ENVIRON["PD_KEY"] not in shown
    assert ENVIRON["SLACK_URL"] not in shown
    assert "s3" not in shown


def test_a_missing_file_is_an_empty_configuration_and_nobody_is_notified(tmp_path: Path) -> None:
    config = load_notification_config(tmp_path / "absent.yaml")
    assert config == NotificationConfig.empty()
    assert config.receivers_for("page") == []
    assert parse("") == NotificationConfig()


def test_load_reads_the_file_and_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "notifications.yaml"
    path.write_text(EXAMPLE)
    assert names(load_notification_config(path), "page") == ["oncall", "chat", "hooks"]


def test_a_single_severity_may_be_written_without_a_list() -> None:
    config = parse(
        "receivers: {a: {type: slack, url: 'https://x.test/a'}}\nroutes: [{severity: ticket, receivers: [a]}]"
    )
    assert names(config, "ticket") == ["a"]
    assert names(config, "page") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "receivers: {pd: {type: pagerduty, routing_key: '${NOT_SET}'}}",
            "notifications.yaml: receivers.pd.routing_key: environment variable NOT_SET is not set",
        ),
        (
            "receivers: {h: {type: webhook, url: 'https://x.test', headers: {X-Token: '${NOT_SET}'}}}",
            "notifications.yaml: receivers.h.headers.X-Token: environment variable NOT_SET",
        ),
        (
            "receivers: {a: {type: slack, url: 'https://x.test/a'}}\nroutes: [{receivers: [a, b]}]",
            "notifications.yaml: routes[0].receivers: no receiver `b` (known: a)",
        ),
        ("receivers: {a: {type: email, url: 'https://x.test'}}", "notifications.yaml: Invalid value 'email'"),
        ("receivers: {a: {type: slack}}", "notifications.yaml: Object missing required field `url`"),
        ("receivers: {a: {type: slack, url: 'https://x.test', channel: x}}", "unknown field `channel`"),
        ("receivers: {a: {type: slack, url: 'hooks.slack.com/x'}}", "receivers.a.url: must be an http:// or https"),
        ("receivers: {a: {type: pagerduty, routing_key: ' '}}", "receivers.a.routing_key: must not be empty"),
        ("receivers: {'bad name': {type: slack, url: 'https://x.test'}}", "receivers.bad name: a receiver name"),
        (
            "receivers: {a: {type: slack, url: 'https://x.test'}}\nroutes: [{severity: [urgent], receivers: [a]}]",
            "notifications.yaml: Invalid enum value 'urgent'",
        ),
        (
            "receivers: {a: {type: slack, url: 'https://x.test'}}\nroutes: [{severity: [], receivers: [a]}]",
            "routes[0].severity: name at least one severity",
        ),
        ("receivers: {a: {type: slack, url: 'https://x.test'}}\nroutes: [{receivers: []}]", "routes[0].receivers"),
        ("receivers: {a: {type: slack, url: 'https://x.test'}}\nroutes: [{receivers: [a, a]}]", "listed twice"),
        ("receivers: [a]", "notifications.yaml: Expected `object`, got `array` - at `$.receivers`"),
        ("- a", "notifications.yaml: expected a mapping"),
        ("receivers: {a: [", "notifications.yaml: not valid YAML"),
        ("receiver: {}", "unknown field `receiver`"),
    ],
)
def test_refusals_name_the_file_and_the_field(text: str, message: str) -> None:
    with pytest.raises(NotificationConfigError) as refused:
        parse(text)
    assert message in str(refused.value)


def test_an_empty_environment_variable_is_refused_like_a_missing_one() -> None:
    with pytest.raises(NotificationConfigError, match="PD_KEY is not set"):
        parse("receivers: {pd: {type: pagerduty, routing_key: '${PD_KEY}'}}", {"PD_KEY": ""})


def test_a_refused_url_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(NotificationConfigError) as refused:
        parse("receivers: {a: {type: slack, url: 'ftp://secret-token@x.test'}}")
    assert "secret-token" not in str(refused.value)


# --- routes by kind, and PagerDuty's Change Events endpoint ---------------------------------------------------


def test_routes_may_select_by_kind_or_family_and_a_route_without_kind_takes_every_kind() -> None:
    config = parse(
        """
receivers:
  oncall: {type: pagerduty, routing_key: k}
  deploys: {type: slack, url: "https://hooks.slack.test/deploys"}
  chat: {type: slack, url: "https://hooks.slack.test/chat"}
routes:
  - {kind: [progress_deadline_passed, alert], severity: [ticket, page], receivers: [oncall], continue: true}
  - {kind: rollout, receivers: [deploys]}
  - {receivers: [chat]}
"""
    )

    def picked(severity: str, kind: str) -> list[str]:
        return [receiver.name for receiver in config.receivers_for(severity, kind)]

    assert picked("info", "stage_advanced") == ["deploys"]
    assert picked("ticket", "progress_deadline_passed") == ["oncall", "deploys"]
    assert picked("ticket", "rolled_back") == ["deploys"]
    assert picked("page", "trigger") == ["oncall", "chat"]
    assert picked("info", "trigger") == ["chat"]


def test_an_unknown_kind_in_a_route_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(NotificationConfigError) as caught:
        parse("receivers: {a: {type: slack, url: 'https://x.test'}}\nroutes: [{kind: [deploys], receivers: [a]}]")
    assert "routes[0].kind: no event kind `deploys` (known: alert, rollout, incident, trigger" in str(caught.value)


def test_the_change_events_url_is_derived_from_the_events_url_or_given() -> None:
    config = parse(
        """
receivers:
  default: {type: pagerduty, routing_key: k}
  eu: {type: pagerduty, routing_key: k, url: "https://events.eu.pagerduty.com/v2/enqueue"}
  proxy: {type: pagerduty, routing_key: k, url: "https://proxy.test/pd", change_url: "https://proxy.test/pd-change"}
"""
    )
    change_urls = {name: receiver.change_url for name, receiver in config.receivers.items()}  # type: ignore[union-attr]
    assert change_urls == {
        "default": "https://events.pagerduty.com/v2/change/enqueue",
        "eu": "https://events.eu.pagerduty.com/v2/change/enqueue",
        "proxy": "https://proxy.test/pd-change",
    }


def test_a_change_events_url_that_cannot_be_derived_must_be_given() -> None:
    with pytest.raises(NotificationConfigError) as caught:
        parse("receivers: {oncall: {type: pagerduty, routing_key: k, url: 'https://proxy.test/pd'}}")
    assert "receivers.oncall.change_url: cannot be derived" in str(caught.value)
