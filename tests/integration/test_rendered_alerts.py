"""The shipped alerts/: current with the definitions, valid for Debian's promtool 2.42 and amtool 0.25, their unit
tests passing, every metric they read exported on /metrics, and `controlplane render` writing and checking them.

promtool and amtool are the real binaries (Debian packages `prometheus`, `prometheus-alertmanager`): skipped
locally without them, failing under CI=true.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controlplane.cli import main
from controlplane.definitions.loader import load_definition
from controlplane.render import render_all
from controlplane.render.promql_names import metric_names
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, missing_service
from tests.prometheus_loop import WEBHOOK_PATH, alertmanager_config
from tests.prometheus_stack import ALERTMANAGER, find_binary, running_alertmanager
from tests.receivers import scripted_receiver

ALERTS = REPO_ROOT / "alerts"
TOOL_TIMEOUT_SECONDS = 300


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_service(f"{name} (Debian package `{package}`)")
    assert path is not None
    return path


def run(*command: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_SECONDS, cwd=cwd, check=False)


def rendered() -> dict[str, str]:
    paths = sorted((REPO_ROOT / "definitions").glob("*.yaml"))
    return render_all([load_definition(path, environments=Settings().environments) for path in paths])


def alert_files(pattern: str) -> list[str]:
    found = sorted(str(path.relative_to(REPO_ROOT)) for path in ALERTS.glob(pattern))
    assert found, pattern
    return found


# --- the committed files --------------------------------------------------------------------------------------------


def test_the_committed_alerts_are_what_the_definitions_render() -> None:
    files = {path: text for path, text in rendered().items() if path.startswith("alerts/")}

    committed = {
        str(path.relative_to(REPO_ROOT)): path.read_text()
        for path in sorted(ALERTS.rglob("*"))
        if path.is_file() and path.suffix in (".yml", ".yaml")
    }

    assert sorted(committed) == sorted(files), "run `controlplane render` and commit alerts/"
    for path, text in files.items():
        assert committed[path] == text, f"{path} is stale: run `controlplane render` and commit it"


def test_rendering_twice_gives_the_same_bytes() -> None:
    assert rendered() == rendered()


def test_promtool_accepts_every_rule_file_with_no_duplicate_rules() -> None:
    promtool = tool("promtool", "prometheus")

    checked = run(promtool, "check", "rules", "--lint=duplicate-rules", "--lint-fatal", *alert_files("*.rules.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_every_rule_file_has_unit_tests_and_they_pass() -> None:
    promtool = tool("promtool", "prometheus")
    rule_files = {Path(path).name.removesuffix(".rules.yml") for path in alert_files("*.rules.yml")}
    test_files = alert_files("tests/*.test.yml")
    assert {Path(path).name.removesuffix(".test.yml") for path in test_files} == rule_files

    tested = run(promtool, "test", "rules", *test_files)

    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(test_files), tested.stdout


def test_every_alert_is_tested_both_firing_and_silent() -> None:
    for test_file in alert_files("tests/*.test.yml"):
        tests = yaml.safe_load((REPO_ROOT / test_file).read_text())
        (rule_file,) = tests["rule_files"]
        groups = yaml.safe_load((ALERTS / "tests" / rule_file).read_text())["groups"]
        alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
        verdicts: dict[str, set[bool]] = {}
        for test in tests["tests"]:
            for case in test.get("alert_rule_test", []):
                verdicts.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))

        assert set(verdicts) == alerts, test_file
        assert all(seen == {True, False} for seen in verdicts.values()), verdicts


def test_no_alert_carries_its_value_in_a_label() -> None:
    for rule_file in alert_files("*.rules.yml"):
        for group in yaml.safe_load((REPO_ROOT / rule_file).read_text())["groups"]:
            for rule in group["rules"]:
                assert "$value" not in str(rule.get("labels", {})), rule.get("alert", rule.get("record"))


def test_amtool_accepts_the_alertmanager_example() -> None:
    amtool = tool("amtool", "prometheus-alertmanager")

    checked = run(amtool, "check-config", str(ALERTS / "alertmanager.example.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=page", "guard=true"], "controlplane-rollback,pagerduty"),
        (["severity=ticket", "guard=true"], "controlplane-rollback,slack-tickets"),
        (["severity=page"], "pagerduty"),
        (["severity=ticket"], "slack-tickets"),
        (["alertname=RolloutRolledBack", "severity=ticket"], "slack-tickets"),
    ],
)
def test_the_example_routes_pages_tickets_and_guards(labels: list[str], receivers: str) -> None:
    amtool = tool("amtool", "prometheus-alertmanager")
    config = f"--config.file={ALERTS / 'alertmanager.example.yml'}"

    routed = run(amtool, "config", "routes", "test", config, f"--verify.receivers={receivers}", *labels)

    assert routed.returncode == 0, routed.stdout + routed.stderr


def test_the_example_pages_the_guard_and_mutes_only_tickets_of_a_rolled_back_flag() -> None:
    """Through the real Alertmanager: the rollback a guard causes must not mute the guard's own page."""
    for binary in (ALERTMANAGER,):
        if find_binary(binary) is None:
            missing_service(f"`{binary}` (apt-get install prometheus-alertmanager)")
    example = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())
    scope = {"flag": "enable-reference-images", "environment": "production"}
    symptom = {"pipeline": "reference-images", **scope}
    with (
        scripted_receiver() as oncall,
        running_alertmanager(alertmanager_config(example, oncall.url, "operator-token", oncall.url)) as alertmanager,
    ):
        alertmanager.post_alerts(
            [
                {"labels": {"alertname": "RolloutRolledBack", "severity": "ticket", **scope}},
                {"labels": {"alertname": "UploadFailureRate", "severity": "page", "guard": "true", **symptom}},
                {"labels": {"alertname": "UploadLatency", "severity": "ticket", **symptom}},
                {"labels": {"alertname": "UploadsErrorBudgetBurn", "severity": "page", "slo": "uploads", **symptom}},
            ]
        )

        def paged() -> set[str] | None:
            names = {page["payload"]["summary"] for page in oncall.bodies("/v2/enqueue")}
            return names if len(oncall.bodies("/v2/enqueue")) >= 2 else None

        alertmanager.wait_until(paged, timeout=20, what="both pages delivered")
        hooked = alertmanager.wait_until(
            lambda: oncall.bodies(WEBHOOK_PATH) or None, timeout=20, what="the guard alert at the webhook"
        )
        states = {alert["labels"]["alertname"]: alert["status"]["state"] for alert in alertmanager.alerts()}

    assert [alert["labels"]["alertname"] for alert in hooked[0]["alerts"]] == ["UploadFailureRate"]
    assert states["UploadLatency"] == "suppressed"  # a ticket about what the rollback already answered
    assert states["UploadFailureRate"] == "active" and states["UploadsErrorBudgetBurn"] == "active"


