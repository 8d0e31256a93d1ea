"""A shadow guard's rendered alerts through Debian's promtool: the rule file is valid and its generated unit tests,
which expect severity `info` on its alerts, pass (skipped locally without promtool, failing under CI=true)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from controlplane.definitions.loader import parse_definition
from controlplane.render import render_alerts
from tests.conftest import REPO_ROOT, missing_service

SHADOWED = "upload-latency"  # a guard of every stage, severity ticket as shipped


def test_a_shadow_guard_renders_rules_and_unit_tests_promtool_accepts(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_service("promtool (Debian package `prometheus`)")
    assert promtool is not None
    text = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    anchor = f"    runbook_url: https://runbooks.example.com/reference-images#{SHADOWED}\n"
    assert text.count(anchor) == 1
    definition = parse_definition(
        text.replace(anchor, anchor + "    mode: shadow\n"),
        source="reference-images.yaml",
        environments=("dev", "qa", "staging", "production"),
    )
    files = render_alerts([definition])
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    rules = yaml.safe_load((tmp_path / "alerts/reference-images.rules.yml").read_text())
    shadowed = [rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "UploadLatency"]
    assert [rule["labels"]["severity"] for rule in shadowed] == ["info", "info"]

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [promtool, *arguments], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
        )

    checked = run("check", "rules", "alerts/reference-images.rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run("test", "rules", "alerts/tests/reference-images.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    expected = yaml.safe_load((tmp_path / "alerts/tests/reference-images.test.yml").read_text())
    labels = [
        alert["exp_labels"]
        for case in expected["tests"]
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == "UploadLatency"
        for alert in check.get("exp_alerts", [])
    ]
    assert labels and all(label["severity"] == "info" for label in labels)  # the tests expect what is rendered
