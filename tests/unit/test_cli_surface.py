"""The command line's surface: help on every argument, `--version`, shell completion, and messages in the user's
words (options named as flags, no Python forms)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from controlplane.cli import build_parser, main
from controlplane.cli.client import Api, ApiProblem
from controlplane.cli.completion import SHELLS
from controlplane.cli.output import plain, stdout, table
from controlplane.cli.rollouts import _status_table
from tests.conftest import missing_service


def commands(parser: argparse.ArgumentParser, path: str = "controlplane") -> Iterator[tuple[str, argparse.Action]]:
    """Every action of every command, with the command's path; a subcommand is an action of its parent too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Action([], name, help=helps.get(name))
                yield from commands(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_command_argument_and_option_has_help() -> None:
    found = list(commands(build_parser()))
    missing = [f"{path}: {'/'.join(action.option_strings) or action.dest}" for path, action in found if not action.help]
    assert missing == []
    assert len(found) > 150  # the walk reached the leaves, not only the top


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"controlplane {version('controlplane')}\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_prints_a_script_naming_every_command(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["completion", shell])
    script = capsys.readouterr().out
    for word in ("rollout", "alerts", "completion", "--watch"):
        assert word in script


def test_bash_completes_commands_and_options_from_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    bash = shutil.which("bash") or ""
    if not bash:
        missing_service("bash")
    main(["completion", "bash"])
    script = capsys.readouterr().out

    def complete(*words: str) -> list[str]:
        # What bash-completion does on <TAB>: COMP_WORDS and COMP_CWORD set, the registered function called.
        line = " ".join(["controlplane", *words])
        program = (
            f"{script}\nCOMP_WORDS=(controlplane {' '.join(words)}); COMP_CWORD={len(words)}; COMP_LINE='{line}'; "
            f"COMP_POINT={len(line)}; _shtab_controlplane; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        done = subprocess.run([bash, "-c", program], capture_output=True, text=True, check=True, timeout=30)
        return done.stdout.split()

    assert complete("rol") == ["rollout"]
    assert set(complete("rollout", "")) >= {"status", "history", "start", "advance", "rollback"}
    assert set(complete("rollout", "status", "--w")) == {"--watch"}
    assert set(complete("alerts", "list", "--state", "fi")) == {"firing"}


def test_a_refusal_an_option_overrides_names_the_option_not_the_body_field() -> None:
    problem = ApiProblem(
        409,
        "guard-holding",
        "cannot advance: guard `errors` has not been evaluated yet",
        {"state": "running", "operation": "advance", "overridable_with": "force"},
    )
    assert str(problem) == (
        "409 guard-holding: cannot advance: guard `errors` has not been evaluated yet "
        "(state running, operation advance); to override, run it again with --force --reason TEXT (audited)"
    )


def test_problem_members_are_words_not_python_or_json_forms() -> None:
    problem = ApiProblem(
        409,
        "promotion-order",
        "cannot start in production before the rollout has completed in staging (there it is pending)",
        {"previous_environment": None, "environments": ["qa", "staging"], "field": "expected_revision"},
    )
    text = str(problem)
    assert "previous environment none" in text and "environments qa, staging" in text
    assert "option --revision" in text  # the request field named as the option that sets it
    assert not re.search(r"None|\[|\]|\{|'", text)
    invalid = ApiProblem(422, "invalid-body", "Expected `int`", {"errors": [{"message": "Expected `int`", "key": "x"}]})
    assert str(invalid) == "422 invalid-body: Expected `int` (in x)"


def test_plain_values_and_table_cells_have_no_python_forms() -> None:
    assert plain(None) == "none" and plain(True) == "yes" and plain([]) == "none"
    assert plain(["a", "b"]) == "a, b" and plain({"kind": "expired", "days": 30}) == "kind=expired, days=30"
    with stdout.capture() as captured:
        stdout.print(table("t", ["a", "b", "c"], [(None, ["x", "y"], {"k": False})]))
    assert "x, y" in captured.get() and "k=no" in captured.get()
    assert not re.search(r"None|\[|\]|\{|'|True|False", captured.get())


def test_the_status_table_of_the_first_environment_has_no_none() -> None:
    status = {
        "flag": "new-checkout",
        "environment": "qa",
        "state": "pending",
        "stage_index": 0,
        "stage_count": 1,
        "percentage": 100.0,
        "enabled": False,
        "revision": 1,
        "stage_started_at": None,
        "bake_remaining_seconds": 0.0,
        "next_auto_advance_at": None,
        "gates": "not_running",
        "gates_detail": "gates are judged while the rollout runs; it is pending",
        "previous_environment": None,
        "previous_environment_state": None,
        "started_by": None,
        "forced_reason": None,
    }
    with stdout.capture() as captured:
        stdout.print(_status_table(status))
    text = captured.get()
    assert "None" not in text and "first in the promotion order" in text and "not running" in text


def test_brackets_in_the_servers_words_print_as_they_are(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with stdout.capture() as captured:
        stdout.print(table("audit log", ["reason"], [("canary clean [advance to stage 2/3]",)]))
    assert "canary clean [advance to stage 2/3]" in captured.get()

    def refuses(*_: object, **__: object) -> None:
        raise ApiProblem(409, "guard-holding", "cannot advance: [5xx] share [/] unknown", {})

    monkeypatch.setattr(Api, "call", refuses)
    monkeypatch.setenv("CONTROLPLANE_TOKEN", "cpt_" + "A" * 43)
    with pytest.raises(SystemExit):
        main(["flags", "list"])
    assert capsys.readouterr().err == "error 409 guard-holding: cannot advance: [5xx] share [/] unknown\n"


def test_the_incident_table_names_the_segments_it_paused() -> None:
    from controlplane.cli.flags import _incident_table

    state = {"enabled": True, "default_variant": "off", "rules": [], "rollout": None}
    incident = {
        "id": 7,
        "flag": "checkout-v2",
        "variant": "off",
        "actor": "sre-alice",
        "reason": "checkout broken",
        "undo": None,
        "environments": [
            {
                "environment": "production",
                "before": state,
                "after": state,
                "rollout_paused": True,
                "paused_segments": ["queue=support", "queue=sales"],
            },
            {"environment": "staging", "before": state, "after": state, "rollout_paused": True},
            {"environment": "qa", "before": state, "after": state, "rollout_paused": False},
        ],
    }
    with stdout.capture() as captured:
        stdout.print(_incident_table(incident))
    cells = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[1:-1]]
        for line in captured.get().splitlines()
        if line.startswith("│")
    }
    assert cells["production"][3] == "paused: queue=support, queue=sales"
    assert (cells["staging"][3], cells["qa"][3]) == ("paused", "-")