# --- nothing queries a metric that is not exported ------------------------------------------------------------------


def test_every_metric_the_rule_files_read_is_exported(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    for name in ("reference-images", "ai-assistant"):
        content = (REPO_ROOT / "definitions" / f"{name}.yaml").read_text()
        response = client.post(
            "/api/v1/definitions/apply", headers=admin_headers, json={"content": content, "source": name}
        )
        assert response.status_code == 200, response.text
    families = {family.name: family.type for family in text_string_to_metric_families(client.get("/metrics").text)}
    recorded: set[str] = set()
    read: set[str] = set()
    for rule_file in alert_files("*.rules.yml"):
        for group in yaml.safe_load((REPO_ROOT / rule_file).read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recorded.add(rule["record"])
                read.update(metric_names(rule["expr"]))

    for metric in sorted(read - recorded):
        if metric.endswith("_total"):
            assert families.get(metric.removesuffix("_total")) == "counter", metric
        elif metric.endswith(("_sum", "_count")):
            assert families.get(metric.rsplit("_", 1)[0]) == "histogram", metric
        else:
            assert families.get(metric) == "gauge", metric
    assert read & recorded, "the alerts read their recording rules"


# --- the command --------------------------------------------------------------------------------------------------


def test_render_check_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    main(["render", "--check", "--definitions", str(REPO_ROOT / "definitions"), "--out", str(REPO_ROOT)])

    assert "rendered files are current" in capsys.readouterr().out


def test_render_writes_the_files_then_check_lists_what_differs_and_what_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    definitions = ["--definitions", str(REPO_ROOT / "definitions"), "--out", str(tmp_path)]

    main(["render", *definitions])
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    assert written == sorted(rendered())
    main(["render", "--check", *definitions])

    (tmp_path / "alerts" / "controlplane.rules.yml").write_text("groups: []\n")
    (tmp_path / "alerts" / "tests" / "gone.test.yml").write_text("tests: []\n")
    (tmp_path / "alerts" / "notes.md").write_text("kept: not a rendered kind of file\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as failed:
        main(["render", "--check", *definitions])
    assert failed.value.code == 1
    errors = capsys.readouterr().err
    assert f"differs: {tmp_path / 'alerts' / 'controlplane.rules.yml'}" in errors
    assert f"stale (no definition renders it): {tmp_path / 'alerts' / 'tests' / 'gone.test.yml'}" in errors
    assert "notes.md" not in errors

    main(["render", *definitions])
    assert not (tmp_path / "alerts" / "tests" / "gone.test.yml").exists()
    assert (tmp_path / "alerts" / "notes.md").exists()
    main(["render", "--check", *definitions])


def test_render_refuses_an_invalid_definition_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "definitions"
    folder.mkdir()
    text = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    (folder / "reference-images.yaml").write_text(text.replace("objective: 0.995", "objective: 1.5"))

    with pytest.raises(SystemExit) as failed:
        main(["render", "--definitions", str(folder), "--out", str(tmp_path / "out")])

    assert failed.value.code == 1
    assert "slo[0].objective" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
