"""`controlplane guards simulate` on the shipped definition, in-process: no server, the definition read locally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import main
from tests.conftest import REPO_ROOT

REFERENCE_IMAGES = str(REPO_ROOT / "definitions" / "reference-images.yaml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; its exit code, stdout and stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def share(value: Any) -> bool:
    return isinstance(value, float | int) and 0 <= value <= 1


def test_simulate_reports_every_guard_of_the_production_stages(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "guards", "simulate", REFERENCE_IMAGES, "--env", "production", "--trials", "50", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["pipeline"], report["flag"], report["environment"]) == (
        "reference-images",
        "enable-reference-images",
        "production",
    )
    assert (report["trials"], report["seed"], report["stage_seconds"], report["interval"]) == (50, 1, 3600, 2)
    # Every production stage has the same guards (no streak guard in production): one group.
    (group,) = report["groups"]
    assert group["stages"] == [1, 2, 3] and group["percentages"] == [10, 50, 100]
    names = [guard["name"] for guard in group["guards"]]
    assert names == ["upload-failure-rate", "upload-latency"]
    (result,) = group["results"]
    assert (result["rate"], result["healthy"], result["regressed"]) == (100, 0.01, 0.06)
    assert (result["baseline_rate"], result["warm_up_seconds"]) == (0, 0)
    assert [figures["guard"] for figures in result["guards"]] == names
    for figures in [*result["guards"], result["stage"]]:
        assert share(figures["healthy_rolled_back"])
        assert [item["onset_seconds"] for item in figures["regressions"]] == [0, 600]
        for detection in figures["regressions"]:
            assert share(detection["caught"]) and share(detection["rolled_back_before_onset"])
            assert detection["caught"] + detection["rolled_back_before_onset"] <= 1
            for delay in (detection["median_delay_seconds"], detection["p90_delay_seconds"]):
                assert delay is None or 0 <= delay <= 3600
            if detection["median_delay_seconds"] is not None and detection["p90_delay_seconds"] is not None:
                assert detection["median_delay_seconds"] <= detection["p90_delay_seconds"]
    assert result["guards"][0]["chance_streaks_per_24h"] is None
    latency = result["guards"][1]
    assert (latency["healthy_mean"], latency["regressed_mean"]) == (3, 12)  # half and twice the 6 s threshold
    # The stage rolls back when its first guard does: never less often than any of them.
    stage = result["stage"]
    assert stage["healthy_rolled_back"] >= max(figures["healthy_rolled_back"] for figures in result["guards"])


def test_simulate_counts_chance_streaks_of_a_streak_guard(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "guards", "simulate", REFERENCE_IMAGES, "--env", "staging", "--trials", "20", "--onset", "", "--json"
    )
    assert code == 0, err
    (group,) = json.loads(out)["groups"]
    names = [guard["name"] for guard in group["guards"]]
    assert names == ["upload-failure-rate", "vision-error-streak", "upload-latency"]
    (result,) = group["results"]
    streak = result["guards"][1]
    assert streak["kind"] == "streak" and streak["chance_streaks_per_24h"] >= 0 and streak["regressions"] == []
    assert result["guards"][0]["chance_streaks_per_24h"] is None


def test_simulate_prints_a_table_of_one_stage(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["guards", "simulate", REFERENCE_IMAGES, "--env", "staging", "--trials", "5", "--onset", "300"]
    code, out, err = run(
        capsys, *argv, "--rate", "300,1000", "--healthy", "1%,2%", "--stage-seconds", "900", "--warm-up", "300"
    )
    assert code == 0, err
    assert "healthy rolled back" in out and "upload-failure-rate" in out and "6.0% from 300 s" in out
    assert "2.0%" in out and "1000" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--env", "dev"], "no flag of"),
        (["--env", "production", "--stage", "4"], "has stages 1..3"),
        (["--env", "production", "--rate", "many"], "--rate"),
        (["--env", "production", "--onset", "4000"], "onset"),
    ],
)
def test_simulate_refuses_what_it_cannot_do_in_words(
    capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    code, _, err = run(capsys, "guards", "simulate", REFERENCE_IMAGES, *argv, "--trials", "1")
    assert code == 1
    assert words in err


def test_a_prometheus_guard_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    definition = tmp_path / "demo.yaml"
    definition.write_text(
        """\
pipeline: demo
flags:
  - key: demo-flag
    type: boolean
    variants: {"on": true, "off": false}
    off_variant: "off"
    rollout_variant: "on"
    plan:
      environments:
        - environment: production
          stages:
            - {percentage: 10, guards: [prom-error-ratio]}
            - {percentage: 100}
rules:
  - name: prom-error-ratio
    source: prometheus
    query: sum(rate(errors_total{environment="{environment}"}[5m])) / sum(rate(requests_total[5m]))
    op: ">="
    threshold: 0.05
    flag: demo-flag
"""
    )
    code, _, err = run(capsys, "guards", "simulate", str(definition), "--env", "production", "--trials", "1")
    assert code == 1
    assert "prom-error-ratio" in err and "Prometheus" in err


def test_a_shadow_guard_is_shown_as_such_and_left_out_of_the_stage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    definition = tmp_path / "demo.yaml"
    definition.write_text(
        """\
pipeline: demo
flags:
  - key: demo-flag
    type: boolean
    variants: {"on": true, "off": false}
    off_variant: "off"
    rollout_variant: "on"
    plan:
      environments:
        - environment: production
          stages:
            - {percentage: 10, guards: [errors-watched, errors-enforced]}
            - {percentage: 100}
events:
  - name: request
    outcomes: [ok, error]
rules:
  - name: errors-watched
    mode: shadow
    kind: ratio
    event: request
    numerator: {outcome: [error]}
    op: ">"
    threshold: 0.001
    window: 1m
    min_samples: 1
    flag: demo-flag
  - name: errors-enforced
    kind: ratio
    event: request
    numerator: {outcome: [error]}
    op: ">"
    threshold: 0.5
    window: 1m
    min_samples: 20
    flag: demo-flag
"""
    )
    argv = ["guards", "simulate", str(definition), "--env", "production", "--stage", "1", "--trials", "5"]
    options = ["--rate", "1000", "--healthy", "0.05", "--regressed", "0.1", "--stage-seconds", "600"]
    options += ["--onset", "0,300"]
    code, out, err = run(capsys, *argv, *options, "--json")
    assert code == 0, err
    (group,) = json.loads(out)["groups"]
    assert [guard["mode"] for guard in group["guards"]] == ["shadow", "enforce"]
    (result,) = group["results"]
    watched, enforced = result["guards"]
    # The shadow guard fires on healthy traffic (5% errors past its 0.1%), and would roll every stage back.
    assert (watched["shadow"], watched["healthy_rolled_back"]) == (True, 1)
    assert (enforced["shadow"], enforced["healthy_rolled_back"]) == (False, 0)
    assert result["stage"]["healthy_rolled_back"] == 0
    assert all(detection["caught"] == 0 for detection in result["stage"]["regressions"])
    code, out, err = run(capsys, *argv, *options)
    assert code == 0, err
    assert "errors-watched (shadow)" in out and "errors-enforced (shadow)" not in out
