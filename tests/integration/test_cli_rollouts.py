"""The CLI as a CI gate against the real served app: `rollout status --watch` following a rollout to completion
and to rollback while it is driven over HTTP, its timeout, the exit code by state, `rollout history`, `alerts`,
and `--url`/`--token`. The watch's wait performs the next step of the story, so no test sleeps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.cli import main
from controlplane.cli.pushes import ChangeSignal
from controlplane.cli.rollout_watch import Pacing
from controlplane.guarding.jobs import evaluate_alert_rules
from controlplane.notifications.config import load_notification_config
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, FakeClock
from tests.integration.test_cli import cli_env, run  # noqa: F401 (cli_env is a fixture used by name)
from tests.integration.test_guarded_rollback import alertmanager_payload

FLAG = "enable-reference-images"
PRODUCTION = f"/api/v1/flags/{FLAG}/environments/production/rollout"


class Story:
    """The control plane driven over HTTP, one step per wait of the watch, on a clock the waits move."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.steps: list[Callable[[], object]] = []
        self.now = 0.0
        self.waits: list[float] = []

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.request(method, path, json=body)
        assert response.is_success, response.text
        result: dict[str, Any] = response.json()
        return result

    def operate(self, environment: str, operation: str, **body: Any) -> dict[str, Any]:
        path = f"/api/v1/flags/{FLAG}/environments/{environment}/rollout"
        revision = self.ok("GET", path)["revision"]
        return self.ok("POST", f"{path}/{operation}", {"expected_revision": revision, **body})

    def through_staging(self) -> None:
        """QA and staging completed (forced: no traffic judges their guards here), production not started."""
        for environment in ("qa", "staging"):
            self.operate(environment, "start")
            self.operate(environment, "advance", force=True, reason="checked by hand")

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        if self.steps:
            self.steps.pop(0)()

    def watch(self, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
        # A deadline always (on the story's clock): a watch the story fails to end stops, it does not spin.
        deadline = [] if "--timeout" in options else ["--timeout", "60"]
        interval = [] if "--interval" in options else ["--interval", "1"]
        argv = ["rollout", "status", FLAG, "--env", "production", "--watch", *interval, *deadline, *options]
        try:
            main(argv, pacing=Pacing(monotonic=lambda: self.now, wait=self.wait))
            code = 0
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def story(live_server: str, make_token: Callable[..., str], cli_env: None) -> Iterator[Story]:  # noqa: F811
    """The shipped definition applied (by an admin), and an operator to drive its flag's rollouts."""
    text = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    admin = {"Authorization": f"Bearer {make_token(Role.ADMIN, name='definitions-admin')}"}
    with httpx.Client(base_url=live_server, headers=admin, timeout=10) as http:
        applied = http.post("/api/v1/definitions/apply", json={"content": text, "source": "reference-images.yaml"})
        assert applied.is_success, applied.text
    driven = Story(live_server, make_token(Role.OPERATOR, name="sre-alice"))
    try:
        yield driven
    finally:
        driven.http.close()


def lines(out: str) -> list[str]:
    """The watch's lines without their time of day."""
    return [line.split(" ", 1)[1] for line in out.splitlines()]


def test_watch_follows_a_rollout_to_completion_and_exits_0(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    story.through_staging()
    story.steps = [
        lambda: story.operate("production", "start"),
        lambda: None,  # nothing happens: nothing is printed
        lambda: story.operate("production", "advance", force=True, reason="10% checked"),
        lambda: story.operate("production", "pause", reason="looking at a dashboard"),
        lambda: story.operate("production", "resume"),
        lambda: story.operate("production", "advance", force=True, reason="50% checked"),
        lambda: story.operate("production", "advance", force=True, reason="100% checked"),
    ]
    code, out, err = story.watch(capsys)
    assert code == 0, err
    shown = lines(out)
    assert shown[0] == f"{FLAG} in production: not started; its first stage serves 10%"
    changes = [line.split(": ", 1)[1] for line in shown[1:-1]]
    assert changes[0].startswith("started at stage 1/3 (10%); gates holding: ")
    assert "needs 500" in changes[0] and changes[0].endswith("; environment switched on")
    assert changes[1:4] == [
        "advanced to stage 2/3 (50%)",
        "paused at stage 2/3 (50%)",
        changes[3],  # resumed, with the gates' verdict again
    ]
    assert changes[3].startswith("resumed at stage 2/3 (50%); gates holding")
    assert changes[4:] == ["advanced to stage 3/3 (100%)", "completed at stage 3/3 (100%)"]
    assert out.splitlines()[-1] == "completed (exit 0)"
    assert len(shown) == 8  # the idle step printed nothing


def test_watch_exits_3_when_alertmanager_rolls_the_flag_back(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    story.through_staging()
    story.operate("production", "start")
    hook = {"User-Agent": "Alertmanager/0.25.0"}

    def fire() -> None:
        response = story.http.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("firing"))
        assert [item["action"] for item in response.json()] == ["rolled_back"], response.text

    story.steps = [fire]
    code, out, _ = story.watch(capsys, "--json")
    assert code == 3
    *readings, verdict = [json.loads(line) for line in out.splitlines()]  # one JSON object per line, nothing else
    assert verdict == {"exit": 3, "reason": "rolled back"}
    assert readings[0]["status"]["state"] == "running"
    assert readings[-1]["changes"][0] == "rolled back: serving the off variant"
    assert readings[-1]["status"]["state"] == "rolled_back" and readings[-1]["status"]["enabled"] is False


def test_watch_exits_3_on_a_rollback_to_the_previous_stage(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    story.through_staging()
    story.operate("production", "start")
    story.steps = [
        lambda: story.operate("production", "advance", force=True, reason="10% checked"),
        lambda: story.operate("production", "rollback", policy="previous_stage", reason="latency up at 50%"),
    ]
    code, out, _ = story.watch(capsys)
    assert code == 3
    assert "rolled back one stage and paused at stage 1/3 (10%)" in out
    assert out.splitlines()[-1] == "rolled back to stage 1/3 (10%) (exit 3)"


def test_watch_timeout_exits_4_when_paused_and_5_when_holding(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    story.through_staging()
    story.operate("production", "start")
    code, out, _ = story.watch(capsys, "--timeout", "3")
    assert code == 5 and story.now == 3.0
    assert out.splitlines()[-1].startswith("timed out running, gates holding at stage 1/3 (10%)")
    story.operate("production", "pause", reason="waiting for the morning")
    code, out, _ = story.watch(capsys, "--timeout", "2m", "--interval", "50s")
    assert code == 4 and story.now == 3.0 + 120
    assert story.waits[-3:] == [50.0, 50.0, 20.0]  # the last wait cut to the deadline
    assert out.splitlines()[-1] == "timed out paused at stage 1/3 (10%) (exit 4)"


def test_status_without_watch_exits_by_state(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    def status(environment: str) -> int:
        return run(capsys, "rollout", "status", FLAG, "--env", environment)[0]

    assert status("qa") == 5  # pending
    story.through_staging()
    assert status("qa") == 0
    story.operate("production", "start")
    assert status("production") == 5
    story.operate("production", "pause", reason="a look")
    assert status("production") == 4
    story.operate("production", "rollback", reason="errors")
    assert status("production") == 3
    code, _, err = run(capsys, "rollout", "status", "no-such-flag", "--env", "production")
    assert code == 1 and "404 flag-not-found" in err


def test_a_refusal_names_the_cli_flag_and_no_python_forms(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollout", "start", FLAG, "--env", "production")
    assert code == 1
    assert err.startswith("error 409 promotion-order: cannot start in production before the rollout has completed")
    assert "previous environment staging, previous state pending" in err
    assert err.rstrip().endswith("to override, run it again with --force --reason TEXT (audited)")
    assert "pass force" not in err and "None" not in err
    code, _, err = run(capsys, "rollout", "status", FLAG, "--env", "nowhere")
    assert code == 1 and "known environments are dev, qa, staging, production" in err and "[" not in err


def test_rollout_history_lists_every_rollout_newest_first(story: Story, capsys: pytest.CaptureFixture[str]) -> None:
    story.through_staging()
    story.operate("production", "start")
    story.operate("production", "rollback", reason="errors")
    story.operate("production", "start", force=True, reason="fixed, again")
    code, out, _ = run(capsys, "rollout", "history", FLAG, "--env", "production", "--json")
    assert code == 0
    history = json.loads(out)
    assert [item["state"] for item in history] == ["running", "rolled_back"]
    assert history[0]["id"] > history[1]["id"]
    code, out, _ = run(capsys, "rollout", "history", FLAG, "--env", "production")
    assert code == 0 and f"rollouts of {FLAG} in production (newest first)" in out
    assert "rolled back" in out and "sre-alice" in out and "None" not in out


def test_alerts_list_and_history_show_what_the_rules_measured(
    story: Story,
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
) -> None:
    story.through_staging()
    story.operate("production", "start")
    evaluate_alert_rules(
        sessionmaker(engine, expire_on_commit=False),
        environments=settings.environments,
        clock=clock,
        notifications=lambda: load_notification_config(settings.notifications_file),
        window_size=settings.telemetry_window,
    )
    code, out, _ = run(capsys, "alerts", "list", "--env", "production", "--json")
    alerts = json.loads(out)
    assert code == 0 and alerts and {alert["environment"] for alert in alerts} == {"production"}
    assert "upload-failure-rate" in {alert["rule"] for alert in alerts}
    code, out, _ = run(capsys, "alerts", "list", "--env", "production")
    assert code == 0 and "upload-failure-rate" in out and "None" not in out
    code, out, _ = run(capsys, "alerts", "list", "--state", "firing", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run(capsys, "alerts", "history", "--rule", "upload-failure-rate", "--env", "production", "--json")
    history = json.loads(out)
    assert code == 0 and history and {item["rule"] for item in history} == {"upload-failure-rate"}
    code, out, _ = run(capsys, "alerts", "history", "--env", "production", "--limit", "2")
    assert code == 0 and "alert history (newest first) of env=production" in out and " over " in out


def test_url_and_token_options_win_over_the_environment(
    live_server: str,
    make_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CONTROLPLANE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CONTROLPLANE_TOKEN", "cpt_" + "A" * 43)
    token = make_token(Role.VIEWER, name="reader")
    code, out, err = run(capsys, "--url", live_server, "--token", token, "flags", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    code, _, err = run(capsys, "--url", live_server, "flags", "list")  # the variable's token: refused
    assert code == 1 and err.startswith("error 401")
    monkeypatch.delenv("CONTROLPLANE_TOKEN")
    code, _, err = run(capsys, "--url", live_server, "flags", "list")
    assert code == 1 and "pass --token or set CONTROLPLANE_TOKEN" in err


def test_a_ci_job_sees_the_exit_code_of_the_real_process(story: Story, live_server: str) -> None:
    story.through_staging()
    story.operate("production", "start")
    story.operate("production", "rollback", reason="errors")
    token = story.http.headers["Authorization"].removeprefix("Bearer ")
    command = [sys.executable, "-m", "controlplane.cli", "--url", live_server, "--token", token]
    watch = [*command, "rollout", "status", FLAG, "--env", "production", "--watch", "--timeout", "30s"]
    done = subprocess.run(watch, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines()[-1] == "rolled back (exit 3)"
    done = subprocess.run(
        [*command, "rollout", "status", FLAG, "--env", "qa"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0


def test_the_change_signal_wakes_on_each_change_the_server_pushes(story: Story, live_server: str) -> None:
    story.through_staging()
    story.operate("production", "start")
    path = f"/ui/live/flags/{FLAG}/environments/production"
    signal = ChangeSignal(live_server, dict(story.http.headers), path).start()
    try:
        assert signal.wait(30), "the stream's first message (the page as it is) never came"
        story.operate("production", "pause", reason="looking")
        assert signal.wait(30), "the pause was not pushed"
    finally:
        signal.close()


def test_a_watching_process_sees_a_rollback_when_it_is_pushed_not_at_its_next_interval(
    story: Story, live_server: str
) -> None:
    story.through_staging()
    story.operate("production", "start")
    token = story.http.headers["Authorization"].removeprefix("Bearer ")
    # A reading every 10 minutes: without the push, the rollback would be seen only at the 50 s deadline's reading.
    watch = [sys.executable, "-m", "controlplane.cli", "--url", live_server, "--token", token, "rollout", "status"]
    watch += [FLAG, "--env", "production", "--watch", "--interval", "10m", "--timeout", "50s"]
    process = subprocess.Popen(watch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the status as the watch began: it is following now
        assert "production" in first, first
        started = time.monotonic()
        story.operate("production", "rollback", reason="errors")
        out, err = process.communicate(timeout=60)
        seen_after = time.monotonic() - started
    finally:
        process.kill()
    assert process.returncode == 3, err
    assert out.splitlines()[-1] == "rolled back (exit 3)"
    assert seen_after < 20, f"the rollback was seen {seen_after:.1f} s after it was made"
