"""The `controlplane` command: bootstrap commands on the database, the README walkthrough over HTTP."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from controlplane.api.roles import Role
from controlplane.cli import main
from controlplane.cli.client import Api
from tests.conftest import REPO_ROOT


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit code, stdout and stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_db_upgrade_then_tokens_create_prints_only_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("CONTROLPLANE_DATABASE_URL", url)
    code, _, _ = run(capsys, "db", "upgrade")
    assert code == 0
    assert "audit_records" in inspect(create_engine(url)).get_table_names()
    code, out, err = run(capsys, "tokens", "create", "--database", "--name", "ci-bot", "--role", "operator")
    assert code == 0
    assert out.count("\n") == 1 and out.startswith("cpt_") and len(out.strip()) > 40
    assert "written straight to the database sqlite:///" in err and "(bootstrap)" in err  # it says where
    code, _, err = run(capsys, "tokens", "create", "--database", "--name", "ci-bot", "--role", "operator")
    assert code == 1 and "token-name-taken" in err


@pytest.mark.usefixtures("cli_env")
def test_tokens_create_list_and_revoke_go_through_the_api(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tokens", "create", "--name", "app", "--role", "evaluate", "--env", "production")
    assert code == 0, err
    assert out.startswith("cpt_") and out.count("\n") == 1 and "database" not in err
    code, out, _ = run(capsys, "tokens", "list", "--json")
    assert code == 0 and {"app", "admin"} <= {token["name"] for token in json.loads(out)}
    code, out, err = run(capsys, "tokens", "revoke", "app", "--reason", "rotated")
    assert code == 0, err
    code, out, _ = run(capsys, "tokens", "list", "--json")
    revoked = {token["name"]: token["revoked_at"] for token in json.loads(out)}
    assert revoked["app"] is not None and revoked["admin"] is None


def test_an_unreachable_server_or_database_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONTROLPLANE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CONTROLPLANE_TOKEN", "cpt_" + "A" * 43)
    code, out, err = run(capsys, "flags", "list")
    assert code == 1 and out == ""
    assert err.startswith("error cannot reach the control plane") and "Traceback" not in err
    monkeypatch.setenv("CONTROLPLANE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 1 and err.startswith("error the database refused or did not answer") and "Traceback" not in err


def test_a_server_that_is_not_the_api_is_one_line_not_its_page(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = b"<!DOCTYPE html>\n<html><body>\n<h1>Welcome</h1>\n</body></html>\n"
            self.send_response(200 if self.path.endswith("flags") else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("CONTROLPLANE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("CONTROLPLANE_TOKEN", "cpt_" + "A" * 43)
        for argv in (("flags", "list"), ("rollout", "status", "x", "--env", "production")):
            code, out, err = run(capsys, *argv)
            assert code == 1 and out == "" and err.count("\n") == 1, err
            assert "not-the-api" in err and "text/html, not JSON" in err and "<html>" not in err
    finally:
        server.shutdown()
        server.server_close()


def test_an_unforeseen_failure_is_one_line_unless_the_traceback_is_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def breaks(*_: object) -> None:
        raise ValueError("the unforeseen\nsecond line")

    monkeypatch.setattr(Api, "call", breaks)
    monkeypatch.setenv("CONTROLPLANE_TOKEN", "cpt_" + "A" * 43)
    code, out, err = run(capsys, "flags", "list")
    assert code == 1 and out == ""
    assert err == "error unexpected ValueError: the unforeseen (run with --traceback for where)\n"
    with pytest.raises(ValueError, match="the unforeseen"):
        main(["--traceback", "flags", "list"])


@pytest.fixture
def cli_env(live_server: str, make_token: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    """CONTROLPLANE_URL and CONTROLPLANE_TOKEN (admin) pointing at a live server."""
    monkeypatch.setenv("CONTROLPLANE_URL", live_server)
    monkeypatch.setenv("CONTROLPLANE_TOKEN", make_token(Role.ADMIN, name="admin"))


@pytest.mark.usefixtures("cli_env")
def test_readme_walkthrough_works_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    flag = "enable-reference-images"
    definition = str(REPO_ROOT / "definitions" / "reference-images.yaml")
    assert run(capsys, "definitions", "apply", definition)[0] == 0
    code, out, _ = run(capsys, "definitions", "apply", definition)
    assert code == 0 and "nothing to change" in out
    assert flag in run(capsys, "flags", "list")[1]
    code, _, err = run(capsys, "rollout", "start", flag, "--env", "qa")
    assert code == 0, err
    code, _, err = run(capsys, "rollout", "advance", flag, "--env", "qa", "--reason", "QA canary clean")
    assert code == 1 and "409 guard-holding" in err and "has not been evaluated yet" in err
    steps = [
        ("advance", "qa", "QA canary checked by hand"),
        ("start", "staging", None),
        ("advance", "staging", "staging checked by hand"),
        ("start", "production", None),
        ("advance", "production", "10% checked"),
        ("advance", "production", "50% checked"),
    ]
    for operation, environment, reason in steps:
        argv = ["rollout", operation, flag, "--env", environment, "--json"]
        forced = ["--reason", reason, "--force"] if reason else []
        code, out, err = run(capsys, *argv, *forced)
        assert code == 0, err
    assert json.loads(out)["percentage"] == 100.0
    code, out, _ = run(capsys, "rollout", "rollback", flag, "--env", "production", "--reason", "errors at 4%", "--json")
    status = json.loads(out)
    assert code == 0 and status["state"] == "rolled_back" and status["percentage"] == 0 and status["enabled"] is False
    code, out, _ = run(capsys, "rollout", "status", flag, "--env", "production", "--json")
    assert {"flag", "environment", "state", "stage_index", "percentage", "revision"} <= set(json.loads(out))
    assert code == 3  # rolled back: `rollout status` exits by the state
    code, out, _ = run(capsys, "rollout", "history", flag, "--env", "production")
    assert code == 0 and "rolled back" in out
    code, out, _ = run(capsys, "audit", "list", "--flag", flag, "--env", "production", "--json")
    actions = [record["action"] for record in json.loads(out)]
    assert actions[:4] == ["rollout.rollback", "rollout.advance", "rollout.advance", "rollout.start"]
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "audit chain ok" in out


@pytest.mark.usefixtures("cli_env")
def test_cli_reports_refusals_with_status_and_problem_type(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rollout", "advance", "no-such-flag", "--env", "qa", "--reason", "x")
    assert code == 1
    assert "404 flag-not-found" in err


def test_cli_without_a_token_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CONTROLPLANE_TOKEN", raising=False)
    code, _, err = run(capsys, "flags", "list")
    assert code == 1 and "CONTROLPLANE_TOKEN" in err


@pytest.mark.usefixtures("restore_logging")  # serve configures logging on the captured stderr
def test_serve_refuses_a_broken_notifications_file_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "notifications.yaml"
    broken.write_text("receivers:\n  oncall: {type: pagerduty, routing_key: '${NO_SUCH_VARIABLE_SET}'}\n")
    monkeypatch.setenv("CONTROLPLANE_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    monkeypatch.setenv("CONTROLPLANE_NOTIFICATIONS_FILE", str(broken))
    monkeypatch.delenv("NO_SUCH_VARIABLE_SET", raising=False)

    code, out, err = run(capsys, "serve")

    assert code == 1 and out == ""
    assert "notifications file" in err and "NO_SUCH_VARIABLE_SET" in err
    assert not (tmp_path / "never.db").exists()  # refused before touching the database
