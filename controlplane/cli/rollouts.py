"""`controlplane rollout start|advance|pause|resume|rollback|status`: show or change a flag's rollout."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from controlplane.cli.client import Api
from controlplane.cli.output import Subcommands, add_command, emit, table
from controlplane.settings import Settings

__all__ = ["add_rollout_commands"]

_OPERATIONS = ("start", "advance", "pause", "resume", "rollback", "status")


def _status_table(status: dict[str, Any]) -> Table:
    """A rollout's status, one row per fact."""
    stage = f"{status['stage_index'] + 1}/{status['stage_count']}"
    rows = [
        ("state", status["state"]),
        ("stage", stage),
        ("percentage", f"{status['percentage']:g}%"),
        ("environment enabled", status["enabled"]),
        ("revision", status["revision"]),
        ("stage started", status["stage_started_at"]),
        ("bake remaining", f"{status['bake_remaining_seconds']:.0f}s"),
        ("next auto-advance", status["next_auto_advance_at"] or "-"),
        ("progress deadline", _deadline(status)),
        ("gates", f"{status['gates']}: {status['gates_detail']}"),
        ("previous environment", f"{status['previous_environment']} ({status['previous_environment_state']})"),
        ("started by", status["started_by"]),
        ("forced", status["forced_reason"] or "-"),
    ]
    return table(f"rollout of {status['flag']} in {status['environment']}", ["", ""], rows)


def _deadline(status: dict[str, Any]) -> str:
    deadline_at = status.get("progress_deadline_at")
    if not deadline_at:
        return "-"
    if not status.get("progress_deadline_passed"):
        return str(deadline_at)
    told = status.get("progress_deadline_notified_at")
    return f"passed at {deadline_at}" + (f" (told at {told})" if told else " (not told yet)")


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> None:
    """Show or change a rollout."""
    api = Api.from_env()
    base = f"/flags/{args.flag}/environments/{args.env}/rollout"
    if args.operation == "status":
        emit(args, api.call("GET", base), _status_table)
        return
    revision = args.revision
    if revision is None and args.operation in ("start", "advance", "resume"):
        # Act on the state as it is now; the server still refuses if it moves before this request lands.
        # Pause and rollback send no revision unless given one: stopping a rollout never waits on a stale view.
        revision = api.call("GET", base)["revision"]
    body: dict[str, Any] = {"expected_revision": revision, "reason": args.reason}
    if getattr(args, "force", False):
        body["force"] = True
    if args.operation == "rollback" and args.policy:
        body["policy"] = args.policy
    status = api.call("POST", f"{base}/{args.operation}", json=body)
    emit(args, status, _status_table)


def add_rollout_commands(commands: Subcommands) -> None:
    """Add `rollout ...` to the command line."""
    rollout = commands.add_parser("rollout", help="rollouts").add_subparsers(dest="operation", required=True)
    for operation in _OPERATIONS:
        sub = add_command(rollout, operation, cmd_rollout, f"{operation} the rollout of a flag in an environment")
        sub.add_argument("flag")
        sub.add_argument("--env", required=True)
        if operation != "status":
            sub.add_argument("--reason", help="why (required for advance, pause and rollback)")
            sub.add_argument("--revision", type=int, help="the revision you act on (default: the current one)")
        if operation in ("start", "advance"):
            sub.add_argument(
                "--force",
                action="store_true",
                help="go past the promotion order or holding guards (needs --reason; audited)",
            )
        if operation == "rollback":
            sub.add_argument("--policy", choices=["off", "previous_stage"])
